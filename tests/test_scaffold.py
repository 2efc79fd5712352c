"""`nbcd init`: the project layout, overwrite protection, and a starter that passes nbcd."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbcd.build.context import build_context
from nbcd.config import load_config
from nbcd.discover import find_notebooks
from nbcd.errors import UsageError
from nbcd.execute.run import run_notebook
from nbcd.lint import LintOptions, format_text, lint_paths
from nbcd.scaffold.project import init_project, package_name, starter_notebook
from tests.conftest import run_cli

SECTIONS = ("Collect", "Explore", "Model", "Conclude")
LAYOUT = (
    ".github/workflows/nbcd.yml",
    ".gitignore",
    ".pre-commit-config.yaml",
    "Dockerfile",
    "Makefile",
    "README.md",
    "data/README.md",
    "notebooks/wine_demo.ipynb",
    "pyproject.toml",
    "requirements.txt",
    "src/wine_demo/__init__.py",
    "tests/test_wine_demo.py",
)


def lint(root: Path) -> str:
    """nbcd's own lint on a project, with the four workflow sections required; '' if clean."""
    report = lint_paths([root], LintOptions(required_sections=SECTIONS), root)
    return "" if not report.findings else format_text(report)


def test_init_creates_the_project_layout(tmp_path: Path) -> None:
    result = init_project(tmp_path / "wine-demo", execute=False)

    assert result.created == LAYOUT
    assert result.package == "wine_demo"
    assert result.notebook == tmp_path / "wine-demo" / "notebooks" / "wine_demo.ipynb"
    assert not result.executed and result.overwritten == () and result.skipped == ()
    for name in LAYOUT:
        assert (tmp_path / "wine-demo" / name).is_file()


def test_pyproject_configures_nbcd_for_the_starter(tmp_path: Path) -> None:
    root = init_project(tmp_path / "wine-demo", execute=False).root

    config = load_config(root)

    assert 'name = "wine-demo"' in (root / "pyproject.toml").read_text()
    assert config.lint["required_sections"] == SECTIONS
    (run,) = config.runs
    assert run.notebook == root / "notebooks" / "wine_demo.ipynb"
    assert root / "build" / "model" / "model.json" in run.artifacts
    assert find_notebooks(config) == [run.notebook]


def test_requirements_are_pinned_to_the_installed_versions(tmp_path: Path) -> None:
    root = init_project(tmp_path / "wine-demo", execute=False).root

    lines = (root / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    for name in ("matplotlib", "nbcd", "pandas", "scikit-learn", "skops"):
        assert f"{name}=={importlib.metadata.version(name)}" in pins


def test_makefile_calls_each_stage(tmp_path: Path) -> None:
    makefile = (init_project(tmp_path / "p", execute=False).root / "Makefile").read_text()

    for command in ("ci", "lint", "test", "run $(NOTEBOOK)", "report", "build"):
        assert f"\t$(NBCD) {command}" in makefile
    assert "NOTEBOOK := notebooks/p.ipynb" in makefile
    assert "\t$(NBCD) serve build/model" in makefile
    for target in ("all", "install", "lint", "test", "run", "report", "build", "serve"):
        assert f"\n{target}:" in makefile


def test_starter_notebook_has_the_workflow_sections_and_a_parameters_cell() -> None:
    context = {"title": "Demo", "package": "demo"}
    nb = starter_notebook(context)

    assert nb.cells[0].source.startswith("# Demo")
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert [h for h in headings if h.startswith("## ")] == [
        "## 1. Collect",
        "## 2. Explore",
        "## 3. Model",
        "## 4. Conclude",
    ]
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "seed = 0" in tagged[0].source
    assert [c.id for c in nb.cells] == [c.id for c in starter_notebook(context).cells]


def test_lint_is_clean_on_a_new_project(tmp_path: Path) -> None:
    root = init_project(tmp_path / "wine-demo", execute=False).root

    assert lint(root) == ""


def test_when_files_exist_then_init_refuses_and_names_them(tmp_path: Path) -> None:
    root = tmp_path / "wine-demo"
    (root / "src" / "wine_demo").mkdir(parents=True)
    (root / "Makefile").write_text("mine\n", encoding="utf-8")
    (root / "src" / "wine_demo" / "__init__.py").write_text("mine\n", encoding="utf-8")

    with pytest.raises(UsageError, match=r"not overwriting Makefile, src/wine_demo/__init__\.py"):
        init_project(root, execute=False)

    assert (root / "Makefile").read_text() == "mine\n"
    assert not (root / "pyproject.toml").exists()  # nothing was written


def test_force_overwrites_existing_files(tmp_path: Path) -> None:
    root = tmp_path / "wine-demo"
    root.mkdir()
    (root / "Makefile").write_text("mine\n", encoding="utf-8")

    result = init_project(root, force=True, execute=False)

    assert result.overwritten == ("Makefile",)
    assert "$(NBCD) ci" in (root / "Makefile").read_text()


def test_a_second_init_skips_files_that_would_not_change(tmp_path: Path) -> None:
    init_project(tmp_path / "wine-demo", execute=False)

    again = init_project(tmp_path / "wine-demo", execute=False)

    assert again.created == () and again.overwritten == ()
    assert again.skipped == LAYOUT


def test_the_name_option_sets_project_and_package(tmp_path: Path) -> None:
    result = init_project(tmp_path / "folder", name="Soil Survey", execute=False)

    assert result.package == "soil_survey"
    assert (result.root / "src" / "soil_survey" / "__init__.py").is_file()
    assert 'name = "Soil-Survey"' in (result.root / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("project", "package"),
    [("wine-demo", "wine_demo"), ("My.Project_2", "my_project_2"), ("ACS", "acs")],
)
def test_package_name_is_a_lower_case_identifier(project: str, package: str) -> None:
    assert package_name(project) == package


@pytest.mark.parametrize("project", ["2fast", "class", "---"])
def test_when_no_package_name_can_be_made_then_usage_error(project: str) -> None:
    with pytest.raises(UsageError, match="package name"):
        package_name(project)


def test_when_the_package_name_shadows_an_installed_module_then_usage_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match="taken by an installed module"):
        init_project(tmp_path / "pandas", execute=False)
    assert not (tmp_path / "pandas").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_the_starter_runs_passes_nbcd_test_and_builds(tmp_path: Path) -> None:
    result = init_project(tmp_path / "wine-demo")
    root = result.root
    assert result.executed

    # stored with outputs, and without timestamps that would differ between two inits
    nb = nbformat.read(result.notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert all("execution" not in c.metadata for c in code)
    assert any("adjusted Rand index" in str(c.outputs) for c in code)
    assert lint(root) == ""

    tested = run_cli("test", "notebooks", "--no-fork", cwd=root, timeout=180)
    assert tested.returncode == 0, tested.stdout + tested.stderr

    unit = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr

    config = load_config(root)
    run = run_notebook(config, result.notebook, html=False)
    assert run.ok, run.describe_failure()
    assert (root / "build" / "model" / "model.skops").is_file()

    built = build_context(config, wheel=False, docker=False)
    assert built.ok, built.findings
    assert not built.generated  # the project's own Dockerfile fits the context nbcd builds
