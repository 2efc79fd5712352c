"""`pytest --nbcd`: collect notebooks and check them with the engine of `nbcd test`.

One pytest item per notebook. The first item to run executes every collected notebook in one
batch, so notebooks still run in parallel on warm kernels; each item then reports its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nbcd.config import load_config

__all__ = ["NotebookFile", "NotebookItem"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --nbcd and its --nbcd-* options."""
    group = parser.getgroup("nbcd", "notebook checks with nbcd")
    group.addoption("--nbcd", action="store_true", help="Collect and check .ipynb files.")
    group.addoption(
        "--nbcd-mode",
        choices=["compare", "run"],
        default=None,
        help="compare stored outputs (default) or only run the cells.",
    )
    group.addoption(
        "--nbcd-lax",
        action="store_true",
        default=None,
        help="Compare only cells marked check-output.",
    )
    group.addoption("--nbcd-sanitize-with", default=None, help="nbval sanitizer file.")
    group.addoption("--nbcd-rtol", type=float, default=None, help="Relative tolerance.")
    group.addoption("--nbcd-atol", type=float, default=None, help="Absolute tolerance.")
    group.addoption(
        "--nbcd-compare-images",
        action="store_true",
        default=None,
        help="Compare image outputs by perceptual similarity.",
    )
    group.addoption("--nbcd-jobs", type=int, default=None, help="Notebooks at once.")
    group.addoption("--nbcd-no-cache", action="store_true", help="Run unchanged notebooks too.")
    group.addoption("--nbcd-timeout", type=float, default=None, help="Seconds per cell.")
    group.addoption("--nbcd-kernel", default=None, help="Kernel for every notebook.")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect notebooks when --nbcd is on (checkpoints excluded)."""
    if not parent.config.getoption("nbcd"):
        return None
    if file_path.suffix == ".ipynb" and ".ipynb_checkpoints" not in file_path.parts:
        collector: NotebookFile = NotebookFile.from_parent(parent, path=file_path)
        return collector
    return None


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
    from nbcd.testing import run_tests, test_options_from

    stash = session.stash
    if _OUTCOMES_KEY in stash:
        return stash[_OUTCOMES_KEY]
    config = session.config
    paths = [item.path.resolve() for item in session.items if isinstance(item, NotebookItem)]
    project = load_config(paths[0] if paths else None)
    sanitize = config.getoption("nbcd_sanitize_with")
    options = test_options_from(
        project,
        mode=config.getoption("nbcd_mode"),
        lax=config.getoption("nbcd_lax"),
        sanitize_with=Path(sanitize) if sanitize else None,
        rtol=config.getoption("nbcd_rtol"),
        atol=config.getoption("nbcd_atol"),
        compare_images=config.getoption("nbcd_compare_images"),
        jobs=config.getoption("nbcd_jobs"),
        use_cache=not config.getoption("nbcd_no_cache"),
        timeout=config.getoption("nbcd_timeout"),
        kernel=config.getoption("nbcd_kernel"),
    )
    report = run_tests(paths, options)
    stash[_OUTCOMES_KEY] = {o.path.resolve(): o for o in report.outcomes}
    return stash[_OUTCOMES_KEY]
