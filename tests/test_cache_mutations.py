"""Mutation tests of `nbcd test`'s cache: every edit to a project reruns exactly what it must.

One small project is built in code and executed once, so its stored outputs are a reference:
``notebooks/analysis.ipynb`` puts ``../src`` on ``sys.path`` and imports the local package
``localpkg`` and the module ``notebooks/util.py`` beside it, reads ``../data/values.csv``,
lists ``../data/parts/``, has a ``parameters`` cell, markdown, tags and stored outputs; the
project also has a requirements.txt and a pyproject.toml with ``[tool.nbcd]``.

Each case gets its own copy of the project. All copies run in one batch (per set of options)
into one shared cache; then every case applies its edit, and all run again. A case says
whether its edit must rerun the notebook and, for a rerun, the reason the cache gives and the
verdict. The rule (nbcd.testing.cache): a notebook reruns when something that can change its
verdict changed, and only then. So a stale hit (cached after a relevant edit) and a needless
rerun (rerun after an irrelevant one) both fail here. A third run then checks that the rerun's
record settles: a passed rerun is cached next time, a failure is never cached. And since the
copies differ only in their folder, every file a run used must lie in its own copy: a file of
another copy means the notebook ran in the wrong working folder, and its record would hide
later edits to its own files.

Cases are named ``group:edit``; `-k group:` selects a group, though the shared fixture always
runs every case (about 40 s on two cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

from nbcd.config import load_config
from nbcd.notebook import display_path
from nbcd.testing import cache as cache_module
from nbcd.testing import options as options_module
from nbcd.testing.runner import NotebookOutcome, TestOptions, TestReport, run_tests

pytestmark = pytest.mark.e2e

NOTEBOOK = "notebooks/analysis.ipynb"
ALT_KERNEL = "python3-alt"  # a second kernelspec for the same interpreter

# --- the project -----------------------------------------------------------------------------

FILES = {
    "src/localpkg/__init__.py": "from localpkg.helpers import scale\n",
    "src/localpkg/helpers.py": "def scale(x):\n    return 2 * x\n",
    "src/localpkg/unused.py": "UNUSED = 1\n",
    "notebooks/util.py": "def label(n):\n    return f'total={n}'\n",
    "data/values.csv": "a,b\n1,2\n3,4\n",
    "data/parts/p1.txt": "one\n",
    "data/declared/d1.txt": "declared\n",
    "docs/notes.md": "# Notes\n",
    "requirements.txt": "numpy>=1.20\n",
    "pyproject.toml": (
        '[project]\nname = "mutations"\nversion = "0.1.0"\n\n'
        '[tool.nbcd]\nnotebooks = ["notebooks/*.ipynb"]\ntimeout = 60\n'
    ),
    "sanitize.cfg": "[hex]\nregex: 0x[0-9a-f]+\nreplace: HEX\n",
}

PATH_CELL = "import sys\n\nsys.path.insert(0, '../src')"
PARAMETERS = "factor = 3"
LOAD = (
    "import csv\nimport os\n\nimport localpkg\nimport util\n\n"
    "with open('../data/values.csv', newline='') as handle:\n"
    "    rows = list(csv.DictReader(handle))\n"
    "parts = sorted(os.listdir('../data/parts'))\n"
    "print(len(rows), parts)"
)
RESULT = (
    "total = sum(localpkg.scale(int(row['a'])) * factor for row in rows)\nprint(util.label(total))"
)

# cell indices in the notebook
MD_TITLE, C_PATH, C_PARAMS, C_LOAD, MD_RESULT, C_RESULT, C_TOTAL = range(7)


def build_project(root: Path) -> Path:
    """Write the project into root, execute its notebook once in place; return the notebook."""
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# Analysis\n\nScaled totals of the values."),
        new_code_cell(PATH_CELL),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(LOAD),
        new_markdown_cell("## Result"),
        new_code_cell(RESULT, metadata={"tags": ["result"]}),
        new_code_cell("total"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = root / NOTEBOOK
    NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nbformat.write(nb, path)
    return path


def install_alt_kernel(folder: Path) -> None:
    """A kernelspec named ALT_KERNEL that runs this interpreter (found through JUPYTER_PATH)."""
    spec = folder / "kernels" / ALT_KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (alt)", "language": "python"})
    )


@dataclass(frozen=True)
class Project:
    """One case's copy of the project, and the cache every case shares."""

    root: Path
    cache: Path

    @property
    def notebook(self) -> Path:
        return self.root / NOTEBOOK

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel


