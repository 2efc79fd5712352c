"""`nbcd run` end to end through the real command line and real kernels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from tests.conftest import NotebookFactory, build_notebook, run_cli

pytestmark = pytest.mark.e2e


def outputs_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def test_parameters_arrive_typed_and_output_goes_to_build(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = make_notebook(
        ("k = 1\ncols = None\nflag = False\nx = 0", ["parameters"]),
        "print(type(k).__name__, k, cols, flag, x)",
        "import os; print(os.getcwd())",
    )
    before = nb.read_bytes()
    result = run_cli(
        "run",
        nb,
        "-p",
        "k",
        "7",
        "-p",
        "cols",
        "[a, b]",
        "-p",
        "flag",
        "true",
        "-p",
        "x",
        "null",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    executed = tmp_path / "build" / "notebooks" / "nb.ipynb"
    text = outputs_text(executed)
    assert "int 7 ['a', 'b'] True None" in text
    assert str(tmp_path) in text, "the kernel must run in the notebook's folder"
    assert (tmp_path / "build" / "html" / "nb.html").exists()
    assert nb.read_bytes() == before, "the input notebook must never be modified"
    assert "Traceback" not in result.stderr


def test_undeclared_parameter_is_a_warning(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook(("k = 1", ["parameters"]), "print(k)")
    result = run_cli("run", nb, "-p", "other", "3", "--no-html", cwd=tmp_path)
    assert result.returncode == 0
    assert "parameter 'other' is not declared" in result.stderr


def test_failing_cell_is_named_with_source_and_exception(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = make_notebook("x = 1", "values = [1, 2]\nvalues[5]", "print('never')")
    result = run_cli("run", nb, "-o", tmp_path / "out.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "nb.ipynb: cell 3 raised IndexError: list index out of range" in result.stderr
    assert "source: values = [1, 2] | values[5]" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out.ipynb").exists(), "the executed notebook shows the error"


def test_failing_cell_number_ignores_the_injected_cell(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = make_notebook(("k = 1", ["parameters"]), "assert k == 1, k")
    result = run_cli("run", nb, "-p", "k", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "cell 3 raised AssertionError: 2" in result.stderr


def test_timeout_names_the_cell(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook("x = 1", "import time\ntime.sleep(60)")
    result = run_cli("run", nb, "--timeout", "1", "--no-html", cwd=tmp_path)
    assert result.returncode == 3
    assert "cell 3 timed out" in result.stderr


def test_dead_kernel_names_the_cell(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook("x = 1", "import os\nos._exit(1)")
    result = run_cli("run", nb, "--no-html", cwd=tmp_path)
    assert result.returncode == 3
    assert "cell 3: the kernel died" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such notebook"),
        ("{oops", "not valid JSON"),
        (json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}), "nbformat 3"),
    ],
)
def test_bad_notebooks_exit_2_with_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bad.ipynb"
    if content is not None:
        path.write_text(content)
    result = run_cli("run", path, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "k", "[1, 2"], "-p k: '[1, 2' is not a valid YAML value"),
        (["--kernel", "no-such-kernel"], "no kernel named 'no-such-kernel'"),
        (["-o", "nb.ipynb"], "would overwrite the input notebook"),
        (["-f", "missing.yaml"], "no such parameters file"),
    ],
)
def test_usage_errors_exit_2(
    make_notebook: NotebookFactory, tmp_path: Path, args: list[str], message: str
) -> None:
    nb = make_notebook(("k = 1", ["parameters"]))
    result = run_cli("run", nb, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_inplace_writes_over_the_input(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook("print(6 * 7)")
    result = run_cli("run", nb, "--inplace", "--no-html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "42" in outputs_text(nb)


def write_project(root: Path, notebook_source: str) -> Path:
    """A project whose configured run must write out/result.txt."""
    (root / "pyproject.toml").write_text(
        "[tool.nbcd]\n\n[[tool.nbcd.runs]]\nnotebook = 'nb.ipynb'\nartifacts = ['out/result.txt']\n"
    )
    nb = build_notebook(("target = 'out/result.txt'", ["parameters"]), notebook_source)
    path = root / "nb.ipynb"
    nbformat.write(nb, path)
    return path


WRITES = (
    "import os\nos.makedirs(os.path.dirname(target), exist_ok=True)\nopen(target, 'w').write('x')"
)


def test_configured_artifacts_written_by_the_run_are_listed(tmp_path: Path) -> None:
    nb = write_project(tmp_path, WRITES)
    result = run_cli("run", nb, "--no-html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "artifact  out/result.txt" in result.stdout


def test_configured_artifact_not_written_fails_the_run(tmp_path: Path) -> None:
    nb = write_project(tmp_path, "print('forgot to save')")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "result.txt").write_text("stale")
    os.utime(tmp_path / "out" / "result.txt", (1_000_000, 1_000_000))
    result = run_cli("run", nb, "--no-html", cwd=tmp_path)
    assert result.returncode == 1
    assert "did not write its declared artifacts" in result.stderr
    assert "result.txt" in result.stderr


def test_overridden_parameters_do_not_claim_configured_artifacts(tmp_path: Path) -> None:
    nb = write_project(tmp_path, WRITES)
    result = run_cli("run", nb, "-p", "target", "elsewhere/r.txt", "--no-html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "artifact" not in result.stdout
    assert (tmp_path / "elsewhere" / "r.txt").exists()
