"""Safe file and folder writes: a reader sees the old content or the new, never half of it.

A file is written to a temporary file beside it, synced, and moved into place with
``os.replace``; a folder is staged beside its target and swapped in whole. Written files keep
the mode of the file they replace, or get the usual one (0666 less the umask), not the
owner-only mode ``tempfile`` gives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "file_sha256",
    "replace_folder",
]


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", *, newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a file that replaces ``path`` only if the block completes; text is UTF-8.

    ``mode`` is "w" or "wb"; ``newline`` is open()'s, for text. Parent folders are created.
    """
    if mode not in ("w", "wb") or (mode == "wb" and newline is not None):
        raise ValueError(f"atomic_writer takes mode 'w' (text) or 'wb' (bytes), not {mode!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if mode == "wb" else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path as UTF-8, atomically, with its newlines as given."""
    with atomic_writer(path, "w", newline="") as handle:
        handle.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path atomically."""
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


def replace_folder(staged: Path, target: Path) -> None:
    """Move the finished folder ``staged`` to ``target``, replacing any folder there whole.

    ``staged`` must be beside ``target`` (one file system). It gets the usual folder mode,
    0777 less the umask. If the swap fails, the previous folder is put back.
    """
    os.chmod(staged, 0o777 & ~_umask())  # mkdtemp made it owner-only; the result is shared
    if not target.exists():
        os.replace(staged, target)
        return
    # rename() cannot replace a non-empty folder (nor, on Windows, an empty one), so the old
    # folder moves into a fresh one beside it first and is deleted once the new one is in place
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old = trash / target.name
    try:
        os.replace(target, old)
        try:
            os.replace(staged, target)
        except BaseException:
            os.replace(old, target)
            raise
    except BaseException:
        # the old folder is back in place unless putting it back failed; then it stays in trash
        if not old.exists():
            shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def file_sha256(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _umask() -> int:
    # os.umask is the only way to read it, and it sets it too: set it straight back
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what a copied source tree leaves behind: caches, build metadata, hidden files
IGNORED_ON_COPY = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")


def files_under(folder: Path) -> Iterator[Path]:
    """Every regular file below folder, at any depth."""
    return (p for p in folder.rglob("*") if p.is_file())
