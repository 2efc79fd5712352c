"""The nbcd the image runs: a wheel of the nbcd the project was checked with.

When nbcd is installed from a source folder (an editable or a local install) or from a wheel
file, the build context ships that nbcd as a wheel in wheels/, so the image runs exactly it;
an nbcd installed from an index is pinned by version instead (see lock.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from nbcd.config import Config
from nbcd.errors import UsageError
from nbcd.files import IGNORED_ON_COPY, files_under

__all__ = ["nbcd_wheel", "wheel_cache"]

WHEEL_TIMEOUT_S = 300.0


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
        cache = wheel_cache(config) / _tree_hash(copy)
        cached = sorted(cache.glob("nbcd-*.whl"))
        if not cached:
            _pip_wheel(copy, cache)
            cached = sorted(cache.glob("nbcd-*.whl"))
        if not cached:
            raise UsageError(f"pip wheel made no nbcd wheel from {source}")
    return Path(shutil.copy2(cached[-1], wheels / cached[-1].name))


def wheel_cache(config: Config) -> Path:
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
