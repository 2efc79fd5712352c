"""What lint knows about a notebook's cells beyond their code: test markers and ruff's view.

A notebook says more about a cell than a script can about a line. nbval's markers and
nbclient's tag tell lint that a cell is expected to raise (its traceback is documentation, not
a defect: no NB201) or is never run by the tests (ruff's findings there are not reported). The
markers are read by :func:`nbcd.testing.markers.cell_markers`, the parser the test stage uses,
so lint and test can never disagree about which cell is marked.

ruff checks a notebook as one module with a cell boundary after each cell. Its I001 then asks
for a blank line between a cell's imports and the code below them (``import pandas as pd`` then
``df = pd.read_csv(...)``), which in a notebook is a matter of taste rather than of import order.
:func:`wanted_ruff_entry` drops exactly that complaint and keeps every real ordering problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbcd.errors import UsageError
from nbcd.lint.findings import Cell, Notebook, cell_source, cells_of
from nbcd.testing.markers import SKIP_EXECUTION_TAG, TAG_MARKERS, CellMarkers, cell_markers

__all__ = ["expects_error", "is_skipped", "lint_markers", "restore_skipped", "wanted_ruff_entry"]


def lint_markers(cell: Mapping[str, Any]) -> CellMarkers:
    """The test markers of a cell of raw, possibly malformed, notebook JSON.

    cell_markers expects a well-formed cell and refuses a bad ``nbcd-rtol=`` tolerance with a
    UsageError; lint must neither crash on a malformed cell nor fail on a tolerance (the test
    stage reports that), so it sees a clean copy holding only what the markers are read from.
    """
    metadata = cell.get("metadata")
    view: dict[str, Any] = {
        "source": cell_source(cell),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }
    try:
        return cell_markers(view)
    except UsageError:
        tags = view["metadata"].get("tags")
        known = set(TAG_MARKERS) | {SKIP_EXECUTION_TAG}
        kept = [t for t in tags if t in known] if isinstance(tags, list) else []
        return cell_markers({"source": view["source"], "metadata": {"tags": kept}})


def is_skipped(cell: Mapping[str, Any]) -> bool:
    """Whether the tests never run this code cell (``# NBVAL_SKIP``, nbval-skip, skip-execution)."""
    if cell.get("cell_type") != "code":
        return False
    markers = lint_markers(cell)
    return markers.skip or markers.skip_execution


def expects_error(cell: Mapping[str, Any]) -> bool:
    """Whether a code cell is documented to raise (raises-exception, NBVAL_RAISES_EXCEPTION)."""
    return cell.get("cell_type") == "code" and lint_markers(cell).raises_exception


# --- ruff's findings in a notebook ----------------------------------------------------------


def _cell_of(entry: Mapping[str, Any], nb: Notebook) -> Cell | None:
    number = entry.get("cell")
    cells = cells_of(nb)
    if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= len(cells):
        return cells[number - 1]
    return None


def _offset(lines: list[str], location: Any) -> int | None:
    """The character offset of ruff's 1-based (row, column) in a cell's lines, or None."""
    if not isinstance(location, dict):
        return None
    row, column = location.get("row"), location.get("column")
    if not isinstance(row, int) or not isinstance(column, int) or row < 1 or column < 1:
        return None
    if row > len(lines):  # the end of the cell, just past its last line
        return sum(map(len, lines)) if row == len(lines) + 1 and column == 1 else None
    return sum(map(len, lines[: row - 1])) + column - 1


def only_spacing_after_imports(entry: Mapping[str, Any], source: str) -> bool:
    """Whether an I001 fix would change nothing but the blank lines after the import block.

    ruff's fix replaces the block with its sorted form. When the replacement and the text it
    replaces are equal once blank lines at their ends are ignored, the imports are already in
    order and the only complaint is the spacing before the next statement.
    """
    fix = entry.get("fix")
    edits = fix.get("edits") if isinstance(fix, dict) else None
    if not isinstance(edits, list) or len(edits) != 1 or not isinstance(edits[0], dict):
        return False
    edit = edits[0]
    lines = source.splitlines(keepends=True)
    start, end = _offset(lines, edit.get("location")), _offset(lines, edit.get("end_location"))
    content = edit.get("content")
    if start is None or end is None or end < start or not isinstance(content, str):
        return False
    replaced = source[start:end]
    return bool(replaced.strip()) and replaced.rstrip() == content.rstrip()


def wanted_ruff_entry(entry: Mapping[str, Any], nb: Notebook) -> bool:
    """Whether a ruff JSON entry on ``nb`` is reported: not in a skipped cell, not I001 spacing."""
    cell = _cell_of(entry, nb)
    if cell is None:
        return True
    if is_skipped(cell):
        return False
    spacing = entry.get("code") == "I001" and only_spacing_after_imports(entry, cell_source(cell))
    return not spacing


def restore_skipped(before: Notebook, after: Notebook) -> bool:
    """Put back the source of skipped cells that ruff's ``--fix`` changed; whether any was.

    Findings in skipped cells are not reported, so they must not be fixed either: a fix to a
    cell the tests never run (an unused import removed, say) goes unseen until someone runs it.
    ruff never adds, removes or reorders cells, so the cells pair up by position.
    """
    old, new = cells_of(before), cells_of(after)
    if len(old) != len(new):
        return False
    restored = False
    for was, now in zip(old, new, strict=True):
        if is_skipped(was) and cell_source(was) != cell_source(now):
            now["source"] = was.get("source", "")
            restored = True
    return restored
