"""Executing notebooks: fresh kernels (forked from a warm server), parameters, `nbcd run`.

Engines: ``execute_notebook`` runs one notebook and returns an ExecutionResult;
``run_notebook`` is the run stage (parameters in, executed notebook, HTML and artifacts out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.execute.executor import (
        CellFailure,
        ExecutionResult,
        async_execute_notebook,
        execute_notebook,
    )
    from nbcd.execute.kernels import KernelPool
    from nbcd.execute.params import inject_parameters, load_parameters_file, parse_value
    from nbcd.execute.run import RunResult, run_notebook

__all__ = [
    "CellFailure",
    "ExecutionResult",
    "KernelPool",
    "RunResult",
    "async_execute_notebook",
    "execute_notebook",
    "inject_parameters",
    "load_parameters_file",
    "parse_value",
    "run_notebook",
]

__getattr__ = exports(
    __name__,
    {
        "CellFailure": "nbcd.execute.executor",
        "ExecutionResult": "nbcd.execute.executor",
        "KernelPool": "nbcd.execute.kernels",
        "RunResult": "nbcd.execute.run",
        "async_execute_notebook": "nbcd.execute.executor",
        "execute_notebook": "nbcd.execute.executor",
        "inject_parameters": "nbcd.execute.params",
        "load_parameters_file": "nbcd.execute.params",
        "parse_value": "nbcd.execute.params",
        "run_notebook": "nbcd.execute.run",
    },
)
