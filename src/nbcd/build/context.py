"""The build stage: a deployable Docker build context for the model a notebook trained.

``build_context`` assembles ``<build_dir>/docker/`` in a temporary folder beside it and swaps
the whole folder in at the end, so a failed build leaves the previous context untouched
(wheels/ and site/ always exist, with a README.txt when there is nothing to put there)::

    Dockerfile          the project's own, or one generated from a template
    requirements.lock   what the notebooks ran with: the project's requirements and nbcd, the
                        whole dependency closure at the versions installed here (lock.py)
    requirements-serve.lock   what serving the model needs, closure and versions alike: the
                        generated Dockerfile installs only this one
    requirements.txt    the project's file as written (a project Dockerfile may copy it)
    wheels/             an nbcd wheel when nbcd is installed from a source folder or a wheel
    model/              the model artifact (model.skops + model.json)
    serve               the entry point SageMaker calls: `docker run IMAGE serve`
    site/               the report site, when `nbcd report` made one
    pyproject.toml, README.md, src/    the project's package, when it has one

Then hadolint checks the Dockerfile (through the lint stage) and ``docker build`` runs when a
Docker daemon answers. Findings of this stage, besides the lint stage's own codes:

    BLD001  error    a requirement (or one of its dependencies) is not installed, so its
                     version cannot be locked
    BLD002  warning  the installed version does not satisfy the requirement as written
    BLD003  warning  a requirements line that cannot be pinned (a path, an unknown option)
    BLD004  error    a file the project's Dockerfile copies is neither built nor in the project
    BLD005  warning  the image's Python (its FROM line) is not the one the notebooks ran on
    BLD006  warning  --download-wheels found no wheel of a pin for the image
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nbcd.build.closure import Target
from nbcd.build.hashes import wheelhouses
from nbcd.build.lock import Locks, write_locks
from nbcd.build.wheel import nbcd_wheel, wheel_cache
from nbcd.config import Config
from nbcd.errors import ModelError, UsageError
from nbcd.files import (
    IGNORED_ON_COPY,
    atomic_write_text,
    file_sha256,
    files_under,
    load_json,
    replace_folder,
)
from nbcd.lint.dockerfile import dockerfile_copy_sources
from nbcd.lint.engine import lint_options, lint_paths
from nbcd.lint.findings import Finding
from nbcd.model import METADATA_FILE, MODEL_FILE
from nbcd.notebook import display_path
from nbcd.templating import text_template

__all__ = [
    "BuildResult",
    "build_context",
    "default_tag",
    "docker_available",
    "render_dockerfile",
]

TEMPLATES = Path(__file__).parent / "templates"
DOCKER_INFO_TIMEOUT_S = 5.0
DOCKER_BUILD_TIMEOUT_S = 3600.0
# Copied trees never need these: caches, build leftovers, half-written files (".name.tmp").
# Files of a project that `pip install .` may need beside pyproject.toml and src/.
_PACKAGE_FILES = ("README*", "LICENSE*", "COPYING*", "NOTICE*", "setup.py", "setup.cfg")
_TAG = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?"  # an optional registry host
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::\w[\w.-]{0,127})?$"
)


@dataclass(frozen=True)
class BuildResult:
    """What one build did: the context it assembled, what it found, whether an image exists."""

    context: Path  # the build context folder (default <build_dir>/docker)
    dockerfile: Path  # the Dockerfile inside the context
    generated: bool  # True when nbcd wrote the Dockerfile, False for the project's own
    files: tuple[str, ...]  # every file of the context, relative, sorted
    findings: tuple[Finding, ...]  # hadolint and build findings
    docker_built: bool  # True when `docker build` made the image
    image: str  # the image tag, built or to build
    message: str  # one line saying what happened and what to do next
    ok: bool  # False on an error-level finding or a failed `docker build`
    duration_s: float
    model: Path  # the model folder that was copied into the context
    wheel: Path | None = None  # the nbcd wheel shipped in wheels/, if any
    locks: Locks | None = None  # requirements.lock and requirements-serve.lock, as written


def build_context(
    config: Config,
    *,
    out_dir: Path | None = None,
    model: Path | None = None,
    require_docker: bool = False,
    tag: str | None = None,
    wheel: bool = True,
    docker: bool = True,
    download_wheels: bool = False,
) -> BuildResult:
    """Assemble the deployable build context, lint its Dockerfile, and build the image.

    ``model`` overrides the model folder found from the project's runs; ``wheel=False`` skips
    building an nbcd wheel; ``docker=False`` never calls Docker; ``download_wheels`` fetches
    the image's wheel of every pin into nbcd's wheelhouse first (PyPI), so that the locks are
    hashed. Raises UsageError (no model, bad tag, Docker required but not running) or
    ModelError (an incomplete model folder).
    """
    started = time.perf_counter()
    root = config.root.resolve()
    target = (out_dir or config.build_dir / "docker").resolve()
    if target == root or target in root.parents:
        raise UsageError(f"{target}: the build context cannot be the project folder or above it")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file; remove it or pass another output folder")
    image = tag or default_tag(config)
    if not _TAG.match(image):
        raise UsageError(f"{image!r} is not a valid image tag (e.g. my-model:0.1.0)")
    daemon = docker and docker_available() if require_docker else None
    if require_docker and not daemon:
        raise UsageError(
            "docker build needs a running Docker daemon and `docker info` did not answer; "
            "start Docker, or build the context only (without requiring Docker)"
        )
    model_dir = _find_model(config, model)

    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        generated, wheel_path, locks, findings = _assemble(
            config, staged, model_dir, wheel=wheel, download=download_wheels
        )
        report = lint_paths(
            [staged / "Dockerfile"],
            lint_options(config, use_ruff=False),
            root,
        )
        # hadolint's findings point at the file to edit: the project's own, or the generated one
        shown = display_path(target / "Dockerfile" if generated else root / "Dockerfile", root)
        findings += [replace(f, path=shown) for f in report.findings]
        replace_folder(staged, target)
    except OSError as exc:
        raise UsageError(f"cannot assemble the build context in {target}: {exc}") from None
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)

    files = tuple(sorted(p.relative_to(target).as_posix() for p in files_under(target)))
    errors = sum(f.severity == "error" for f in findings)
    where = display_path(target, root)
    docker_built = False
    if errors:
        ok = False
        message = (
            f"built the context in {where}, but found {errors} error"
            f"{'s' * (errors != 1)}; fix them, then build again (no image was built)"
        )
    elif not docker:
        ok = True
        message = (
            f"built the context in {where}; build the image with `docker build -t {image} {where}`"
        )
    elif not (daemon if daemon is not None else docker_available()):
        ok = True
        message = (
            f"built the context in {where}; no Docker daemon answers here, so no image was "
            f"built: run `docker build -t {image} {where}` where Docker runs"
        )
    else:
        ok, message = _docker_build(target, image, where)
        docker_built = ok
    return BuildResult(
        context=target,
        dockerfile=target / "Dockerfile",
        generated=generated,
        files=files,
        findings=tuple(findings),
        docker_built=docker_built,
        image=image,
        message=message,
        ok=ok,
        duration_s=time.perf_counter() - started,
        model=model_dir,
        wheel=target / "wheels" / wheel_path.name if wheel_path else None,
        locks=locks,
    )


# --- the context ----------------------------------------------------------------------------


def _assemble(
    config: Config, staged: Path, model_dir: Path, *, wheel: bool, download: bool
) -> tuple[bool, Path | None, Locks, list[Finding]]:
    """Fill ``staged`` with the context; return (Dockerfile generated, wheel, locks, findings)."""
    root = config.root.resolve()
    (staged / "wheels").mkdir()
    wheel_path = nbcd_wheel(config, staged / "wheels") if wheel else None
    if wheel_path is None:
        _placeholder(staged / "wheels", "No nbcd wheel: the image installs nbcd from PyPI.")
    own = root / "Dockerfile"
    # the locks' markers and wheel tags are the image's: the project Dockerfile's FROM line
    # names its Python; the generated one runs this Python
    own_text = own.read_text(encoding="utf-8", errors="replace") if own.is_file() else ""
    target = Target.from_dockerfile(own_text) if own_text else Target.image()
    cache = wheel_cache(config)
    locks = write_locks(
        config,
        model_dir=model_dir,
        nbcd_wheel=wheel_path,
        target=target,
        wheel_folders=wheelhouses(cache),
        download_to=cache / "pypi" if download else None,
    )
    findings = list(locks.findings)
    for lock in (locks.analysis, locks.serving):
        atomic_write_text(staged / lock.name, lock.text)
    if (root / "requirements.txt").is_file():
        shutil.copy2(root / "requirements.txt", staged / "requirements.txt")

    shutil.copytree(model_dir, staged / "model", ignore=IGNORED_ON_COPY)
    site = config.build_dir / "site"
    if site.is_dir():
        shutil.copytree(site, staged / "site", ignore=IGNORED_ON_COPY)
    else:
        _placeholder(staged / "site", "No report site: run `nbcd report` before `nbcd build`.")
    package_files = _copy_package(root, config.project, staged)
    serve = staged / "serve"
    serve.write_text(text_template(TEMPLATES, "serve.j2").render(), encoding="utf-8")
    serve.chmod(0o755)  # COPY keeps the mode: the entry point must be executable

    if own_text:
        shutil.copy2(own, staged / "Dockerfile")
        findings += _mirror_copy_sources(config, staged, model_dir)
        return False, wheel_path, locks, findings
    text = render_dockerfile(
        project=config.name,
        package_files=package_files,
        require_hashes=locks.serving.hashed,
    )
    atomic_write_text(staged / "Dockerfile", text)
    return True, wheel_path, locks, findings


def render_dockerfile(
    *, project: str, package_files: list[str] | None = None, require_hashes: bool = False
) -> str:
    """The Dockerfile nbcd generates for a context laid out as ``build_context`` makes it.

    ``package_files`` are the files beside ``src/`` that `pip install .` needs (pyproject.toml
    first); empty or None for a project without an installable package. ``require_hashes``
    when every pin of requirements-serve.lock is hashed (pip turns hash checking on by itself
    for a hashed lock; the flag makes a lock that lost its hashes fail loudly).
    """
    return text_template(TEMPLATES, "Dockerfile.j2").render(
        project=project,
        python_version=platform.python_version(),
        package_files=package_files or [],
        require_hashes=require_hashes,
    )


def _find_model(config: Config, model: Path | None) -> Path:
    """The model folder: the given one, else the first run artifact folder with model.json."""
    if model is not None:
        folder = model.resolve()
        folder = folder.parent if folder.is_file() else folder
        if not folder.is_dir():
            raise UsageError(f"{model}: no such model folder; run `nbcd run` to train it first")
        _check_model(folder)
        return folder
    candidates: list[Path] = []
    for run in config.runs:
        for artifact in run.artifacts:
            candidates.append(artifact if artifact.suffix == "" else artifact.parent)
    candidates.append(config.build_dir / "model")
    for folder in dict.fromkeys(candidates):
        if (folder / METADATA_FILE).is_file():
            _check_model(folder)
            return folder.resolve()
    shown = ", ".join(display_path(c, config.root) for c in dict.fromkeys(candidates))
    raise UsageError(
        f"no model found (looked for {METADATA_FILE} in {shown}): run `nbcd run` first, "
        "or pass the model folder"
    )


def _check_model(folder: Path) -> None:
    for name in (MODEL_FILE, METADATA_FILE):
        if not (folder / name).is_file():
            raise ModelError(
                f"{folder} has no {name}: it is not a complete model artifact; "
                "run `nbcd run` to save the model again"
            )
    try:
        metadata = load_json((folder / METADATA_FILE).read_bytes(), folder / METADATA_FILE)
    except (OSError, ValueError) as exc:  # JSONFileError is a ValueError
        raise ModelError(f"{folder / METADATA_FILE} is not readable JSON ({exc})") from None
    expected = metadata.get("model_sha256") if isinstance(metadata, dict) else None
    if expected is not None and expected != file_sha256(folder / MODEL_FILE):
        raise ModelError(
            f"{folder / MODEL_FILE} does not match the checksum in {METADATA_FILE}: "
            "they come from different saves; run `nbcd run` to save the model again"
        )


def _copy_package(root: Path, project: dict[str, Any], staged: Path) -> list[str]:
    """Copy an installable project package (a [project] table and src/); return its files."""
    if not project or not (root / "src").is_dir():
        return []
    shutil.copytree(root / "src", staged / "src", ignore=IGNORED_ON_COPY)
    copied = ["pyproject.toml"]
    shutil.copy2(root / "pyproject.toml", staged / "pyproject.toml")
    for pattern in _PACKAGE_FILES:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                shutil.copy2(path, staged / path.name)
                copied.append(path.name)
    return copied


def _mirror_copy_sources(config: Config, staged: Path, model_dir: Path) -> list[Finding]:
    """Make the paths a project's Dockerfile copies exist in the context.

    A Dockerfile written for `docker build .` in the project root copies paths such as
    build/model or build/wheels: those become copies of the context's model/ and wheels/;
    other project files are copied as they are. A source found nowhere is a BLD004 error.
    """
    root = config.root.resolve()
    build_dir = config.build_dir.resolve()
    aliases = {model_dir: staged / "model", build_dir / "wheels": staged / "wheels"}
    aliases[build_dir / "site"] = staged / "site"
    text = (staged / "Dockerfile").read_text(encoding="utf-8", errors="replace")
    shown = display_path(root / "Dockerfile", root)
    findings: list[Finding] = []
    for number, source in dockerfile_copy_sources(text):
        relative = source.lstrip("/").removeprefix("./").rstrip("/") or "."
        if any(staged.glob(relative)) if "*" in relative else (staged / relative).exists():
            continue
        origin = (root / relative).resolve()
        destination = staged / relative
        if not destination.resolve().is_relative_to(staged.resolve()):
            continue  # outside the context: docker reports it better than a guess here
        alias = aliases.get(origin)
        if alias is not None and alias.exists():
            shutil.copytree(alias, destination, ignore=IGNORED_ON_COPY)
        elif origin.is_dir():
            shutil.copytree(origin, destination, ignore=IGNORED_ON_COPY)
        elif origin.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)
        elif "*" in relative:
            for match in sorted(root.glob(relative)):
                if match.is_file():
                    copy = staged / match.relative_to(root)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(match, copy)
        else:
            message = (
                f"COPY source {source} is neither in the build context nor in the project; "
                "create it or change the Dockerfile"
            )
            findings.append(Finding(shown, "BLD004", message, None, number, 1, "error", "nbcd"))
    return findings


# --- Docker ---------------------------------------------------------------------------------


def docker_available(timeout: float = DOCKER_INFO_TIMEOUT_S) -> bool:
    """True when a `docker` client is on PATH and its daemon answers `docker info` in time."""
    client = shutil.which("docker")
    if client is None:
        return False
    try:
        done = subprocess.run(
            [client, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _docker_build(context: Path, image: str, where: str) -> tuple[bool, str]:
    """Run `docker build`; its full output goes to a log file beside the context."""
    log = context.with_name(f"{context.name}-build.log")
    client = shutil.which("docker") or "docker"
    try:
        done = subprocess.run(
            [client, "build", "--tag", image, str(context)],
            capture_output=True,
            text=True,
            timeout=DOCKER_BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"docker build of {where} ran longer than {DOCKER_BUILD_TIMEOUT_S:g}s"
    except OSError as exc:
        return False, f"docker build of {where} could not start: {exc}"
    atomic_write_text(log, done.stdout + done.stderr)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        last = output[-1] if output else "no output"
        return False, f"docker build failed (exit {done.returncode}): {last}; see {log}"
    return True, f"built image {image} from {where}; try it: docker run --rm -p 8080:8080 {image}"


# --- helpers --------------------------------------------------------------------------------


def default_tag(config: Config) -> str:
    """``<project name>:<version>`` from pyproject.toml, made a valid Docker tag."""
    project = config.project
    name = re.sub(r"[^a-z0-9]+", "-", config.name.lower()).strip("-") or "model"
    version = re.sub(r"[^\w.-]", "-", str(project.get("version") or "latest"))
    return f"{name}:{version[:128]}"


def _placeholder(folder: Path, text: str) -> None:
    """A note in a folder that would be empty: the Dockerfile copies every folder it knows."""
    folder.mkdir(exist_ok=True)
    (folder / "README.txt").write_text(text + "\n", encoding="utf-8")
