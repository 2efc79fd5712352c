"""What travels with a notebook to a Dask worker, and what comes back.

**The layout.** A worker mirrors this machine's absolute paths under a folder of its own (a
*slot*): ``/home/u/proj/data/x.csv`` here is ``<slot>/home/u/proj/data/x.csv`` there, and the
kernel works in ``<slot>/home/u/proj/notebooks``. Every relative path a notebook uses
(``data.csv``, ``../build/model``, ``../../shared/data``) therefore resolves as it does here,
and the worker maps what the kernel recorded and the files it wrote back to these paths by
removing the slot's prefix (:func:`client_path`).

**Out.** What a notebook needs is known when the cache has a record of its last pass with the
same key (:class:`~nbcd.execute.dispatch.ExecutionRequest` ``inputs``): the files it read and
the local modules it imported, plus its declared inputs (``metadata.nbcd.inputs``), each with
its content and mtime; and the other files directly in each folder it listed, empty (a listing
shows the same names; the recorder saw that it read none of them). Without a record, the
project folder travels as one tar archive (:func:`project_archive`), made and sent to the
cluster once per run, without version control, virtual environments, caches and the build
folder. Declared inputs alone are not taken as the whole story: they exist for the reads the
recorder cannot see, not instead of it.

**Back.** Every file created or changed under the slot while the notebook ran comes back, and
is written here atomically at its own path (:func:`write_back`), as a local run would have
written it. Files a notebook deletes are not deleted here.

Each way is capped at ``$NBCD_CLUSTER_MAX_MB`` megabytes (default 256); past it the notebook
is an error naming the limit, not a slow transfer.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nbcd.cluster.connect import ClusterError
from nbcd.files import atomic_write_bytes

__all__ = [
    "EXCLUDED_NAMES",
    "MAX_MB_VAR",
    "Shipment",
    "client_path",
    "known_files",
    "max_bytes",
    "project_archive",
    "slot_path",
    "write_back",
]

MAX_MB_VAR = "NBCD_CLUSTER_MAX_MB"
_DEFAULT_MAX_MB = 256

#: Folder names the project archive leaves out: history, environments, tool caches.
EXCLUDED_NAMES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "node_modules",
        "__pycache__",
        ".ipynb_checkpoints",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".cache",
    }
)
#: Written by tools, not by the notebook: never sent back.
NOISE_NAMES = frozenset({"__pycache__", ".ipynb_checkpoints"})


def max_bytes() -> int:
    """How many bytes may travel each way for one notebook ($NBCD_CLUSTER_MAX_MB)."""
    raw = os.environ.get(MAX_MB_VAR, "").strip()
    try:
        megabytes = float(raw) if raw else _DEFAULT_MAX_MB
    except ValueError:
        raise ClusterError(f"{MAX_MB_VAR}={raw!r}: give a number of megabytes") from None
    return int(megabytes * 1024 * 1024)


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def too_big(what: str, size: int, limit: int) -> ClusterError:
    """The one-line error of a transfer over the limit."""
    return ClusterError(
        f"{what} is {_megabytes(size)}, more than the {_megabytes(limit)} that may travel to "
        f"or from a worker (raise {MAX_MB_VAR}, or run it once without --cluster so that the "
        "cache records which files it reads)"
    )


def slot_path(slot: Path, path: str | Path) -> Path:
    """Where this machine's absolute ``path`` lives under a worker's ``slot``."""
    return slot / Path(path).as_posix().lstrip("/")


def client_path(slot: Path, path: str) -> str:
    """A worker path under ``slot`` as the path here; any other path is left as it is."""
    prefix = str(slot).rstrip(os.sep) + os.sep
    return os.sep + path[len(prefix) :] if path.startswith(prefix) else path


@dataclass(frozen=True)
class Shipment:
    """The files one notebook takes along: ``{path here: (bytes, mtime_ns)}``."""

    files: dict[str, tuple[bytes, int]]

    @property
    def size(self) -> int:
        """Their total size in bytes."""
        return sum(len(data) for data, _ in self.files.values())


def known_files(paths: Iterable[Path]) -> dict[Path, bool]:
    """The files to send for recorded or declared paths: ``{file: whether its content goes}``.

    A file goes with its content; a folder with the files directly in it, empty unless they
    were read too, so that a listing shows the same names without sending what nobody read.
    A path that no longer exists travels as its absence.
    """
    found: dict[Path, bool] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(_files_in(path)):
                found.setdefault(child, False)
        elif path.is_file():
            found[path] = True
    return found


def _files_in(folder: Path) -> Iterator[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name not in NOISE_NAMES and entry.is_file():
            yield Path(entry.path)


def read_files(paths: Mapping[Path, bool], what: str, limit: int) -> Shipment:
    """Read the files to send (``{path: with content}``); over ``limit`` bytes is a ClusterError."""
    files: dict[str, tuple[bytes, int]] = {}
    total = 0
    for path, content in paths.items():
        try:
            stat = path.stat()
            total += stat.st_size if content else 0
            if total > limit:
                raise too_big(f"{what}: the files it reads", total, limit)
            files[str(path)] = (path.read_bytes() if content else b"", stat.st_mtime_ns)
        except OSError:
            continue  # gone since the listing: it travels as its absence
    return Shipment(files)


def project_archive(root: Path, exclude: Sequence[Path], limit: int) -> bytes:
    """The project folder as an uncompressed tar, names relative to ``root``.

    Leaves out :data:`EXCLUDED_NAMES` anywhere and the folders in ``exclude`` (the build
    folder). Symbolic links travel as links. Over ``limit`` bytes is a ClusterError.
    """
    skipped = {p.resolve() for p in exclude}
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if d not in EXCLUDED_NAMES and (here / d).resolve() not in skipped
            )
            for name in sorted(files):
                path = here / name
                try:
                    total += path.lstat().st_size
                except OSError:
                    continue
                if total > limit:
                    raise too_big(f"the project folder {root}", total, limit)
                archive.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


def write_back(files: Iterable[tuple[str, bytes]]) -> tuple[Path, ...]:
    """Write the files a notebook wrote on a worker here, each atomically; WriteError if not."""
    written = []
    for name, data in files:
        path = Path(name)
        # the worker made these from its slot; anything else is not a file it wrote
        if not path.is_absolute() or ".." in path.parts:
            continue
        atomic_write_bytes(path, data)
        written.append(path)
    return tuple(written)
