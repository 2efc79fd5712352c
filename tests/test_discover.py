"""One rule for which notebooks a command works on, shared by test, lint, ci and the plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbcd.config import load_config
from nbcd.discover import find_notebooks, is_notebook
from nbcd.errors import UsageError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.nbcd]\nnotebooks = ["**/*.ipynb"]\n')
    for name in (
        "a.ipynb",
        "sub/b.ipynb",
        "sub/.ipynb_checkpoints/b-checkpoint.ipynb",
        ".hidden/c.ipynb",
        "build/notebooks/a.ipynb",
        "node_modules/pkg/d.ipynb",
        "notes.txt",
    ):
        touch(tmp_path / name)
    return tmp_path


def test_configured_globs_skip_checkpoints_hidden_and_build(project: Path) -> None:
    found = find_notebooks(load_config(project))
    assert found == [(project / "a.ipynb").resolve(), (project / "sub" / "b.ipynb").resolve()]


def test_a_folder_is_searched_by_the_same_rule(project: Path) -> None:
    found = find_notebooks(load_config(project), [project])
    assert sorted(p.relative_to(project).as_posix() for p in found) == ["a.ipynb", "sub/b.ipynb"]


def test_a_file_given_is_taken_as_it_is(project: Path) -> None:
    checkpoint = project / "sub" / ".ipynb_checkpoints" / "b-checkpoint.ipynb"
    assert find_notebooks(load_config(project), [checkpoint]) == [checkpoint.resolve()]


def test_nothing_to_work_on_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.nbcd]\nnotebooks = ["nb/*.ipynb"]\n')
    config = load_config(tmp_path)
    with pytest.raises(UsageError, match=r"no notebooks match \['nb/\*.ipynb'\]"):
        find_notebooks(config)
    with pytest.raises(UsageError, match="no notebooks found in"):
        find_notebooks(config, [tmp_path])
    with pytest.raises(UsageError, match=r"missing\.ipynb: no such notebook or folder"):
        find_notebooks(config, [tmp_path / "missing.ipynb"])


def test_a_project_inside_a_hidden_folder_still_has_notebooks(tmp_path: Path) -> None:
    root = tmp_path / ".work" / "proj"
    touch(root / "notebooks" / "x.ipynb")
    (root / "pyproject.toml").write_text("[tool.nbcd]\n")
    config = load_config(root)
    assert find_notebooks(config) == [(root / "notebooks" / "x.ipynb").resolve()]
    assert is_notebook(root / "notebooks" / "x.ipynb", config)


def test_pytest_plugin_collects_by_the_same_rule(pytester: pytest.Pytester) -> None:
    pytester.chdir()
    for name in ("a.ipynb", "sub/.ipynb_checkpoints/x.ipynb", "build/y.ipynb", ".h/z.ipynb"):
        touch(pytester.path / name)
    (pytester.path / "pyproject.toml").write_text("[tool.nbcd]\n")
    result = pytester.runpytest_subprocess(
        "--nbcd", "--collect-only", "-q", "-p", "no:cacheprovider"
    )
    collected = [ln for ln in result.stdout.lines if ".ipynb" in ln]
    assert collected == ["a.ipynb::a.ipynb"]
