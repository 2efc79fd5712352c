"""Reading, validating, hashing and writing notebooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcd.errors import NotebookError
from nbcd.files import atomic_write_text

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
    "cell_label",
    "display_path",
    "kernel_name",
    "read_notebook",
    "source_excerpt",
    "write_notebook",
]


def read_notebook(path: Path) -> NotebookNode:
    """Read an nbformat 4 notebook, or raise NotebookError with one line saying what is wrong."""
    import nbformat  # deferred: its import (jsonschema) is a tenth of a second

    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotebookError(f"{path}: no such notebook; check the path") from None
    except IsADirectoryError:
        raise NotebookError(f"{path}: is a folder, not a notebook file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookError(f"{path}: cannot be read ({exc})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "is it a notebook, and was a merge conflict left in it?"
        ) from None
    if not isinstance(data, dict) or ("cells" not in data and "worksheets" not in data):
        raise NotebookError(f"{path}: JSON but not a notebook (no 'cells'); check the file")
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(
            f"{path}: nbformat {major} notebook; nbcd needs nbformat 4 "
            "(convert it with `jupyter nbconvert --to notebook --nbformat 4`)"
        )
    try:
        nb = nbformat.reads(raw, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for bad structure
        raise NotebookError(f"{path}: not a valid notebook ({_first_line(exc)})") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise NotebookError(
            f"{path}: invalid nbformat 4 notebook at {where}: {_first_line(exc)}"
        ) from None
    return nb


def write_notebook(nb: NotebookNode, path: Path) -> None:
    """Write a notebook atomically: readers see the old file or the new one, never half."""
    import nbformat

    atomic_write_text(path, nbformat.writes(nb) + "\n")


def source_excerpt(source: str, lines: int = 3, width: int = 100) -> str:
    """The first non-blank lines of a cell's source, for error messages."""
    kept = [line.rstrip() for line in source.splitlines() if line.strip()][:lines]
    clipped = [line if len(line) <= width else line[: width - 1] + "…" for line in kept]
    more = len([ln for ln in source.splitlines() if ln.strip()]) > lines
    text = " | ".join(clipped) + (" | …" if more else "")
    # one terminal line's worth: the cell number says where to look for the rest
    return text if len(text) <= 2 * width else text[: 2 * width - 1] + "…"


def display_path(path: Path, root: Path | None = None) -> str:
    """A path as users see it: relative to root (default: the working folder) when inside it."""
    absolute = path.resolve()
    try:
        return absolute.relative_to((root or Path.cwd()).resolve()).as_posix()
    except ValueError:
        return str(absolute)


def kernel_name(nb: Any) -> str | None:
    """The kernel a notebook's metadata names, if it names one."""
    spec = nb.get("metadata", {}).get("kernelspec", {})
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else None


def cell_label(index: int) -> str:
    """How a cell is named to users: its 1-based position in the notebook file."""
    return f"cell {index + 1}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
