"""Shared fixtures: tiny notebooks built in code, and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

# fixed BLAS/OpenMP threads so kernels started by tests behave the same on every machine
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "acs2015_county_data.csv"

NotebookFactory = Callable[..., Path]


def build_notebook(
    *cells: str | tuple[str, list[str]], markdown_title: str | None = None
) -> nbformat.NotebookNode:
    """A notebook from code sources; a (source, tags) tuple makes a tagged cell."""
    nb = new_notebook()
    if markdown_title:
        nb.cells.append(new_markdown_cell(f"# {markdown_title}"))
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        nb.cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


@pytest.fixture
def make_notebook(tmp_path: Path) -> NotebookFactory:
    """Write a notebook built from cell sources into tmp_path and return its path."""

    def factory(*cells: str | tuple[str, list[str]], name: str = "nb.ipynb") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build_notebook(*cells, markdown_title="Test"), path)
        return path

    return factory


def run_cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `nbcd` command line and capture what a user would see."""
    return subprocess.run(
        [sys.executable, "-m", "nbcd", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


pytest_plugins = ["pytester"]
