"""`nbcd ci`: the stages in order, summary.json, stopping on failure, --keep-going, --stages."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbcd.scaffold.project import init_project
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh `nbcd init` project, its starter notebook executed once."""
    root = tmp_path_factory.mktemp("proj") / "starter"
    init_project(root)
    return root


def summary_of(root: Path) -> dict[str, object]:
    return json.loads((root / "build" / "nbcd" / "summary.json").read_text())


def stage_statuses(root: Path) -> dict[str, str]:
    stages = summary_of(root)["stages"]
    assert isinstance(stages, list)
    return {s["name"]: s["status"] for s in stages}


def test_init_then_ci_passes_every_stage(scaffold: Path) -> None:
    result = run_cli("ci", "--no-cache", cwd=scaffold, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stage_statuses(scaffold) == {
        "lint": "passed",
        "test": "passed",
        "run": "passed",
        "report": "passed",
        "build": "passed",
    }
    assert (scaffold / "build" / "site" / "index.html").exists()
    assert (scaffold / "build" / "nbcd" / "junit.xml").exists()
    assert (scaffold / "build" / "docker" / "Dockerfile").exists()
    summary = summary_of(scaffold)
    assert summary["models"] == ["build/model"]
    assert "build/site/index.html" in result.stdout
    assert "Pipeline passed" in (scaffold / "build" / "site" / "index.html").read_text()


def test_stages_picks_a_subset(scaffold: Path) -> None:
    result = run_cli("ci", "--stages", "lint,report", cwd=scaffold)
    assert result.returncode == 0, result.stderr
    assert stage_statuses(scaffold) == {"lint": "passed", "report": "passed"}


def test_unknown_stage_is_a_usage_error(scaffold: Path) -> None:
    result = run_cli("ci", "--stages", "lint,deploy", cwd=scaffold)
    assert result.returncode == 2
    assert "unknown stage 'deploy'" in result.stderr


def test_failed_stage_stops_the_rest_unless_keep_going(scaffold: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(scaffold, root, ignore=shutil.ignore_patterns("build"))
    notebook = next((root / "notebooks").glob("*.ipynb"))
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(""))  # an empty code cell: a lint warning
    nbformat.write(nb, notebook)
    # warnings fail the lint stage only when the project says so
    project = root / "pyproject.toml"
    text = project.read_text()
    assert "[tool.nbcd.lint]\n" in text
    strict = '[tool.nbcd.lint]\nfail_on = "warning"\n'
    project.write_text(text.replace("[tool.nbcd.lint]\n", strict))
    stopped = run_cli("ci", "--stages", "lint,test,report", cwd=root)
    assert stopped.returncode == 1
    assert stage_statuses(root) == {"lint": "failed", "test": "skipped", "report": "skipped"}
    going = run_cli("ci", "--stages", "lint,test,report", "--keep-going", cwd=root)
    assert going.returncode == 1
    assert stage_statuses(root) == {"lint": "failed", "test": "passed", "report": "passed"}
    assert "NB102" in (root / "build" / "site" / "index.html").read_text()
