"""`nbcd init`: a new notebook project in the recommended layout, ready for `nbcd ci`.

Every file comes from a jinja2 template in ``templates/``. The starter notebook is
rendered from ``notebook.cells.j2`` (cells between ``# %%`` markers) and executed once, in a
scratch copy of the project, so it is stored with the outputs this machine's libraries
produce: a compare-mode `nbcd test` passes on it from the start. Executing costs a kernel
start and the imports (a few seconds); storing pre-made outputs in the package instead would
break on the first pandas or scikit-learn release that prints a table differently.

Nothing is written until everything is rendered and the notebook has run, and an existing
file is replaced only with ``force`` (a file whose content would not change is left alone).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import keyword
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbcd.build.context import render_dockerfile
from nbcd.build.lock import installed_pins
from nbcd.errors import UsageError
from nbcd.execute.executor import execute_notebook
from nbcd.files import atomic_write_text
from nbcd.templating import text_template

__all__ = [
    "STARTER_REQUIREMENTS",
    "ScaffoldResult",
    "init_project",
    "package_name",
    "starter_notebook",
]

TEMPLATES = Path(__file__).parent / "templates"
#: What the starter notebook and its package import, pinned in requirements.txt.
STARTER_REQUIREMENTS = ("matplotlib", "nbcd", "pandas", "scikit-learn", "skops")
RUFF_FALLBACK_VERSION = "0.6.9"  # pre-commit's ruff hook when ruff is not installed here
EXECUTE_TIMEOUT_S = 300.0
# Template -> path in the project; "{package}" and "{notebook}" are filled in.
FILES = {
    "pyproject.toml.j2": "pyproject.toml",
    "Makefile.j2": "Makefile",
    "requirements.txt.j2": "requirements.txt",
    "README.md.j2": "README.md",
    "data_README.md.j2": "data/README.md",
    "gitignore.j2": ".gitignore",
    "pre-commit-config.yaml.j2": ".pre-commit-config.yaml",
    "workflow.yml.j2": ".github/workflows/nbcd.yml",
    "package_init.py.j2": "src/{package}/__init__.py",
    "test_package.py.j2": "tests/test_{package}.py",
}
_MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")
_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


@dataclass(frozen=True)
class ScaffoldResult:
    """What `nbcd init` did; paths are relative to ``root``, sorted."""

    root: Path
    package: str
    notebook: Path
    created: tuple[str, ...]  # files that did not exist
    overwritten: tuple[str, ...]  # files that existed and were replaced (with force)
    skipped: tuple[str, ...]  # files that existed with exactly this content
    executed: bool  # whether the starter notebook was run and stored with outputs
    duration_s: float


def init_project(
    target: Path,
    *,
    name: str | None = None,
    force: bool = False,
    execute: bool = True,
    kernel: str = "python3",
) -> ScaffoldResult:
    """Create a notebook project in ``target`` (made if missing); see the module docstring.

    ``name`` is the project's distribution name (default: the folder's name); the package
    name is derived from it. ``execute=False`` stores the notebook without outputs.
    Raises UsageError for a bad name or files that exist (without ``force``), and
    ExecutionError if the starter notebook does not run.
    """
    started = time.perf_counter()
    root = target.resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{target} is a file; nbcd init needs a folder")
    project = _project_name(name or root.name)
    package = package_name(project)
    _check_package_free(package, root)
    notebook = f"{package}.ipynb"
    context = _context(project, package, notebook)

    files: dict[str, str] = {}
    for name, path in FILES.items():
        template = text_template(TEMPLATES, name)
        files[path.format(package=package, notebook=notebook)] = template.render(**context)
    files["Dockerfile"] = render_dockerfile(
        project=project, package_files=["pyproject.toml", "README.md"]
    )
    nb = starter_notebook(context)
    notebook_path = f"notebooks/{notebook}"

    unchanged = [rel for rel, text in files.items() if _same_text(root / rel, text)]
    if _same_sources(root / notebook_path, nb):
        unchanged.append(notebook_path)
    conflicts = sorted(
        rel for rel in [*files, notebook_path] if rel not in unchanged and (root / rel).exists()
    )
    if conflicts and not force:
        raise UsageError(
            f"{target}: not overwriting {', '.join(conflicts)}; "
            "pass --force to replace them, or start in an empty folder"
        )
    executed = False
    if notebook_path not in unchanged:
        if execute:
            nb = _execute_starter(nb, files[f"src/{package}/__init__.py"], package, kernel)
            executed = True
        files[notebook_path] = nbformat.writes(nb) + "\n"

    created: list[str] = []
    overwritten: list[str] = []
    for rel in sorted(files):
        if rel in unchanged:
            continue
        (overwritten if (root / rel).exists() else created).append(rel)
        try:
            atomic_write_text(root / rel, files[rel])
        except OSError as exc:
            raise UsageError(f"cannot write {root / rel}: {exc.strerror or exc}") from None
    return ScaffoldResult(
        root=root,
        package=package,
        notebook=root / notebook_path,
        created=tuple(created),
        overwritten=tuple(overwritten),
        skipped=tuple(sorted(unchanged)),
        executed=executed,
        duration_s=time.perf_counter() - started,
    )


def package_name(project: str) -> str:
    """The import name for a project name: lower case, runs of other characters as "_"."""
    package = re.sub(r"[^a-z0-9]+", "_", project.lower()).strip("_")
    if not package or package[0].isdigit() or keyword.iskeyword(package):
        raise UsageError(
            f"cannot make a Python package name from {project!r} (it must start with a "
            "letter and not be a keyword); pass a name such as my-project"
        )
    return package


def starter_notebook(context: dict[str, Any]) -> NotebookNode:
    """The starter notebook, unexecuted, from notebook.cells.j2 rendered with ``context``."""
    cells: list[NotebookNode] = []
    kind, tags, lines = "", "", list[str]()

    def close() -> None:
        if not kind:
            return
        source = "\n".join(lines).strip("\n")
        cell_id = f"{kind}-{len(cells) + 1}"
        if kind == "markdown":
            cells.append(new_markdown_cell(source, id=cell_id))
        else:
            metadata = {"tags": json.loads(tags)} if tags else {}
            cells.append(new_code_cell(source, id=cell_id, metadata=metadata))

    for line in text_template(TEMPLATES, "notebook.cells.j2").render(**context).splitlines():
        marker = _MARKER.match(line)
        if marker is None:
            lines.append(line)
            continue
        close()
        kind = "markdown" if marker.group("markdown") else "code"
        tags, lines = marker.group("tags") or "", []
    close()
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(_KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


# --- helpers --------------------------------------------------------------------------------


def _project_name(name: str) -> str:
    project = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-._")
    if not project:
        raise UsageError(f"{name!r} is not usable as a project name; pass one such as my-project")
    return project


def _check_package_free(package: str, root: Path) -> None:
    """Refuse a package name an installed module already has: the notebook would import it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return
    origin = spec.origin if spec is not None else None
    if not origin or origin == "namespace":
        return  # nothing or a bare folder (for example the target folder itself)
    if Path(origin).resolve().is_relative_to(root / "src"):
        return  # this project's own package, installed
    raise UsageError(
        f"the package name {package!r} is taken by an installed module ({origin}); "
        "pass another project name"
    )


