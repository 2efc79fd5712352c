"""[tool.nbcd] is read strictly: a mistake is named, never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbcd.config import load_config
from nbcd.discover import find_notebooks
from nbcd.errors import ConfigError


def write_project(root: Path, body: str) -> Path:
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n\n" + body)
    (root / "notebooks").mkdir(exist_ok=True)
    return root


def test_defaults_without_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path)
    assert config.kernel == "python3"
    assert config.notebooks_out == tmp_path.resolve() / "build" / "notebooks"


def test_reads_runs_and_settings_from_a_subfolder(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        """
[tool.nbcd]
notebooks = ["notebooks/*.ipynb"]
build_dir = "out"
timeout = 30

[[tool.nbcd.runs]]
notebook = "notebooks/a.ipynb"
parameters = { k = 3 }
artifacts = ["out/model.json"]

[tool.nbcd.test]
rtol = 1e-3
""",
    )
    (tmp_path / "notebooks" / "a.ipynb").write_text("{}")
    config = load_config(tmp_path / "notebooks")
    assert config.root == tmp_path
    assert config.timeout == 30.0
    assert config.build_dir == tmp_path / "out"
    assert config.test["rtol"] == 1e-3
    run = config.run_for(tmp_path / "notebooks" / "a.ipynb")
    assert run is not None and run.parameters == {"k": 3}
    assert run.artifacts == ((tmp_path / "out" / "model.json").resolve(),)
    assert find_notebooks(config) == [(tmp_path / "notebooks" / "a.ipynb").resolve()]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[tool.nbcd]\ntimout = 3\n", "unknown key 'timout'"),
        ("[tool.nbcd]\ntimeout = 'x'\n", "'timeout' must be int or float, not str"),
        ("[tool.nbcd]\ntimeout = true\n", "'timeout' must be int or float, not bool"),
        ("[tool.nbcd]\ntimeout = -1\n", "positive number"),
        ("[tool.nbcd]\n[[tool.nbcd.runs]]\nparameters = {}\n", "'notebook' is required"),
        ("[tool.nbcd]\n[tool.nbcd.test]\nmode = 'fast'\n", "'mode' must be"),
        ("[tool.nbcd\n", "not valid TOML"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, body: str, message: str) -> None:
    write_project(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_report_settings(tmp_path: Path) -> None:
    write_project(tmp_path, "[tool.nbcd]\n[tool.nbcd.report]\nexclude_input = true\n")
    assert load_config(tmp_path).report["exclude_input"] is True
    write_project(tmp_path, "[tool.nbcd]\n[tool.nbcd.report]\nhide = true\n")
    with pytest.raises(ConfigError, match="unknown key 'hide'"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[tool.nbcd]\nbuild_dir = 'b\xe9ton'\n", r"not UTF-8 text \(byte 0xe9 at offset 26\)"),
        (b"[tool.nbcd]\nx = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"tool = { nbcd = 1 }  # [tool.nbcd]\n", r"\[tool\.nbcd\] must be a table, not int"),
    ],
)
def test_when_pyproject_cannot_be_decoded_then_one_config_error_names_it(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    (tmp_path / "pyproject.toml").write_bytes(raw)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "pyproject.toml"))
    assert "\n" not in str(info.value)


def test_when_another_tools_pyproject_is_not_utf8_then_it_is_not_nbcds_to_judge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.black]\n# caf\xe9\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert load_config(tmp_path / "sub").source is None
