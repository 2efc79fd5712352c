"""Parameter sweeps and recorded results: nbcd.record, the grid, the sweep engine."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbcd.config import Config
from nbcd.errors import ConfigError, ParameterError
from nbcd.execute.params import parameters_of_cell
from nbcd.execute.sweep import parse_axes, point_name, read_sweep, run_sweep, sweep_grid
from nbcd.records import RECORD_MIME, RecordError, notebook_records, record
from tests.conftest import NotebookFactory, run_cli

PARAMETERS = ("k = 2  # clusters\nseed = 0\nout = 'results'", ["parameters"])


def test_axes_are_typed_by_declaration_ranges_and_lists() -> None:
    declared = parameters_of_cell("k: int = 2\nrate = 0.5\nname = 'a'")
    axes = parse_axes(["k=2..4", "rate=0.1,1", "name=[x, 'y, z']"], declared)
    assert axes == {"k": [2, 3, 4], "rate": [0.1, 1.0], "name": ["x", "y, z"]}
    assert isinstance(axes["rate"][1], float)  # typed by the default 0.5, not read as an int


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("k", "expected NAME=V1,V2"),
        ("=1,2", "expected NAME=V1,V2"),
        ("k=", "no values"),
        ("k=5..2", "a range runs from low to high"),
        ("k=a,b", "is not an int"),
    ],
)
def test_bad_sweep_is_one_line_naming_the_option(spec: str, message: str) -> None:
    declared = parameters_of_cell("k: int = 2")
    with pytest.raises(ParameterError, match=message) as caught:
        parse_axes([spec], declared)
    assert "\n" not in str(caught.value)


def test_an_axis_given_twice_is_refused() -> None:
    with pytest.raises(ParameterError, match="given twice"):
        parse_axes(["k=1", "k=2"])


def test_grid_is_every_combination_last_axis_fastest() -> None:
    grid = sweep_grid({"k": [2, 3], "seed": [0, 1]})
    assert [point_name(p) for p in grid] == ["k=2,seed=0", "k=2,seed=1", "k=3,seed=0", "k=3,seed=1"]


def test_point_names_are_safe_file_names() -> None:
    assert point_name({"path": "../a b/c"}) == "path=.._a_b_c"
    assert point_name({"xs": [1, 2]}) == "xs=_1,2_"


def test_records_are_read_back_from_outputs_and_last_wins() -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", {RECORD_MIME: {"name": "a", "value": 1}}),
        nbformat.v4.new_output("display_data", {RECORD_MIME: {"name": "a", "value": 2}}),
        nbformat.v4.new_output("display_data", {"text/plain": "not a record"}),
    ]
    nb.cells.append(cell)
    assert notebook_records(nb) == {"a": 2}


def test_record_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(RecordError, match="object is not a number"):
        record("x", object())
    with pytest.raises(RecordError, match="non-empty text"):
        record("", 1)


def test_record_outside_a_kernel_prints_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    record("silhouette", np.float64(0.375))
    assert capsys.readouterr().out.strip().endswith("0.375")


def test_sweep_runs_every_point_and_collects_records(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    notebook = make_notebook(
        PARAMETERS,
        "import nbcd\nnbcd.record('score', k * 10 + seed)\nnbcd.record('label', f'{out}')",
        name="notebooks/grid.ipynb",
    )
    config = Config(root=tmp_path, build_dir=tmp_path / "build")
    seen: list[str] = []
    axes = {"k": [2, 3], "seed": [0, 1]}

    result = run_sweep(
        config, notebook, axes, parameters={"out": "r/{point}"}, jobs=2,
        on_point=lambda p: seen.append(p.name),
    )  # fmt: skip

    assert result.ok and result.exit_code == 0
    assert [p.records["score"] for p in result.points] == [20, 21, 30, 31]
    assert result.points[1].records["label"] == "r/k=2,seed=1"
    assert result.metrics == ["score", "label"]
    assert sorted(seen) == sorted(p.name for p in result.points)
    for point in result.points:  # each point's executed notebook keeps its records
        written = nbformat.read(tmp_path / point.output, as_version=4)
        assert written.metadata["nbcd"]["records"] == point.records
    assert result.path == tmp_path / "build" / "nbcd" / "sweeps" / "grid.json"
    assert read_sweep(result.path) == result
    assert json.loads(result.path.read_text())["axes"] == axes


def test_a_failing_point_is_reported_and_the_others_still_run(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    notebook = make_notebook(
        PARAMETERS,
        "if k == 3:\n    raise ValueError('k=3 is bad')\nimport nbcd\nnbcd.record('k', k)",
        name="fails.ipynb",
    )
    config = Config(root=tmp_path, build_dir=tmp_path / "build")

    result = run_sweep(config, notebook, {"k": [2, 3, 4]}, jobs=2)

    assert [p.status for p in result.points] == ["passed", "failed", "passed"]
    assert result.exit_code == 1 and not result.ok
    failed = result.points[1]
    assert "at k=3: cell 3 raised ValueError: k=3 is bad" in failed.error
    assert failed.records == {}


def test_a_damaged_sweep_file_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"schema": "nbcd.sweep/1", "points": [{"nope": 1}]}')
    with pytest.raises(ConfigError, match="damaged sweep file"):
        read_sweep(path)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not an nbcd sweep"):
        read_sweep(path)


def test_configured_sweeps_are_read_and_checked(tmp_path: Path) -> None:
    from nbcd.config import load_config

    (tmp_path / "pyproject.toml").write_text(
        "[tool.nbcd]\n[[tool.nbcd.sweeps]]\nnotebook = 'nb.ipynb'\n"
        "grid = { k = [2, 3], seed = [0] }\nparameters = { out = 'o/{point}' }\n"
    )
    (sweep,) = load_config(tmp_path).sweeps
    assert sweep.notebook == (tmp_path / "nb.ipynb").resolve()
    assert sweep.grid == {"k": [2, 3], "seed": [0]}
    assert sweep.parameters == {"out": "o/{point}"}
    (tmp_path / "pyproject.toml").write_text(
        "[tool.nbcd]\n[[tool.nbcd.sweeps]]\nnotebook = 'nb.ipynb'\ngrid = { k = [] }\n"
    )
    with pytest.raises(ConfigError, match=r"sweeps\[0\]: grid.k must be .* non-empty list"):
        load_config(tmp_path)


@pytest.mark.e2e
def test_cli_sweep_prints_each_point_and_fails_when_one_fails(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    make_notebook(
        PARAMETERS,
        "assert k != 3, 'k=3 is bad'\nimport nbcd\nnbcd.record('double', 2 * k)",
        name="nb.ipynb",
    )
    result = run_cli("run", "nb.ipynb", "--sweep", "k=2..4", "-p", "seed", "7", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "ok     k=2" in result.stdout and "double=4" in result.stdout
    assert "failed k=3" in result.stdout and "k=3 is bad" in result.stdout
    assert "2/3 points ran" in result.stdout
    saved = read_sweep(tmp_path / "build" / "nbcd" / "sweeps" / "nb.json")
    assert [p.parameters for p in saved.points] == [{"k": 2}, {"k": 3}, {"k": 4}]
    refused = run_cli("run", "nb.ipynb", "--sweep", "k=2", "-o", "x.ipynb", cwd=tmp_path)
    assert refused.returncode == 2 and "drop -o/--inplace" in refused.stderr


@pytest.mark.e2e
def test_a_sweep_runs_on_a_cluster_with_the_same_records(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    make_notebook(PARAMETERS, "import nbcd\nnbcd.record('score', k * 10 + seed)", name="nb.ipynb")
    here = run_cli("run", "nb.ipynb", "--sweep", "k=2,3", cwd=tmp_path)
    local = read_sweep(tmp_path / "build" / "nbcd" / "sweeps" / "nb.json")
    there = run_cli("run", "nb.ipynb", "--sweep", "k=2,3", "--cluster", "local:2", cwd=tmp_path)
    remote = read_sweep(tmp_path / "build" / "nbcd" / "sweeps" / "nb.json")

    assert here.returncode == there.returncode == 0, there.stdout + there.stderr
    assert [p.records for p in remote.points] == [p.records for p in local.points]
    assert [p.records for p in remote.points] == [{"score": 20}, {"score": 30}]