def _context(project: str, package: str, notebook: str) -> dict[str, Any]:
    pins = installed_pins(list(STARTER_REQUIREMENTS))
    version = platform.python_version_tuple()
    return {
        "name": project,
        "package": package,
        "notebook": notebook,
        "title": _title(project),
        "python_minor": f"{version[0]}.{version[1]}",
        "pins": pins,
        "dependencies": [_lower_bound(pin) for pin in pins],
        "ruff_version": _installed("ruff") or RUFF_FALLBACK_VERSION,
    }


def _title(project: str) -> str:
    words = re.sub(r"[-_.]+", " ", project).strip()
    return words[:1].upper() + words[1:]


def _lower_bound(pin: str) -> str:
    """``pandas==2.2.3`` -> ``pandas>=2.2``: the package declares ranges, the file pins."""
    name, _, version = pin.partition("==")
    release = re.findall(r"\d+", version)[:2]
    return f"{name}>={'.'.join(release)}" if release else name


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.is_file() and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _same_sources(path: Path, nb: NotebookNode) -> bool:
    """Whether the notebook at ``path`` has exactly these cells' types and sources."""
    try:
        stored = nbformat.read(path, as_version=4) if path.is_file() else None
    except Exception:  # nbformat raises many types for a broken file: it is simply different
        return False
    if stored is None:
        return False

    def shape(cells: list[Any]) -> list[tuple[str, str]]:
        return [(c.cell_type, c.source) for c in cells]

    return shape(stored.cells) == shape(nb.cells)


def _execute_starter(
    nb: NotebookNode, package_code: str, package: str, kernel: str
) -> NotebookNode:
    """Run the starter in a scratch project (its model lands there) and return it executed."""
    # On a fresh install matplotlib's first import builds a font cache and says so on stderr;
    # build it here, or that one-off message is stored as an output nbcd test never sees again.
    import matplotlib.font_manager  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="nbcd-init-") as scratch:
        base = Path(scratch)
        atomic_write_text(base / "src" / package / "__init__.py", package_code)
        (base / "notebooks").mkdir()
        # One BLAS/OpenMP thread, as in tests: k-means gives the same result on every machine.
        threads = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        result = execute_notebook(
            nb,
            cwd=base / "notebooks",
            kernel_name=kernel,
            timeout=EXECUTE_TIMEOUT_S,
            env=threads,
        )
    failure = result.failure
    if failure is not None:
        # the error tree's class for what happened (a raised cell is exit 1, a dead or
        # stuck kernel exit 3), with what to do about it
        error = failure.error(f"the starter notebook: cell {failure.cell_index + 1}")
        error.args = (
            f"{error}\nnothing was written: fix the cause, or pass --no-execute to write the "
            "notebook without outputs",
        )
        raise error
    executed = result.notebook
    for cell in executed.cells:
        # timestamps of the run: they would make two inits of one project differ
        cell.metadata.pop("execution", None)
    return executed
