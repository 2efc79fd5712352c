"""The lint stage: ruff on code cells, the notebook rules, hadolint, requirements files.

``lint_paths`` is the engine; the CLI and ``nbcd ci`` only pick options and a formatter.
Files are never written unless a fix option asks for it. ruff writes the notebooks it fixes
itself; nbcd's own fixes rewrite a notebook atomically, and only when something changed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import nbformat

from nbcd.config import Config
from nbcd.discover import find_notebooks, one_per_pair, walk
from nbcd.errors import NbcdError, UsageError
from nbcd.files import JSONFileError, atomic_write_text, load_json
from nbcd.lint.cells import restore_skipped
from nbcd.lint.dockerfile import check_dockerfile
from nbcd.lint.findings import FAILING_SEVERITIES, FailOn, Finding, LintOptions, apply_noqa
from nbcd.lint.requirements import check_requirements
from nbcd.lint.rules import RULES, fix_notebook, run_rules
from nbcd.lint.tools import run_hadolint, run_ruff
from nbcd.notebook import display_path
from nbcd.options import resolve
from nbcd.textnotebook import is_text_notebook, is_text_path, not_a_notebook, read_text_notebook

__all__ = ["LintReport", "lint_options", "lint_paths", "project_lint_paths"]


@dataclass
class LintReport:
    """Everything one lint run found, and how many problems it fixed."""

    findings: list[Finding]
    fixed: int
    files: list[str]
    duration_s: float
    root: str = ""  # the absolute project root that finding paths are relative to
    fail_on: FailOn = "error"  # LintOptions.fail_on of the run

    @property
    def ok(self) -> bool:
        """True when no finding is as severe as ``fail_on``: exit 0, else 1."""
        failing = FAILING_SEVERITIES[self.fail_on]
        return not any(f.severity in failing for f in self.findings)


# --- which files --------------------------------------------------------------------------


def _kind(path: Path) -> str | None:
    name = path.name
    if name.endswith(".ipynb") or is_text_notebook(path):  # a text notebook by its content
        return "notebook"
    if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
        return "dockerfile"
    if fnmatch(name, "requirements*.txt"):
        return "requirements"
    return None


def _collect(paths: Sequence[Path], build_dir: Path) -> list[Path]:
    """The files to lint: explicit files as given, directories expanded, no duplicates."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            found.update(dict.fromkeys(walk(path, lambda p: _kind(p) is not None, build_dir)))
        elif not path.exists():
            raise UsageError(f"no such file or directory: {path}")
        elif _kind(path) is None and is_text_path(path):
            raise UsageError(not_a_notebook(path))
        elif _kind(path) is None:
            raise UsageError(f"cannot lint {path}: not a notebook, Dockerfile or requirements")
        else:
            found[path] = None
    if not found:
        shown = ", ".join(map(str, paths)) or "no paths"
        raise UsageError(f"nothing to lint in {shown}: no notebooks, Dockerfiles or requirements")
    return one_per_pair(found)  # x.py and its paired x.ipynb are one notebook: x.py


def _structure_problem(raw: Any) -> str | None:
    """Why ``raw`` is not a notebook the rules can read, or None if it is."""
    if not isinstance(raw, dict):
        return "the top-level JSON value is not an object"
    if raw.get("nbformat") != 4:
        return None  # NB002 reports it; the cell checks do not run
    cells = raw.get("cells")
    if not isinstance(cells, list):
        return "no list of cells"
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            return f"cell {number} has no cell_type"
        if not isinstance(cell.get("source", ""), (str, list)):
            return f"cell {number} has a source that is neither text nor lines"
    return None


