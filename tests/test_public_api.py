"""The public API and the error tree are pinned: a change here is a deliberate one."""

from __future__ import annotations

import importlib

import pytest

import nbcd
from nbcd import errors


def test_public_names_are_pinned_and_sorted() -> None:
    assert nbcd.__all__ == sorted(nbcd.__all__)
    assert nbcd.__all__ == [
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
    for name in nbcd.__all__:
        assert getattr(nbcd, name) is not None
    with pytest.raises(AttributeError):
        _ = nbcd.not_a_name  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("UsageError", 2),
        ("WriteError", 2),
        ("ParameterError", 2),
        ("ConfigError", 2),
        ("NotebookError", 2),
        ("ModelError", 2),
        ("CheckFailed", 1),
        ("CellError", 1),
        ("ExecutionError", 3),
        ("KernelError", 3),
        ("KernelDiedError", 3),
        ("CellTimeoutError", 3),
    ],
)
def test_every_error_is_an_nbcd_error_with_its_exit_code(name: str, code: int) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.NbcdError)
    assert cls.exit_code == code
    assert name in errors.__doc__


def test_cell_timeout_is_also_a_timeout_error() -> None:
    assert issubclass(errors.CellTimeoutError, TimeoutError)


def test_importing_nbcd_stays_light() -> None:
    """`import nbcd` must not pull in nbconvert or nbclient (they cost a fifth of a second)."""
    import subprocess
    import sys

    code = "import sys, nbcd; print('nbconvert' in sys.modules, 'nbclient' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    importlib.import_module("nbcd.cli")