@dataclass(frozen=True)
class InProject:
    """A path inside the case's project (for options such as --sanitize-with)."""

    rel: str


@dataclass(frozen=True)
class Changed:
    """The reason a miss gives when a recorded input changed: ``<display path> changed``."""

    rel: str


Mutation = Callable[[Project], Sequence[Path] | None]  # the notebooks to test after, if moved


# --- edits -----------------------------------------------------------------------------------


def _later(path: Path) -> None:
    """Move path's mtime on by a second, so only its content can tell it is the same."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def nothing(project: Project) -> None:
    """No edit at all."""


def replace_text(rel: str, old: str, new: str) -> Mutation:
    def mutate(project: Project) -> None:
        text = (project / rel).read_text()
        assert old in text, f"{rel} has no {old!r}"
        (project / rel).write_text(text.replace(old, new, 1))

    return mutate


def append(rel: str, text: str) -> Mutation:
    def mutate(project: Project) -> None:
        with open(project / rel, "a") as handle:
            handle.write(text)

    return mutate


def write(rel: str, text: str) -> Mutation:
    def mutate(project: Project) -> None:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)

    return mutate


def touch(rel: str) -> Mutation:
    def mutate(project: Project) -> None:
        _later(project / rel)

    return mutate


def rewrite_same(rel: str) -> Mutation:
    def mutate(project: Project) -> None:
        path = project / rel
        path.write_bytes(path.read_bytes())
        _later(path)

    return mutate


def delete(rel: str) -> Mutation:
    def mutate(project: Project) -> None:
        (project / rel).unlink()

    return mutate


def edit_notebook(change: Callable[[NotebookNode], object]) -> Mutation:
    def mutate(project: Project) -> None:
        nb = nbformat.read(project.notebook, as_version=4)
        change(nb)
        nbformat.write(nb, project.notebook)

    return mutate


def set_source(index: int, source: str) -> Callable[[NotebookNode], None]:
    def change(nb: NotebookNode) -> None:
        nb.cells[index].source = source

    return change


def set_metadata(change: Callable[[dict[str, object]], object]) -> Callable[[NotebookNode], None]:
    return lambda nb: change(nb.metadata)


def set_cell_metadata(index: int, key: str, value: object) -> Callable[[NotebookNode], None]:
    def change(nb: NotebookNode) -> None:
        nb.cells[index].metadata[key] = value

    return change


def set_tags(index: int, tags: list[str]) -> Callable[[NotebookNode], None]:
    return set_cell_metadata(index, "tags", tags)


def swap(i: int, j: int) -> Callable[[NotebookNode], None]:
    def change(nb: NotebookNode) -> None:
        nb.cells[i], nb.cells[j] = nb.cells[j], nb.cells[i]

    return change


def insert_cell(index: int, cell: NotebookNode) -> Callable[[NotebookNode], None]:
    return lambda nb: nb.cells.insert(index, cell)


def remove_cell(index: int) -> Callable[[NotebookNode], None]:
    return lambda nb: nb.cells.pop(index)


def edit_stored_output(nb: NotebookNode) -> None:
    nb.cells[C_RESULT].outputs[0].text = "total=9999\n"


def renumber(nb: NotebookNode) -> None:
    """Execution counts as after a messy interactive session, in cells and outputs."""
    for number, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=40):
        cell.execution_count = number
        for output in cell.outputs:
            if "execution_count" in output:
                output.execution_count = number


def new_ids(nb: NotebookNode) -> None:
    for number, cell in enumerate(nb.cells):
        cell.id = f"renamed-{number}"


def move_markdown(nb: NotebookNode) -> None:
    nb.cells.append(nb.cells.pop(MD_RESULT))


def reformat_json(project: Project) -> None:
    data = json.loads(project.notebook.read_text())
    project.notebook.write_text(json.dumps(data, indent=4, sort_keys=True))


def rename_notebook(project: Project) -> list[Path]:
    return [project.notebook.rename(project.notebook.with_name("renamed.ipynb"))]


def move_folder(project: Project) -> list[Path]:
    (project / "notebooks").rename(project / "lab")
    return [project / "lab/analysis.ipynb"]


def copy_notebook(project: Project) -> list[Path]:
    copy = project.notebook.with_name("analysis-copy.ipynb")
    shutil.copy2(project.notebook, copy)
    return [project.notebook, copy]


def rename_sanitizer(project: Project) -> None:
    (project / "sanitize.cfg").rename(project / "renamed.cfg")


def _record(project: Project, kind: str) -> Path:
    """The shared cache's record of this case's notebook: kind "entries" or "notebooks"."""
    found = []
    for path in (project.cache / kind).glob("*.json"):
        with contextlib.suppress(ValueError, AttributeError):  # another case garbled it
            if json.loads(path.read_text()).get("notebook") == str(project.notebook):
                found.append(path)
    assert len(found) == 1, f"{len(found)} cache {kind} for {project.notebook}"
    return found[0]


def _entry(project: Project) -> Path:
    return _record(project, "entries")


def _index(project: Project) -> Path:
    return _record(project, "notebooks")


def _kernel_tmp(path: Path) -> bool:
    """Whether path is in an ipykernel's own temporary folder (its cells' code, by pid)."""
    folder = path.parent
    return folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith("ipykernel_")


def clean_tmp(project: Project) -> None:
    """What a tmp cleaner or a reboot does to the dead kernels' folders the entry names."""
    for state in json.loads(_entry(project).read_text())["inputs"]:
        folder = Path(state["path"]).parent
        if _kernel_tmp(Path(state["path"])) and not _alive(folder.name.split("_")[-1]):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: str) -> bool:
    """Whether a process has this pid (then the folder is a live kernel's: leave it)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, OSError):
        return False
    return True


def garble_entry(project: Project) -> None:
    _entry(project).write_text('{"notebook": "x", "inputs": [')


def misshape_entry(project: Project) -> None:
    _entry(project).write_text(json.dumps({"notebook": 1, "duration_s": "x", "inputs": [1, 2]}))


def delete_entry(project: Project) -> None:
    _entry(project).unlink()


def garble_index(project: Project) -> None:
    _index(project).write_text("\x00not json")


def garble_both(project: Project) -> None:
    garble_entry(project)
    garble_index(project)


def both(*mutations: Mutation) -> Mutation:
    def mutate(project: Project) -> None:
        for mutation in mutations:
            mutation(project)

    return mutate


# --- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One edit, and what the second run must do: ``expect`` is "cached" or the rerun's status."""

    id: str
    mutate: Mutation
    expect: str
    reason: str | Changed = ""  # the rerun's reason: a key part's, or a recorded input's
    setup: Mutation | None = None  # applied before the first run
    before: Mapping[str, object] = field(default_factory=dict)  # TestOptions given, first run
    after: Mapping[str, object] | None = None  # ... second run (default: as before)
    patch: str | None = None  # "environment" or "nbcd": a fingerprint differs in the second run
    cache: str | None = None  # second run's cache folder inside the project, not the shared one
    settles: bool = True  # a passed rerun is cached on the third run


