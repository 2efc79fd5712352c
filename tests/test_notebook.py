"""Reading notebooks fails with one clear line; writing is atomic."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbcd.errors import NotebookError, WriteError
from nbcd.notebook import (
    cell_id_problems,
    display_path,
    normalized,
    read_notebook,
    source_excerpt,
    write_notebook,
)
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


# --- what nbformat can normalize is normalized in memory; the file is never changed ----------


def _saved(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads(nbformat.writes(build_notebook("x = 1", "y = 2")))
    change(data)
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(data))
    return path


def _minor_4(data: dict[str, Any]) -> None:
    data["nbformat_minor"] = 4


def _repeat_first_id(data: dict[str, Any]) -> None:
    data["cells"][1]["id"] = data["cells"][0]["id"]


def _drop_ids(data: dict[str, Any]) -> None:
    for cell in data["cells"]:
        del cell["id"]


def _malformed_id(data: dict[str, Any]) -> None:
    data["cells"][0]["id"] = "has spaces"


@pytest.mark.parametrize(
    "change",
    [_minor_4, _repeat_first_id, _drop_ids, _malformed_id],
    ids=["ids-on-4.4", "repeated", "missing", "malformed"],
)
def test_when_cell_ids_need_repair_then_the_notebook_is_read_quietly_and_the_file_kept(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    path = _saved(tmp_path, change)
    before = path.read_bytes()
    assert cell_id_problems(json.loads(before)) != []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nbformat's MissingIDField and DuplicateCellId included
        nb = read_notebook(path)
    ids = [cell.id for cell in nb.cells]
    assert nb.nbformat_minor == 5 and len(set(ids)) == len(ids)
    assert cell_id_problems(nb) == []
    assert [cell.source for cell in nb.cells] == ["x = 1", "y = 2"]
    assert path.read_bytes() == before


def test_sound_ids_are_kept_and_a_4_4_notebook_without_ids_stays_4_4(tmp_path: Path) -> None:
    original = json.loads(_saved(tmp_path, lambda data: None).read_text())
    assert [c.id for c in read_notebook(tmp_path / "nb.ipynb").cells] == [
        c["id"] for c in original["cells"]
    ]

    def old_style(data: dict[str, Any]) -> None:
        _minor_4(data)
        _drop_ids(data)

    nb = read_notebook(_saved(tmp_path, old_style))
    assert nb.nbformat_minor == 4 and all("id" not in cell for cell in nb.cells)


def test_cell_id_problems_name_the_cells() -> None:
    data = json.loads(nbformat.writes(build_notebook("a", "b", "c")))
    data["cells"][1]["id"] = data["cells"][0]["id"]
    del data["cells"][2]["id"]
    assert cell_id_problems(data) == [
        (2, f"repeats the id {data['cells'][0]['id']!r} of cell 1"),
        (3, "has no id, which nbformat 4.5 requires"),
    ]
    assert normalized(data) is not data and data["cells"][1]["id"] == data["cells"][0]["id"]


# --- files nbcd refuses: one line naming the file ---------------------------------------------


def test_when_metadata_nests_too_deep_then_one_line_names_file_and_place(tmp_path: Path) -> None:
    path = tmp_path / "deep.ipynb"
    text = nbformat.writes(build_notebook("x = 1"))
    path.write_text(text.replace('"metadata": {', '"metadata": {"d": ' + "[" * 5000, 1))
    with pytest.raises(NotebookError) as info:
        read_notebook(path)
    message = str(info.value)
    assert message.startswith(f"{path}: JSON nested deeper than 256 levels (line ")
    assert "\n" not in message


def test_when_the_file_is_not_utf8_then_the_byte_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.ipynb"
    path.write_bytes(
        nbformat.writes(build_notebook("s = 'x'")).replace("'x'", "'\xe9'").encode("latin-1")
    )
    with pytest.raises(
        NotebookError, match=r"latin\.ipynb: not UTF-8 text \(byte 0xe9 at offset \d+\); save it"
    ):
        read_notebook(path)


def test_when_the_notebook_is_a_symlink_loop_then_it_is_named(tmp_path: Path) -> None:
    path = tmp_path / "loop.ipynb"
    path.symlink_to(path.name)
    with pytest.raises(NotebookError, match=r"loop\.ipynb: symlink loop; fix or remove the link"):
        read_notebook(path)


def test_display_path_of_a_symlink_loop_is_the_path_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "loop.ipynb").symlink_to("loop.ipynb")
    assert display_path(tmp_path / "loop.ipynb", tmp_path) == "loop.ipynb"


def test_when_the_output_folder_is_a_file_then_write_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(
        WriteError, match=r"a\.ipynb: cannot write \(.*out is a file, not a folder\)"
    ):
        write_notebook(build_notebook("x = 1"), tmp_path / "out" / "a.ipynb")
