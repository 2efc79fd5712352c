"""Run one notebook in a fresh kernel and describe what happened.

nbclient does the cell-by-cell work; this module adds what nbcd needs around it: the cell
that failed (error, timeout, dead kernel) as structured data rather than a message to parse,
progress callbacks, and the kernel's working folder.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import nbformat
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbclient.exceptions import CellTimeoutError as NbclientTimeout
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode

from nbcd.errors import (
    CellError,
    CellTimeoutError,
    KernelDiedError,
    KernelError,
    KernelNotFoundError,
    NbcdError,
)
from nbcd.execute.recorder import INSTALL, REPORT, RecordedInputs, parse_report
from nbcd.notebook import source_excerpt

if TYPE_CHECKING:
    from nbcd.execute.kernels import KernelHandle

__all__ = ["CellFailure", "ExecutionResult", "async_execute_notebook", "execute_notebook"]

FailureKind = Literal["error", "timeout", "died"]
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class CellFailure:
    """Why a notebook stopped: which cell, and the exception it raised (if any)."""

    kind: FailureKind
    cell_index: int
    source: str
    ename: str = ""
    evalue: str = ""
    traceback: tuple[str, ...] = ()

    def error(self, where: str) -> NbcdError:
        """The failure as the error tree's class; ``where`` names notebook and cell.

        The message is one line, then the cell's first source lines indented.
        """
        error: NbcdError
        if self.kind == "timeout":
            error = CellTimeoutError(f"{where} timed out ({self.evalue})")
        elif self.kind == "died":
            error = KernelDiedError(f"{where}: {self.evalue}")
        else:
            error = CellError(f"{where} raised {self.ename}: {self.evalue}")
        error.args = (f"{error}\n    source: {source_excerpt(self.source)}",)
        return error


@dataclass(frozen=True)
class ExecutionResult:
    """The executed notebook (outputs of every cell that ran) and how the run ended."""

    notebook: NotebookNode
    duration_s: float
    failure: CellFailure | None = None
    inputs: RecordedInputs | None = None  # what it used, when asked to record (cache)

    @property
    def ok(self) -> bool:
        """True when every cell ran without an unexpected error."""
        return self.failure is None


async def async_execute_notebook(
    nb: NotebookNode,
    *,
    cwd: Path,
    kernel_name: str = "python3",
    timeout: float | None = 600.0,
    env: dict[str, str] | None = None,
    allow_errors: bool = False,
    on_progress: ProgressCallback | None = None,
    kernel: KernelHandle | None = None,
    record_inputs: bool = False,
) -> ExecutionResult:
    """Execute a copy of nb in a fresh kernel whose working folder is cwd.

    ``kernel`` is a started, ready kernel from a pool (nbcd.execute.kernels), which stays the
    pool's to stop; without one, a kernel of ``kernel_name`` starts here. With
    ``record_inputs`` the result says which files, folders and local modules the notebook
    used (nbcd.execute.recorder).
    """
    nb = nbformat.from_dict(nb)  # the caller's notebook is never changed
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    current = {"index": code_cells[0] if code_cells else 0}
    done = {"count": 0}

    def cell_started(cell: NotebookNode, cell_index: int) -> None:
        current["index"] = cell_index

    def cell_executed(cell: NotebookNode, cell_index: int, **_: Any) -> None:
        done["count"] += 1
        if on_progress is not None:
            on_progress(done["count"], len(code_cells))

    client = NotebookClient(
        nb,
        km=kernel.km if kernel is not None else None,
        # nbclient takes whole seconds
        timeout=None if timeout is None else max(1, math.ceil(timeout)),
        kernel_name=kernel_name,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_start=cell_started,
        on_cell_executed=cell_executed,
        # a failing run should end fast; the kernel holds no state anyone will reuse
        shutdown_kernel="immediate",
    )
    if kernel is not None:
        client.kc = kernel.kc  # started and ready: no second ready check
    start_kwargs: dict[str, Any] = {}
    if env:
        start_kwargs["env"] = {**os.environ, **env}
    failure: CellFailure | None = None
    # the kernel process's own stderr holds start-up chatter (ipykernel warns about TCP on
    # every start); keep it aside and show it only when the kernel fails
    with tempfile.TemporaryFile(mode="w+b") as kernel_log:
        if kernel is None:
            start_kwargs["stderr"] = kernel_log
        started = time.perf_counter()
        recorded: RecordedInputs | None = None
        try:
            # the pool's ready check asked for kernel_info already: its reply is reused
            info = kernel.kernel_info if kernel is not None else None
            recorded = await _execute_cells(client, start_kwargs, record_inputs, info)
        except NoSuchKernel:
            raise KernelNotFoundError(kernel_name) from None
        except NbclientTimeout:
            failure = _failure(
                nb,
                current["index"],
                "timeout",
                "CellTimeoutError",
                f"the cell ran longer than {timeout:g} s",
            )
        except DeadKernelError:
            failure = _failure(
                nb,
                current["index"],
                "died",
                "DeadKernelError",
                "the kernel died while this cell was running" + _tail(kernel_log),
            )
        except CellExecutionError as exc:
            failure = _failure(
                nb,
                current["index"],
                "error",
                exc.ename,
                exc.evalue,
                _error_traceback(nb.cells[current["index"]]),
            )
        except RuntimeError as exc:
            # jupyter_client reports a kernel that exits during start-up this way
            if "Kernel" not in str(exc) and "kernel" not in str(exc):
                raise
            raise KernelError(
                f"kernel {kernel_name!r} could not start: {exc}{_tail(kernel_log)}"
            ) from None
        return ExecutionResult(nb, time.perf_counter() - started, failure, recorded)


def execute_notebook(nb: NotebookNode, **kwargs: Any) -> ExecutionResult:
    """Blocking :func:`async_execute_notebook` (same arguments).

    Outside an event loop it runs under ``asyncio.run``, which cancels the execution when it
    is interrupted, so the kernel is shut down before the exception leaves.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(async_execute_notebook(nb, **kwargs))
    return run_sync(async_execute_notebook)(nb, **kwargs)