def declare(nb: NotebookNode) -> None:
    nb.metadata["nbcd"] = {"inputs": ["../data/declared/*.txt"]}


DECLARED = edit_notebook(declare)
# a cell that writes a file and reads it back: what a notebook wrote first is no input
WRITES_THEN_READS = edit_notebook(
    insert_cell(
        C_TOTAL,
        new_code_cell(
            "from pathlib import Path\n\n"
            "out = Path('../build/out.txt')\n"
            "out.parent.mkdir(exist_ok=True)\n"
            "out.write_text(str(total))\n"
            "assert out.read_text() == str(total)"
        ),
    )
)
# a cell whose error is expected: the notebook passes, and its traceback was formatted
RAISES = edit_notebook(
    insert_cell(C_TOTAL, new_code_cell("1 / 0", metadata={"tags": ["raises-exception"]}))
)
# a cell that only checks whether a module is there, as optional dependencies are checked
LOOKS_UP = edit_notebook(
    insert_cell(
        C_TOTAL,
        new_code_cell(
            "from importlib.util import find_spec\n\n"
            "assert find_spec('localpkg.unused') is not None"
        ),
    )
)
SANITIZED = {"sanitize_with": InProject("sanitize.cfg")}
RUN = {"mode": "run"}

CASES = [
    # a control: nothing changed
    Case("control:nothing-changed", nothing, "cached"),
    Case("control:expected-exception-nothing-changed", nothing, "cached", setup=RAISES),
    # local modules: recorded by the kernel with size, mtime and sha256
    Case(
        "module:helpers-body-edited",
        replace_text("src/localpkg/helpers.py", "2 * x", "20 * x"),
        "failed",
        Changed("src/localpkg/helpers.py"),
    ),
    # a comment changes the file's content: the cache cannot know it changes no behaviour
    Case(
        "module:helpers-comment-only",
        append("src/localpkg/helpers.py", "# a comment only\n"),
        "passed",
        Changed("src/localpkg/helpers.py"),
    ),
    Case("module:helpers-touched", touch("src/localpkg/helpers.py"), "cached"),
    Case("module:helpers-rewritten-same-bytes", rewrite_same("src/localpkg/helpers.py"), "cached"),
    Case(
        "module:package-init-edited",
        append("src/localpkg/__init__.py", "VERSION = 2\n"),
        "passed",
        Changed("src/localpkg/__init__.py"),
    ),
    Case(
        "module:util-beside-notebook-edited",
        replace_text("notebooks/util.py", "total=", "sum="),
        "failed",
        Changed("notebooks/util.py"),
    ),
    Case("module:util-touched", touch("notebooks/util.py"), "cached"),
    Case("module:unimported-module-edited", append("src/localpkg/unused.py", "X = 2\n"), "cached"),
    # the import system listed src/localpkg, and whether a module is there can matter
    # without importing it (importlib.util.find_spec, next case): a deletion reruns
    Case(
        "module:unimported-module-deleted",
        delete("src/localpkg/unused.py"),
        "passed",
        Changed("src/localpkg"),
    ),
    Case(
        "module:module-only-looked-up-deleted",
        delete("src/localpkg/unused.py"),
        "failed",
        Changed("src/localpkg"),
        setup=LOOKS_UP,
    ),
    # ../src is first on sys.path, so a new src/util.py shadows notebooks/util.py: the import
    # system listed src/, and that listing is an input
    Case(
        "module:new-module-shadows-util",
        write("src/util.py", "def label(n):\n    return 'shadowed'\n"),
        "failed",
        Changed("src"),
    ),
    # a new module in a package folder the import system listed: it could shadow an import
    # (a helpers/ package or extension wins over helpers.py), so the listing counts
    Case(
        "module:new-module-in-package-folder",
        write("src/localpkg/extra.py", "EXTRA = 1\n"),
        "passed",
        Changed("src/localpkg"),
    ),
    # data read with open() and folders listed with os.listdir
    Case(
        "data:values-edited",
        append("data/values.csv", "5,6\n"),
        "failed",
        Changed("data/values.csv"),
    ),
    Case(
        "data:values-edited-same-outputs",
        replace_text("data/values.csv", "1,2", "1,20"),
        "passed",
        Changed("data/values.csv"),
    ),
    Case("data:values-rewritten-same-bytes", rewrite_same("data/values.csv"), "cached"),
    Case("data:values-touched", touch("data/values.csv"), "cached"),
    Case(
        "data:values-deleted",
        delete("data/values.csv"),
        "failed",
        Changed("data/values.csv"),
    ),
    Case(
        "data:file-added-to-listed-folder",
        write("data/parts/p2.txt", "two\n"),
        "failed",
        Changed("data/parts"),
    ),
    Case(
        "data:file-removed-from-listed-folder",
        delete("data/parts/p1.txt"),
        "failed",
        Changed("data/parts"),
    ),
    # the notebook listed data/parts but read none of its files
    Case("data:listed-file-content-edited", append("data/parts/p1.txt", "more\n"), "cached"),
    Case("data:file-added-beside-read-file", write("data/other.csv", "x\n1\n"), "cached"),
    Case("data:file-added-to-unrelated-folder", write("docs/more.md", "# More\n"), "cached"),
    Case("data:unrelated-file-edited", append("docs/notes.md", "more\n"), "cached"),
    Case(
        "data:self-written-file-edited",
        write("build/out.txt", "garbage"),
        "cached",
        setup=WRITES_THEN_READS,
    ),
    Case(
        "data:self-written-file-deleted", delete("build/out.txt"), "cached", setup=WRITES_THEN_READS
    ),
    # project files: the installed packages are the truth, not requirements.txt; pyproject
    # counts only through the options it sets
    Case("project:requirements-edited", append("requirements.txt", "pandas>=2\n"), "cached"),
    Case(
        "project:pyproject-unrelated-edit",
        both(
            replace_text("pyproject.toml", 'version = "0.1.0"', 'version = "0.2.0"'),
            append("pyproject.toml", "html = false\n"),
        ),
        "cached",
    ),
    Case(
        "project:pyproject-timeout-edited",
        replace_text("pyproject.toml", "timeout = 60", "timeout = 90"),
        "passed",
        "options changed",
    ),
    Case(
        "project:pyproject-test-rtol-set",
        append("pyproject.toml", "\n[tool.nbcd.test]\nrtol = 0.001\n"),
        "passed",
        "options changed",
    ),
    Case("project:readme-added", write("README.md", "# Mutations\n"), "cached"),
    # code cells: source, tags and metadata nbcd, in order
    Case(
        "code:parameter-value-changed",
        edit_notebook(set_source(C_PARAMS, "factor = 4")),
        "failed",
        "code changed",
    ),
    # a comment changes the source; the cache does not parse code, so it reruns
    Case(
        "code:parameter-comment-only",
        edit_notebook(set_source(C_PARAMS, "factor = 3  # the scale")),
        "passed",
        "code changed",
    ),
    Case(
        "code:tag-added",
        edit_notebook(set_tags(C_RESULT, ["result", "extra"])),
        "passed",
        "code changed",
    ),
    Case("code:tag-removed", edit_notebook(set_tags(C_RESULT, [])), "passed", "code changed"),
    Case(
        "code:tolerance-tag-added",
        edit_notebook(set_tags(C_RESULT, ["result", "nbcd-rtol=0.01"])),
        "passed",
        "code changed",
    ),
    Case(
        "code:cell-metadata-nbcd-set",
        edit_notebook(set_cell_metadata(C_RESULT, "nbcd", {"atol": 0.5})),
        "passed",
        "code changed",
    ),
    Case(
        "code:cell-metadata-unrelated-set",
        edit_notebook(set_cell_metadata(C_RESULT, "jupyter", {"source_hidden": True})),
        "cached",
    ),
    Case("code:cells-swapped", edit_notebook(swap(C_PATH, C_PARAMS)), "passed", "code changed"),
    Case(
        "code:cell-added",
        edit_notebook(insert_cell(C_TOTAL + 1, new_code_cell("assert total > 0"))),
        "passed",
        "code changed",
    ),
    Case("code:cell-removed", edit_notebook(remove_cell(C_TOTAL)), "passed", "code changed"),
    Case(
        "code:stored-output-edited",
        edit_notebook(edit_stored_output),
        "failed",
        "stored outputs changed",
    ),
    Case("code:execution-counts-changed", edit_notebook(renumber), "cached"),
    Case("code:cell-ids-changed", edit_notebook(new_ids), "cached"),
    # markdown and raw cells cannot change a verdict
    Case(
        "markdown:edited",
        edit_notebook(set_source(MD_TITLE, "# Analysis, revised\n\nNew words.")),
        "cached",
    ),
    Case(
        "markdown:added", edit_notebook(insert_cell(C_LOAD, new_markdown_cell("A note."))), "cached"
    ),
    Case("markdown:removed", edit_notebook(remove_cell(MD_RESULT)), "cached"),
    Case("markdown:moved", edit_notebook(move_markdown), "cached"),
    Case("markdown:raw-cell-added", edit_notebook(insert_cell(0, new_raw_cell("raw"))), "cached"),
    # notebook metadata: only the kernelspec's name and metadata nbcd count
    Case(
        "metadata:language-info-changed",
        edit_notebook(set_metadata(lambda m: m.update(language_info={"name": "python"}))),
        "cached",
    ),
    Case(
        "metadata:authors-added",
        edit_notebook(set_metadata(lambda m: m.update(authors=[{"name": "Ada"}]))),
        "cached",
    ),
    Case(
        "metadata:widgets-added",
        edit_notebook(set_metadata(lambda m: m.update(widgets={"state": {}}))),
        "cached",
    ),
    Case(
        "metadata:kernelspec-display-name-changed",
        edit_notebook(set_metadata(lambda m: m["kernelspec"].update(display_name="Py"))),
        "cached",
    ),
    Case(
        "metadata:kernelspec-name-changed",
        edit_notebook(set_metadata(lambda m: m["kernelspec"].update(name=ALT_KERNEL))),
        "passed",
        "code changed",
    ),
    # documented: metadata nbcd is in the key whole (declared inputs, noqa)
    Case(
        "metadata:nbcd-noqa-added",
        edit_notebook(set_metadata(lambda m: m.update(nbcd={"noqa": ["NB101"]}))),
        "passed",
        "code changed",
    ),
    # the notebook file: its name is no part of the key, its folder is
    Case("file:renamed-in-folder", rename_notebook, "cached"),
    # the cache's index of why a notebook ran is per path: at a path never seen it is "new"
    Case("file:moved-to-another-folder", move_folder, "passed", "new"),
    # the copy has the same key and uses the same inputs: it would pass, so a hit is right
    Case("file:copied-to-second-name", copy_notebook, "cached"),
    Case("file:json-reformatted", reformat_json, "cached"),
    Case("file:notebook-touched", touch(NOTEBOOK), "cached"),
    # declared inputs (metadata nbcd.inputs): part of the key by content
    Case(
        "declared:file-edited",
        append("data/declared/d1.txt", "more\n"),
        "passed",
        "declared inputs changed",
        setup=DECLARED,
    ),
    Case("declared:file-touched", touch("data/declared/d1.txt"), "cached", setup=DECLARED),
    Case(
        "declared:file-added-to-glob",
        write("data/declared/d2.txt", "two\n"),
        "passed",
        "declared inputs changed",
        setup=DECLARED,
    ),
    Case(
        "declared:file-deleted",
        delete("data/declared/d1.txt"),
        "passed",
        "declared inputs changed",
        setup=DECLARED,
    ),
    # options: those that can change a verdict count, the others do not
    Case("options:rtol-changed", nothing, "passed", "options changed", after={"rtol": 1e-3}),
    Case("options:lax-set", nothing, "passed", "options changed", after={"lax": True}),
    Case("options:mode-compare-to-run", nothing, "passed", "options changed", after=RUN),
    Case(
        "options:mode-run-to-compare",
        nothing,
        "passed",
        "options changed",
        before=RUN,
        after={"mode": "compare"},
    ),
    Case("options:timeout-changed", nothing, "passed", "options changed", after={"timeout": 61}),
    Case(
        "options:other-kernel-given",
        nothing,
        "passed",
        "options changed",
        after={"kernel": ALT_KERNEL},
    ),
    # --kernel python3 names the kernel the notebook's kernelspec already runs
    Case("options:same-kernel-given", nothing, "cached", after={"kernel": "python3"}),
    Case("options:jobs-changed", nothing, "cached", after={"jobs": 1}),
    Case("options:no-fork", nothing, "cached", after={"fork": False}),
    Case("options:no-cache", nothing, "passed", "cache off", after={"cache": False}, settles=False),
    Case(
        "options:sanitizer-edited",
        append("sanitize.cfg", "\n[dates]\nregex: \\d{4}-\\d{2}-\\d{2}\nreplace: DATE\n"),
        "passed",
        "options changed",
        before=SANITIZED,
    ),
    Case("options:sanitizer-touched", touch("sanitize.cfg"), "cached", before=SANITIZED),
    # a sanitizer file counts by its content, not its path
    Case(
        "options:sanitizer-renamed",
        rename_sanitizer,
        "cached",
        before=SANITIZED,
        after={"sanitize_with": InProject("renamed.cfg")},
    ),
    # run mode: stored outputs are no part of the verdict
    Case("run-mode:stored-output-edited", edit_notebook(edit_stored_output), "cached", before=RUN),
    Case("run-mode:execution-counts-changed", edit_notebook(renumber), "cached", before=RUN),
    Case(
        "run-mode:parameter-value-changed",
        edit_notebook(set_source(C_PARAMS, "factor = 4")),
        "passed",
        "code changed",
        before=RUN,
    ),
    Case(
        "run-mode:values-edited",
        append("data/values.csv", "5,6\n"),
        "passed",
        Changed("data/values.csv"),
        before=RUN,
    ),
    # environment and nbcd itself
    Case(
        "environment:packages-changed",
        nothing,
        "passed",
        "kernel environment changed",
        patch="environment",
    ),
    Case("environment:nbcd-changed", nothing, "passed", "nbcd changed", patch="nbcd"),
    # ipykernel keeps cell code in $TMPDIR/ipykernel_<pid>/ for tracebacks; that is the
    # kernel's own scratch, not an input, and a tmp cleaner or a reboot removes it
    Case("environment:tmp-cleaned", clean_tmp, "cached", setup=RAISES),
    # garbage in the cache: a miss, never a crash
    Case("cache:entry-garbled", garble_entry, "passed", "new"),
    Case("cache:entry-misshapen", misshape_entry, "passed", "new"),
    Case("cache:entry-deleted", delete_entry, "passed", "new"),
    # the index only explains a miss; the entry alone makes a hit
    Case("cache:index-garbled", garble_index, "cached"),
    Case("cache:entry-and-index-garbled", garble_both, "passed", "new"),
    Case(
        "cache:folder-is-a-file",
        write("cache-file", "not a folder\n"),
        "passed",
        "new",
        cache="cache-file",
        settles=False,
    ),
    Case(
        "cache:entries-folder-is-a-file",
        write("cache-broken/entries", "not a folder\n"),
        "passed",
        "new",
        cache="cache-broken",
        settles=False,
    ),
]


