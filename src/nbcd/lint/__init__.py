"""The lint stage: ruff on code cells, nbcd's notebook rules, hadolint, requirement pins.

Engine: ``lint_paths`` takes paths and LintOptions and returns a LintReport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.lint.engine import LintReport, lint_paths
    from nbcd.lint.findings import Finding, LintOptions, Rule
    from nbcd.lint.formats import format_github, format_json, format_text
    from nbcd.lint.rules import RULES

__all__ = [
    "RULES",
    "Finding",
    "LintOptions",
    "LintReport",
    "Rule",
    "format_github",
    "format_json",
    "format_text",
    "lint_paths",
]

__getattr__ = exports(
    __name__,
    {
        "Finding": "nbcd.lint.findings",
        "LintOptions": "nbcd.lint.findings",
        "LintReport": "nbcd.lint.engine",
        "RULES": "nbcd.lint.rules",
        "Rule": "nbcd.lint.findings",
        "format_github": "nbcd.lint.formats",
        "format_json": "nbcd.lint.formats",
        "format_text": "nbcd.lint.formats",
        "lint_paths": "nbcd.lint.engine",
    },
)
