"""What the build context pins: requirements.lock and, for nbcd from source, an nbcd wheel.

Each requirement of the project is pinned to the version installed here (the environment the
notebooks ran and passed in); nbcd itself is pinned too, or shipped as a wheel when it is
installed from a source folder, so that the image runs the nbcd the project was checked with.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from nbcd.config import Config
from nbcd.errors import UsageError
from nbcd.files import IGNORED_ON_COPY, files_under
from nbcd.lint.findings import Finding
from nbcd.notebook import display_path

__all__ = ["installed_pins", "installed_version", "lock_requirements", "nbcd_wheel"]

WHEEL_TIMEOUT_S = 300.0

# --- requirements ---------------------------------------------------------------------------


def lock_requirements(config: Config, nbcd_line: str) -> tuple[str, list[Finding]]:
    """requirements.lock: each requirement pinned to its installed version, then nbcd."""
    root = config.root.resolve()
    source = root / "requirements.txt"
    lines: list[str] = []
    findings: list[Finding] = []
    if source.is_file():
        header = "the project's requirements.txt"
        entries = list(_requirement_lines(source, root, set()))
    else:
        header = "the dependencies in the project's pyproject.toml"
        dependencies = config.project.get("dependencies", [])
        entries = [(display_path(root / "pyproject.toml", root), 0, str(d)) for d in dependencies]
    for shown, number, text in entries:
        line, problem = _pin(text, shown, number)
        if problem is not None:
            findings.append(problem)
        if line:
            lines.append(line)
    head = [
        f"# Written by `nbcd build` from {header}:",
        "# every requirement pinned to the version installed where the notebooks ran, then nbcd.",
    ]
    return "\n".join([*head, *lines, nbcd_line]) + "\n", findings


def _requirement_lines(path: Path, root: Path, seen: set[Path]) -> Iterator[tuple[str, int, str]]:
    """(file shown, line number, text) of each requirement, following -r includes."""
    seen.add(path.resolve())
    shown = display_path(path, root)
    continued = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if raw.rstrip().endswith("\\"):
            continued += raw.rstrip()[:-1] + " "
            continue
        text = re.sub(r"(^|\s)#.*$", "", continued + raw).strip()
        continued = ""
        include = re.match(r"^(?:-r|--requirement)(?:\s+|=)(\S+)$", text)
        if include:
            nested = (path.parent / include.group(1)).resolve()
            if nested not in seen and nested.is_file():
                yield from _requirement_lines(nested, root, seen)
            continue
        if text:
            yield shown, number, text


def _pin(text: str, shown: str, number: int) -> tuple[str | None, Finding | None]:
    """One requirement pinned to its installed version, or why it cannot be."""

    def finding(code: str, severity: str, message: str) -> Finding:
        line, column = (number, 1) if number else (None, None)
        return Finding(shown, code, message, None, line, column, severity, "nbcd")

    if text.startswith(("-e", "--editable", ".", "/")) or re.match(r"^-c|^--constraint", text):
        # the project itself (installed from src/ by the Dockerfile) or a local folder
        return None, finding("BLD003", "warning", f"not locked: {text} (a local path)")
    if text.startswith("-"):
        return text, None  # an index or pip option: pip in the image needs it as written
    spec = re.sub(r"\s--?[A-Za-z].*$", "", text).strip()  # per-requirement --hash options
    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        return text, finding("BLD003", "warning", f"not locked: {text} (not a requirement)")
    if requirement.url is not None:
        return text, None  # pinned by its URL already
    if canonicalize_name(requirement.name) == "nbcd":
        return None, None  # the lock ends with nbcd, as a wheel or a pin
    if requirement.marker is not None and not requirement.marker.evaluate():
        return text, None  # not for this machine; pip in the image decides
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        message = (
            f"{requirement.name} is not installed, so its version cannot be locked: "
            "install the project's requirements, run the notebooks, then build again"
        )
        return text, finding("BLD001", "error", message)
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker is not None else ""
    pinned = f"{requirement.name}{extras}=={version}{marker}"
    if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
        message = (
            f"{requirement.name}=={version} is installed but {spec} is required; "
            "the lock pins the installed version"
        )
        return pinned, finding("BLD002", "warning", message)
    return pinned, None


def installed_pins(names: list[str]) -> list[str]:
    """``name==version`` for each installed distribution; UsageError names the missing ones."""
    pins, missing = [], []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UsageError(f"not installed: {', '.join(missing)}; pip install them and try again")
    return pins


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "0"


# --- the nbcd wheel -------------------------------------------------------------------------


def _nbcd_source() -> tuple[Path | None, Path | None]:
    """(source folder, wheel file) nbcd was installed from; (None, None) for an index."""
    try:
        text = importlib.metadata.distribution("nbcd").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None, None
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return None, None
    url = urlparse(str(data.get("url", "")))
    if url.scheme != "file":
        return None, None
    path = Path(unquote(url.path))
    if "dir_info" in data and path.is_dir():
        return path, None
    if path.suffix == ".whl" and path.is_file():
        return None, path
    return None, None


def nbcd_wheel(config: Config, wheels: Path) -> Path | None:
    """Put an nbcd wheel in ``wheels`` when nbcd is not installed from an index.

    Wheels are cached in the user's cache folder (``NBCD_CACHE_DIR``, else platformdirs'
    user cache, ``nbcd/wheels``) by a hash of the source, so only a changed nbcd is built
    again, also after the build folder is cleaned (a build takes seconds: pip sets up
    setuptools). A cache that cannot be written falls back to the build folder.
    """
    source, wheel_file = _nbcd_source()
    if wheel_file is not None:
        return Path(shutil.copy2(wheel_file, wheels / wheel_file.name))
    if source is None:
        return None
    with tempfile.TemporaryDirectory(prefix="nbcd-source-") as tmp:
        # pip builds in the source folder (setuptools writes build/ there): use a copy
        copy = Path(tmp) / "nbcd"
        shutil.copytree(source / "src", copy / "src", ignore=IGNORED_ON_COPY)
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith("."):
                shutil.copy2(path, copy / path.name)
        cache = _wheel_cache(config) / _tree_hash(copy)
        cached = sorted(cache.glob("nbcd-*.whl"))
        if not cached:
            _pip_wheel(copy, cache)
            cached = sorted(cache.glob("nbcd-*.whl"))
        if not cached:
            raise UsageError(f"pip wheel made no nbcd wheel from {source}")
    return Path(shutil.copy2(cached[-1], wheels / cached[-1].name))


def _wheel_cache(config: Config) -> Path:
    """Where built nbcd wheels are kept across builds and build folders."""
    configured = os.environ.get("NBCD_CACHE_DIR")
    if configured:
        return Path(configured) / "wheels"
    import platformdirs

    folder = platformdirs.user_cache_path("nbcd") / "wheels"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return config.build_dir / "nbcd" / "cache" / "wheels"
    return folder


def _pip_wheel(source: Path, cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheel.", dir=cache.parent))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir"]
    try:
        done = subprocess.run(
            [*command, str(staging), str(source)],
            capture_output=True,
            text=True,
            timeout=WHEEL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"pip wheel could not build nbcd from its source: {last}")
        if not cache.exists():  # a concurrent build may have made it meanwhile
            os.replace(staging, cache)  # a cache entry appears whole or not at all
    except subprocess.TimeoutExpired:
        raise UsageError(f"pip wheel did not build nbcd within {WHEEL_TIMEOUT_S:g}s") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256(platform.python_version().encode())
    for path in sorted(files_under(folder)):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
