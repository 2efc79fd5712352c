"""The build's locks: the dependency closure, markers for the image, hashes of local wheels."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import nbcd.build.hashes
from nbcd.build.closure import Missing, Root, Target, resolve_closure
from nbcd.build.hashes import download_wheels, local_hashes
from nbcd.build.installed import DistIndex
from nbcd.build.lock import SERVE_REQUIREMENTS, Locks, serve_requirements, write_locks
from nbcd.config import load_config
from tests.test_build import lock_pins, save_small_model

PY311 = Target("3.11.7", "x86_64")
PY310 = Target("3.10.14", "x86_64")


def fake_dist(site: Path, name: str, version: str, *requires: str) -> None:
    """An installed distribution: a .dist-info folder with its METADATA headers."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    headers = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    headers += [f"Requires-Dist: {requirement}" for requirement in requires]
    # a body line that looks like a header must not count: only the header block does
    body = "\nA long description.\nRequires-Dist: not-a-header\n"
    (info / "METADATA").write_text("\n".join(headers) + "\n" + body, encoding="utf-8")


def tiny_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A real, installable wheel of an empty package."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return path


def roots(*texts: str) -> list[Root]:
    return [Root(Requirement(text), "-r requirements.txt") for text in texts]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Installed distributions: a cycle, an extra, a marker, a name spelt three ways."""
    site = tmp_path / "site"
    requires = ["beta>=2", "old-only; python_version < '3.11'", "gamma[fast]", "Delta.Thing"]
    fake_dist(site, "Alpha_Pkg", "1.0", *requires)
    fake_dist(site, "beta", "2.5", "alpha-pkg")  # back to alpha: a cycle
    fake_dist(site, "gamma", "3.0", "zeta; extra == 'fast'", "eta; extra == 'slow'")
    fake_dist(site, "delta-thing", "0.1")
    fake_dist(site, "old-only", "9.9")
    fake_dist(site, "zeta", "1.1")
    fake_dist(site, "eta", "1.2")
    return site


def test_the_closure_holds_transitive_dependencies_at_their_installed_versions() -> None:
    closure = resolve_closure(roots("scikit-learn"), Target.image(), DistIndex())

    pins = dict(closure.pins())
    for name in ("scikit-learn", "joblib", "threadpoolctl", "scipy", "numpy"):
        assert pins[name] == DistIndex().version(name), name
    assert "scikit-learn" in closure.nodes["scipy"].via
    assert not closure.missing


def test_markers_are_evaluated_for_the_image_and_extras_are_honoured(site: Path) -> None:
    index = DistIndex([str(site)])

    on_311 = resolve_closure(roots("alpha-pkg"), PY311, index)
    on_310 = resolve_closure(roots("alpha-pkg"), PY310, index)

    assert set(on_311.nodes) == {"alpha-pkg", "beta", "gamma", "delta-thing", "zeta"}
    assert set(on_310.nodes) == set(on_311.nodes) | {"old-only"}
    assert "eta" not in on_311.nodes  # the extra nobody asked for
    assert on_311.nodes["alpha-pkg"].via == {"-r requirements.txt", "beta"}  # the cycle
    assert dict(on_311.pins())["delta-thing"] == "0.1"  # Delta.Thing -> delta-thing


def test_a_later_extra_expands_a_visited_distribution(site: Path) -> None:
    closure = resolve_closure(roots("gamma", "alpha-pkg"), PY311, DistIndex([str(site)]))

    assert "zeta" in closure.nodes  # gamma was visited without extras first


def test_a_missing_distribution_is_named_with_who_needs_it_and_what_to_do(site: Path) -> None:
    fake_dist(site, "needy", "1.0", "ghost-dist>=1")

    closure = resolve_closure(roots("needy"), PY311, DistIndex([str(site)]))

    assert closure.missing == (Missing("ghost-dist>=1", "needy"),)
    message = closure.missing[0].message()
    assert "\n" not in message
    assert message.startswith("ghost-dist (required by needy) is not installed")
    assert "pip install 'ghost-dist>=1'" in message


def test_a_requirement_only_the_image_needs_is_not_asked_to_be_installed_here(
    site: Path,
) -> None:
    fake_dist(site, "needy", "1.0", "ghost-dist; python_version < '3.11'")

    (missing,) = resolve_closure(roots("needy"), PY310, DistIndex([str(site)])).missing

    assert missing.image_only == (sys.version_info >= (3, 11))


def test_an_installed_version_outside_a_dependency_range_is_a_conflict(site: Path) -> None:
    fake_dist(site, "picky", "1.0", "beta<2")

    (conflict,) = resolve_closure(roots("picky"), PY311, DistIndex([str(site)])).conflicts

    assert conflict.message().startswith("beta==2.5 is installed but picky requires beta<2")


def test_the_serve_extra_of_nbcd_names_the_serving_roots(site: Path) -> None:
    requires = [
        "matplotlib",
        "fastapi; extra == 'serve'",
        "tomli; extra == 'serve' and python_version < '3.11'",
        "pytest; extra == 'dev'",
    ]
    fake_dist(site, "nbcd", "0.1.0", *requires)
    index = DistIndex([str(site)])

    assert serve_requirements(index) == requires[1:3]  # neither the base nor another extra
    assert serve_requirements(DistIndex([str(site / "none")])) == list(SERVE_REQUIREMENTS)


def test_hashes_are_the_sha256_of_a_local_wheel_the_image_accepts(tmp_path: Path) -> None:
    house = tmp_path / "house"
    wheel = tiny_wheel(house, "tinypkg", "1.0")
    tiny_wheel(house, "tinypkg", "1.0", "cp311-cp311-macosx_11_0_arm64")  # not for Linux
    tiny_wheel(house, "tinypkg", "2.0")  # another version

    hashes = local_hashes([("tinypkg", "1.0"), ("other", "1.0")], PY311, [house])

    assert hashes == {"tinypkg": [hashlib.sha256(wheel.read_bytes()).hexdigest()]}


@pytest.fixture
def project(tmp_path: Path, site: Path) -> Path:
    """A project needing tinypkg, with nbcd and tinypkg installed in a fake site."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.nbcd]\n')
    (root / "requirements.txt").write_text("TinyPkg>=0.5\n")
    fake_dist(site, "tinypkg", "1.0")
    fake_dist(site, "nbcd", "0.1.0", "matplotlib", "tinypkg; extra == 'serve'")
    fake_dist(site, "matplotlib", "3.9.0")
    save_small_model(root / "model")
    return root


