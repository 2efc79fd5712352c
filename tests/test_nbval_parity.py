"""nbcd's default comparison gives ``pytest --nbval``'s verdict, notebook by notebook.

Each case is a small notebook, executed once to store its outputs, some of them then
edited. ``pytest --nbval`` and ``--nbval-lax`` judge the notebooks in subprocesses while
nbclient runs each one afresh in this process for ``compare_notebook``. Every case also
states the verdicts it expects, so a case that stops exercising its rule is noticed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_notebook, new_output
from traitlets.config import Config

from nbcd.testing.compare import CompareOptions, Mismatch, compare_notebook, load_sanitizers
from nbcd.testing.markers import SKIP_EXECUTION_TAG, cell_markers
from tests.conftest import build_notebook

pytestmark = pytest.mark.slow

Cell = str | tuple[str, list[str]]  # source, or (source, tags)


def code(nb: Any, index: int) -> Any:
    return [cell for cell in nb.cells if cell.cell_type == "code"][index]


def set_text(index: int, text: str) -> Callable[[Any], None]:
    def mutate(nb: Any) -> None:
        outputs = code(nb, index).outputs
        output = next(o for o in outputs if o.output_type == "stream")
        output.text = text

    return mutate


def each(*mutations: Callable[[Any], None]) -> Callable[[Any], None]:
    def mutate(nb: Any) -> None:
        for mutation in mutations:
            mutation(nb)

    return mutate


def merge_streams(nb: Any) -> None:
    # How a notebook editor that merges stream messages would have saved the cell.
    cell = code(nb, 0)
    texts: dict[str, str] = {}
    for output in cell.outputs:
        texts[output.name] = texts.get(output.name, "") + output.text
    cell.outputs = [new_output("stream", name=name, text=text) for name, text in texts.items()]


def edit_images_and_counts(nb: Any) -> None:
    image = code(nb, 0).outputs[0]
    image.data["image/png"] = image.data["image/png"][::-1]
    image.metadata["width"] = 99
    result = code(nb, 1).outputs[0]
    result.execution_count = 42
    result.metadata["edited"] = True


def reverse_outputs(nb: Any) -> None:
    code(nb, 0).outputs.reverse()


def add_html(nb: Any) -> None:
    code(nb, 0).outputs.append(new_output("display_data", data={"text/html": "<b>a</b>"}))


def add_error(nb: Any) -> None:
    code(nb, 0).outputs.append(new_output("error", ename="ValueError", evalue="x", traceback=[]))


def edit_error(evalue: str, traceback: list[str]) -> Callable[[Any], None]:
    def mutate(nb: Any) -> None:
        output = next(o for o in code(nb, 0).outputs if o.output_type == "error")
        output.evalue = evalue or output.evalue
        output.traceback = traceback

    return mutate


def unrun(keep_outputs: bool) -> Callable[[Any], None]:
    def mutate(nb: Any) -> None:
        cell = code(nb, 0)
        cell.execution_count = None
        if not keep_outputs:
            cell.outputs = []

    return mutate


def unchanged(nb: Any) -> None:
    pass


SHOW_RANDOM_PNG = """\
import io, random
from PIL import Image as PILImage
from IPython.display import Image, display
buffer = io.BytesIO()
PILImage.new("L", (8, 8), random.randrange(256)).save(buffer, "PNG")
display(Image(data=buffer.getvalue()))"""

STREAMS = """\
import sys
for i in range(3):
    print(i, flush=True)
    print("e", i, file=sys.stderr, flush=True)"""


@dataclass(frozen=True)
class Case:
    name: str
    cells: tuple[Cell, ...]
    mutate: Callable[[Any], None] = unchanged
    passes: tuple[bool, bool] = (True, True)  # expected verdicts: --nbval, --nbval-lax
    sanitize: bool = False  # also judged with the sanitizer file


CASES = (
    Case("clean", ("print('hi')", "1 + 1", "import sys\nprint('w', file=sys.stderr)")),
    Case("changed_stdout", ("print(1 + 1)",), set_text(0, "3\n"), (False, True)),
    Case(
        "ignored",
        (
            "# NBVAL_IGNORE_OUTPUT\nprint(1)",
            ("print(2)", ["nbval-ignore-output"]),
            "## NBVAL_IGNORE_OUTPUT\nimport random\nrandom.random()",
        ),
        each(set_text(0, "x\n"), set_text(1, "y\n")),
    ),
    Case("checked_in_lax", ("# NBVAL_CHECK_OUTPUT\nprint(2)",), set_text(0, "3\n"), (False, False)),
    Case(
        "comment_beats_tag",
        (("#NBVAL_CHECK_OUTPUT\nprint(1)", ["nbval-ignore-output"]),),
        set_text(0, "2\n"),
        (False, False),
    ),
    Case("inline_marker", ("print(1)  # NBVAL_IGNORE_OUTPUT",), set_text(0, "2\n"), (False, True)),
    Case(
        "skipped",
        ("# NBVAL_SKIP\nraise RuntimeError('later')", ("print(1)", ["nbval-skip"])),
        set_text(1, "2\n"),
    ),
    Case(
        "raises",
        (
            ("raise ValueError('bad')", ["raises-exception"]),
            "# NBVAL_RAISES_EXCEPTION\nprint('before')\n{}['k']",
            ("int('x')", ["nbval-raises-exception"]),
        ),
        edit_error("", ["another traceback"]),
    ),
    Case(
        "raises_other",
        (("raise ValueError('bad')", ["raises-exception"]),),
        edit_error("worse", []),
        (False, True),
    ),
    Case("raises_nothing", ("# NBVAL_RAISES_EXCEPTION\nprint('fine')",), add_error, (False, True)),
    Case("unexpected_error", ("x = 1", "1 / 0", "print(x)"), passes=(False, False)),
    Case(
        "error_in_ignored", ("# NBVAL_IGNORE_OUTPUT\nraise KeyError('k')",), passes=(False, False)
    ),
    Case("unrun_with_outputs", ("print(1)",), unrun(keep_outputs=True), (False, False)),
    Case("unrun_without_outputs", ("print(1)",), unrun(keep_outputs=False)),
    Case(
        "streams",
        (STREAMS, "print('10%', end='\\r')\nprint('100%')"),
        each(merge_streams, set_text(1, "100%\n")),
    ),
    Case("images_and_counts", (SHOW_RANDOM_PNG, "2 + 2"), edit_images_and_counts),
    Case(
        "reordered_types",
        ("from IPython.display import display\nprint('a')\ndisplay('b')",),
        reverse_outputs,
    ),
    Case(
        "reordered_same_type",
        ("from IPython.display import display\ndisplay(1)\ndisplay(2)",),
        reverse_outputs,
        (False, True),
    ),
    Case("missing_output", ("print('a')",), add_html, (False, True)),
    Case("nondeterministic", ("import time\ntime.time()",), passes=(False, True)),
    Case(
        "sanitized",
        ("class Thing:\n    pass\nThing()", "import time\nprint(time.time_ns())"),
        passes=(False, True),
        sanitize=True,
    ),
)
SANITIZERS = """\
[addresses]
regex: at 0x[0-9a-f]+
replace: at ADDRESS

