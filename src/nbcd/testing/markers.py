"""Per-cell test markers: nbval's comment markers and tags, nbclient's skip tag, tolerances.

nbcd reads the same markers as ``pytest --nbval`` with the same rules, so a project that
already uses nbval keeps its verdicts:

- A comment marker is a whole line of its own: after stripping the line, it starts with ``#``
  and, once every leading ``#`` and surrounding spaces are removed, equals the marker name
  exactly (case-sensitive). ``## NBVAL_SKIP`` counts; ``x = 1  # NBVAL_SKIP`` and
  ``# NBVAL_SKIP please`` do not.
- Tags are compared exactly; a ``tags`` value that is not a list is ignored.
- ``NBVAL_IGNORE_OUTPUT`` and ``NBVAL_CHECK_OUTPUT`` set one option, so the later one wins,
  among comments and among tags alike; a comment overrides a tag that sets the same option.
- ``--nbval`` compares every cell unless it is marked to ignore its output; ``--nbval-lax``
  compares only cells marked to check it.

Beyond nbval, a cell can carry its own numeric tolerance, from a tag (``nbcd-rtol=1e-3``,
``nbcd-atol=0.01``) or from cell metadata (``{"nbcd": {"rtol": 1e-3, "atol": 0.01}}``); a tag
wins over metadata because it is the one visible in a notebook editor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nbcd.errors import UsageError

__all__ = ["CellMarkers", "cell_markers", "should_compare"]

# nbval's two option kinds that markers set: whether to compare output, and whether an
# exception is expected. Skipping is a third. A marker name maps to (option, value).
_CHECK = "check"
_RAISES = "raises"
_SKIP = "skip"

COMMENT_MARKERS: dict[str, tuple[str, bool]] = {
    "PYTEST_VALIDATE_IGNORE_OUTPUT": (_CHECK, False),  # nbval keeps this old spelling
    "NBVAL_IGNORE_OUTPUT": (_CHECK, False),
    "NBVAL_CHECK_OUTPUT": (_CHECK, True),
    "NBVAL_RAISES_EXCEPTION": (_RAISES, True),
    "NBVAL_SKIP": (_SKIP, True),
}
# nbval derives its tags from the comment names, then adds the tag nbclient also honours.
TAG_MARKERS: dict[str, tuple[str, bool]] = {
    name.lower().replace("_", "-"): marker for name, marker in COMMENT_MARKERS.items()
}
TAG_MARKERS["raises-exception"] = (_RAISES, True)

SKIP_EXECUTION_TAG = "skip-execution"  # nbclient's default ``skip_cells_with_tag``
_TOLERANCE_TAG_PREFIXES = {"nbcd-rtol=": "rtol", "nbcd-atol=": "atol"}


@dataclass(frozen=True)
class CellMarkers:
    """What a cell's markers ask of the test stage.

    At most one of ``ignore_output`` and ``check_output`` is true: the marker that wins is
    kept, so a cell with neither follows the mode's default (``--nbval`` or ``--nbval-lax``).
    ``rtol``/``atol`` are ``None`` when the cell does not set them.
    """

    skip: bool = False
    skip_execution: bool = False
    ignore_output: bool = False
    check_output: bool = False
    raises_exception: bool = False
    rtol: float | None = None
    atol: float | None = None


def cell_markers(cell: Mapping[str, Any]) -> CellMarkers:
    """Read a code cell's nbval markers, nbclient's skip tag and nbcd's tolerances."""
    metadata = cell.get("metadata") or {}
    tags = metadata.get("tags")
    # nbval ignores a ``tags`` that is not a list; so does nbclient in practice.
    tag_list = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []

    options = dict(_markers_from_tags(tag_list))
    options.update(_markers_from_comments(_source_text(cell.get("source", ""))))

    check = options.get(_CHECK)
    rtol, atol = _tolerances(metadata, tag_list)
    return CellMarkers(
        skip=options.get(_SKIP, False),
        skip_execution=SKIP_EXECUTION_TAG in tag_list,
        ignore_output=check is False,
        check_output=check is True,
        raises_exception=options.get(_RAISES, False),
        rtol=rtol,
        atol=atol,
    )


def should_compare(cell: Mapping[str, Any], markers: CellMarkers, lax: bool) -> bool:
    """Whether a cell's stored outputs are compared with fresh ones, as nbval decides.

    A skipped cell is never run, and a stored cell that was never executed
    (``execution_count`` is null) has no reference to compare against. A cell nbclient skips
    (``skip-execution``) has no fresh outputs, so it is not compared either; nbval, which
    does not know that tag, would run it.
    """
    if markers.skip or markers.skip_execution or cell.get("execution_count") is None:
        return False
    if markers.check_output:
        return True
    return not markers.ignore_output and not lax


def _source_text(source: str | Iterable[str]) -> str:
    # Notebooks read with nbformat hold a string; raw JSON may hold a list of lines.
    return source if isinstance(source, str) else "".join(source)


def _markers_from_comments(source: str) -> Iterator[tuple[str, bool]]:
    for line in source.splitlines():
        line = line.strip()
        if line.startswith("#"):
            marker = COMMENT_MARKERS.get(line.lstrip("#").strip())
            if marker is not None:
                yield marker


def _markers_from_tags(tags: Iterable[str]) -> Iterator[tuple[str, bool]]:
    for tag in tags:
        marker = TAG_MARKERS.get(tag)
        if marker is not None:
            yield marker


def _tolerances(
    metadata: Mapping[str, Any], tags: Iterable[str]
) -> tuple[float | None, float | None]:
    values: dict[str, float | None] = {"rtol": None, "atol": None}
    nbcd_meta = metadata.get("nbcd")
    if isinstance(nbcd_meta, Mapping):
        for name in values:
            if nbcd_meta.get(name) is not None:
                values[name] = _tolerance(nbcd_meta[name], f'metadata "nbcd.{name}"')
    for tag in tags:
        for prefix, name in _TOLERANCE_TAG_PREFIXES.items():
            if tag.startswith(prefix):
                values[name] = _tolerance(tag[len(prefix) :], f"tag {tag!r}")
    return values["rtol"], values["atol"]


def _tolerance(raw: object, where: str) -> float:
    # bool is an int subclass, and "true" as a tolerance is surely a mistake.
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise UsageError(f"cell {where}: tolerance must be a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"cell {where}: tolerance must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"cell {where}: tolerance must be a finite number >= 0, got {raw!r}")
    return value
