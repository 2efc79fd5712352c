"""Two nbcd processes at once on one project: both get their verdicts, the cache stays whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import build_notebook

pytestmark = pytest.mark.e2e


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nbcd", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_test_runs_share_one_cache_safely(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.nbcd]\nnotebooks = ["nb/*.ipynb"]\n')
    (tmp_path / "nb").mkdir()
    for name in "abcd":
        nb = build_notebook(f"print({name!r} * 3)", markdown_title=name)
        nbformat.write(nb, tmp_path / "nb" / f"{name}.ipynb")
    runs = [start(["test", "--mode", "run", "-j", "2"], tmp_path) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
        assert "4 notebooks: 4 passed" in out or "cached" in out, out
    entries = list((tmp_path / "build" / "nbcd" / "cache").rglob("*.json"))
    assert entries, "nothing was recorded"
    for entry in entries:
        json.loads(entry.read_text())  # whole files only: writes are atomic
    assert not list((tmp_path / "build").rglob("*.tmp"))
    again = start(["test", "--mode", "run"], tmp_path)
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and "4 notebooks: 4 cached" in out, out


def test_concurrent_runs_write_one_whole_output(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook("x = 21 * 2\nprint(x)", markdown_title="t"), nb)
    runs = [start(["run", str(nb), "--no-html"], tmp_path) for _ in range(3)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
    executed = nbformat.read(tmp_path / "build" / "notebooks" / "nb.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "42\n"
    assert not list(tmp_path.rglob("*.tmp"))