[clock]
regex: ^\\d{19}$
replace: NOW
"""


def build(cells: tuple[Cell, ...]) -> Any:
    return build_notebook(*cells, markdown_title="case")


def execute(nb: Any, directory: Path, as_nbval: bool = True) -> Any:
    """Run a notebook as nbval would: skipped cells not at all, later cells after an error."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if as_nbval and cell.cell_type == "code" and cell_markers(cell).skip:
            cell.metadata.setdefault("tags", []).append(SKIP_EXECUTION_TAG)
    # Local sockets rather than TCP ports: kernels started at once by nbval's processes and
    # this one cannot then race for the same free port.
    ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(directory / ".kernel")}})
    client = NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(directory)}},
        config=ipc,
    )
    return client.execute()


def store(directory: Path) -> dict[str, Any]:
    """Execute every case once, in one kernel to save time, and save its edited outputs."""
    notebooks = {case.name: build(case.cells) for case in CASES}
    combined = new_notebook(cells=[c for nb in notebooks.values() for c in nb.cells])
    combined.metadata = notebooks["clean"].metadata
    combined = execute(combined, directory, as_nbval=False)
    position = 0
    for case in CASES:
        nb = notebooks[case.name]
        nb.cells = combined.cells[position : position + len(nb.cells)]
        position += len(nb.cells)
        case.mutate(nb)
        nbformat.write(nb, directory / f"{case.name}.ipynb")
    return notebooks


