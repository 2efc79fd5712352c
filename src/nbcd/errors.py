"""The one exception tree of nbcd.

Every error a user can cause is an ``NbcdError``; the CLI prints it as one line and exits
with its ``exit_code``. Nothing else should escape to the user as a traceback.

    NbcdError                     (root; exit_code 1)
    ├── UsageError                exit 2: a flag, argument or parameter value is wrong
    │   └── ParameterError        a -p/-f value that cannot be parsed or injected
    ├── ConfigError               exit 2: [tool.nbcd] in pyproject.toml is invalid
    ├── NotebookError             exit 2: a notebook is missing, not JSON, not nbformat 4
    ├── ModelError                exit 2: a model artifact is missing, invalid or untrusted
    ├── CheckFailed               exit 1: a check found a problem (test failure, lint finding)
    │   └── CellError             a cell raised an exception it was not expected to raise
    └── ExecutionError            exit 3: a notebook could not be executed
        ├── KernelError           the kernel could not start (unknown kernel, crashed at start)
        ├── KernelDiedError       the kernel died while running a cell
        └── CellTimeoutError      a cell ran longer than its timeout (also a TimeoutError)
"""

from __future__ import annotations

__all__ = [
    "CellError",
    "CellTimeoutError",
    "CheckFailed",
    "ConfigError",
    "ExecutionError",
    "KernelDiedError",
    "KernelError",
    "ModelError",
    "NbcdError",
    "NotebookError",
    "ParameterError",
    "UsageError",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_EXECUTION = 3


class NbcdError(Exception):
    """Root of every error nbcd reports to a user."""

    exit_code: int = EXIT_CHECK_FAILED


class UsageError(NbcdError):
    """A command-line argument, flag or value is wrong."""

    exit_code = EXIT_USAGE


class ParameterError(UsageError, ValueError):
    """A notebook parameter could not be parsed or injected."""


class ConfigError(NbcdError):
    """The project's [tool.nbcd] configuration is invalid."""

    exit_code = EXIT_USAGE


class NotebookError(NbcdError):
    """A notebook file is missing or is not a valid nbformat 4 notebook."""

    exit_code = EXIT_USAGE


class ModelError(NbcdError):
    """A model artifact is missing, malformed, or holds types nbcd does not trust."""

    exit_code = EXIT_USAGE


class CheckFailed(NbcdError):
    """A check found a problem: a test failed or a lint rule fired."""

    exit_code = EXIT_CHECK_FAILED


class CellError(CheckFailed):
    """A cell raised an exception while the notebook ran."""

    def __init__(
        self,
        message: str,
        *,
        notebook: str,
        cell_index: int,
        source: str,
        ename: str,
        evalue: str,
        traceback: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell_index = cell_index
        self.source = source
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback or []


class ExecutionError(NbcdError):
    """A notebook could not be executed to the end (kernel trouble or a timeout)."""

    exit_code = EXIT_EXECUTION


class KernelError(ExecutionError):
    """The kernel could not be started."""


class KernelDiedError(ExecutionError):
    """The kernel died while a cell was running."""


class CellTimeoutError(ExecutionError, TimeoutError):
    """A cell ran for longer than its timeout allows."""
