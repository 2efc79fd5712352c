"""Reading, validating, hashing and writing notebooks.

A notebook nbformat can repair is repaired in memory, as nbval, nbmake, papermill and
nbconvert do: cell ids on nbformat < 4.5, and missing, repeated or malformed ids
(:func:`cell_id_problems`). The file is never modified; ``nbcd lint`` reports what needed
repair (NB004) so it can be fixed at its source.

A ``.py`` or ``.md`` path is a text notebook, read through jupytext with the stored outputs of
its paired ``.ipynb`` (:mod:`nbcd.textnotebook`); what nbcd writes of it is always an
``.ipynb`` (:func:`executed_name`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcd.errors import NotebookError
from nbcd.files import JSONFileError, atomic_write_text, load_json, read_text

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
    "cell_id_problems",
    "cell_label",
    "display_path",
    "executed_name",
    "kernel_name",
    "normalized",
    "quiet_nbformat",
    "read_notebook",
    "read_notebook_json",
    "source_excerpt",
    "write_notebook",
]

# nbformat 4.5's schema for a cell id
_CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def read_notebook(path: Path) -> NotebookNode:
    """Read an nbformat 4 notebook, or raise NotebookError with one line saying what is wrong.

    What nbformat can normalize (cell ids) is normalized in the returned notebook only. A
    ``.py`` or ``.md`` file is read as a text notebook (:mod:`nbcd.textnotebook`).
    """
    import nbformat  # deferred: its import (jsonschema) is a tenth of a second

    # deferred: textnotebook reads the paired .ipynb through this module
    from nbcd.textnotebook import is_text_path, read_text_notebook

    data = read_text_notebook(path) if is_text_path(path) else read_notebook_json(path)
    with quiet_nbformat():
        try:
            nb = nbformat.v4.to_notebook_json(normalized(data))
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


def read_notebook_json(path: Path) -> dict[str, Any]:
    """An ``.ipynb`` file's JSON, checked to be nbformat 4 at the top level (NotebookError)."""
    return _parse(_read_text(path), path)


def executed_name(path: Path) -> str:
    """The file name an executed copy of a notebook gets: ``x.ipynb`` for ``x.py`` too.

    An executed notebook is nbformat JSON with outputs, whatever the source was written in.
    """
    return path.name if path.suffix == ".ipynb" else f"{path.stem}.ipynb"


def _read_text(path: Path) -> str:
    """The notebook file's text; every way of failing to read it is one NotebookError."""
    return read_text(
        path,
        NotebookError,
        missing="no such notebook; check the path",
        folder="is a folder, not a notebook file",
    )


def _parse(raw: str, path: Path) -> dict[str, Any]:
    """The notebook's JSON, checked to be an nbformat 4 notebook at the top level."""
    try:
        data = load_json(raw, path)
    except JSONFileError as exc:
        if exc.too_deep:
            raise NotebookError(
                f"{path}: {exc.describe()}; nbcd refuses it, find what wrote that part of the file"
            ) from None
        raise NotebookError(
            f"{path}: {exc.describe()}; is it a notebook, and was a merge conflict left in it?"
        ) from None
    if not isinstance(data, dict) or ("cells" not in data and "worksheets" not in data):
        raise NotebookError(f"{path}: JSON but not a notebook (no 'cells'); check the file")
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(
            f"{path}: nbformat {major} notebook; nbcd needs nbformat 4 "
            "(convert it with `jupyter nbconvert --to notebook --nbformat 4`)"
        )
    return data


def cell_id_problems(nb: Mapping[str, Any]) -> list[tuple[int | None, str]]:
    """What nbformat must repair in a v4 notebook's cell ids: (cell number or None, what).

    Cells are numbered from 1. Ids on nbformat < 4.5 are one problem of the whole notebook;
    from 4.5 on, each cell without an id, with a malformed one or with one an earlier cell
    has, is a problem of that cell.
    """
    cells = nb.get("cells")
    minor = nb.get("nbformat_minor")
    if nb.get("nbformat") != 4 or not isinstance(cells, list) or not isinstance(minor, int):
        return []
    if minor < 5:
        if any(isinstance(c, dict) and "id" in c for c in cells):
            return [(None, f"cell ids on nbformat 4.{minor}, which has none (ids came in 4.5)")]
        return []
    problems: list[tuple[int | None, str]] = []
    seen: dict[str, int] = {}
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            continue  # not a cell at all: validation names it
        cell_id = cell.get("id")
        if "id" not in cell:
            problems.append((number, "has no id, which nbformat 4.5 requires"))
        elif not isinstance(cell_id, str) or not _is_cell_id(cell_id):
            problems.append((number, f"has the malformed id {cell_id!r}"))
        elif cell_id in seen:
            problems.append((number, f"repeats the id {cell_id!r} of cell {seen[cell_id]}"))
        else:
            seen[cell_id] = number
    return problems


def normalized(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its cell ids repaired as nbformat would, or ``data`` itself if sound.

    Ids on nbformat < 4.5 make it 4.5 (nbformat's upgrade); malformed ids are dropped, then
    nbformat's ``normalize`` gives every cell without one a fresh id and renumbers repeats.
    The argument is not changed.
    """
    if not cell_id_problems(data) or not all(isinstance(c, dict) for c in data["cells"]):
        return data
    from nbformat.validator import normalize

    cells = [
        {k: v for k, v in cell.items() if k != "id" or _is_cell_id(v)} for cell in data["cells"]
    ]
    repaired = {**data, "cells": cells, "nbformat_minor": max(data["nbformat_minor"], 5)}
    with quiet_nbformat():
        _, repaired = normalize(repaired)
    return dict(repaired)


def _is_cell_id(value: Any) -> bool:
    return isinstance(value, str) and _CELL_ID.fullmatch(value) is not None


@contextmanager
def quiet_nbformat() -> Iterator[None]:
    """Silence nbformat's warnings about cell ids: nbcd repairs them and lint reports them."""
    from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        warnings.simplefilter("ignore", DuplicateCellId)
        yield


def write_notebook(nb: NotebookNode, path: Path) -> None:
    """Write a notebook atomically: readers see the old file or the new one, never half."""
    import nbformat

    with quiet_nbformat():
        text = nbformat.writes(nb)
    atomic_write_text(path, text + "\n")


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
    # os.path.realpath, unlike Path.resolve before Python 3.13, never raises on a symlink loop
    absolute = Path(os.path.realpath(path))
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
