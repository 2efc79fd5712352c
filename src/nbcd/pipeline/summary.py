"""The machine-readable record of a pipeline run: `build/nbcd/summary.json`.

`nbcd ci` builds a Summary from the stages' result objects and writes it; `nbcd report` and
CI systems read it. Nothing here parses printed text.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from nbcd.errors import ConfigError
from nbcd.files import JSONFileError, atomic_write_text, load_json

__all__ = [
    "NotebookSummary",
    "RunSummary",
    "StageSummary",
    "Summary",
    "environment_info",
    "git_revision",
    "read_summary",
    "write_summary",
]

SCHEMA_VERSION = 1
StageStatus = Literal["passed", "failed", "error", "skipped"]


@dataclass(frozen=True)
class StageSummary:
    """One stage of the pipeline: its verdict, time and one-line summary."""

    name: str  # lint | test | run | report | build
    status: StageStatus
    duration_s: float
    summary: str
    exit_code: int = 0


@dataclass(frozen=True)
class NotebookSummary:
    """The test verdict on one notebook, with the readable diff of a failure."""

    path: str
    status: str  # passed | failed | error | cached
    duration_s: float
    message: str = ""
    details: str = ""


@dataclass(frozen=True)
class RunSummary:
    """One executed notebook of the run stage and what it produced (paths relative to root)."""

    notebook: str
    output: str
    html: str | None
    ok: bool
    duration_s: float
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    failure: str = ""
    reused: bool = False  # the test stage's execution, taken instead of a second one (nbcd ci)


@dataclass(frozen=True)
class Summary:
    """Everything the report shows: stages, lint findings, test verdicts, runs, environment."""

    project: str
    root: str
    started_at: float
    duration_s: float
    stages: list[StageSummary]
    lint_findings: list[dict[str, Any]] = field(default_factory=list)
    tests: list[NotebookSummary] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # model folders (with model.json)
    sweeps: list[str] = field(default_factory=list)  # sweep summaries (nbcd.execute.sweep)
    environment: dict[str, str] = field(default_factory=dict)
    git: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        """True when no stage failed."""
        return all(s.status in ("passed", "skipped") for s in self.stages)


def write_summary(summary: Summary, path: Path) -> None:
    """Write summary.json atomically."""
    atomic_write_text(path, json.dumps(asdict(summary), indent=2, default=str) + "\n")


def read_summary(path: Path) -> Summary:
    """Read a summary.json written by write_summary; anything else is one ConfigError."""
    try:
        data = load_json(path.read_bytes(), path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no pipeline summary; run `nbcd ci` first") from None
    except JSONFileError as exc:
        raise _unreadable(path, exc.describe()) from None
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc)) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise ConfigError(f"{path}: summary of another nbcd version; run `nbcd ci` again")
    try:
        return _summary_from(data)
    except _Malformed as exc:
        raise ConfigError(f"{path}: malformed pipeline summary ({exc}); run `nbcd ci`") from None


def _unreadable(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path}: unreadable pipeline summary ({reason}); run `nbcd ci`")


class _Malformed(ValueError):
    """Where a summary's JSON does not fit the dataclasses, e.g. ``stages[0].status``."""


_Record = TypeVar("_Record")


def _summary_from(data: dict[str, Any]) -> Summary:
    """The Summary of checked JSON: every field's type, recursively, as the report needs it."""
    nested = {"stages": StageSummary, "tests": NotebookSummary, "runs": RunSummary}
    plain = {k: v for k, v in data.items() if k not in nested}
    for key, cls in nested.items():
        items = data.get(key, [])
        if not isinstance(items, list):
            raise _Malformed(f"{key} must be a list, not {type(items).__name__}")
        plain[key] = [_record(cls, item, f"{key}[{i}]") for i, item in enumerate(items)]
    if "stages" not in data:
        raise _Malformed("stages is missing")
    return _record(Summary, plain, "", checked=frozenset(nested))


def _record(
    cls: type[_Record], data: Any, where: str, checked: frozenset[str] = frozenset()
) -> _Record:
    """``cls(**data)`` once every key is a field of ``cls`` with a value of its type."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise _Malformed(f"{where or 'the summary'} must be an object, not {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _Malformed(f"{prefix}{unknown[0]} is not a summary field")
    for name, spec in known.items():
        if name not in data and spec.default is MISSING and spec.default_factory is MISSING:
            raise _Malformed(f"{prefix}{name} is missing")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name not in checked and not _fits(value, hints[name]):
            expected = _kind(hints[name])
            raise _Malformed(f"{prefix}{name} must be {expected}, not {type(value).__name__}")
    return cls(**data)


def _kind(hint: Any) -> str:
    """An annotation in words, for messages: "a number", "a list", "'passed' or 'failed'"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(arg) for arg in args)
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    names = {float: "a number", int: "an integer", str: "text", bool: "true or false"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(origin or hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (the few kinds summaries use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if hint is type(None):
        return value is None
    if hint is float:  # JSON has one number type; a bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def environment_info() -> dict[str, str]:
    """Python, platform and the versions of the libraries a notebook project leans on."""
    from importlib import metadata

    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("nbcd", "nbclient", "ipykernel", "numpy", "pandas", "scikit-learn", "skops"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return info


def git_revision(root: Path) -> dict[str, str]:
    """The commit, branch and dirtiness of the git work tree at root, if it is one."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if not commit:
        return {}
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": "yes" if git("status", "--porcelain") else "no",
        "date": git("log", "-1", "--format=%cI"),
    }