# --- running them ----------------------------------------------------------------------------


@dataclass
class Result:
    """What the three runs said about one case."""

    project: Project
    first: NotebookOutcome | None = None
    second: list[NotebookOutcome] = field(default_factory=list)
    third: list[NotebookOutcome] = field(default_factory=list)
    second_warnings: tuple[str, ...] = ()
    crash: str = ""  # what run_tests raised in any of the runs


def _options(
    project: Project, given: Mapping[str, object], cache_dir: Path | None = None
) -> TestOptions:
    """The case's TestOptions, as `nbcd test` resolves them from its pyproject and flags."""
    values = {
        name: project / value.rel if isinstance(value, InProject) else value
        for name, value in given.items()
    }
    options = options_module.test_options(load_config(project.root), {"jobs": 2, **values})
    return replace(options, cache_dir=cache_dir or project.cache)


@contextlib.contextmanager
def _patched(patch: str | None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        if patch == "environment":
            mp.setattr(cache_module, "environment_fingerprint", lambda _interpreter: "other")
        elif patch == "nbcd":
            mp.setattr(cache_module, "nbcd_fingerprint", lambda: "other nbcd")
        yield


Batch = tuple[TestOptions, str | None]


Runs = dict[str, list[tuple[NotebookOutcome, TestReport]]]


def _run(batches: dict[Batch, list[tuple[str, Path]]], crashes: dict[str, str]) -> Runs:
    """Run each batch (one set of options) at once; outcomes by case id, in path order.

    A batch whose run_tests raises fails its own cases (in ``crashes``), not every case.
    """
    found: Runs = {}
    for (options, patch), items in batches.items():
        if not items:
            continue
        try:
            with _patched(patch):
                report = run_tests([path for _, path in items], options)
        except Exception as exc:
            for case_id, _ in items:
                crashes.setdefault(case_id, f"run_tests raised {type(exc).__name__}: {exc}")
            continue
        for (case_id, _), outcome in zip(items, report.outcomes, strict=True):
            found.setdefault(case_id, []).append((outcome, report))
    return found


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every case's project through a first run, its edit, a second run and a third."""
    base = tmp_path_factory.mktemp("mutations")
    started = time.perf_counter()
    crashes: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as mp:
        install_alt_kernel(base / "jupyter")
        mp.setenv("JUPYTER_PATH", str(base / "jupyter"))
        pristine = base / "pristine"
        build_project(pristine)
        found: dict[str, Result] = {}
        first: dict[Batch, list[tuple[str, Path]]] = {}
        for case in CASES:
            project = Project(base / "cases" / case.id.replace(":", "-"), base / "cache")
            shutil.copytree(pristine, project.root)
            if case.setup is not None:
                case.setup(project)
            found[case.id] = Result(project)
            batch = (_options(project, case.before), None)
            first.setdefault(batch, []).append((case.id, project.notebook))
        for case_id, runs in _run(first, crashes).items():
            found[case_id].first = runs[0][0]

        second: dict[Batch, list[tuple[str, Path]]] = {}
        for case in CASES:
            project = found[case.id].project
            paths = case.mutate(project) or [project.notebook]
            given = case.before if case.after is None else case.after
            cache_dir = project / case.cache if case.cache else None
            batch = (_options(project, given, cache_dir), case.patch)
            second.setdefault(batch, []).extend((case.id, path) for path in paths)
        for case_id, runs in _run(second, crashes).items():
            found[case_id].second = [outcome for outcome, _ in runs]
            found[case_id].second_warnings = runs[0][1].warnings
        # the third run: whether a passed rerun settles (a failure is never cached: test_testing)
        third = {
            batch: [(case_id, path) for case_id, path in items if _passed(found[case_id], path)]
            for batch, items in second.items()
        }
        for case_id, runs in _run(third, crashes).items():
            found[case_id].third = [outcome for outcome, _ in runs]
    for case_id, crash in crashes.items():
        found[case_id].crash = crash
    print(f"\n{len(CASES)} cache mutation cases in {time.perf_counter() - started:.1f} s")
    return found


def _passed(result: Result, path: Path) -> bool:
    return any(o.path == path and o.status in ("passed", "cached") for o in result.second)


def _describe(outcome: NotebookOutcome) -> str:
    text = f"{outcome.status}"
    if outcome.reason:
        text += f" (reason: {outcome.reason})"
    if outcome.message and outcome.status != "cached":
        text += f": {outcome.message}"
    return text


def _foreign(outcome: NotebookOutcome, project: Project) -> list[str]:
    """The inputs an outcome lists (recorded, or from its cache entry) outside its project."""
    root = project.root.resolve()
    paths = [(Path.cwd() / i).resolve() for i in outcome.inputs]
    # the kernel's own cell files are environment:tmp-cleaned's concern
    return [str(p) for p in paths if not p.is_relative_to(root) and not _kernel_tmp(p)]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_cache_mutation(case: Case, results: dict[str, Result]) -> None:
    """The case's edit reruns the notebook exactly when it must, for the reason it gives."""
    result = results[case.id]
    assert not result.crash, result.crash
    assert result.second, "the second run has no outcome"
    # every copy is the same project in its own folder, so a notebook that used another
    # copy's files ran in the wrong working folder, and its record would hide later edits
    runs = [("first", result.first)]
    runs += [("second", o) for o in result.second] + [("third", o) for o in result.third]
    for run, outcome in runs:
        foreign = _foreign(outcome, result.project) if outcome is not None else []
        assert not foreign, f"the {run} run used another project's files: {foreign}"
    assert result.first is not None and result.first.status == "passed", (
        f"the first run did not pass, so the case tests nothing: {_describe(result.first)}"
        if result.first
        else "the first run has no outcome"
    )
    for outcome in result.second:
        if case.expect == "cached":
            assert outcome.status == "cached", (
                f"needless rerun of {outcome.path.name}: {_describe(outcome)}"
            )
            continue
        assert outcome.status != "cached", f"stale hit of {outcome.path.name}: the edit was missed"
        reason = case.reason
        if isinstance(reason, Changed):
            reason = f"{display_path(result.project / reason.rel)} changed"
        assert (outcome.status, outcome.reason) == (case.expect, reason), _describe(outcome)
    if case.cache:
        assert any("cannot write the test cache" in w for w in result.second_warnings), (
            f"no warning about the unwritable cache: {result.second_warnings}"
        )
    else:
        assert result.second_warnings == ()
    passed = [o for o in result.second if o.status in ("passed", "cached")]
    assert [o.path for o in result.third] == [o.path for o in passed], "a third run is missing"
    for after in result.third:
        expected = "cached" if case.settles else "passed"
        assert after.status == expected, f"the third run is not settled: {_describe(after)}"
