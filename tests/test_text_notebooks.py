"""Text notebooks (jupytext percent `.py`, MyST `.md`): discovery, reading, pairs, locations.

The end-to-end tests go through the real CLI; the rest check the pieces without kernels.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from nbcd.config import load_config
from nbcd.discover import find_notebooks, one_per_pair
from nbcd.errors import NotebookError, UsageError
from nbcd.lint.engine import LintReport
from nbcd.lint.findings import Finding
from nbcd.lint.formats import format_github, format_text
from nbcd.notebook import executed_name, read_notebook
from nbcd.textnotebook import error_line, is_text_notebook, layout_of, location
from tests.conftest import build_notebook, run_cli

jupytext = pytest.importorskip("jupytext")

HEADER = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""

# a percent notebook whose third cell fails on its second line
ANALYSIS = (
    HEADER
    + """
# %% [markdown]
# # Analysis
#
# Numbers.

# %%
import os
x = 1

# %%
y = 2
z = y / 0
print(z)

# %%
print(x)
"""
)

STORY = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  name: python3
---

# Story

```{code-cell} ipython3
:tags: [keep]
a = 40 + 2
print(a)
```

+++

The answer is printed above.

```{code-cell} ipython3
---
tags: [also]
---
print(a - 1)
```
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    """The 1-based line of the file that is exactly ``text``."""
    return path.read_text(encoding="utf-8").splitlines().index(text) + 1


def paired(folder: Path, *cells: str, name: str = "pair") -> tuple[Path, Path]:
    """A percent .py and the .ipynb it pairs with (outputs stored), as `jupytext --sync` makes."""
    nb = build_notebook(*cells, markdown_title="Paired")
    for number, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = number + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{number}\n")]
    ipynb = folder / f"{name}.ipynb"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, ipynb)
    text = jupytext.writes(nb, fmt="py:percent")
    return write(folder / f"{name}.py", text), ipynb


# --- which files are notebooks ------------------------------------------------------------


def test_only_percent_scripts_and_myst_documents_are_notebooks(tmp_path: Path) -> None:
    assert is_text_notebook(write(tmp_path / "a.py", ANALYSIS))
    assert is_text_notebook(write(tmp_path / "markers.py", "# %%\nx = 1\n\n#%% [markdown]\n# t\n"))
    assert is_text_notebook(write(tmp_path / "light.py", HEADER + "x = 1\n"))
    assert is_text_notebook(write(tmp_path / "bom.py", "\ufeff" + ANALYSIS))
    assert is_text_notebook(write(tmp_path / "unfinished.py", "# %%\nx = (\n"))
    assert is_text_notebook(write(tmp_path / "story.md", STORY))
    assert is_text_notebook(write(tmp_path / "bare.md", "# T\n\n```{code-cell}\nx = 1\n```\n"))
    assert is_text_notebook(
        write(tmp_path / "front.md", "---\nkernelspec:\n  name: python3\n---\n")
    )
    for name, text in {
        "module.py": '"""Doc."""\n\n# a comment\nx = 1\n',
        "magic.py": "# %%time is not a cell marker\nx = 1\n",
        "holds_one.py": f'NOTEBOOK = {ANALYSIS!r}\nTEMPLATE = """\n# %%\nx = 1\n"""\n',
        "setup.py": "from setuptools import setup\n\nsetup()\n",
        "header.py": "# ---\n# title: no jupyter key\n# ---\nx = 1\n",
        "README.md": "# Readme\n\n```python\nx = 1\n```\n",
        "front.md": "---\ntitle: no kernel\n---\ntext\n",
        "data.txt": "# %%\n",
    }.items():
        assert not is_text_notebook(write(tmp_path / "no" / name, text)), name


def test_a_folder_yields_notebooks_not_modules_and_a_pair_once(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.nbcd]\n")
    write(tmp_path / "nb" / "analysis.py", ANALYSIS)
    write(tmp_path / "nb" / "story.md", STORY)
    paired(tmp_path / "nb", "print(1)")
    write(tmp_path / "nb" / "only.ipynb", nbformat.writes(build_notebook("1")))
    for plain in ("src/pkg/__init__.py", "src/pkg/mod.py", "tests/test_mod.py", "conftest.py"):
        write(tmp_path / plain, '"""A module."""\n\nx = 1\n')
    write(tmp_path / "setup.py", "from setuptools import setup\n\nsetup()\n")
    write(tmp_path / "README.md", "# Readme\n")
    found = find_notebooks(load_config(tmp_path), [tmp_path])
    shown = sorted(p.relative_to(tmp_path).as_posix() for p in found)
    # pair.ipynb is pair.py's stored outputs, not a second notebook
    assert shown == ["nb/analysis.py", "nb/only.ipynb", "nb/pair.py", "nb/story.md"]


