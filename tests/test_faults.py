"""Faults and bad input through the real CLI: one line, the documented exit code, inputs intact.

README promises that every error is one line naming the file, cell or field and what to do,
never a traceback, with exit code 2 for usage and configuration errors. Each case here breaks
one thing nbcd reads or writes and checks, through `python -m nbcd`:

- the exit code;
- stderr is one line (plus an indented ``source:`` line where README shows one), without
  "Traceback"; nbcd ci's per-stage progress lines are not counted;
- every input file is byte-identical afterwards, and no half-written temporary file is left;
- in a batch (`nbcd test` of a good and a bad notebook), the good one still gets its verdict.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from nbcd.files import MAX_JSON_DEPTH
from tests.conftest import build_notebook, run_cli

pytestmark = pytest.mark.e2e

# `nbcd ci` reports each stage on stderr as it goes; those lines are progress, not the error
_PROGRESS = re.compile(r"^(\w+: running|(PASSED|FAILED|ERROR|SKIPPED)\s+\w+\s+[\d.]+ s\b.*)$")
_DEEP = "[" * 10_000 + "]" * 10_000  # far past any recursion limit


# --------------------------------------------------------------------------- the workspace


@dataclass
class Case:
    """One command against a prepared folder: what to run, and which files it must not touch."""

    args: list[str]
    inputs: list[Path] = field(default_factory=list)


class Workspace:
    """A scratch project folder with builders for every kind of file nbcd reads."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root = root
        self._model = model

    def notebook(self, name: str = "good.ipynb", *cells: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nb = build_notebook(*(cells or ("x = 1", "print(x)")), markdown_title="Good")
        nbformat.write(nb, path)
        return path

    def text(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def notebook_json(self, name: str, change: Callable[[dict[str, object]], None]) -> Path:
        """A good notebook's JSON, changed by ``change`` and written as it is."""
        data = json.loads(nbformat.writes(build_notebook("x = 1", markdown_title="Changed")))
        change(data)
        return self.text(name, json.dumps(data))

    def pyproject(self, body: str | bytes = "") -> Path:
        head = b'[tool.nbcd]\nnotebooks = ["*.ipynb"]\n'
        return self.text(
            "pyproject.toml", head + (body.encode() if isinstance(body, str) else body)
        )

    def blocker(self) -> Path:
        """A regular file where a command will want a folder."""
        return self.text("blocker", "I am a file\n")

    def model(self, metadata: str | None = None) -> list[Path]:
        """A copy of the toy model; ``metadata`` replaces its model.json."""
        folder = self.root / "model"
        shutil.copytree(self._model, folder)
        if metadata is not None:
            (folder / "model.json").write_text(metadata, encoding="utf-8")
        return sorted(folder.iterdir())

    def csv(self, name: str = "in.csv", content: str | bytes | None = None) -> Path:
        rows = "".join(f"r{i},{i},{2 * i}\n" for i in range(5))
        return self.text(name, "id,a,b\n" + rows if content is None else content)

    def summary(self, text_of: Callable[[dict[str, object]], str] = json.dumps) -> Path:
        """A valid summary.json, or what ``text_of`` makes of its data."""
        data: dict[str, object] = {
            "schema": 1,
            "project": "p",
            "root": str(self.root),
            "started_at": 0.0,
            "duration_s": 1.0,
            "stages": [{"name": "lint", "status": "passed", "duration_s": 0.1, "summary": "ok"}],
        }
        return self.text("summary.json", text_of(data))


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MinMax -> KMeans pipeline on features a and b, saved once for the module."""
    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from nbcd.model import save_model

    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0)[::-1]})
    pipeline = make_pipeline(MinMaxScaler(), KMeans(2, n_init=2, random_state=0)).fit(frame)
    folder = tmp_path_factory.mktemp("toy") / "model"
    save_model(pipeline, folder, features=["a", "b"])
    return folder


@pytest.fixture
def ws(tmp_path: Path, toy_model: Path) -> Workspace:
    return Workspace(tmp_path, toy_model)


# --------------------------------------------------------------------------- the checks


def snapshot(paths: list[Path]) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in paths}


def problem_lines(stderr: str) -> list[str]:
    """What stderr tells the user went wrong: every line but nbcd ci's stage progress."""
    return [line for line in stderr.splitlines() if line.strip() and not _PROGRESS.match(line)]


def run_case(ws: Workspace, case: Case) -> subprocess.CompletedProcess[str]:
    """Run the case's command and check the invariants every fault shares."""
    before = snapshot(case.inputs)
    result = run_cli(*case.args, cwd=ws.root)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert snapshot(case.inputs) == before, "an input file was changed"
    leftovers = [p for p in ws.root.rglob(".*.tmp") if p.is_file()]
    assert leftovers == [], "a half-written temporary file was left behind"
    return result


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    """Exit ``code``, and stderr is one line matching ``says`` (plus a source line at most)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("    source: ")), lines
    assert re.search(says, lines[0]), lines[0]


def assert_batch_verdicts(
    result: subprocess.CompletedProcess[str], bad: str, says: str, good: str = "good.ipynb"
) -> None:
    """`nbcd test` of a bad and a good notebook: exit 2, one line on the bad, the good passed."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert problem_lines(result.stderr) == []
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(rf"ERROR\s+{re.escape(bad)}\b", line))
    assert re.search(says, lines[at + 1]), lines[at + 1]
    assert not lines[at + 2].startswith("        "), "the error takes more than one line"
    assert any(re.match(rf"PASSED\s+{re.escape(good)}\b", line) for line in lines), result.stdout


# --------------------------------------------------------------------------- 1. writes


def _run_output_under_a_file(ws: Workspace) -> Case:
    nb, blocker = ws.notebook(), ws.blocker()
    return Case(["run", nb.name, "-o", "blocker/out.ipynb", "--no-html"], [nb, blocker])


def _junit_under_a_file(ws: Workspace) -> Case:
    nb, blocker = ws.notebook(), ws.blocker()
    return Case(["test", nb.name, "--junit-xml", "blocker/junit.xml"], [nb, blocker])


def _junit_is_a_folder(ws: Workspace) -> Case:
    nb = ws.notebook()
    (ws.root / "reports").mkdir()
    return Case(["test", nb.name, "--junit-xml", "reports"], [nb])


def _predict_output_under_a_file(ws: Workspace) -> Case:
    inputs = [*ws.model(), ws.csv(), ws.blocker()]
    return Case(["predict", "model", "in.csv", "-o", "blocker/scores.csv"], inputs)


def _predict_output_is_a_folder(ws: Workspace) -> Case:
    inputs = [*ws.model(), ws.csv()]
    (ws.root / "scores").mkdir()
    return Case(["predict", "model", "in.csv", "-o", "scores"], inputs)


def _build_dir_is_a_file(ws: Workspace) -> Case:
    inputs = [ws.notebook(), ws.pyproject('build_dir = "blocker"\n'), ws.blocker()]
    return Case(["run", "good.ipynb", "--no-html"], inputs)


def _build_dir_under_a_file(ws: Workspace) -> Case:
    inputs = [ws.notebook(), ws.pyproject('build_dir = "blocker/build"\n'), ws.blocker()]
    return Case(["ci", ".", "--stages", "lint"], inputs)


def _report_site_under_a_file(ws: Workspace) -> Case:
    # the site's folders are made outside nbcd.files: main() is the last line of defence
    inputs = [ws.summary(), ws.blocker()]
    return Case(["report", "--summary", "summary.json", "-o", "blocker/site"], inputs)


def _init_under_a_file(ws: Workspace) -> Case:
    return Case(["init", "blocker/project", "--no-execute"], [ws.blocker()])


UNWRITABLE = {
    "run -o under a file": (
        _run_output_under_a_file,
        r"out\.ipynb: cannot write \(\S*blocker is a file",
    ),
    "test --junit-xml under a file": (
        _junit_under_a_file,
        r"junit\.xml: cannot write \(\S*blocker is a file",
    ),
    "test --junit-xml is a folder": (_junit_is_a_folder, r"reports: cannot write \(it is a folder"),
    "predict -o under a file": (
        _predict_output_under_a_file,
        r"scores\.csv: cannot write \(\S*blocker is a file",
    ),
    "predict -o is a folder": (
        _predict_output_is_a_folder,
        r"scores: cannot write \(it is a folder",
    ),
    "build_dir is a file": (
        _build_dir_is_a_file,
        r"good\.ipynb: cannot write \(\S*blocker is a file",
    ),
    "build_dir under a file": (
        _build_dir_under_a_file,
        r"summary\.json: cannot write \(\S*blocker is a file",
    ),
    "report -o under a file": (
        _report_site_under_a_file,
        r"blocker: is a file where a folder is needed",
    ),
    "init under a file": (_init_under_a_file, r"cannot write .*blocker is a file, not a folder"),
}


@pytest.mark.parametrize("name", sorted(UNWRITABLE))
def test_when_an_output_path_is_blocked_then_one_line_and_exit_2(ws: Workspace, name: str) -> None:
    arrange, says = UNWRITABLE[name]
    result = run_case(ws, arrange(ws))
    assert_one_line(result, 2, says)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 kB tmpfs: a write that does not fit fails with ENOSPC, as on a full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    yield from _mounted(disk, "size=64k")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A folder, and the call that makes it read-only once the test has put its files in it.

    Root writes through permission bits, so as root a tmpfs remounted read-only stands in.
    """
    folder = tmp_path / "frozen"
    folder.mkdir()
    if os.geteuid() != 0:
        yield folder, lambda: folder.chmod(0o555)
        folder.chmod(0o755)
        return
    for mounted in _mounted(folder, "size=1m"):

        def freeze(folder: Path = mounted) -> None:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

        yield mounted, freeze


def _mounted(folder: Path, options: str) -> Iterator[Path]:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs Linux, root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _fill(disk: Path) -> None:
    """Fill the disk to the last byte, so that even a small write fails."""
    with (disk / "filler").open("wb", buffering=0) as handle:
        for size in (4096, 64, 1):  # big blocks first, then the tail of the last one
            try:
                while True:
                    handle.write(b"x" * size)
            except OSError:
                continue


def test_when_the_disk_fills_while_run_writes_then_the_previous_output_stays(
    ws: Workspace, small_disk: Path
) -> None:
    nb = ws.notebook("big.ipynb", "print('x' * 200_000)")
    previous = small_disk / "out.ipynb"
    previous.write_text("the previous run's notebook\n")
    case = Case(["run", nb.name, "-o", str(previous), "--no-html"], [nb, previous])
    result = run_case(ws, case)
    assert_one_line(result, 2, r"out\.ipynb: cannot write \(No space left on device\)")
    assert sorted(p.name for p in small_disk.iterdir()) == ["out.ipynb"]


def test_when_the_disk_is_full_then_junit_xml_is_one_line_and_the_verdicts_stand(
    ws: Workspace, small_disk: Path
) -> None:
    nb = ws.notebook()
    previous = small_disk / "junit.xml"
    previous.write_text("<testsuite/>\n")
    _fill(small_disk)
    result = run_case(ws, Case(["test", nb.name, "--junit-xml", str(previous)], [nb, previous]))
    assert_one_line(result, 2, r"junit\.xml: cannot write \(No space left on device\)")
    assert re.search(r"^PASSED\s+good\.ipynb", result.stdout, re.MULTILINE), result.stdout


def test_when_the_disk_fills_while_predict_writes_then_the_previous_scores_stay(
    ws: Workspace, small_disk: Path
) -> None:
    rows = "".join(f"county-{i:06d},{i % 20},{i % 7}\n" for i in range(5000))
    inputs = [*ws.model(), ws.csv("in.csv", "id,a,b\n" + rows)]
    previous = small_disk / "scores.csv"
    previous.write_text("id,cluster,distance\n")
    case = Case(["predict", "model", "in.csv", "-o", str(previous)], [*inputs, previous])
    result = run_case(ws, case)
    assert_one_line(result, 2, r"scores\.csv: cannot write \(No space left on device\)")
    assert sorted(p.name for p in small_disk.iterdir()) == ["scores.csv"]


def test_when_the_output_folder_is_read_only_then_run_is_one_line_and_exit_2(
    ws: Workspace, read_only: tuple[Path, Callable[[], None]]
) -> None:
    folder, freeze = read_only
    nb = ws.notebook()
    freeze()
    result = run_case(
        ws, Case(["run", nb.name, "-o", str(folder / "out.ipynb"), "--no-html"], [nb])
    )
    assert_one_line(
        result, 2, r"out\.ipynb: cannot write \((Read-only file system|Permission denied)\)"
    )


def test_when_lint_cannot_write_its_fix_then_the_notebook_is_untouched(
    ws: Workspace, read_only: tuple[Path, Callable[[], None]]
) -> None:
    folder, freeze = read_only
    nb = folder / "errors.ipynb"
    broken = build_notebook("1 / 0", markdown_title="Errors")
    broken.cells[1].outputs = [nbformat.v4.new_output("error", ename="E", evalue="x", traceback=[])]
    nbformat.write(broken, nb)
    freeze()
    result = run_case(ws, Case(["lint", str(nb), "--fix-errors"], [nb]))
    assert_one_line(
        result, 2, r"errors\.ipynb: cannot write \((Read-only file system|Permission denied)\)"
    )


# --------------------------------------------------------------------------- 2. deep JSON


def _write_deep_notebook(ws: Workspace) -> Path:
    good = json.loads(nbformat.writes(build_notebook("x = 1", markdown_title="Deep")))
    text = json.dumps(good).replace('"metadata": {', f'"metadata": {{"deep": {_DEEP}, ', 1)
    return ws.text("deep.ipynb", text)


def test_when_a_notebook_nests_too_deep_then_test_reports_it_and_passes_the_good_one(
    ws: Workspace,
) -> None:
    inputs = [_write_deep_notebook(ws), ws.notebook()]
    result = run_case(ws, Case(["test", "deep.ipynb", "good.ipynb"], inputs))
    assert_batch_verdicts(
        result, "deep.ipynb", rf"deep\.ipynb: JSON nested deeper than {MAX_JSON_DEPTH}"
    )


def test_when_a_notebook_nests_too_deep_then_run_is_one_line_and_exit_2(ws: Workspace) -> None:
    deep = _write_deep_notebook(ws)
    result = run_case(ws, Case(["run", deep.name], [deep]))
    assert_one_line(
        result, 2, r"deep\.ipynb: JSON nested deeper than \d+ levels \(line 1, column \d+\)"
    )


def test_when_a_notebook_nests_too_deep_then_lint_reports_nb001(ws: Workspace) -> None:
    deep, good = _write_deep_notebook(ws), ws.notebook()
    result = run_case(ws, Case(["lint", deep.name, good.name, "--format", "json"], [deep, good]))
    assert result.returncode == 1, result.stderr
    assert problem_lines(result.stderr) == []
    findings = json.loads(result.stdout)["findings"]
    assert [(f["path"], f["code"]) for f in findings if f["path"] == "deep.ipynb"] == [
        ("deep.ipynb", "NB001")
    ]
    assert "nested deeper" in findings[0]["message"]


def test_when_a_notebook_nests_too_deep_then_ci_records_it_and_tests_the_rest(
    ws: Workspace,
) -> None:
    inputs = [_write_deep_notebook(ws), ws.notebook(), ws.pyproject()]
    result = run_case(ws, Case(["ci", ".", "--stages", "test"], inputs))
    assert result.returncode == 2, result.stderr
    tests = json.loads((ws.root / "build" / "nbcd" / "summary.json").read_text())["tests"]
    verdicts = {t["path"]: (t["status"], t["message"]) for t in tests}
    assert verdicts["good.ipynb"][0] == "passed"
    assert verdicts["deep.ipynb"][0] == "error"
    assert "nested deeper" in verdicts["deep.ipynb"][1] and "\n" not in verdicts["deep.ipynb"][1]


def test_when_summary_json_nests_too_deep_then_report_is_one_line(ws: Workspace) -> None:
    summary = ws.summary(lambda data: json.dumps(data)[:-1] + f', "deep": {_DEEP}}}')
    result = run_case(ws, Case(["report", "--summary", "summary.json"], [summary]))
    assert_one_line(result, 2, r"summary\.json: unreadable pipeline summary \(JSON nested deeper")


def test_when_model_json_nests_too_deep_then_predict_is_one_line(ws: Workspace) -> None:
    inputs = [*ws.model('{"features": ["a", "b"], "deep": ' + _DEEP + "}"), ws.csv()]
    result = run_case(ws, Case(["predict", "model", "in.csv"], inputs))
    assert_one_line(result, 2, r"model\.json is JSON nested deeper than \d+ levels")


def test_when_a_model_card_nests_too_deep_then_report_notes_it_and_builds(ws: Workspace) -> None:
    inputs = ws.model('{"features": ["a", "b"], "deep": ' + _DEEP + "}")
    summary = ws.summary(lambda data: json.dumps({**data, "models": ["model"]}))
    result = run_case(ws, Case(["report", "--summary", "summary.json"], [*inputs, summary]))
    assert result.returncode == 0, result.stderr
    assert re.search(r"model/model\.json: unreadable \(.*nested deeper", result.stderr)


# --------------------------------------------------------------------------- 3. encodings

NOT_UTF8 = b'build_dir = "b\xe9ton"\n'  # Latin-1, as an old editor saves it


@pytest.mark.parametrize(
    "command",
    [
        ["test"],
        ["lint"],
        ["run", "good.ipynb"],
        ["report"],
        ["build", "--no-docker"],
        ["ci", "."],
    ],
    ids=lambda args: args[0],
)
def test_when_pyproject_is_not_utf8_then_every_command_says_so_in_one_line(
    ws: Workspace, command: list[str]
) -> None:
    inputs = [ws.notebook(), ws.pyproject(NOT_UTF8)]
    result = run_case(ws, Case(command, inputs))
    assert_one_line(result, 2, r"pyproject\.toml: not UTF-8 text \(byte 0xe9 at offset \d+\)")


def test_when_the_parameters_file_is_not_utf8_then_run_says_so_in_one_line(ws: Workspace) -> None:
    inputs = [ws.notebook(), ws.text("params.yaml", b"city: M\xfcnchen\n")]
    result = run_case(ws, Case(["run", "good.ipynb", "-f", "params.yaml"], inputs))
    assert_one_line(result, 2, r"params\.yaml: not UTF-8 text \(byte 0xfc")


def test_when_a_notebook_is_not_utf8_then_test_reports_it_and_passes_the_good_one(
    ws: Workspace,
) -> None:
    good = ws.notebook()
    latin = ws.text("latin.ipynb", good.read_bytes().replace(b"Good", b"G\xf6od"))
    result = run_case(ws, Case(["test", "latin.ipynb", "good.ipynb"], [latin, good]))
    assert_batch_verdicts(result, "latin.ipynb", r"latin\.ipynb: not UTF-8 text \(byte 0xf6")


# --------------------------------------------------------------------------- 4. symlink loops


@pytest.mark.parametrize("command", ["run", "test", "lint"])
def test_when_the_notebook_is_a_symlink_loop_then_one_line_and_exit_2(
    ws: Workspace, command: str
) -> None:
    (ws.root / "loop.ipynb").symlink_to("loop.ipynb")
    result = run_case(ws, Case([command, "loop.ipynb"]))
    assert_one_line(result, 2, r"loop\.ipynb")


def test_when_a_folder_holds_a_symlink_loop_then_lint_reports_it_and_lints_the_rest(
    ws: Workspace,
) -> None:
    good = ws.notebook("nbs/good.ipynb")
    (ws.root / "nbs" / "loop.ipynb").symlink_to("loop.ipynb")
    result = run_case(ws, Case(["lint", "nbs", "--format", "json"], [good]))
    assert result.returncode == 1 and problem_lines(result.stderr) == [], result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["files"]) == ["nbs/good.ipynb", "nbs/loop.ipynb"]
    [finding] = [f for f in report["findings"] if f["path"] == "nbs/loop.ipynb"]
    assert finding["code"] == "NB001" and "symbolic links" in finding["message"]


def test_when_a_folder_holds_a_symlink_loop_then_test_reports_it_and_passes_the_rest(
    ws: Workspace,
) -> None:
    good = ws.notebook("nbs/good.ipynb")
    (ws.root / "nbs" / "loop.ipynb").symlink_to("loop.ipynb")
    result = run_case(ws, Case(["test", "nbs"], [good]))
    says = r"loop\.ipynb: (symlink loop|cannot read \(Too many levels of symbolic links\))"
    assert_batch_verdicts(result, "nbs/loop.ipynb", says, good="nbs/good.ipynb")


# --------------------------------------------------------------------------- 5. predict in place


def _same_path(ws: Workspace) -> str:
    return "in.csv"


def _same_path_spelled_otherwise(ws: Workspace) -> str:
    (ws.root / "sub").mkdir()
    return "sub/../in.csv"


def _hard_link(ws: Workspace) -> str:
    os.link(ws.root / "in.csv", ws.root / "linked.csv")
    return "linked.csv"


def _symlink(ws: Workspace) -> str:
    (ws.root / "alias.csv").symlink_to("in.csv")
    return "alias.csv"


@pytest.mark.parametrize(
    "output",
    [_same_path, _same_path_spelled_otherwise, _hard_link, _symlink],
    ids=lambda f: f.__name__[1:],
)
def test_when_predict_would_write_over_its_input_then_it_refuses_and_keeps_the_input(
    ws: Workspace, output: Callable[[Workspace], str]
) -> None:
    inputs = [*ws.model(), ws.csv()]
    target = output(ws)
    result = run_case(ws, Case(["predict", "model", "in.csv", "-o", target], inputs))
    assert_one_line(result, 2, r"the output is the input file in\.csv; .* give -o another path")


# --------------------------------------------------------------------------- 6. normalizing


def _ids_on_44(nb: dict[str, object]) -> None:
    nb["nbformat_minor"] = 4


def _repeated_ids(nb: dict[str, object]) -> None:
    cells = nb["cells"]
    assert isinstance(cells, list)
    cells[1]["id"] = cells[0]["id"]


def _missing_ids(nb: dict[str, object]) -> None:
    cells = nb["cells"]
    assert isinstance(cells, list)
    for cell in cells:
        del cell["id"]


NORMALIZABLE = {
    "ids-on-4.4": _ids_on_44,
    "repeated-ids": _repeated_ids,
    "missing-ids": _missing_ids,
}


@pytest.mark.parametrize("command", ["run", "test"])
@pytest.mark.parametrize("problem", sorted(NORMALIZABLE))
def test_when_nbformat_can_normalize_the_notebook_then_it_runs_without_warnings(
    ws: Workspace, command: str, problem: str
) -> None:
    nb = ws.notebook_json("fixable.ipynb", NORMALIZABLE[problem])
    result = run_case(
        ws, Case([command, nb.name, *(["--no-html"] if command == "run" else [])], [nb])
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == "", "nbformat's warnings leaked"


def test_when_a_notebook_needed_normalizing_then_lint_says_what_to_fix(ws: Workspace) -> None:
    inputs = [ws.notebook_json(f"{name}.ipynb", change) for name, change in NORMALIZABLE.items()]
    args = ["lint", *(p.name for p in inputs), "--format", "json", "--select", "NB004"]
    args += ["--fail-on", "warning"]  # NB004 is a warning
    result = run_case(ws, Case(args, inputs))
    assert result.returncode == 1 and result.stderr == "", result.stderr
    found = {(f["path"], f["cell"]) for f in json.loads(result.stdout)["findings"]}
    assert found == {
        ("ids-on-4.4.ipynb", None),
        ("repeated-ids.ipynb", 2),
        ("missing-ids.ipynb", 1),
        ("missing-ids.ipynb", 2),
    }


# --------------------------------------------------------------------------- 7. malformed files


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda nb: nb.update({key: value})


BAD_NOTEBOOKS: dict[str, tuple[Callable[[Workspace], Path], str]] = {
    "not JSON": (
        lambda ws: ws.text("bad.ipynb", '{"cells": [\n<<<<<<< HEAD\n'),
        r"bad\.ipynb: not valid JSON \(line 2, column 1: .*merge conflict",
    ),
    "JSON not an object": (
        lambda ws: ws.text("bad.ipynb", "[1, 2, 3]"),
        r"bad\.ipynb: JSON but not a notebook",
    ),
    "nbformat 3": (
        lambda ws: ws.text("bad.ipynb", '{"nbformat": 3, "nbformat_minor": 0, "worksheets": []}'),
        r"bad\.ipynb: nbformat 3 notebook; .*jupyter nbconvert",
    ),
    "no cells": (
        lambda ws: ws.notebook_json("bad.ipynb", lambda nb: nb.pop("cells")),
        r"bad\.ipynb: JSON but not a notebook \(no 'cells'\)",
    ),
    "cells not a list": (
        lambda ws: ws.notebook_json("bad.ipynb", _set("cells", {"0": "x = 1"})),
        r"bad\.ipynb: (not a valid notebook|invalid nbformat 4 notebook)",
    ),
    "empty file": (lambda ws: ws.text("bad.ipynb", ""), r"bad\.ipynb: not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_NOTEBOOKS))
def test_when_a_notebook_is_malformed_then_test_names_it_and_passes_the_good_one(
    ws: Workspace, name: str
) -> None:
    arrange, says = BAD_NOTEBOOKS[name]
    inputs = [arrange(ws), ws.notebook()]
    result = run_case(ws, Case(["test", "bad.ipynb", "good.ipynb"], inputs))
    assert_batch_verdicts(result, "bad.ipynb", says)


BAD_CONFIG = {
    "not TOML": ("notebooks = [\n", r"pyproject\.toml: not valid TOML"),
    "unknown key": (
        "notebook = 'x.ipynb'\n",
        r"\[tool\.nbcd\]: unknown key 'notebook'; known keys",
    ),
    "wrong type": ("timeout = 'ten'\n", r"\[tool\.nbcd\]: 'timeout' must be int or float, not str"),
    "stage key unknown": (
        "[tool.nbcd.test]\nrtoll = 1\n",
        r"\[tool\.nbcd\]\.test: unknown key 'rtoll'",
    ),
    "run without notebook": (
        "[[tool.nbcd.runs]]\nparameters = {}\n",
        r"runs\[0\]: 'notebook' is required",
    ),
    "deeply nested": ("x = " + "[" * 5000 + "]" * 5000 + "\n", r"pyproject\.toml: not valid TOML"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIG))
def test_when_tool_nbcd_is_invalid_then_test_names_the_key_in_one_line(
    ws: Workspace, name: str
) -> None:
    body, says = BAD_CONFIG[name]
    inputs = [ws.notebook(), ws.pyproject(body)]
    result = run_case(ws, Case(["test"], inputs))
    assert_one_line(result, 2, says)


BAD_PARAMETERS = {
    "-p not YAML": (["-p", "cols", "[a, b"], None, r"-p cols: '\[a, b' is not a valid YAML value"),
    "-p nested too deep": (
        ["-p", "x", "[" * 5000],
        None,
        r"-p x: '\[+…' is not a valid YAML value \(nested too deeply\)",
    ),
    "-p bad name": (["-p", "my key", "1"], None, r"'my key' is not a valid parameter name"),
    "-f not a mapping": (
        ["-f", "p.yaml"],
        "- 1\n- 2\n",
        r"p\.yaml: must be a mapping of parameter names",
    ),
    "-f key not a name": (
        ["-f", "p.yaml"],
        "my key: 1\n",
        r"p\.yaml: 'my key' is not a valid parameter name",
    ),
    "-f not YAML": (["-f", "p.yaml"], "a: [1, 2\n", r"p\.yaml: not valid YAML at line \d+"),
    "-f missing": (["-f", "absent.yaml"], None, r"absent\.yaml: no such parameters file"),
}


@pytest.mark.parametrize("name", sorted(BAD_PARAMETERS))
def test_when_a_parameter_is_bad_then_run_names_it_in_one_line(ws: Workspace, name: str) -> None:
    args, params_file, says = BAD_PARAMETERS[name]
    inputs = [ws.notebook()] + ([ws.text("p.yaml", params_file)] if params_file else [])
    result = run_case(ws, Case(["run", "good.ipynb", *args], inputs))
    assert_one_line(result, 2, says)


def _json_with(change: Callable[[dict[str, object]], object]) -> Callable[[dict[str, object]], str]:
    """The summary's JSON once ``change`` has edited it (or with what ``change`` returns)."""

    def text_of(data: dict[str, object]) -> str:
        replaced = change(data)
        return json.dumps(data if replaced is None else replaced)

    return text_of


def _stage_time_as_text(data: dict[str, object]) -> None:
    data["stages"] = [{"name": "lint", "status": "passed", "duration_s": "slow", "summary": ""}]


BAD_SUMMARIES: dict[str, tuple[Callable[[dict[str, object]], str], str]] = {
    "not JSON": (lambda data: "{", r"unreadable pipeline summary \(not valid JSON"),
    "a list": (_json_with(lambda data: [data]), r"summary of another nbcd version"),
    "stages missing": (
        _json_with(lambda data: data.pop("stages") and None),
        r"malformed pipeline summary \(stages is missing\)",
    ),
    "stage time is text": (
        _json_with(_stage_time_as_text),
        r"stages\[0\]\.duration_s must be a number, not str",
    ),
    "unknown field": (
        _json_with(lambda data: data.update(colour="red")),
        r"colour is not a summary",
    ),
    "tests not a list": (_json_with(lambda data: data.update(tests={})), r"tests must be a list"),
}


@pytest.mark.parametrize("name", sorted(BAD_SUMMARIES))
def test_when_summary_json_is_garbage_then_report_names_the_field_in_one_line(
    ws: Workspace, name: str
) -> None:
    text_of, says = BAD_SUMMARIES[name]
    path = ws.summary(text_of)
    result = run_case(ws, Case(["report", "--summary", "summary.json"], [path]))
    assert_one_line(result, 2, r"summary\.json: .*" + says)


BAD_MODELS = {
    "not JSON": ('{"features": [', r"model\.json is not valid JSON \(line 1, column \d+"),
    "no features": ('{"nbcd_model_format": 1}', r"no 'features' list of column names"),
    "features not text": ('{"features": [1, {}], "nbcd_model_format": 1}', r"no 'features' list"),
    "format from the future": (
        '{"features": ["a", "b"], "nbcd_model_format": 99}',
        r"has model format 99",
    ),
    "format not a number": (
        '{"features": ["a", "b"], "nbcd_model_format": true}',
        r"has model format True",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_when_model_json_is_garbage_then_predict_says_save_again_in_one_line(
    ws: Workspace, name: str
) -> None:
    metadata, says = BAD_MODELS[name]
    inputs = [*ws.model(metadata), ws.csv()]
    result = run_case(ws, Case(["predict", "model", "in.csv"], inputs))
    assert_one_line(result, 2, says + r".*save the model again")


BAD_CSV = {
    "empty": ("", r"in\.csv: is empty; it needs a header row"),
    "not UTF-8": (
        b"id,a,b\nM\xfcnchen,1,2\n",
        r"in\.csv: cannot be read as CSV \(.*can't decode byte 0xfc",
    ),
    "no feature columns": ("x,y\n1,2\n", r"in\.csv lacks the model's feature columns a, b"),
    "first row too long": (
        "id,a,b\nr0,1,2,3,4\n",
        r"in\.csv: cannot be read as CSV \(a row has more fields",
    ),
    "later row too long": (
        "id,a,b\nr0,1,2\nr1,1,2,3,4\n",
        r"in\.csv: cannot be read as CSV \(.*Expected 3 fields",
    ),
    "binary": (
        bytes(range(256)) * 4,
        r"in\.csv: (cannot be read as CSV|lacks the model's feature)",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CSV))
def test_when_the_csv_is_garbage_then_predict_names_it_in_one_line(
    ws: Workspace, name: str
) -> None:
    content, says = BAD_CSV[name]
    inputs = [*ws.model(), ws.csv("in.csv", content)]
    result = run_case(ws, Case(["predict", "model", "in.csv", "-o", "out.csv"], inputs))
    assert_one_line(result, 2, says)
    assert not (ws.root / "out.csv").exists(), "a partial output was left"
