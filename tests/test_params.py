"""Parameter typing and injection follow papermill's semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbcd.errors import ParameterError
from nbcd.execute.params import (
    Parameter,
    declared_parameters,
    describe_parameters,
    inject_parameters,
    load_parameters_file,
    notebook_parameters,
    parameters_of_cell,
    parse_value,
)
from tests.conftest import NotebookFactory, build_notebook, run_cli


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


# ----------------------------------------------------------------------------- YAML 1.2 typing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("#x", "#x"),  # PyYAML: None (a comment)
        ("a # b", "a # b"),  # PyYAML: 'a'; a -p value is never a comment
        ("[a, #b]", ["a", "#b"]),
        ("12:30", "12:30"),  # YAML 1.1: 750 (sexagesimal)
        ("010", 10),  # YAML 1.1: 8 (octal)
        ("0o10", 8),  # YAML 1.2 core octal
        ("0x1F", 31),
        ("yes", "yes"),
        ("off", "off"),
        ("True", True),
        ("NULL", None),
        ("~", None),
        ("1_000", "1_000"),
        ("2024-01-31", "2024-01-31"),  # no timestamps in the core schema
        ("[010, on, null]", [10, "on", None]),
    ],
)
def test_untyped_values_follow_yaml_1_2_core_rules(raw: str, expected: object) -> None:
    assert parse_value("v", raw) == expected


def test_special_floats_follow_yaml_1_2() -> None:
    assert parse_value("v", "-.inf") == float("-inf")
    assert parse_value("v", ".NaN") != parse_value("v", ".NaN")  # nan


CELL = """%matplotlib inline
k: int | None = None  # rows to read
rate = 0.5 # learning rate
name = "x"
cols: list[str] = []
opt: Optional[str] = None
flag = False
"""


def declared(name: str, cell: str = CELL) -> Parameter:
    return {p.name: p for p in parameters_of_cell(cell)}[name]


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("k", "7", 7),
        ("k", "010", 10),
        ("k", "null", None),
        ("rate", "1", 1.0),
        ("rate", "1e-3", 0.001),
        ("name", "010", "010"),  # a str takes the text verbatim
        ("name", "'x'", "'x'"),
        ("name", "a # b", "a # b"),
        ("name", "[a, b", "[a, b"),
        ("cols", "[a, 010, yes]", ["a", "010", "yes"]),
        ("opt", "null", None),
        ("opt", "010", "010"),
        ("flag", "true", True),
        ("rate", "null", None),  # a type read from a default also takes null
        ("name", "null", "null"),  # ...except str, which takes the text
    ],
)
def test_values_are_typed_by_the_declared_type(name: str, raw: str, expected: object) -> None:
    value = parse_value(name, raw, declared(name))
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("k", "abc", r"-p k: 'abc' is not an int or None \(declared `k: int \| None = None` in"),
        ("k", "true", r"-p k: 'true' is not an int or None"),
        ("rate", "fast", r"-p rate: 'fast' is not a float or None \(declared `rate = 0.5`"),
        ("cols", "a", r"-p cols: 'a' is not a list\[str\]"),
        ("flag", "yes", r"-p flag: 'yes' is not a bool"),
    ],
)
def test_a_value_that_does_not_fit_the_declared_type_is_refused(
    name: str, raw: str, message: str
) -> None:
    with pytest.raises(ParameterError, match=message) as info:
        parse_value(name, raw, declared(name))
    assert "\n" not in str(info.value)


def test_the_error_quotes_the_declaration() -> None:
    with pytest.raises(ParameterError) as info:
        parse_value("k", "abc", declared("k", "k: int = 3\n"))
    assert str(info.value) == (
        "-p k: 'abc' is not an int (declared `k: int = 3` in the parameters cell)"
    )


def test_parameters_cell_gives_types_defaults_and_comments() -> None:
    params = {p.name: p for p in parameters_of_cell(CELL)}
    assert list(params) == ["k", "rate", "name", "cols", "opt", "flag"]
    assert (params["k"].type_text, params["k"].default, params["k"].comment) == (
        "int | None",
        "None",
        "rows to read",
    )
    assert (params["rate"].type_text, params["rate"].comment) == ("float", "learning rate")
    assert params["name"].type_text == "str" and params["cols"].type_text == "list[str]"


def test_a_bad_line_in_the_parameters_cell_leaves_the_other_names() -> None:
    source = "a = 1\nbad = = 2\nb: int = 3  # kept\nc = [1,\n  2]\ndef f(:\nd = 'x'\n"
    params = parameters_of_cell(source)
    assert [p.name for p in params] == ["a", "b", "c", "d"]
    assert declared_parameters(source) == ("a", "b", "c", "d")
    assert params[1].comment == "kept" and params[2].default == "[1, 2]"


def test_describe_parameters_lists_names_types_defaults_and_comments() -> None:
    nb = build_notebook(("k: int = 3  # rows\nname = 'x'", ["parameters"]))
    text = describe_parameters(Path("nb.ipynb"), notebook_parameters(nb))
    assert text.splitlines()[2].split() == ["k", "int", "3", "rows"]
    assert text.splitlines()[3].split() == ["name", "str", "'x'"]
    assert "no cell is tagged" in describe_parameters(Path("nb.ipynb"), None)


def test_parameters_file_uses_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("n: 010\nflag: yes\nt: 12:30  # a comment\n")
    assert load_parameters_file(path) == {"n": 10, "flag": "yes", "t": "12:30"}


# ----------------------------------------------------------------------------- end to end


def test_help_params_lists_the_parameters_and_runs_nothing(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    path = make_notebook(
        ("k: int = 3  # rows to read\nrate = 0.5", ["parameters"]), "raise SystemExit(1)"
    )

    result = run_cli("run", path, "--help-params", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["k", "int", "3", "rows", "to", "read"] in rows
    assert ["rate", "float", "0.5"] in rows
    assert not (tmp_path / "build").exists()


def test_a_value_of_the_wrong_type_is_refused_in_one_line(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    path = make_notebook(("k: int = 3", ["parameters"]), "print(k)")

    result = run_cli("run", path, "-p", "k", "abc", cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "error: -p k: 'abc' is not an int (declared `k: int = 3` in the parameters cell)"
    )
