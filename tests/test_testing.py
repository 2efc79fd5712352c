"""`nbcd test`: verdicts, modes, failures, cache and JUnit, through the engine and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbcd.testing import cache as cache_module
from nbcd.testing.runner import TestOptions, TestReport, run_tests
from tests.conftest import REPO, NotebookFactory, build_notebook, run_cli

pytestmark = pytest.mark.e2e


def executed(path: Path) -> Path:
    """Execute a notebook in place once so that its stored outputs are a reference."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=60, allow_errors=True, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nbformat.write(nb, path)
    return path


def set_output(path: Path, cell: int, text: str) -> None:
    nb = nbformat.read(path, as_version=4)
    for output in nb.cells[cell].outputs:
        if output.output_type == "stream":
            output.text = text
        elif "data" in output:
            output.data["text/plain"] = text
    nbformat.write(nb, path)


def check(paths: list[Path], tmp_path: Path, **kwargs: object) -> TestReport:
    options = TestOptions(
        jobs=2,
        timeout=kwargs.pop("timeout", 30),  # type: ignore[arg-type]
        cache_dir=tmp_path / "cache",
        **kwargs,
    )  # type: ignore[arg-type]
    return run_tests(paths, options)


def test_when_outputs_come_back_then_passes(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = executed(make_notebook("print(sum(range(10)))", "x = {'a': 1}\nx"))
    report = check([nb], tmp_path)
    assert [o.status for o in report.outcomes] == ["passed"]
    assert report.exit_code == 0


def test_when_stored_output_is_wrong_then_fails_with_diff(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = executed(make_notebook("print(sum(range(10)))"))
    set_output(nb, 1, "44\n")
    report = check([nb], tmp_path)
    outcome = report.outcomes[0]
    assert outcome.status == "failed"
    assert report.exit_code == 1
    assert "cell 2" in outcome.message
    assert "44" in outcome.details and "45" in outcome.details


def test_ignore_output_marker_and_lax_mode(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = executed(make_notebook("# NBVAL_IGNORE_OUTPUT\nprint(1)", "print(2)"))
    set_output(nb, 1, "changed\n")
    assert check([nb], tmp_path).outcomes[0].status == "passed"
    set_output(nb, 2, "changed\n")
    assert check([nb], tmp_path).outcomes[0].status == "failed"
    assert check([nb], tmp_path, lax=True).outcomes[0].status == "passed"


def test_lax_still_fails_on_errors(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook("x = 1", "raise ValueError('boom')")
    report = check([nb], tmp_path, lax=True)
    assert report.outcomes[0].status == "failed"
    assert "ValueError: boom" in report.outcomes[0].message


def test_raises_exception_marker_and_tag(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = executed(
        make_notebook(
            "# NBVAL_RAISES_EXCEPTION\n1/0", ("int('x')", ["raises-exception"]), "print('after')"
        )
    )
    assert check([nb], tmp_path).outcomes[0].status == "passed"


def test_skip_marker_and_skip_execution_tag(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook(
        "# NBVAL_SKIP\nraise SystemExit",
        ("1/0", ["skip-execution"]),
        ("1/0", ["nbval-skip"]),
        "print('ran')",
    )
    report = check([nb], tmp_path, lax=True)
    assert report.outcomes[0].status == "passed"


def test_run_mode_ignores_outputs_but_not_errors(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    good = executed(make_notebook("print(1)", name="good.ipynb"))
    set_output(good, 1, "something else\n")
    bad = make_notebook("x = 1", "undefined_name", name="bad.ipynb")
    report = check([good, bad], tmp_path, mode="run")
    assert [o.status for o in report.outcomes] == ["passed", "failed"]
    assert "NameError" in report.outcomes[1].message


def test_tolerance_accepts_small_numeric_drift(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = executed(make_notebook("print(0.5)"))
    set_output(nb, 1, "0.5004\n")
    assert check([nb], tmp_path).outcomes[0].status == "failed"
    assert check([nb], tmp_path, rtol=1e-3).outcomes[0].status == "passed"


def test_dead_kernel_is_reported_and_others_go_on(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    dies = make_notebook("x = 1", "import os\nos._exit(1)", name="dies.ipynb")
    fine = executed(make_notebook("print('fine')", name="fine.ipynb"))
    report = check([dies, fine], tmp_path)
    assert [o.status for o in report.outcomes] == ["error", "passed"]
    assert "cell 3: the kernel died" in report.outcomes[0].message
    assert report.exit_code == 3


def test_cell_that_never_ends_is_named(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    nb = make_notebook("import time\nwhile True:\n    time.sleep(0.1)")
    report = check([nb], tmp_path, timeout=1.5)
    assert report.outcomes[0].status == "error"
    assert "cell 2 timed out" in report.outcomes[0].message


def test_invalid_notebook_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{")
    report = check([bad], tmp_path)
    assert report.outcomes[0].status == "error"
    assert "not valid JSON" in report.outcomes[0].message
    assert report.exit_code == 2


def test_unrun_forked_and_plain_kernels_agree(
    make_notebook: NotebookFactory, tmp_path: Path
) -> None:
    nb = executed(make_notebook("import os\nprint(os.path.basename(os.getcwd()))"))
    forked = check([nb], tmp_path, fork=True, cache=False)
    plain = check([nb], tmp_path, fork=False, cache=False)
    assert forked.outcomes[0].status == plain.outcomes[0].status == "passed"


class TestCache:
    """The cache skips unchanged notebooks and never hides a change."""

    @pytest.fixture
    def notebook(self, make_notebook: NotebookFactory) -> Path:
        nb = make_notebook("print(open('input.txt').read())")
        (nb.parent / "input.txt").write_text("hello")
        data = nbformat.read(nb, as_version=4)
        data.metadata["nbcd"] = {"inputs": ["input.txt"]}
        nbformat.write(data, nb)
        return executed(nb)

    def statuses(self, nb: Path, tmp_path: Path, **kwargs: object) -> str:
        return check([nb], tmp_path, **kwargs).outcomes[0].status

    def test_unchanged_notebook_is_cached(self, notebook: Path, tmp_path: Path) -> None:
        assert self.statuses(notebook, tmp_path) == "passed"
        assert self.statuses(notebook, tmp_path) == "cached"
        assert self.statuses(notebook, tmp_path, cache=False) == "passed"

    def test_edited_code_reruns(self, notebook: Path, tmp_path: Path) -> None:
        self.statuses(notebook, tmp_path)
        nb = nbformat.read(notebook, as_version=4)
        nb.cells[1].source += "  # edited"
        nbformat.write(nb, notebook)
        assert self.statuses(notebook, tmp_path) == "passed"

    def test_edited_output_reruns_and_fails(self, notebook: Path, tmp_path: Path) -> None:
        self.statuses(notebook, tmp_path)
        set_output(notebook, 1, "bye\n")
        assert self.statuses(notebook, tmp_path) == "failed"
        assert self.statuses(notebook, tmp_path) == "failed", "failures are never cached"

    def test_changed_input_file_reruns(self, notebook: Path, tmp_path: Path) -> None:
        self.statuses(notebook, tmp_path)
        (notebook.parent / "input.txt").write_text("changed")
        assert self.statuses(notebook, tmp_path) == "failed"

    def test_changed_options_rerun(self, notebook: Path, tmp_path: Path) -> None:
        self.statuses(notebook, tmp_path)
        assert self.statuses(notebook, tmp_path, mode="run") == "passed"

    def test_changed_package_version_reruns(
        self, notebook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.statuses(notebook, tmp_path)
        monkeypatch.setattr(cache_module, "environment_fingerprint", lambda _: "numpy==99")
        assert self.statuses(notebook, tmp_path) == "passed"


@pytest.mark.parametrize("change", ["install", "upgrade", "reinstall", "editable"])
def test_environment_fingerprint_moves_when_a_distribution_changes(
    change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys

    site = tmp_path / "site"
    (site / "demo-1.0.dist-info").mkdir(parents=True)
    # another interpreter path (a symlink) makes the listing run in a child, under PYTHONPATH
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(site))

    def fingerprint() -> str:
        cache_module.environment_fingerprint.cache_clear()
        return cache_module.environment_fingerprint(str(python))

    before = fingerprint()
    assert fingerprint() == before
    if change == "install":
        (site / "other-2.0.dist-info").mkdir()
    elif change == "upgrade":
        (site / "demo-1.0.dist-info").rename(site / "demo-1.1.dist-info")
    elif change == "reinstall":
        os.utime(site / "demo-1.0.dist-info", ns=(1, 1))
    else:
        (site / "__editable__.demo-1.0.pth").write_text(str(tmp_path))
    assert fingerprint() != before


def test_cli_prints_lines_summary_and_junit(make_notebook: NotebookFactory, tmp_path: Path) -> None:
    good = executed(make_notebook("print('ok')", name="good.ipynb"))
    bad = executed(make_notebook("print('ok')", name="bad.ipynb"))
    set_output(bad, 1, "not ok\n")
    junit = tmp_path / "junit.xml"
    result = run_cli("test", good, bad, "--junit-xml", junit, "--no-cache", cwd=tmp_path)
    assert result.returncode == 1
    assert "PASSED" in result.stdout and "FAILED" in result.stdout
    assert "2 notebooks: 1 passed, 1 failed" in result.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='bad.ipynb']/failure")
    assert failure is not None and "not ok" in (failure.text or "")


def test_cli_usage_errors(tmp_path: Path) -> None:
    result = run_cli("test", tmp_path / "missing", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing: no such notebook or folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_cli("test", tmp_path / "empty", cwd=tmp_path)
    assert result.returncode == 2
    assert "no notebooks found" in result.stderr
    sanitizer = tmp_path / "s.cfg"
    sanitizer.write_text("[x]\nregex: (\nreplace: y\n")
    (tmp_path / "a.ipynb").write_text("{}")
    result = run_cli("test", tmp_path / "a.ipynb", "--sanitize-with", sanitizer, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "s.cfg" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unchanged_rerun_is_settled_from_the_cache_without_asyncio(tmp_path: Path) -> None:
    notebook = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook("print(6 * 7)"), notebook)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from nbcd.testing.runner import TestOptions, run_tests\n"
        f"options = TestOptions(mode='run', jobs=1, cache_dir=Path({str(tmp_path / 'cache')!r}))\n"
        f"report = run_tests([Path({str(notebook)!r})], options)\n"
        "print(report.outcomes[0].status, 'asyncio' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "passed True"
    assert run() == "cached False"  # settled before the event loop was needed