def nbval_verdicts(directory: Path, *options: str) -> dict[str, bool]:
    """Per notebook in a directory, whether ``pytest --nbval`` passes all its cells."""
    (directory / "pytest.ini").write_text("[pytest]\n")  # keep this repo's settings out
    report = directory.parent / f"{directory.name}{options[0]}.xml"
    # A kernel that dies (its TCP port taken by another process's kernel) would make nbval
    # wait out its 2000 s default cell timeout.
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:nbcd",
        "--nbval-current-env", "--nbval-cell-timeout=60", f"--junitxml={report}", "-q",
        *options, ".",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    passed: dict[str, bool] = {}
    for testcase in ET.parse(report).iter("testcase"):
        name = testcase.get("classname", "").removesuffix(".ipynb")
        failures = [testcase.find(tag) for tag in ("failure", "error")]
        for failure in failures:
            if failure is not None:  # shown by pytest if a verdict is not the one expected
                print(f"nbval: {name} {testcase.get('name')}: {failure.text}")
        passed[name] = passed.get(name, True) and failures == [None, None]
    return passed


def test_compare_notebook_gives_nbval_verdicts(tmp_path: Path) -> None:
    directory, sanitize_dir = tmp_path / "notebooks", tmp_path / "sanitize"
    directory.mkdir()
    sanitize_dir.mkdir()
    (tmp_path / "sanitize.cfg").write_text(SANITIZERS)
    stored = store(directory)
    for case in CASES:
        if case.sanitize:
            nbformat.write(stored[case.name], sanitize_dir / f"{case.name}.ipynb")
    sanitize_with = f"--nbval-sanitize-with={tmp_path / 'sanitize.cfg'}"
    modes = {
        "nbval": (directory, ("--nbval",), CompareOptions()),
        "lax": (directory, ("--nbval-lax",), CompareOptions(lax=True)),
        "sanitized": (
            sanitize_dir,
            ("--nbval", sanitize_with),
            CompareOptions(sanitizers=load_sanitizers(tmp_path / "sanitize.cfg")),
        ),
    }
    # nbval judges in subprocesses, one at a time, while this process runs the notebooks
    # afresh (on local sockets, so its kernels take no TCP ports from nbval's).
    with ThreadPoolExecutor(max_workers=1) as pool:
        runs = {
            mode: pool.submit(nbval_verdicts, where, *flags)
            for mode, (where, flags, _) in modes.items()
        }
        ours: dict[str, dict[str, list[Mismatch]]] = {mode: {} for mode in modes}
        for case in CASES:
            fresh = execute(stored[case.name], directory)
            for mode, (where, _, options) in modes.items():
                if (where / f"{case.name}.ipynb").exists():
                    ours[mode][case.name] = compare_notebook(stored[case.name], fresh, options)
        theirs = {mode: run.result() for mode, run in runs.items()}

    for mode in modes:
        expected = {
            c.name: mode == "sanitized" or c.passes[mode == "lax"]
            for c in CASES
            if c.name in ours[mode]
        }
        assert theirs[mode] == expected, f"nbval {mode} no longer gives the verdicts expected"
        verdicts_ours = {name: not found for name, found in ours[mode].items()}
        differ = {
            name: ours[mode][name] for name in ours[mode] if verdicts_ours[name] != expected[name]
        }
        assert verdicts_ours == theirs[mode], f"{mode}: verdicts differ from nbval: {differ}"
