"""What lint produces and how it is suppressed: findings, options, rules, noqa.

Cell numbers in findings are the notebook's cell index, 1-based, counting every cell
(markdown and raw cells too). That is the numbering ruff uses for notebooks, so a ruff finding
and an nbcd finding on the same cell carry the same number. Lines are 1-based within a cell.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nbcd.options import option

__all__ = [
    "FAILING_SEVERITIES",
    "NOQA_TAG",
    "FailOn",
    "Finding",
    "LintOptions",
    "Rule",
    "apply_noqa",
    "cell_source",
    "cells_of",
    "is_selected",
]

Notebook = Mapping[str, Any]


Cell = dict[str, Any]


Check = Callable[[Notebook, str, "LintOptions"], Iterable["Finding"]]


Fix = Callable[[Cell, "LintOptions"], bool]


FailOn = Literal["error", "warning"]


#: The severities that make a lint run fail, by ``--fail-on``. Warnings are printed either way;
#: hadolint's "info" and "style" never fail a run.
FAILING_SEVERITIES: dict[FailOn, frozenset[str]] = {
    "error": frozenset({"error"}),
    "warning": frozenset({"error", "warning"}),
}


NOQA_TAG = "nbcd-noqa"


@dataclass(frozen=True)
class Finding:
    """One problem found in one file; ``cell`` and ``line`` locate it inside a notebook."""

    path: str
    code: str
    message: str
    cell: int | None
    line: int | None
    column: int | None
    severity: str
    source: str  # "nbcd", "ruff", "hadolint" or "requirements"


@dataclass(frozen=True)
class LintOptions:
    """What to check and what to fix; codes in select/ignore/noqa match as prefixes."""

    select: frozenset[str] = option(
        frozenset({"ALL"}),
        key=None,
        metavar="CODE",
        help="Only these codes or prefixes (repeatable) [default: ALL].",
    )
    ignore: frozenset[str] = option(
        frozenset(),
        merge="union",
        metavar="CODE",
        help="Skip these codes or prefixes (repeatable; adds to [tool.nbcd.lint] ignore).",
    )
    required_sections: tuple[str, ...] = option(
        (), flag=None, help="Words each expected in some markdown heading (NB104)."
    )
    max_output_bytes: int = option(
        100_000, flag=None, minimum=0, help="Output bytes a cell may hold (NB202); 0: no limit."
    )
    fail_on: FailOn = option(
        "error",
        help="Exit 1 on findings of this severity or worse; warnings are shown either way "
        "[default: error].",
    )
    fix: bool = option(False, key=None, help="Apply ruff's safe fixes.")
    fix_errors: bool = option(False, key=None, help="Clear committed error outputs (NB201).")
    fix_oversize: bool = option(False, key=None, help="Clear outputs over the size limit (NB202).")
    ruff_config: Path | None = None  # passed as --config; else ruff finds the project's own
    use_ruff: bool = True
    use_hadolint: bool = True

    def wants(self, code: str) -> bool:
        """Whether findings of ``code`` are reported (an empty select means every code)."""
        return is_selected(code, self.select or {"ALL"}) and not is_selected(code, self.ignore)


@dataclass(frozen=True)
class Rule:
    """A rule as ``nbcd rules`` documents it; ``check`` is None for findings the engine emits."""

    code: str
    name: str
    message: str
    rationale: str
    check: Check | None = None
    fix: Fix | None = None  # clears the problem in one cell; returns whether it changed it
    fixed_by: str = ""  # the LintOptions field that enables ``fix``; `nbcd rules` shows it
    severity: str = "error"
    source: str = "nbcd"
    needs_v4: bool = True  # cell checks make no sense on nbformat 3's worksheets

    def finding(
        self,
        path: str,
        message: str,
        cell: int | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> Finding:
        """Make a finding of this rule."""
        return Finding(path, self.code, message, cell, line, column, self.severity, self.source)


def is_selected(code: str, prefixes: Iterable[str]) -> bool:
    """Whether ``code`` matches one of ``prefixes`` ("ALL" matches every code)."""
    return any(prefix == "ALL" or code.startswith(prefix) for prefix in prefixes)


def cell_source(cell: Mapping[str, Any]) -> str:
    """A cell's source as one string (nbformat stores it as a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def cells_of(nb: Notebook) -> list[Cell]:
    cells = nb.get("cells")
    # A malformed cell becomes {} rather than vanishing, so numbering stays the notebook's.
    return [c if isinstance(c, dict) else {} for c in cells] if isinstance(cells, list) else []


_NOQA_COMMENT = re.compile(
    r"nbcd:\s*noqa\b(?:[:\s]\s*(?P<codes>[A-Za-z]+\d+(?:[\s,]+[A-Za-z]+\d+)*))?"
)


def _split_codes(text: str) -> frozenset[str]:
    return frozenset(code.upper() for code in re.split(r"[\s,]+", text) if code)


def _cell_noqa(cell: Mapping[str, Any]) -> frozenset[str]:
    """Codes silenced in one cell by tags or a ``nbcd: noqa`` comment; {"ALL"} for all."""
    codes: set[str] = set()
    metadata = cell.get("metadata")
    tags = metadata.get("tags", []) if isinstance(metadata, dict) else []
    for tag in tags if isinstance(tags, list) else []:
        name, _, listed = str(tag).partition("=")
        if name.strip() == NOQA_TAG:
            codes |= _split_codes(listed) if listed.strip() else {"ALL"}
    for match in _NOQA_COMMENT.finditer(cell_source(cell)):
        codes |= _split_codes(match.group("codes")) if match.group("codes") else {"ALL"}
    return frozenset(codes)


def _notebook_noqa(nb: Notebook) -> frozenset[str]:
    """Codes silenced for a whole notebook by ``metadata.nbcd.noqa`` (a list, or true)."""
    metadata = nb.get("metadata")
    settings = metadata.get("nbcd") if isinstance(metadata, dict) else None
    noqa = settings.get("noqa") if isinstance(settings, dict) else None
    if noqa is True:
        return frozenset({"ALL"})
    return frozenset(str(code).upper() for code in noqa) if isinstance(noqa, list) else frozenset()


def apply_noqa(findings: Iterable[Finding], nb: Notebook) -> list[Finding]:
    """Drop findings silenced by the notebook's metadata or by their cell's tags and comments."""
    cells = cells_of(nb)
    whole = _notebook_noqa(nb)
    per_cell: dict[int, frozenset[str]] = {}
    kept = []
    for finding in findings:
        silenced = whole
        if finding.cell is not None and 1 <= finding.cell <= len(cells):
            if finding.cell not in per_cell:
                per_cell[finding.cell] = _cell_noqa(cells[finding.cell - 1])
            silenced = silenced | per_cell[finding.cell]
        if not is_selected(finding.code, silenced):
            kept.append(finding)
    return kept
