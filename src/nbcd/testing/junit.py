"""JUnit XML for CI systems: one testcase per notebook, a failure carrying its diff."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from nbcd.files import atomic_write_bytes
from nbcd.testing.runner import TestReport

__all__ = ["junit_xml", "write_junit"]


def junit_xml(report: TestReport, *, suite_name: str = "nbcd", root: Path | None = None) -> bytes:
    """The report as a JUnit XML document."""
    failures = report.count("failed")
    errors = report.count("error")
    suite = ET.Element(
        "testsuite",
        {
            "name": suite_name,
            "tests": str(len(report.outcomes)),
            "failures": str(failures),
            "errors": str(errors),
            "skipped": "0",
            "time": f"{report.duration_s:.3f}",
        },
    )
    for outcome in report.outcomes:
        name = (
            str(outcome.path.relative_to(root))
            if root and outcome.path.is_relative_to(root)
            else str(outcome.path)
        )
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": suite_name,
                "name": name,
                "time": f"{outcome.duration_s:.3f}",
            },
        )
        if outcome.status == "failed":
            node = ET.SubElement(case, "failure", {"message": outcome.message})
            node.text = outcome.details
        elif outcome.status == "error":
            node = ET.SubElement(case, "error", {"message": outcome.message})
            node.text = outcome.message
        elif outcome.status == "cached":
            ET.SubElement(case, "system-out").text = "cached: unchanged since it last passed"
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def write_junit(report: TestReport, path: Path, *, root: Path | None = None) -> None:
    """Write the report's JUnit XML atomically."""
    atomic_write_bytes(path, junit_xml(report, root=root))
