"""The error tree is the error model: failures are its classes, one mapping gives exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbcd.errors import (
    CellError,
    CellTimeoutError,
    CheckFailed,
    ConfigError,
    KernelDiedError,
    KernelError,
    KernelNotFoundError,
    UsageError,
    WriteError,
    exit_code_of,
    worst_exit_code,
)
from nbcd.execute.executor import CellFailure
from tests.conftest import NotebookFactory, run_cli


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (None, 0),
        (CheckFailed("x"), 1),
        (CellError("x"), 1),
        (UsageError("x"), 2),
        (ConfigError("x"), 2),
        (KernelNotFoundError("nope"), 2),
        (FileNotFoundError("x"), 2),
        (WriteError("x", "y"), 2),
        (KernelError("x"), 3),
        (KernelDiedError("x"), 3),
        (CellTimeoutError("x"), 3),
    ],
)
def test_exit_code_of_every_outcome(error: BaseException | None, code: int) -> None:
    assert exit_code_of(error) == code


def test_worst_exit_code_ranks_usage_over_execution_over_failure() -> None:
    assert worst_exit_code([]) == 0
    assert worst_exit_code([0, 1, 0]) == 1
    assert worst_exit_code([1, 3, 1]) == 3
    assert worst_exit_code([3, 2, 1]) == 2


@pytest.mark.parametrize(
    ("kind", "cls", "words"),
    [
        ("error", CellError, "cell 4 raised KeyError: 'price'"),
        ("timeout", CellTimeoutError, "cell 4 timed out (the cell ran longer than 2 s)"),
        ("died", KernelDiedError, "cell 4: the kernel died"),
    ],
)
def test_a_cell_failure_becomes_its_error_class(kind: str, cls: type, words: str) -> None:
    evalue = {
        "error": "'price'",
        "timeout": "the cell ran longer than 2 s",
        "died": "the kernel died while this cell was running",
    }[kind]
    failure = CellFailure(kind, 3, "df = load()\ndf['price']", "KeyError", evalue)  # type: ignore[arg-type]
    error = failure.error("nb.ipynb: cell 4")
    assert type(error) is cls
    first, second = str(error).split("\n")
    assert first.startswith("nb.ipynb: ") and words in first
    assert second == "    source: df = load() | df['price']"


def test_unknown_kernel_is_a_usage_error_in_run_and_test(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = make_notebook("print(1)")
    for command in (["run", nb, "--kernel", "no-such-kernel"], ["test", nb, "--kernel", "nope"]):
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "no kernel named" in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