def test_one_per_pair_keeps_the_text_file_and_the_order() -> None:
    paths = [Path(n) for n in ("a/x.ipynb", "a/x.md", "a/x.py", "a/y.ipynb", "b/x.ipynb", "z.txt")]
    assert one_per_pair(paths) == [
        Path("a/x.py"),
        Path("a/y.ipynb"),
        Path("b/x.ipynb"),
        Path("z.txt"),
    ]


def test_a_plain_module_named_explicitly_is_one_line_error(tmp_path: Path) -> None:
    module = write(tmp_path / "mod.py", "x = 1\n")
    with pytest.raises(UsageError, match=r"mod\.py: not a notebook: a \.py file needs `# %%`"):
        find_notebooks(load_config(tmp_path), [module])
    with pytest.raises(NotebookError, match=r"mod\.py: not a notebook") as error:
        read_notebook(module)
    assert "\n" not in str(error.value)
    document = write(tmp_path / "notes.md", "# Notes\n")
    with pytest.raises(UsageError, match=r"notes\.md: not a notebook: a \.md file needs MyST"):
        find_notebooks(load_config(tmp_path), [document])


# --- reading, lines and pairs ---------------------------------------------------------------


def test_percent_cells_map_to_their_file_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "a.py",
        ANALYSIS + '\n# %%\n\n# %% tags=["raises-exception"]\n# %time w = 1\n1 / 0\n',
    )
    nb = read_notebook(path)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code", "code", "code"]
    assert nb.cells[5].source == "%time w = 1\n1 / 0"
    assert nb.cells[5].metadata["tags"] == ["raises-exception"]
    layout = layout_of(path)
    assert layout is not None
    firsts = [line_of(path, text) for text in ("# # Analysis", "import os", "y = 2", "print(x)")]
    empty = len(ANALYSIS.splitlines()) + 2  # an empty cell is at its marker
    assert list(layout.starts) == [*firsts, empty, line_of(path, "# %time w = 1")]
    assert layout.line(2, 2) == line_of(path, "z = y / 0")
    assert location(path, 2, 2) == f"a.py:{line_of(path, 'z = y / 0')}"
    assert "jupytext" not in json.dumps([c.metadata for c in nb.cells]), "no mapping in cells"


def test_myst_cells_map_past_their_options(tmp_path: Path) -> None:
    path = write(tmp_path / "story.md", STORY)
    nb = read_notebook(path)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown", "code"]
    assert nb.cells[1].metadata["tags"] == ["keep"]
    assert nb.metadata["kernelspec"]["name"] == "python3"
    layout = layout_of(path)
    assert layout is not None
    firsts = ["# Story", "a = 40 + 2", "The answer is printed above.", "print(a - 1)"]
    assert list(layout.starts) == [line_of(path, text) for text in firsts]


def test_an_ipynb_has_no_layout_and_no_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook("x = 1"), path)
    assert layout_of(path) is None
    assert location(path, 0) is None


def test_a_pair_with_the_same_code_lends_its_outputs(tmp_path: Path) -> None:
    text, _ = paired(tmp_path, "print(0)", "print(1)")
    nb = read_notebook(text)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.outputs[0]["text"] for c in code] == ["0\n", "1\n"]
    assert [c.execution_count for c in code] == [1, 2]
    layout = layout_of(text)
    assert layout is not None and layout.pair_note() is None


def test_edited_cells_get_no_stored_outputs_and_are_named(tmp_path: Path) -> None:
    text, _ = paired(tmp_path, "print(0)", "print(1)", "print(2)")
    text.write_text(text.read_text().replace("print(1)", "print('edited')"))
    nb = read_notebook(text)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [bool(c.outputs) for c in code] == [True, False, True]
    assert code[1].execution_count is None, "an unrun cell is not compared"
    layout = layout_of(text)
    assert layout is not None and layout.unpaired == (2,)
    note = layout.pair_note()
    assert note is not None and "pair.ipynb" in note and "cell 3 changed" in note