async def _execute_cells(
    client: NotebookClient,
    start_kwargs: dict[str, Any],
    record_inputs: bool,
    kernel_info: dict[str, Any] | None,
) -> RecordedInputs | None:
    """nbclient's ``async_execute``, with the input recorder around the cells when asked.

    The kernel is set up here rather than by ``async_setup_kernel``, which installs signal
    handlers that swallow Ctrl-C and SIGTERM; nbcd stops on them (nbcd.interrupts) and the
    ``finally`` below shuts the kernel down on the way out.
    """
    client.reset_execution_trackers()
    recorded = None
    if client.km is None:
        client.km = client.create_kernel_manager()
    try:
        if not client.km.has_kernel:
            await client.async_start_new_kernel(**start_kwargs)
        if client.kc is None:
            await client.async_start_new_kernel_client()
        assert client.kc is not None
        if record_inputs:
            await _silent(client, INSTALL)
        if kernel_info is None:
            info = await client.async_wait_for_reply(await ensure_async(client.kc.kernel_info()))
            kernel_info = info["content"] if info is not None else {}
        if "language_info" in kernel_info:
            client.nb.metadata["language_info"] = kernel_info["language_info"]
        for index, cell in enumerate(client.nb.cells):
            await client.async_execute_cell(
                cell, index, execution_count=client.code_cells_executed + 1
            )
        client.set_widgets_metadata()
        if record_inputs:
            reply = await _silent(client, "", user_expressions={"inputs": REPORT})
            recorded = parse_report(reply["content"]) if reply is not None else None
    finally:
        if client.owns_km:  # a pool's kernel is the pool's to stop
            await asyncio.shield(client._async_cleanup_kernel())
    return recorded


async def _silent(client: NotebookClient, code: str, **kwargs: Any) -> Any:
    """Run code in the kernel without output, history or a place in the notebook."""
    assert client.kc is not None
    msg_id = client.kc.execute(code, silent=True, store_history=False, **kwargs)
    return await client.async_wait_for_reply(msg_id)


def _failure(
    nb: NotebookNode,
    index: int,
    kind: FailureKind,
    ename: str,
    evalue: str,
    traceback: tuple[str, ...] = (),
) -> CellFailure:
    source = nb.cells[index].source if index < len(nb.cells) else ""
    return CellFailure(kind, index, source, ename, evalue, traceback)


def _tail(log: IO[bytes]) -> str:
    """The last line the kernel process wrote to stderr, as a hint after a crash."""
    log.seek(0)
    lines = [ln for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if "running over TCP without encryption" not in ln]
    return f" (kernel said: {lines[-1].strip()})" if lines else ""


def _error_traceback(cell: NotebookNode) -> tuple[str, ...]:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return tuple(output.get("traceback", []))
    return ()
