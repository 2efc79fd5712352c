"""The one exception tree of nbcd, and the one mapping from an outcome to an exit code.

Every error a user can cause is an ``NbcdError``; the CLI prints it as one line and exits
with its ``exit_code``. Nothing else should escape to the user as a traceback. Failures found
while executing notebooks are these classes too (``CellFailure.error()`` makes them), so the
test stage, the run stage and `nbcd ci` agree on every exit code through :func:`exit_code_of`.

    NbcdError                     (root; exit_code 1)
    ├── UsageError                exit 2: a flag, argument or parameter value is wrong
    │   ├── ParameterError        a -p/-f value that cannot be parsed or injected
    │   ├── KernelNotFoundError   no kernel of that name is installed
    │   └── WriteError            an output cannot be written (nbcd.files; also an OSError)
    ├── ConfigError               exit 2: [tool.nbcd] in pyproject.toml is invalid
    ├── NotebookError             exit 2: a notebook is missing, not JSON, not nbformat 4
    ├── ModelError                exit 2: a model artifact is missing, invalid or untrusted
    ├── CheckFailed               exit 1: a check found a problem (test failure, lint finding)
    │   └── CellError             a cell raised an exception it was not expected to raise
    └── ExecutionError            exit 3: a notebook could not be executed
        ├── KernelError           an installed kernel could not start (crashed at start)
        ├── KernelDiedError       the kernel died while running a cell
        └── CellTimeoutError      a cell ran longer than its timeout (also a TimeoutError)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CellError",
    "CellTimeoutError",
    "CheckFailed",
    "ConfigError",
    "ExecutionError",
    "KernelDiedError",
    "KernelError",
    "KernelNotFoundError",
    "ModelError",
    "NbcdError",
    "NotebookError",
    "ParameterError",
    "UsageError",
    "WriteError",
    "exit_code_of",
    "worst_exit_code",
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


class KernelNotFoundError(UsageError):
    """No kernel of the requested name is installed: a usage error wherever it is met."""

    def __init__(self, kernel_name: str) -> None:
        super().__init__(
            f"no kernel named {kernel_name!r} is installed; "
            "list them with `jupyter kernelspec list` or pass --kernel"
        )
        self.kernel_name = kernel_name


class WriteError(UsageError, OSError):
    """An output cannot be written: ``PATH: cannot write (reason)``; nothing was replaced.

    ``nbcd.files`` raises it for every OSError of its writers, so a full disk, a folder where
    a file should go or a path under a regular file is one line, never a traceback. It is
    still an OSError (``errno``, ``strerror`` = reason, ``filename`` = PATH), so code that
    handled a failed write as an OSError keeps doing so.
    """

    def __init__(self, path: object, reason: str, errno: int | None = None) -> None:
        super().__init__(f"{path}: cannot write ({reason})")
        self.path = path
        self.reason = reason
        self.errno = errno
        self.strerror = reason
        self.filename = str(path)

    def __str__(self) -> str:
        # OSError would print "[Errno 28] reason: 'path'"; the one-line message is the point
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[WriteError], tuple[object, str, int | None]]:
        # pickling (worker processes) rebuilds the error from its arguments, not the message
        return (type(self), (self.path, self.reason, self.errno))


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
    """A cell raised an exception it was not expected to raise."""


class ExecutionError(NbcdError):
    """A notebook could not be executed to the end (kernel trouble or a timeout)."""

    exit_code = EXIT_EXECUTION


class KernelError(ExecutionError):
    """The kernel could not be started."""


class KernelDiedError(ExecutionError):
    """The kernel died while a cell was running."""


class CellTimeoutError(ExecutionError, TimeoutError):
    """A cell ran for longer than its timeout allows."""


def exit_code_of(error: BaseException | None) -> int:
    """The exit code of an outcome: 0 without an error, else the error's (OSError: usage)."""
    if error is None:
        return EXIT_OK
    if isinstance(error, NbcdError):
        return error.exit_code
    if isinstance(error, OSError):
        return EXIT_USAGE  # a path the user gave cannot be read or written
    return EXIT_CHECK_FAILED


def worst_exit_code(codes: Iterable[int]) -> int:
    """The exit code of many outcomes: usage beats execution beats a failed check beats ok."""
    found = set(codes)
    for code in (EXIT_USAGE, EXIT_EXECUTION, EXIT_CHECK_FAILED):
        if code in found:
            return code
    return EXIT_OK
