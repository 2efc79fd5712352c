"""`pytest --nbcd`: collect notebooks and check them with the engine of `nbcd test`.

One pytest item per notebook. The first item to run executes every collected notebook in one
batch, so notebooks still run in parallel on warm kernels; each item then reports its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nbcd.config import Config, load_config
from nbcd.discover import is_notebook
from nbcd.options import add_pytest_options, values_from_pytest
from nbcd.testing.options import TestOptions

__all__ = ["NotebookFile", "NotebookItem"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --nbcd and one --nbcd-* option per field of TestOptions."""
    group = parser.getgroup("nbcd", "notebook checks with nbcd")
    group.addoption("--nbcd", action="store_true", help="Collect and check .ipynb files.")
    add_pytest_options(group, TestOptions)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect notebooks when --nbcd is on, by the rule every nbcd command uses."""
    if not parent.config.getoption("nbcd") or file_path.suffix != ".ipynb":
        return None
    if not is_notebook(file_path, _project(parent.config)):
        return None
    collector: NotebookFile = NotebookFile.from_parent(parent, path=file_path)
    return collector


_PROJECT_KEY = pytest.StashKey[Config]()


def _project(config: pytest.Config) -> Config:
    """The nbcd project of this pytest run (read once)."""
    if _PROJECT_KEY not in config.stash:
        config.stash[_PROJECT_KEY] = load_config(config.rootpath)
    return config.stash[_PROJECT_KEY]


class NotebookFile(pytest.File):
    """A notebook file: one item, the notebook as a whole."""

    def collect(self) -> list[pytest.Item]:
        """The one item of this notebook."""
        return [NotebookItem.from_parent(self, name=self.path.name)]


class NotebookFailure(Exception):
    """A notebook's check failed; the message is the readable report."""


class NotebookItem(pytest.Item):
    """One notebook, judged by the shared batch run."""

    def runtest(self) -> None:
        """Look up (or produce) this notebook's outcome and fail on a problem."""
        outcomes = _batch_outcomes(self.session)
        outcome = outcomes[self.path.resolve()]
        if outcome.status in ("failed", "error"):
            body = outcome.message + ("\n\n" + outcome.details if outcome.details else "")
            raise NotebookFailure(body)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """The readable diff, not a Python traceback of the plugin."""
        if isinstance(excinfo.value, NotebookFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the item lives, for pytest's report."""
        return self.path, None, f"notebook {self.path.name}"


_OUTCOMES_KEY = pytest.StashKey[dict[Path, Any]]()


def _batch_outcomes(session: pytest.Session) -> dict[Path, Any]:
    from nbcd.testing.options import test_options
    from nbcd.testing.runner import run_tests

    stash = session.stash
    if _OUTCOMES_KEY in stash:
        return stash[_OUTCOMES_KEY]
    paths = [item.path.resolve() for item in session.items if isinstance(item, NotebookItem)]
    project = _project(session.config)
    options = test_options(project, values_from_pytest(session.config, TestOptions))
    report = run_tests(paths, options)
    stash[_OUTCOMES_KEY] = {o.path.resolve(): o for o in report.outcomes}
    return stash[_OUTCOMES_KEY]