def locks_of(project: Path, site: Path, house: Path, nbcd_wheel: Path | None = None) -> Locks:
    return write_locks(
        load_config(project),
        model_dir=project / "model",
        nbcd_wheel=nbcd_wheel,
        target=PY311,
        wheel_folders=[house],
        index=DistIndex([str(site)]),
    )


def test_a_lock_with_every_wheel_at_hand_is_hashed_and_pip_accepts_it(
    project: Path, site: Path, tmp_path: Path
) -> None:
    house = tmp_path / "house"
    tiny = tiny_wheel(house, "tinypkg", "1.0")
    tiny_wheel(house, "matplotlib", "3.9.0")
    nbcd_wheel = tiny_wheel(project / "wheels", "nbcd", "0.1.0")

    locks = locks_of(project, site, house, nbcd_wheel)

    assert locks.serving.hashed and locks.analysis.hashed
    assert lock_pins(locks.serving.text) == ["tinypkg==1.0", "./wheels/nbcd-0.1.0-py3-none-any.whl"]
    assert f"--hash=sha256:{hashlib.sha256(tiny.read_bytes()).hexdigest()}" in locks.serving.text
    assert "matplotlib" not in locks.serving.text  # nbcd's base requirement: analysis only
    assert "matplotlib==3.9.0" in lock_pins(locks.analysis.text)
    (project / "requirements-serve.lock").write_text(locks.serving.text)
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--require-hashes", "--quiet"]
    offline = ["--no-index", "--find-links", str(house), "--target", str(tmp_path / "image")]
    done = subprocess.run(
        [*pip, *offline, "-r", "requirements-serve.lock"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "image" / "tinypkg" / "__init__.py").is_file()


def test_a_lock_missing_one_wheel_has_no_hashes_and_says_why(
    project: Path, site: Path, tmp_path: Path
) -> None:
    house = tmp_path / "house"
    tiny_wheel(house, "tinypkg", "1.0")

    lock = locks_of(project, site, house).serving  # no nbcd wheel anywhere

    assert not lock.hashed and lock.unhashed == ("nbcd",)
    assert "--hash" not in lock.text  # pip checks every pin's hash or none
    assert "no local wheel of 1 of 2 pins (nbcd)" in " ".join(lock.text.split())
    assert "pip install --no-deps -r requirements-serve.lock" in lock.text


def test_a_missing_project_dependency_fails_the_build_with_one_line(
    project: Path, site: Path, tmp_path: Path
) -> None:
    fake_dist(site, "tinypkg-helper", "1.0")
    (project / "requirements.txt").write_text("tinypkg-helper\nabsent-one\n")

    locks = locks_of(project, site, tmp_path)

    (finding,) = [f for f in locks.findings if f.code == "BLD001"]
    assert (finding.path, finding.line, finding.severity) == ("requirements.txt", 2, "error")
    assert finding.message.startswith("absent-one is not installed")


def test_the_image_python_comes_from_the_dockerfile() -> None:
    bullseye = Target.from_dockerfile("FROM python:3.12.1-slim-bullseye AS base\nRUN true\n")
    assert (bullseye.python_version, bullseye.glibc_minor) == ("3.12.1", 31)
    assert Target.from_dockerfile("FROM ubuntu:24.04\n") == Target.image()
    assert Target.image("3.11.7").environment()["python_version"] == "3.11"


def test_download_wheels_drops_what_pip_cannot_find_and_fetches_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def pip_download(specs: list[str], target: Target, folder: Path) -> str | None:
        calls.append(specs)
        if "nowheel==1.0" in specs:
            return "ERROR: No matching distribution found for nowheel==1.0"
        for spec in specs:
            tiny_wheel(folder, *spec.split("=="))
        return None

    monkeypatch.setattr(nbcd.build.hashes, "_pip_download", pip_download)
    house = tmp_path / "house"
    tiny_wheel(house, "cached", "1.0")

    pins = [("cached", "1.0"), ("nowheel", "1.0"), ("fresh", "2.0")]
    result = download_wheels(pins, PY311, house)

    assert calls == [["nowheel==1.0", "fresh==2.0"], ["fresh==2.0"]]  # cached: not asked
    assert result.fetched == ("fresh==2.0",)
    assert result.failed == (
        "nowheel==1.0: ERROR: No matching distribution found for nowheel==1.0",
    )
    assert set(local_hashes(pins, PY311, [house])) == {"cached", "fresh"}
