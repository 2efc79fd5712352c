"""Parameter typing and injection follow papermill's semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbcd.errors import ParameterError
from nbcd.execute.params import (
    declared_parameters,
    inject_parameters,
    load_parameters_file,
    parse_value,
)
from tests.conftest import build_notebook


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7", 7),
        ("0.5", 0.5),
        ("true", True),
        ("null", None),
        ("[a, b]", ["a", "b"]),
        ("hello", "hello"),
        ("'7'", "7"),
        ("{x: 1}", {"x": 1}),
        ("", ""),
    ],
)
def test_values_are_typed_by_yaml_rules(raw: str, expected: object) -> None:
    assert parse_value("p", raw) == expected


def test_when_value_is_malformed_then_error_names_the_parameter() -> None:
    with pytest.raises(ParameterError, match=r"-p cols: '\[a, b' is not a valid YAML value"):
        parse_value("cols", "[a, b")


def test_declared_parameters_reads_top_level_assignments() -> None:
    source = "%matplotlib inline\nk = 3\nname: str = 'x'\nif True:\n    hidden = 1\na = b = 2"
    assert declared_parameters(source) == ("k", "name", "a", "b")


def test_injected_cell_follows_the_parameters_cell() -> None:
    nb = build_notebook("import math", ("k = 1", ["parameters"]), "print(k)")
    result = inject_parameters(nb, {"k": 7, "cols": ["a", "b"], "flag": True, "x": None})
    sources = [c.source for c in result.notebook.cells]
    assert result.injected_index == 2
    assert sources[2] == "# Parameters\nk = 7\ncols = ['a', 'b']\nflag = True\nx = None\n"
    assert result.notebook.cells[2].metadata.tags == ["injected-parameters"]
    assert result.undeclared == ("cols", "flag", "x")
    assert len(nb.cells) == 3, "the input notebook must not be modified"


def test_injection_replaces_an_earlier_injected_cell() -> None:
    nb = build_notebook(("k = 1", ["parameters"]), ("k = 5", ["injected-parameters"]), "k")
    result = inject_parameters(nb, {"k": 9})
    assert [c.source for c in result.notebook.cells] == ["k = 1", "# Parameters\nk = 9\n", "k"]


def test_without_parameters_cell_injects_at_the_top() -> None:
    nb = build_notebook("print(k)")
    result = inject_parameters(nb, {"k": 2})
    assert result.injected_index == 0
    assert not result.has_parameters_cell
    assert result.undeclared == ("k",)


def test_special_floats_become_valid_python() -> None:
    nb = build_notebook(("x = 0", ["parameters"]))
    source = inject_parameters(nb, {"x": float("nan")}).notebook.cells[1].source
    assert "x = float('nan')" in source


def test_parameters_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("k: 7\ncols: [a, b]\n")
    assert load_parameters_file(path) == {"k": 7, "cols": ["a", "b"]}
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ParameterError, match="must be a mapping"):
        load_parameters_file(path)
    path.write_text("k: [1\n")
    with pytest.raises(ParameterError, match="not valid YAML at line"):
        load_parameters_file(path)
    with pytest.raises(ParameterError, match="no such parameters file"):
        load_parameters_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"city: M\xfcnchen\n", r"not UTF-8 text \(byte 0xfc at offset 7\); save it as UTF-8"),
        (b"my key: 1\n", "'my key' is not a valid parameter name"),
        (b"k: " + b"[" * 5000 + b"\n", r"not valid YAML.*\(nested too deeply\)"),
    ],
)
def test_when_parameters_file_is_unusable_then_one_line_names_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(ParameterError, match=message) as info:
        load_parameters_file(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_when_parameters_file_is_a_folder_then_it_says_so(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="is a folder, not a parameters file"):
        load_parameters_file(tmp_path)


def test_when_a_value_nests_too_deep_then_the_error_stays_one_short_line() -> None:
    with pytest.raises(ParameterError, match=r"nested too deeply") as info:
        parse_value("x", "[" * 100_000)
    assert "\n" not in str(info.value) and len(str(info.value)) < 250
