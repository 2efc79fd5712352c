"""How a LintReport is shown: text for people, JSON for programs, GitHub annotations."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from nbcd.lint.engine import LintReport
from nbcd.lint.findings import Finding
from nbcd.textnotebook import finding_location, layout_of

__all__ = ["format_github", "format_json", "format_text"]


def _location(finding: Finding, root: str) -> str:
    # a text notebook's finding is located by the line of its file (nbcd.textnotebook)
    return finding_location(finding, root)


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
    """One line per finding and a summary line.

    ``path:cell 3:2:5: F401 message`` in an ``.ipynb``; ``path:15:5: cell 3: F401 message`` in
    a text notebook (jupytext ``.py``, MyST ``.md``), whose lines are the file's.
    """
    lines = [f"{_location(f, report.root)}: {f.code} {f.message}" for f in report.findings]
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
        layout = layout_of(file) if finding.cell is not None else None
        file_line = layout.line(finding.cell - 1, finding.line) if layout and finding.cell else None
        if finding.cell is not None and file_line is not None:
            # a text notebook's cell lines are lines of its file: annotate the line itself
            message = f"cell {finding.cell}: {message}"
            properties.append(f"line={file_line}")
            if finding.line is not None and finding.column:
                properties.append(f"col={finding.column}")
        elif finding.cell is not None:
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
