"""The test stage: execute notebooks and judge them (nbval's verdict, tolerances, cache).

Engine: ``run_tests`` takes notebook paths and TestOptions and returns a TestReport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.testing.junit import write_junit
    from nbcd.testing.options import TestOptions
    from nbcd.testing.runner import NotebookOutcome, TestReport, run_tests

__all__ = ["NotebookOutcome", "TestOptions", "TestReport", "run_tests", "write_junit"]

__getattr__ = exports(
    __name__,
    {
        "NotebookOutcome": "nbcd.testing.runner",
        "TestOptions": "nbcd.testing.options",
        "TestReport": "nbcd.testing.runner",
        "run_tests": "nbcd.testing.runner",
        "write_junit": "nbcd.testing.junit",
    },
)
