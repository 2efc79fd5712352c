"""nbcd: continuous delivery for Jupyter notebooks."""

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
