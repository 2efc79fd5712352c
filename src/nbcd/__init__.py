"""nbcd: continuous delivery for Jupyter notebooks.

One engine function per stage, each taking options and returning a result dataclass; the
CLI, the pytest plugin and `nbcd ci` are thin adapters over them. The public names are loaded
on first use, so commands that need little (an unchanged `nbcd test`) do not pay for
nbconvert, nbclient or pandas at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.build.context import BuildResult, build_context
    from nbcd.config import Config, load_config
    from nbcd.errors import NbcdError
    from nbcd.execute.executor import CellFailure, ExecutionResult, execute_notebook
    from nbcd.execute.run import RunResult, run_notebook
    from nbcd.lint.engine import LintReport, lint_paths
    from nbcd.lint.findings import LintOptions
    from nbcd.model import ModelArtifact, load_model, save_model
    from nbcd.pipeline.ci import PipelineOptions, PipelineResult, run_pipeline
    from nbcd.records import record
    from nbcd.report.site import SiteResult, build_site
    from nbcd.scaffold.project import ScaffoldResult, init_project
    from nbcd.serve.app import create_app
    from nbcd.serve.predict import PredictResult, predict_file
    from nbcd.testing.options import TestOptions
    from nbcd.testing.runner import TestReport, run_tests

__all__ = [
    "BuildResult",
    "CellFailure",
    "Config",
    "ExecutionResult",
    "LintOptions",
    "LintReport",
    "ModelArtifact",
    "NbcdError",
    "PipelineOptions",
    "PipelineResult",
    "PredictResult",
    "RunResult",
    "ScaffoldResult",
    "SiteResult",
    "TestOptions",
    "TestReport",
    "build_context",
    "build_site",
    "create_app",
    "execute_notebook",
    "init_project",
    "lint_paths",
    "load_config",
    "load_model",
    "predict_file",
    "record",
    "run_notebook",
    "run_pipeline",
    "run_tests",
    "save_model",
]
__version__ = "0.1.0"

__getattr__ = exports(
    __name__,
    {
        "BuildResult": "nbcd.build.context",
        "CellFailure": "nbcd.execute.executor",
        "Config": "nbcd.config",
        "ExecutionResult": "nbcd.execute.executor",
        "LintOptions": "nbcd.lint.findings",
        "LintReport": "nbcd.lint.engine",
        "ModelArtifact": "nbcd.model",
        "NbcdError": "nbcd.errors",
        "PipelineOptions": "nbcd.pipeline.ci",
        "PipelineResult": "nbcd.pipeline.ci",
        "PredictResult": "nbcd.serve.predict",
        "RunResult": "nbcd.execute.run",
        "ScaffoldResult": "nbcd.scaffold.project",
        "SiteResult": "nbcd.report.site",
        "TestOptions": "nbcd.testing.options",
        "TestReport": "nbcd.testing.runner",
        "build_context": "nbcd.build.context",
        "build_site": "nbcd.report.site",
        "create_app": "nbcd.serve.app",
        "execute_notebook": "nbcd.execute.executor",
        "init_project": "nbcd.scaffold.project",
        "lint_paths": "nbcd.lint.engine",
        "load_config": "nbcd.config",
        "load_model": "nbcd.model",
        "predict_file": "nbcd.serve.predict",
        "record": "nbcd.records",
        "run_notebook": "nbcd.execute.run",
        "run_pipeline": "nbcd.pipeline.ci",
        "run_tests": "nbcd.testing.runner",
        "save_model": "nbcd.model",
    },
)
