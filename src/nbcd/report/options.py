"""The options of `nbcd report`, declared once (flags and [tool.nbcd.report] keys derive)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbcd.options import option, resolve

__all__ = ["ReportOptions", "report_options"]


@dataclass(frozen=True)
class ReportOptions:
    """How the report site is rendered."""

    exclude_input: bool = option(False, help="Hide code cells in rendered notebooks.")


def report_options(config: Any, given: dict[str, Any] | None = None) -> ReportOptions:
    """ReportOptions of a project: given values > [tool.nbcd.report] > defaults."""
    return resolve(ReportOptions, table=config.report, given=given)
