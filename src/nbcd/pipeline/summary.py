"""The machine-readable record of a pipeline run: `build/nbcd/summary.json`.

`nbcd ci` builds a Summary from the stages' result objects and writes it; `nbcd report` and
CI systems read it. Nothing here parses printed text.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nbcd.errors import ConfigError
from nbcd.files import atomic_write_text

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
    """Read a summary.json written by write_summary."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no pipeline summary; run `nbcd ci` first") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable pipeline summary ({exc}); run `nbcd ci`") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise ConfigError(f"{path}: summary of another nbcd version; run `nbcd ci` again")
    try:
        return Summary(
            **{
                **data,
                "stages": [StageSummary(**s) for s in data["stages"]],
                "tests": [NotebookSummary(**t) for t in data.get("tests", [])],
                "runs": [RunSummary(**r) for r in data.get("runs", [])],
            }
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: malformed pipeline summary ({exc}); run `nbcd ci`") from None


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