def _load(path: Path, shown: str) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Read a notebook's raw JSON; a file that is not a notebook becomes an NB001 finding.

    JSON nested too deeply for the parsers (nbcd.files.load_json) is such a file too.
    """
    rule = RULES["NB001"]
    if is_text_path(path):
        # jupytext's reading, with the paired .ipynb's outputs (nbcd.textnotebook)
        try:
            return read_text_notebook(path), []
        except NbcdError as exc:
            return None, [rule.finding(shown, str(exc).removeprefix(f"{path}: "))]
    try:
        raw = load_json(path.read_text(encoding="utf-8-sig"), shown)
    except JSONFileError as exc:
        message = f"not valid JSON: {exc.msg}" if exc.kind == "syntax" else exc.reason
        return None, [rule.finding(shown, message, None, exc.lineno, exc.colno)]
    except UnicodeDecodeError as exc:
        return None, [rule.finding(shown, f"not UTF-8 text (byte {exc.start}); save it as UTF-8")]
    except OSError as exc:
        return None, [rule.finding(shown, f"cannot read the file: {exc.strerror or exc}")]
    problem = _structure_problem(raw)
    if problem:
        return None, [rule.finding(shown, f"not a notebook: {problem}")]
    return raw, []


def _write_notebook(path: Path, nb: dict[str, Any]) -> None:
    # The v4 JSON writer directly: nbformat.writes would validate, warn and add cell ids, and
    # the fixes only ever remove outputs from a notebook that was readable before.
    text = nbformat.v4.nbjson.writes(nbformat.from_dict(nb))
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")


# --- the engine ---------------------------------------------------------------------------


def _lint_notebooks(
    notebooks: dict[str, Path], options: LintOptions, root: Path
) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    loaded: dict[str, dict[str, Any]] = {}
    for shown, path in notebooks.items():
        nb, problems = _load(path, shown)
        findings += problems
        if nb is not None:
            loaded[shown] = nb
    ruff_findings: list[Finding] = []
    fixed = 0
    readable = {s: notebooks[s] for s, nb in loaded.items() if nb.get("nbformat") == 4}
    texts = {s: loaded[s] for s, path in readable.items() if is_text_path(path)}
    readable = {s: path for s, path in readable.items() if s not in texts}
    if options.use_ruff and texts:
        ruff_findings += _ruff_text_notebooks(texts, options, root)
    if options.use_ruff and readable:
        found, fixed, rewrote = run_ruff(readable, options, root, loaded)
        ruff_findings += found
        if rewrote:  # ruff rewrote some of them: the rules must see what is on disk now
            for shown in readable:
                nb, problems = _load(notebooks[shown], shown)
                findings += problems
                if nb is not None and restore_skipped(loaded[shown], nb):
                    _write_notebook(notebooks[shown], nb)  # its fixes to skipped cells undone
                loaded[shown] = nb if nb is not None else loaded[shown]
    for shown, nb in loaded.items():
        # a text notebook is never rewritten: it holds no outputs, and its pair is not its file
        fixable = nb.get("nbformat") == 4 and shown not in texts
        changed = fix_notebook(nb, shown, options) if fixable else 0
        if changed:
            _write_notebook(notebooks[shown], nb)
            fixed += changed
        findings += run_rules(nb, shown, options)
        findings += apply_noqa((f for f in ruff_findings if f.path == shown), nb)
    known = set(loaded)
    findings += (f for f in ruff_findings if f.path not in known)
    return findings, fixed


def _ruff_text_notebooks(
    texts: dict[str, dict[str, Any]], options: LintOptions, root: Path
) -> list[Finding]:
    """ruff's findings on text notebooks, through .ipynb copies in a temporary folder.

    ruff then reads them cell by cell as it does an .ipynb (imports at a cell's top, magics),
    and its cell numbers and lines map to the text file (nbcd.textnotebook). It runs in the
    project root, so the project's ruff settings apply. Never fixed: a fix would land in the
    copy.
    """
    with tempfile.TemporaryDirectory(prefix="nbcd-lint-") as folder:
        copies = {}
        for number, (shown, nb) in enumerate(texts.items()):
            copy = Path(folder, str(number), f"{Path(shown).stem}.ipynb")
            copy.parent.mkdir()
            _write_notebook(copy, nb)
            copies[shown] = copy
        findings, _, _ = run_ruff(copies, replace(options, fix=False), root, texts)
    return findings


def lint_paths(
    paths: Sequence[Path],
    options: LintOptions,
    project_root: Path,
    *,
    build_dir: Path | None = None,
) -> LintReport:
    """Lint the notebooks, Dockerfiles and requirements files among ``paths``.

    Folders are searched as :func:`nbcd.discover.walk` does; ``build_dir`` (default
    ``project_root/build``) is never entered.
    """
    started = time.perf_counter()
    root = project_root.resolve()
    if options.ruff_config is not None and not options.ruff_config.is_file():
        raise UsageError(f"ruff configuration not found: {options.ruff_config}")
    build = build_dir or root / "build"
    files = {display_path(path, root): path for path in _collect(paths, build)}
    by_kind: dict[str, dict[str, Path]] = {"notebook": {}, "dockerfile": {}, "requirements": {}}
    for shown, path in files.items():
        by_kind[_kind(path) or "notebook"][shown] = path

    findings, fixed = _lint_notebooks(by_kind["notebook"], options, root)
    if options.use_hadolint and by_kind["dockerfile"]:
        findings += run_hadolint(by_kind["dockerfile"], root)
    for shown, path in by_kind["dockerfile"].items():
        findings += check_dockerfile(path, shown)
    for shown, path in by_kind["requirements"].items():
        findings += check_requirements(path, shown)

    kept = [f for f in findings if options.wants(f.code)]
    kept.sort(key=lambda f: (f.path, f.cell or 0, f.line or 0, f.column or 0, f.code))
    elapsed = time.perf_counter() - started
    return LintReport(kept, fixed, list(files), elapsed, str(root), options.fail_on)


# --- the project's defaults ----------------------------------------------------------------


def project_lint_paths(config: Config) -> list[Path]:
    """What `nbcd lint` checks by default: the notebooks, the Dockerfile, requirements files."""
    paths = find_notebooks(config)
    paths += [p for p in (config.root / "Dockerfile",) if p.is_file()]
    return paths + sorted(config.root.glob("requirements*.txt"))


def lint_options(config: Config, given: dict[str, Any] | None = None, **fixed: Any) -> LintOptions:
    """LintOptions of a project: given values > [tool.nbcd.lint] > defaults.

    Codes given to ignore add to the configured ones; ``fixed`` sets the non-option fields.
    """
    return resolve(LintOptions, table=config.lint, inherited=config, given=given, **fixed)
