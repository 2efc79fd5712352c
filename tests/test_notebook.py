"""Reading notebooks fails with one clear line; writing is atomic."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbcd.errors import NotebookError
from nbcd.notebook import read_notebook, source_excerpt, write_notebook
from tests.conftest import build_notebook


def test_reads_a_valid_notebook(tmp_path: Path) -> None:
    path = tmp_path / "a.ipynb"
    nbformat.write(build_notebook("x = 1"), path)
    assert read_notebook(path).cells[0].source == "x = 1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"not valid JSON \(line 1, column 2"),
        ("[1, 2]", "JSON but not a notebook"),
        (json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}), "nbformat 3"),
        (
            json.dumps(
                {
                    "nbformat": 4,
                    "nbformat_minor": 5,
                    "cells": [{"cell_type": "bogus"}],
                    "metadata": {},
                }
            ),
            "invalid nbformat 4 notebook|not a valid notebook",
        ),
    ],
)
def test_bad_files_give_one_line_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookError, match=message) as info:
        read_notebook(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_notebook(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="no such notebook"):
        read_notebook(tmp_path / "missing.ipynb")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "out" / "a.ipynb"
    write_notebook(build_notebook("x = 1"), path)
    write_notebook(build_notebook("x = 2"), path)
    assert read_notebook(path).cells[0].source == "x = 2"
    assert [p.name for p in path.parent.iterdir()] == ["a.ipynb"]


def test_source_excerpt_keeps_first_lines() -> None:
    assert source_excerpt("\nimport os\n\nx = 1\ny = 2\nz = 3") == "import os | x = 1 | y = 2 | …"


def test_write_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "a.ipynb"
    write_notebook(build_notebook("x = 1"), path)
    assert path.stat().st_mode & 0o044, "a new file is readable by others, as usual"
    path.chmod(0o640)
    write_notebook(build_notebook("x = 2"), path)
    assert path.stat().st_mode & 0o777 == 0o640
