"""Safe file and folder writes, and the one guarded JSON reader.

A file is written to a temporary file beside it, synced, and moved into place with
``os.replace``; a folder is staged beside its target and swapped in whole. Written files keep
the mode of the file they replace, or get the usual one (0666 less the umask), not the
owner-only mode ``tempfile`` gives.

Every OSError of a write here (the parent folders, the temporary file, the data, the swap)
becomes one :class:`~nbcd.errors.WriteError`, ``PATH: cannot write (reason)``: the partial
temporary file is removed and the previous file is untouched. :func:`writing` is the same
guard for code that makes its own folders.

:func:`load_json` parses JSON with a nesting limit, checked before the recursive parser runs,
so a hostile or broken file is one error naming it rather than a RecursionError.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from nbcd.errors import NbcdError, WriteError

__all__ = [
    "MAX_JSON_DEPTH",
    "JSONFileError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "file_sha256",
    "load_json",
    "not_a_folder",
    "read_text",
    "replace_folder",
    "writing",
]

#: Deepest nesting of arrays and objects load_json accepts. Real notebooks, summaries and
#: model metadata stay below 30; Python's parser, nbformat and deepcopy recurse per level.
MAX_JSON_DEPTH = 256


@contextlib.contextmanager
def writing(path: Path, *, only: str | None = None, folder: bool = False) -> Iterator[None]:
    """Turn an OSError raised in the block into a WriteError naming ``path``.

    With ``only`` (the temporary file being written), an OSError that names some other file
    passes through unchanged: the block may also read an input, and a failed read is not a
    failed write. ``folder`` says ``path`` is meant to be a folder, not a file.
    """
    try:
        yield
    except WriteError:
        raise  # already says which path and why
    except OSError as exc:
        if only is not None and exc.filename not in (None, only, os.fspath(path)):
            raise
        reason = _write_reason(exc, path, folder=folder)
        raise WriteError(path, reason, exc.errno) from exc


def _write_reason(exc: OSError, path: Path, *, folder: bool) -> str:
    """Why a write failed, in the user's terms: which path is in the way, else the OS's words."""
    blocker = not_a_folder(path if folder else path.parent)
    if blocker is not None:
        what = "a file" if os.path.isfile(blocker) else "something else"
        return f"{blocker} is {what}, not a folder"
    if not folder and os.path.isdir(path):
        return "it is a folder; give a file name"
    return exc.strerror or str(exc)


def not_a_folder(folder: Path) -> Path | None:
    """The first path on the way to ``folder`` (itself included) that exists but is not one.

    Why making ``folder`` fails with "File exists" or "Not a directory": a file is in the way.
    """
    for step in (*reversed(folder.parents), folder):
        # lexists: a dangling symlink is in the way too; os.path never raises here
        if os.path.lexists(step) and not os.path.isdir(step):
            return step
    return None


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", *, newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a file that replaces ``path`` only if the block completes; text is UTF-8.

    ``mode`` is "w" or "wb"; ``newline`` is open()'s, for text. Parent folders are created.
    Raises WriteError (nothing replaced, no temporary file left) when anything cannot be
    written: a parent is a file, ``path`` is a folder, the disk is full, permission is denied.
    """
    if mode not in ("w", "wb") or (mode == "wb" and newline is not None):
        raise ValueError(f"atomic_writer takes mode 'w' (text) or 'wb' (bytes), not {mode!r}")
    if os.path.isdir(path):
        # refuse before writing anything: os.replace would fail only after all the data
        raise WriteError(path, "it is a folder; give a file name", errno.EISDIR)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with writing(path, only=tmp):
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
        # the half-written file goes; if even that fails, the error that matters is the first
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
    0777 less the umask. If the swap fails, the previous folder is put back and WriteError
    names ``target``.
    """
    with writing(target, folder=True):
        _swap_folder(staged, target)


def _swap_folder(staged: Path, target: Path) -> None:
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


class JSONFileError(ValueError):
    """A JSON file nbcd will not parse: bad syntax, not UTF-8, or nested too deep.

    ``str()`` is one line naming the file. ``kind`` ("syntax", "encoding" or "depth"),
    ``msg`` (the parser's own words), ``lineno`` and ``colno`` let a caller word it its own
    way. A ValueError, as json.JSONDecodeError is, so existing handlers still catch it.
    """

    def __init__(self, where: object, kind: str, msg: str, lineno: int = 1, colno: int = 1) -> None:
        self.where = where
        self.kind = kind
        self.msg = msg
        self.lineno = lineno
        self.colno = colno
        super().__init__(f"{where}: {self.describe()}")

    @property
    def reason(self) -> str:
        """What is wrong, without the place: "not valid JSON: Expecting value", ..."""
        if self.kind == "depth":
            return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        if self.kind == "encoding":
            return "not UTF-8 text"
        return f"not valid JSON: {self.msg}"

    @property
    def place(self) -> str:
        """Where in the file: "line 2, column 5", or "byte 7" for text that is not UTF-8."""
        return self.msg if self.kind == "encoding" else f"line {self.lineno}, column {self.colno}"

    def describe(self) -> str:
        """What and where, without the file: "not valid JSON (line 1, column 2: Expecting ...)"."""
        if self.kind == "syntax":
            return f"not valid JSON ({self.place}: {self.msg})"
        return f"{self.reason} ({self.place})"

    @property
    def too_deep(self) -> bool:
        """Whether the JSON was refused for its nesting, not its syntax."""
        return self.kind == "depth"

    def __reduce__(self) -> tuple[type[JSONFileError], tuple[object, str, str, int, int]]:
        return (type(self), (self.where, self.kind, self.msg, self.lineno, self.colno))


# The characters that matter to nesting: brackets, and the quotes and backslashes that decide
# whether a bracket is inside a string. finditer skips the rest (base64 images, text) in C.
_SPECIAL = re.compile(r'[\[\]{}"\\]')


def load_json(text: str | bytes, where: object) -> Any:
    """``json.loads`` that refuses nesting deeper than MAX_JSON_DEPTH; errors name ``where``.

    The depth is checked by an iterative scan before parsing: Python's parser, and nbformat,
    deepcopy and jsonschema after it, recurse once per level and would die of RecursionError.
    Raises JSONFileError.
    """
    if isinstance(text, bytes):
        try:
            # what json.loads does with bytes: UTF-8, -16 or -32 by the first bytes
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        except UnicodeDecodeError as exc:
            raise JSONFileError(where, "encoding", f"byte {exc.start}") from None
    deep = _too_deep_at(text, MAX_JSON_DEPTH)
    if deep is not None:
        line, column = _line_and_column(text, deep)
        raise JSONFileError(where, "depth", "too deep", line, column)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONFileError(where, "syntax", exc.msg, exc.lineno, exc.colno) from None
    except RecursionError:  # only if the caller's own stack is already nearly full
        raise JSONFileError(where, "depth", "too deep") from None


def _too_deep_at(text: str, limit: int) -> int | None:
    """Where in ``text`` the nesting first exceeds ``limit`` levels, or None if it never does.

    One pass, no recursion and no backtracking, whatever the text; stray brackets in invalid
    JSON may miscount, but json.loads refuses such text anyway.
    """
    if text.count("[") + text.count("{") <= limit:
        return None  # small files: too few openings, even inside strings, to get that deep
    depth = 0
    in_string = False
    skip = -1  # the position of a character escaped by a backslash
    for match in _SPECIAL.finditer(text):
        at, char = match.start(), match.group()
        if in_string:
            if at == skip:
                continue
            if char == "\\":
                skip = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return at
        elif char in "]}":
            depth = max(depth - 1, 0)  # unbalanced: json.loads stops there with its own error
    return None


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - text.rfind("\n", 0, position)


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


def read_text(path: Path, error: type[NbcdError], *, missing: str, folder: str) -> str:
    """A user's UTF-8 text file; every way of failing to read it is one ``error`` naming it.

    ``missing`` and ``folder`` end the message when the path does not exist or is a folder.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise error(f"{path}: {folder}") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path}: symlink loop; fix or remove the link") from None
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
