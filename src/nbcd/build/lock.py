"""The build context's two locks, each the whole dependency closure at the installed versions.

``requirements.lock``
    what the notebooks ran with: the project's requirements (requirements.txt, else the
    pyproject dependencies) and nbcd, with everything they need;
``requirements-serve.lock``
    what the image needs to serve the model: nbcd's serving dependencies (its ``serve``
    extra) and the libraries the model file names, not the analysis stack (Jupyter,
    matplotlib, ...). The generated Dockerfile installs only this one.

Both come from the installed distributions' metadata (closure.py), so they pin what the
notebooks passed with, offline, and ``pip install --no-deps -r LOCK`` installs exactly that.
A lock carries ``--hash`` options only when every pin has a wheel on this machine
(hashes.py): pip checks hashes for all requirements of a file or for none.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from nbcd.build.closure import Closure, Root, Target, resolve_closure
from nbcd.build.hashes import DownloadResult, download_wheels, local_hashes, wheel_sha256
from nbcd.build.installed import DistIndex
from nbcd.config import Config
from nbcd.errors import UsageError
from nbcd.lint.findings import Finding
from nbcd.model import MODEL_FILE
from nbcd.notebook import display_path

__all__ = [
    "ANALYSIS_LOCK",
    "SERVE_LOCK",
    "SERVE_REQUIREMENTS",
    "LockFile",
    "Locks",
    "installed_pins",
    "installed_version",
    "model_distributions",
    "serve_requirements",
    "write_locks",
]

ANALYSIS_LOCK = "requirements.lock"
SERVE_LOCK = "requirements-serve.lock"
# What `nbcd serve` imports: the CLI (click, rich; tomli reads pyproject.toml before 3.11),
# the server (FastAPI, uvicorn with httptools) and the scorer (numpy, pandas, scikit-learn,
# skops). An installed nbcd with a `serve` extra names its own; this is for one without.
SERVE_REQUIREMENTS = (
    "click",
    "rich",
    "fastapi",
    "uvicorn[standard]",
    "numpy",
    "pandas",
    "scikit-learn",
    "skops",
    "tomli; python_version < '3.11'",
)
_SERVE_EXTRA = re.compile(r"""\bextra\s*==\s*["']serve["']""")
_SHOWN_UNHASHED = 8
_WIDTH = 92  # of a lock's comment lines


@dataclass(frozen=True)
class LockFile:
    """One lock as written into the context."""

    name: str  # "requirements.lock" or "requirements-serve.lock"
    text: str
    pins: tuple[str, ...]  # "name==version" of each distribution, nbcd's own line last
    hashed: bool  # every pin carries --hash options (pip then checks them all)
    unhashed: tuple[str, ...]  # names of the pins no local wheel was found for

    @property
    def pip_options(self) -> str:
        """How the Dockerfile installs it: no resolver, and hashes checked when present."""
        return "--no-deps --require-hashes" if self.hashed else "--no-deps"


@dataclass(frozen=True)
class Locks:
    """The two locks of a build, the image they were resolved for and what was found."""

    analysis: LockFile
    serving: LockFile
    target: Target
    findings: tuple[Finding, ...]
    download: DownloadResult | None = None  # what --download-wheels fetched, when asked


@dataclass
class _Project:
    """The project's requirements, read once for both locks."""

    header: str  # where they came from, for the lock's first line
    roots: list[Root] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # pip options (an index URL), as written
    verbatim: dict[NormalizedName, str] = field(default_factory=dict)  # URL requirements
    unparsed: list[str] = field(default_factory=list)  # lines kept as written (BLD003)
    findings: list[Finding] = field(default_factory=list)


def write_locks(
    config: Config,
    *,
    model_dir: Path,
    nbcd_wheel: Path | None,
    target: Target,
    wheel_folders: list[Path],
    download_to: Path | None = None,
    index: DistIndex | None = None,
) -> Locks:
    """Resolve and render both locks; ``download_to`` first fetches missing wheels there."""
    index = index or DistIndex()
    project = _read_project(config, index)
    nbcd = Root(Requirement("nbcd"), "nbcd build")
    analysis = resolve_closure([*project.roots, nbcd], target, index)
    serve_roots = [Root(Requirement(t), "nbcd[serve]", "serve") for t in serve_requirements(index)]
    serve_roots += [Root(Requirement(n), MODEL_FILE) for n in model_distributions(model_dir, index)]
    serving = resolve_closure(serve_roots, target, index)

    findings = list(project.findings)
    skip = {root.source for root in project.roots}  # reported with their line already
    for lock, closure in ((ANALYSIS_LOCK, analysis), (SERVE_LOCK, serving)):
        for code, problems in (("BLD001", closure.missing), ("BLD002", closure.conflicts)):
            for problem in problems:
                if problem.via not in skip:
                    findings.append(_finding(lock, code, problem.message()))
    here = Target.image()
    if target.python_minor != here.python_minor:
        message = (
            f"the image runs Python {target.python_version}, the notebooks ran on "
            f"{here.python_version}: the locks pin this environment's versions, which may "
            "not install there; build from the image's Python or change its FROM line"
        )
        findings.append(_finding("Dockerfile", "BLD005", message))

    nbcd_version = index.version("nbcd") or "0"
    nbcd_line = f"./wheels/{nbcd_wheel.name}" if nbcd_wheel else f"nbcd=={nbcd_version}"
    pins = sorted({*analysis.pins(), *serving.pins(), (canonicalize_name("nbcd"), nbcd_version)})
    # the nbcd wheel the context ships is hashed as it is; a PyPI nbcd is fetched like the rest
    fetch = [pin for pin in pins if nbcd_wheel is None or pin[0] != "nbcd"]
    download = download_wheels(fetch, target, download_to) if download_to else None
    folders = list(dict.fromkeys([*wheel_folders, *([download_to] if download_to else [])]))
    hashes = local_hashes(pins, target, folders)
    if nbcd_wheel is not None:  # the wheel the context ships is the file pip installs
        hashes[canonicalize_name("nbcd")] = [wheel_sha256(nbcd_wheel)]
    if download is not None:
        for failure in download.failed:
            findings.append(_finding(ANALYSIS_LOCK, "BLD006", f"no wheel downloaded: {failure}"))

    what = f"{project.header} and nbcd"
    first = _render(ANALYSIS_LOCK, what, analysis, project, nbcd_line, hashes)
    serves = "nbcd's serving dependencies and the model's libraries"
    options = _Project(header="", options=project.options)  # an index the pins come from
    second = _render(SERVE_LOCK, serves, serving, options, nbcd_line, hashes)
    unique = list(dict.fromkeys(findings))
    return Locks(first, second, target, tuple(unique), download)


# --- the project's requirements -------------------------------------------------------------


def _read_project(config: Config, index: DistIndex) -> _Project:
    """The roots of the analysis lock: requirements.txt (with -r includes), else pyproject's
    dependencies; every line checked against what is installed."""
    root = config.root.resolve()
    source = root / "requirements.txt"
    if source.is_file():
        project = _Project(header="the project's requirements.txt")
        entries = list(_requirement_lines(source, root, set()))
    else:
        project = _Project(header="the dependencies in the project's pyproject.toml")
        shown = display_path(root / "pyproject.toml", root)
        entries = [(shown, 0, str(d)) for d in config.project.get("dependencies", [])]
    for shown, number, text in entries:
        _read_line(project, index, text, shown, number)
    return project


def _requirement_lines(path: Path, root: Path, seen: set[Path]) -> Iterator[tuple[str, int, str]]:
    """(file shown, line number, text) of each requirement, following -r includes."""
    seen.add(path.resolve())
    shown = display_path(path, root)
    continued = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if raw.rstrip().endswith("\\"):
            continued += raw.rstrip()[:-1] + " "
            continue
        text = re.sub(r"(^|\s)#.*$", "", continued + raw).strip()
        continued = ""
        include = re.match(r"^(?:-r|--requirement)(?:\s+|=)(\S+)$", text)
        if include:
            nested = (path.parent / include.group(1)).resolve()
            if nested not in seen and nested.is_file():
                yield from _requirement_lines(nested, root, seen)
            continue
        if text:
            yield shown, number, text


def _read_line(project: _Project, index: DistIndex, text: str, shown: str, number: int) -> None:
    """Turn one requirements line into a root, a pip option or a finding."""

    def finding(code: str, message: str) -> None:
        project.findings.append(_finding(shown, code, message, number))

    if text.startswith(("-e", "--editable", ".", "/")) or re.match(r"^-c|^--constraint", text):
        # the project itself (installed from src/ by the Dockerfile) or a local folder
        finding("BLD003", f"not locked: {text} (a local path)")
        return
    if text.startswith("-"):
        project.options.append(text)  # an index or pip option: pip in the image needs it
        return
    spec = re.sub(r"\s--?[A-Za-z].*$", "", text).strip()  # per-requirement --hash options
    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        project.unparsed.append(text)
        finding("BLD003", f"not locked: {text} (not a requirement)")
        return
    name = canonicalize_name(requirement.name)
    if name == "nbcd":
        return  # every lock ends with nbcd, as a wheel or a pin
    if requirement.url is not None:
        project.verbatim[name] = spec  # pinned by its URL already; its dependencies are not
    source = f"-r {shown}" if shown.endswith(".txt") else shown
    project.roots.append(Root(requirement, source))
    version = index.version(name)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        return  # not for this machine: the closure decides for the image
    if version is None:
        message = (
            f"{requirement.name} is not installed, so its version cannot be locked: "
            "install the project's requirements, run the notebooks, then build again"
        )
        finding("BLD001", message)
    elif requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
        message = (
            f"{requirement.name}=={version} is installed but {spec} is required; "
            "the lock pins the installed version"
        )
        finding("BLD002", message)


# --- the serving closure's roots ------------------------------------------------------------


def serve_requirements(index: DistIndex) -> list[str]:
    """The requirements of nbcd's ``serve`` extra, else SERVE_REQUIREMENTS.

    Only the requirements the extra adds count: nbcd's base requirements are its whole CLI
    (Jupyter, nbconvert, matplotlib, ...), which a serving image does not need.
    """
    dist = index.get("nbcd")
    extra: list[str] = []
    for text in dist.requires if dist is not None else ():
        # `extra == "serve"`, maybe beside a python_version condition, which the closure
        # evaluates for the image (the roots' markers are evaluated with extra "serve")
        marker = Requirement(text).marker
        if marker is not None and _SERVE_EXTRA.search(str(marker)):
            extra.append(text)
    return extra or list(SERVE_REQUIREMENTS)


def model_distributions(model_dir: Path, index: DistIndex) -> list[str]:
    """The installed distributions whose modules the model file names (scikit-learn, ...).

    A skops file lists the module of every object it holds in its schema.json; builtins and
    modules no installed distribution provides (the standard library) need nothing.
    """
    path = model_dir / MODEL_FILE
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: cannot read the modules the model uses ({exc})") from None
    modules: set[str] = set()
    stack = [schema]
    while stack:  # iterative: a deep pipeline must not hit the recursion limit
        item = stack.pop()
        if isinstance(item, dict):
            module = item.get("__module__")
            if isinstance(module, str):
                modules.add(module.partition(".")[0])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    owners = index.owners(modules - {"builtins"})
    return sorted({name for names in owners.values() for name in names})


# --- rendering ------------------------------------------------------------------------------


def _render(
    name: str,
    what: str,
    closure: Closure,
    project: _Project,
    nbcd_line: str,
    hashes: dict[NormalizedName, list[str]],
) -> LockFile:
    """The text of one lock, pip-compile's layout: pins sorted by name, each followed by who
    needs it (``# via``), and nbcd's own line last."""
    nbcd = canonicalize_name("nbcd")
    entries: list[tuple[NormalizedName, str, str]] = []  # (name, pin, via)
    for dist, version in closure.pins():
        if dist != nbcd:
            pin = project.verbatim.get(dist, f"{dist}=={version}")
            entries.append((dist, pin, ", ".join(sorted(closure.nodes[dist].via))))
    entries.append((nbcd, nbcd_line, ""))
    unhashed = tuple(dist for dist, _, _ in entries if not hashes.get(dist))
    # pip checks the hashes of every requirement of a file or of none: all or nothing
    hashed = not unhashed and not project.unparsed
    install = f"pip install {'--no-deps --require-hashes' if hashed else '--no-deps'} -r {name}"
    text = (
        f"Written by `nbcd build` from {what}: every distribution they need, at the version "
        "installed where the notebooks ran (read from the installed metadata, no resolver), "
        f"with the markers of the image: {closure.target.describe()}. Install: `{install}`."
    )
    if unhashed:
        shown = ", ".join(unhashed[:_SHOWN_UNHASHED])
        more = len(unhashed) - _SHOWN_UNHASHED
        shown += f" and {more} more" if more > 0 else ""
        text += (
            f" Not hashed: no local wheel of {len(unhashed)} of {len(entries)} pins ({shown}),"
            " and pip checks hashes for every pin or for none; `nbcd build --download-wheels`"
            " fetches the wheels once (PyPI), or put them in $NBCD_WHEELHOUSE."
        )
    wrapped = textwrap.wrap(text, _WIDTH - 2, break_long_words=False, break_on_hyphens=False)
    lines = [f"# {line}" for line in wrapped]
    lines += project.options
    partial = len(unhashed) < len(entries)  # some have wheels: say which do not
    for dist, pin, via in entries:
        digests = hashes.get(dist, []) if hashed else []
        lines.append(pin + "".join(f" \\\n    --hash=sha256:{d}" for d in digests))
        note = " (no local wheel)" if partial and dist in unhashed else ""
        if via or note:
            lines.append(f"    # via {via}{note}" if via else f"    #{note}")
    lines += project.unparsed
    pins = tuple(pin for _, pin, _ in entries)
    return LockFile(name, "\n".join(lines) + "\n", pins, hashed, unhashed)


def _finding(path: str, code: str, message: str, line: int = 0) -> Finding:
    """A build finding; BLD001 (nothing to pin) is an error, the others warnings."""
    severity = "error" if code == "BLD001" else "warning"
    return Finding(path, code, message, None, line or None, 1 if line else None, severity, "nbcd")


# --- pins for other stages ------------------------------------------------------------------


def installed_pins(names: list[str]) -> list[str]:
    """``name==version`` for each installed distribution; UsageError names the missing ones."""
    pins, missing = [], []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UsageError(f"not installed: {', '.join(missing)}; pip install them and try again")
    return pins


def installed_version(name: str) -> str:
    """The installed version of a distribution, "0" when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "0"
