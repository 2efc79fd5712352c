"""nbcd: continuous delivery for Jupyter notebooks.

The public names are loaded on first use, so `nbcd` commands that need little (an unchanged
`nbcd test`) do not pay for nbconvert and nbclient at start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbcd.config import Config, load_config
    from nbcd.errors import NbcdError
    from nbcd.execute import CellFailure, ExecutionResult, execute_notebook
    from nbcd.run import RunResult, run_notebook

__all__ = [
    "CellFailure",
    "Config",
    "ExecutionResult",
    "NbcdError",
    "RunResult",
    "execute_notebook",
    "load_config",
    "run_notebook",
]
__version__ = "0.1.0"

_HOMES = {
    "CellFailure": "nbcd.execute",
    "Config": "nbcd.config",
    "ExecutionResult": "nbcd.execute",
    "NbcdError": "nbcd.errors",
    "RunResult": "nbcd.run",
    "execute_notebook": "nbcd.execute",
    "load_config": "nbcd.config",
    "run_notebook": "nbcd.run",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'nbcd' has no attribute {name!r}")