def test_a_broken_pair_is_one_line_naming_both_files(tmp_path: Path) -> None:
    text, ipynb = paired(tmp_path, "print(0)")
    ipynb.write_text("{not json")
    with pytest.raises(NotebookError) as error:
        read_notebook(text)
    message = str(error.value)
    assert "pair.py: its paired pair.ipynb cannot be used" in message and "\n" not in message


def test_a_header_jupytext_cannot_parse_is_one_line(tmp_path: Path) -> None:
    header = "# ---\n# jupyter:\n#   kernelspec: [unclosed\n# ---\n\n# %%\nx = 1\n"
    path = write(tmp_path / "bad.py", header)
    expected = r"bad\.py: jupytext cannot read it \(bad YAML in the header, line 3: expected"
    with pytest.raises(NotebookError, match=expected) as error:
        read_notebook(path)
    assert "\n" not in str(error.value)


def test_executed_copies_are_ipynb() -> None:
    assert executed_name(Path("nb/analysis.py")) == "analysis.ipynb"
    assert executed_name(Path("nb/story.md")) == "story.ipynb"
    assert executed_name(Path("nb/x.ipynb")) == "x.ipynb"


def test_the_failing_line_is_read_from_ipython_tracebacks() -> None:
    colored = ["\x1b[0;31mZeroDivisionError\x1b[0m", "Cell \x1b[0;32mIn[2], line 3\x1b[0m"]
    assert error_line(["Cell In[2], line 3", "Cell In[1], line 9, in f()"]) == 3
    assert error_line(["Input In [4], in <cell line: 2>()"]) == 2
    assert error_line(colored) == 3
    assert error_line(["Traceback", "  File x.py, line 4"]) is None


# --- locations in lint output ---------------------------------------------------------------


def _report(root: Path, *findings: Finding) -> LintReport:
    return LintReport(list(findings), 0, sorted({f.path for f in findings}), 0.0, str(root))


def test_lint_findings_in_text_notebooks_name_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path / "nb" / "analysis.py", ANALYSIS)
    (tmp_path / "nb" / "old.ipynb").write_text(nbformat.writes(build_notebook("import os")))
    unused = Finding("nb/analysis.py", "F401", "`os` unused", 2, 1, 8, "error", "ruff")
    whole_cell = Finding("nb/analysis.py", "NB102", "empty code cell", 3, None, None, "warning", "")
    ipynb = Finding("nb/old.ipynb", "F401", "`os` unused", 2, 1, 8, "error", "ruff")
    report = _report(tmp_path, unused, whole_cell, ipynb)
    text = format_text(report).splitlines()
    import_line, cell_line = line_of(path, "import os"), line_of(path, "y = 2")
    assert text[0] == f"nb/analysis.py:{import_line}:8: cell 2: F401 `os` unused"
    assert text[1] == f"nb/analysis.py:{cell_line}: cell 3: NB102 empty code cell"
    assert text[2] == "nb/old.ipynb:cell 2:1:8: F401 `os` unused", "an .ipynb is unchanged"
    github = format_github(report, workspace=tmp_path).splitlines()
    assert github[0] == (
        f"::error file=nb/analysis.py,line={import_line},col=8,title=F401::cell 2: `os` unused"
    )
    assert github[2] == "::error file=nb/old.ipynb,title=F401::cell 2, line 1: `os` unused"


def test_ci_failure_lines_locate_text_notebooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbcd.display import _failure_lines

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "analysis.py", ANALYSIS)
    mismatch = SimpleNamespace(cell_index=2, kind="error", message="cell raised E: x", diff="")
    outcome = SimpleNamespace(
        path=path,
        status="failed",
        message="cell 3: cell raised E: x",
        details="cell 3: cell raised E: x",
        mismatches=(mismatch,),
        failure=None,
        execution=None,
    )
    lines = _failure_lines({"test": SimpleNamespace(outcomes=[outcome])})
    assert lines == [
        f"[red]test[/red]: analysis.py:{line_of(path, 'y = 2')}: cell 3: cell raised E: x"
    ]


