"""``--hash=sha256:`` values for locked pins, from wheel files on this machine.

A hash in a lock must be the hash of the file the image's pip installs, so it is computed
from a wheel file only: never from an installed distribution's RECORD (that hashes the
unpacked files), never from pip's HTTP cache (opaque, and evicted at will). A wheel counts
for a pin when its name and version are the pin's and one of its tags is one the image's pip
accepts (:meth:`Target.wheel_tags`); pip in hash-checking mode then installs that very file.

The wheels are looked for in local wheelhouses (:func:`wheelhouses`). ``download_wheels``
(opt-in, the network) fills nbcd's own wheelhouse with ``pip download`` for the image's
platform, once per version: the next builds hash from it offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.utils import InvalidWheelFilename, NormalizedName, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from nbcd.build.closure import Target

__all__ = ["DownloadResult", "download_wheels", "local_hashes", "wheel_sha256", "wheelhouses"]

DOWNLOAD_TIMEOUT_S = 900.0
WHEELHOUSE_ENV = "NBCD_WHEELHOUSE"
_HREF = re.compile(r"""href=["']([^"']+)["']""", re.IGNORECASE)


def wheelhouses(cache: Path) -> list[Path]:
    """The local places a lock's hashes come from, in order.

    ``$NBCD_WHEELHOUSE`` (folders separated by ``os.pathsep``); pip's own local sources, as
    ``pip config list`` shows them: ``find-links`` folders and ``file://`` indexes (a
    mirror's simple/ folder, whose pages link to the wheel files); and ``<cache>/pypi``,
    where ``download_wheels`` puts what it fetches.
    """
    folders = [Path(p) for p in os.environ.get(WHEELHOUSE_ENV, "").split(os.pathsep) if p]
    for link in _pip_locations():
        url = urlparse(link)
        if url.scheme in ("", "file"):
            folders.append(Path(unquote(url.path)))
    folders.append(cache / "pypi")
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


def _pip_locations() -> list[str]:
    """pip's find-links, index-url and extra-index-url values, from every place pip reads."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    locations: list[str] = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.rpartition(".")[2] in ("find-links", "index-url", "extra-index-url"):
            locations += shlex.split(value.strip().strip("'\""))
    return locations


def local_hashes(
    pins: Iterable[tuple[NormalizedName, str]], target: Target, folders: Iterable[Path]
) -> dict[NormalizedName, list[str]]:
    """{name: sorted sha256 hex digests} of the local wheels pip in the target would accept
    for each pinned (name, version); pins without such a wheel are absent.

    A folder is a wheelhouse (``*.whl`` in it) or a simple index (``<name>/index.html``
    linking to wheel files); each digest is computed from the file itself.
    """
    wanted: dict[NormalizedName, Version] = {}
    for name, version in pins:
        try:
            wanted[name] = Version(version)
        except InvalidVersion:
            continue  # no wheel file carries a legacy version
    accepted = target.wheel_tags()
    found: dict[NormalizedName, set[str]] = {}
    for folder in folders:
        for path in _wheel_files(folder, wanted):
            try:
                name, release, _, tags = parse_wheel_filename(path.name)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            if wanted.get(name) == release and tags & accepted and path.is_file():
                found.setdefault(name, set()).add(wheel_sha256(path))
    return {name: sorted(digests) for name, digests in found.items()}


def _wheel_files(folder: Path, names: Iterable[NormalizedName]) -> list[Path]:
    """The wheel files of a wheelhouse folder, and those a simple index there links to."""
    paths = sorted(folder.glob("*.whl"))
    for name in names:
        page = folder / name / "index.html"
        if page.is_file():
            text = page.read_text(encoding="utf-8", errors="replace")
            for href in _HREF.findall(text):
                link = unquote(urlparse(href).path)
                if link.endswith(".whl"):
                    paths.append((page.parent / link).resolve())
    return paths


def wheel_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in blocks (wheels reach hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DownloadResult:
    """What ``download_wheels`` fetched into the wheelhouse, and what it could not."""

    folder: Path
    fetched: tuple[str, ...]  # "name==version" of each pin downloaded now
    failed: tuple[str, ...]  # "name==version: reason" of each pin pip found no wheel for


def download_wheels(
    pins: Iterable[tuple[NormalizedName, str]], target: Target, folder: Path
) -> DownloadResult:
    """``pip download`` the target's wheel of each pin not yet in ``folder`` (needs PyPI).

    One pip call for all of them; when it fails (one pin has no wheel for the image), one
    call per pin, so every pin that can be fetched is, and the others are named.
    """
    pins = list(pins)
    folder.mkdir(parents=True, exist_ok=True)
    have = local_hashes(pins, target, [folder])
    specs = [f"{name}=={version}" for name, version in pins if name not in have]
    if not specs:
        return DownloadResult(folder, (), ())
    failed: list[str] = []
    batch = list(specs)
    while batch:
        problem = _pip_download(batch, target, folder)
        if problem is None:
            break
        # pip resolves every requirement before it downloads any, so the one it names is
        # dropped and the rest asked again; a failure naming none is tried pin by pin
        named = [spec for spec in batch if _names(problem, spec)]
        if not named:
            for spec in batch:
                alone = _pip_download([spec], target, folder)
                if alone is not None:
                    failed.append(f"{spec}: {alone}")
            break
        failed += [f"{spec}: {problem}" for spec in named]
        batch = [spec for spec in batch if spec not in named]
    gone = {entry.partition(": ")[0] for entry in failed}
    fetched = tuple(spec for spec in specs if spec not in gone)
    return DownloadResult(folder, fetched, tuple(failed))


def _names(problem: str, spec: str) -> bool:
    """Whether pip's error line is about this ``name==version``."""
    return re.search(rf"(?<![\w.-]){re.escape(spec)}(?![\w.])", problem, re.IGNORECASE) is not None


def _pip_download(specs: list[str], target: Target, folder: Path) -> str | None:
    """Run pip download for the image's platform; None on success, else pip's last line."""
    major, minor = target.python_minor
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--quiet", "--dest", str(folder)]
    command += ["--python-version", f"{major}.{minor}", "--implementation", "cp"]
    for abi in (f"cp{major}{minor}", "abi3", "none"):
        command += ["--abi", abi]
    for name in target.platforms():
        command += ["--platform", name]
    try:
        done = subprocess.run(
            [*command, *specs],
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"pip download ran longer than {DOWNLOAD_TIMEOUT_S:g}s"
    except OSError as exc:
        return f"pip download could not start: {exc}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"pip download exited {done.returncode}"
