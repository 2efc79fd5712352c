"""The run stage: execute a notebook with parameters and keep what it produced.

It executes here, or on a cluster when given an :class:`~nbcd.execute.dispatch.Executions`
(``nbcd run --cluster``, ``nbcd ci --cluster``): the files the notebook writes there come
back to where they would be written here before the artifacts are checked.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcd.config import Config
from nbcd.errors import CheckFailed, NbcdError, UsageError
from nbcd.execute.executor import ExecutionResult, ProgressCallback, execute_notebook
from nbcd.execute.params import inject_parameters, user_cell_index, user_cell_label
from nbcd.files import atomic_write_text
from nbcd.notebook import (
    display_path,
    executed_name,
    kernel_name,
    read_notebook,
    write_notebook,
)
from nbcd.records import keep_records
from nbcd.report.render import notebook_to_html
from nbcd.textnotebook import error_line, location

if TYPE_CHECKING:
    from nbcd.execute.dispatch import Executions

__all__ = ["RunResult", "run_notebook"]


@dataclass(frozen=True)
class RunResult:
    """What one `nbcd run` did: where it wrote, which parameters, and how execution ended."""

    notebook: Path
    output: Path
    html: Path | None
    execution: ExecutionResult
    parameters: dict[str, Any]
    undeclared: tuple[str, ...] = ()
    has_parameters_cell: bool = True
    injected_index: int | None = None
    artifacts: tuple[Path, ...] = field(default=())  # declared artifacts this run wrote
    missing_artifacts: tuple[Path, ...] = field(default=())  # declared, required, not written

    @property
    def ok(self) -> bool:
        """True when every cell ran and every required artifact was written by this run."""
        return self.execution.ok and not self.missing_artifacts

    def _failure_index(self) -> int | None:
        """The failing cell's index in the user's notebook file; None for the injected cell."""
        failure = self.execution.failure
        return None if failure is None else user_cell_index(failure.cell_index, self.injected_index)

    def failure_cell(self) -> str:
        """The failing cell as the user knows it: its position in their notebook file."""
        failure = self.execution.failure
        return "" if failure is None else user_cell_label(failure.cell_index, self.injected_index)

    @property
    def error(self) -> NbcdError | None:
        """Why the run failed, as the error tree's class (None when it passed)."""
        shown = display_path(self.notebook)
        failure = self.execution.failure
        if failure is not None:
            index = self._failure_index()
            # a text notebook's failing line as `path:line`, which editors open
            line = error_line(failure.traceback)
            where = location(self.notebook, index, line) if index is not None else None
            return failure.error(f"{where or shown}: {self.failure_cell()}")
        if self.missing_artifacts:
            names = ", ".join(str(a) for a in self.missing_artifacts)
            return CheckFailed(f"{shown}: ran, but did not write its declared artifacts: {names}")
        return None

    def describe_failure(self) -> str:
        """One line naming notebook, cell and exception, then the cell's first source lines."""
        return str(self.error or "")


def run_notebook(
    config: Config,
    notebook: Path,
    *,
    parameters: dict[str, Any] | None = None,
    output: Path | None = None,
    inplace: bool = False,
    timeout: float | None = None,
    kernel: str | None = None,
    html: bool | None = None,
    on_progress: ProgressCallback | None = None,
    reuse: tuple[ExecutionResult, float] | None = None,
    executions: Executions | None = None,
) -> RunResult:
    """Execute notebook with configured, then given, parameters; write it and its HTML.

    ``reuse`` is an execution of the same notebook with its default parameters that already
    happened (the test stage's, in `nbcd ci`) and the wall-clock time it started: its outputs
    and the artifacts it wrote are taken instead of executing again. ``executions`` runs it
    elsewhere (a cluster) instead of in a kernel started here; its maker closes it.
    """
    notebook = notebook.resolve()
    nb = read_notebook(notebook)
    spec = config.run_for(notebook)
    merged = {**(spec.parameters if spec else {}), **(parameters or {})}
    if reuse is not None and merged:
        raise UsageError(f"{notebook}: an execution can be reused only without parameters")
    injection = inject_parameters(nb, merged)
    target = _output_path(config, notebook, output, inplace)
    if reuse is not None:
        execution, started = reuse
    else:
        started = time.time()
        chosen = kernel or kernel_name(nb) or config.kernel
        if executions is not None:
            from nbcd.execute.dispatch import ExecutionRequest

            request = ExecutionRequest(
                notebook,
                injection.notebook,
                chosen,
                timeout or config.timeout,
                allow_errors=False,
                on_progress=on_progress,
            )
            execution = asyncio.run(executions.execute(request)).result
        else:
            execution = execute_notebook(
                injection.notebook,
                cwd=notebook.parent,
                kernel_name=chosen,
                timeout=timeout or config.timeout,
                on_progress=on_progress,
            )
    declared = spec.artifacts if spec else ()
    written = tuple(a for a in declared if _written_since(a, started))
    # given parameters may send outputs elsewhere (an output folder), so only the configured
    # run must refresh every declared artifact
    required = execution.ok and spec is not None and not parameters
    missing = tuple(a for a in declared if a not in written) if required else ()
    keep_records(execution.notebook)  # nbcd.record(...) calls, by name in its metadata
    # the executed notebook is written even when a cell failed: its outputs show why
    write_notebook(execution.notebook, target)
    html_path = None
    if html if html is not None else config.html:
        html_path = config.html_out / f"{notebook.stem}.html"
        atomic_write_text(html_path, notebook_to_html(execution.notebook))
    return RunResult(
        notebook=notebook,
        output=target,
        html=html_path,
        execution=execution,
        parameters=merged,
        undeclared=injection.undeclared,
        has_parameters_cell=injection.has_parameters_cell,
        injected_index=injection.injected_index,
        artifacts=written,
        missing_artifacts=missing,
    )


def _written_since(path: Path, started: float) -> bool:
    """Whether path exists and was written during this run (1 s of file-clock slack)."""
    try:
        return path.stat().st_mtime >= started - 1.0
    except OSError:
        return False


def _output_path(config: Config, notebook: Path, output: Path | None, inplace: bool) -> Path:
    if inplace and output is not None:
        raise UsageError("--inplace and -o/--output both say where to write; give one")
    name = executed_name(notebook)  # x.ipynb for a text notebook x.py too
    if inplace and name != notebook.name:
        raise UsageError(
            f"{notebook}: --inplace would replace a text notebook with JSON; "
            f"write the executed notebook elsewhere with -o {name}"
        )
    if inplace:
        return notebook
    target = (output or config.notebooks_out / name).resolve()
    if target == notebook:
        raise UsageError(
            f"{notebook}: the output would overwrite the input notebook; pass --inplace to allow it"
        )
    if target.is_dir():
        target = target / name
    return target