# --- end to end through the CLI -------------------------------------------------------------


@pytest.mark.e2e
def test_a_failing_percent_cell_is_named_by_its_file_line(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.nbcd]\n")
    path = write(tmp_path / "nb" / "analysis.py", ANALYSIS)
    write(tmp_path / "nb" / "story.md", STORY)
    write(tmp_path / "nb" / "helpers.py", "def helper():\n    return 1\n")
    write(tmp_path / "conftest.py", "import pytest\n")
    before = path.read_bytes()
    result = run_cli("test", "nb", "--no-cache", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failing = line_of(path, "z = y / 0")
    assert f"nb/analysis.py:{failing}: cell 3: cell raised ZeroDivisionError" in result.stdout
    assert "PASSED  nb/story.md" in result.stdout
    assert "2 notebooks: 1 passed, 1 failed" in result.stdout, "helpers.py is no notebook"
    assert path.read_bytes() == before and not list(tmp_path.rglob("analysis.ipynb"))


@pytest.mark.e2e
def test_stored_outputs_of_the_pair_are_compared(tmp_path: Path) -> None:
    text, ipynb = paired(tmp_path / "nb", "print(0)", "print(1)")
    result = run_cli("test", "nb", "--no-cache", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 notebook: 1 passed" in result.stdout and "PASSED  nb/pair.py" in result.stdout

    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[2].outputs[0]["text"] = "changed\n"  # cell 3 is `print(1)`
    nbformat.write(nb, ipynb)
    result = run_cli("test", "nb", "--no-cache", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"nb/pair.py:{line_of(text, 'print(1)')}: cell 3:" in result.stdout

    text.write_text(text.read_text().replace("print(1)", "print('new')"))
    result = run_cli("test", "nb", "--no-cache", cwd=tmp_path)
    assert result.returncode == 0, "an edited cell's old outputs are not compared"
    assert "code differs from its pair pair.ipynb (cell 3 changed" in result.stderr


@pytest.mark.e2e
def test_naming_a_plain_module_is_one_line_error(tmp_path: Path) -> None:
    write(tmp_path / "mod.py", "x = 1\n")
    for command in ("test", "run"):
        result = run_cli(command, "mod.py", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "mod.py: not a notebook" in result.stderr


@pytest.mark.e2e
def test_lint_of_a_text_notebook_reports_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path / "analysis.py", ANALYSIS)
    result = run_cli("lint", "analysis.py", cwd=tmp_path)
    assert f"analysis.py:{line_of(path, 'import os')}:8: cell 2: F401" in result.stdout
    assert result.returncode == 1
    assert path.read_text() == ANALYSIS


@pytest.mark.e2e
def test_run_writes_an_ipynb_and_names_the_failing_line(tmp_path: Path) -> None:
    path = write(tmp_path / "analysis.py", ANALYSIS)
    result = run_cli("run", "analysis.py", cwd=tmp_path)
    assert result.returncode == 1
    assert f"analysis.py:{line_of(path, 'z = y / 0')}: cell 3 raised ZeroDivisionError" in (
        result.stderr
    )
    executed = tmp_path / "build" / "notebooks" / "analysis.ipynb"
    assert nbformat.read(executed, as_version=4).cells[1].outputs == []
    assert (
        path.read_text() == ANALYSIS
        and not (tmp_path / "build" / "notebooks" / "analysis.py").exists()
    )
    refused = run_cli("run", "analysis.py", "--inplace", cwd=tmp_path)
    assert refused.returncode == 2 and path.read_text() == ANALYSIS


@pytest.mark.e2e
def test_an_edited_text_notebook_is_not_a_cache_hit(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.nbcd]\n")
    first = write(tmp_path / "nb" / "a.py", "# %%\nprint(1)\n")
    write(tmp_path / "nb" / "b.py", "# %%\nprint(2)\n")
    assert run_cli("test", "nb", cwd=tmp_path).returncode == 0
    assert "2 cached" in run_cli("test", "nb", cwd=tmp_path).stdout
    first.write_text("# %%\n1 / 0\n")
    result = run_cli("test", "nb", cwd=tmp_path)
    assert result.returncode == 1 and "code changed" in result.stdout
