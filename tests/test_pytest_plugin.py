"""`pytest --nbcd` collects notebooks and judges them with the engine of `nbcd test`."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import build_notebook

pytestmark = pytest.mark.e2e


def write_executed(pytester: pytest.Pytester, name: str, *cells: str) -> None:
    nb = build_notebook(*cells)
    NotebookClient(nb, timeout=60).execute()
    nbformat.write(nb, pytester.path / name)


def test_plugin_passes_and_fails_like_the_cli(pytester: pytest.Pytester) -> None:
    write_executed(pytester, "good.ipynb", "print('same')")
    write_executed(pytester, "bad.ipynb", "print('same')")
    bad = nbformat.read(pytester.path / "bad.ipynb", as_version=4)
    bad.cells[0].outputs[0].text = "different\n"
    nbformat.write(bad, pytester.path / "bad.ipynb")
    result = pytester.runpytest_subprocess("--nbcd", "--nbcd-no-cache", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*bad.ipynb*", "*different*"])
    assert "Traceback" not in result.stdout.str()


def test_plugin_lax_option(pytester: pytest.Pytester) -> None:
    write_executed(pytester, "nb.ipynb", "print('x')")
    nb = nbformat.read(pytester.path / "nb.ipynb", as_version=4)
    nb.cells[0].outputs[0].text = "y\n"
    nbformat.write(nb, pytester.path / "nb.ipynb")
    result = pytester.runpytest_subprocess("--nbcd", "--nbcd-lax", "--nbcd-no-cache")
    result.assert_outcomes(passed=1)


def test_without_flag_notebooks_are_not_collected(pytester: pytest.Pytester) -> None:
    write_executed(pytester, "nb.ipynb", "print('x')")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
