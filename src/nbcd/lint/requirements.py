"""Requirements files: every requirement valid, pinned exactly, and every include present."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from nbcd.lint.dockerfile import logical_lines
from nbcd.lint.findings import Finding
from nbcd.lint.rules import RULES

__all__ = ["check_requirements"]

_COMMENT = re.compile(r"(^|\s)#.*$")


_OPTION_TAIL = re.compile(r"\s--?[A-Za-z].*$")  # per-requirement options: --hash=..., etc.


_INCLUDE = re.compile(r"^(?:-r|--requirement|-c|--constraint)(?:\s+|=)(?P<file>\S+)")


def _is_exact(requirement: Requirement) -> bool:
    return any(
        spec.operator == "===" or (spec.operator == "==" and "*" not in spec.version)
        for spec in requirement.specifier
    )


def check_requirements(path: Path, shown: str) -> list[Finding]:
    """REQ001-REQ003 for one requirements file, parsed the way pip reads it."""
    findings = []
    for number, line in logical_lines(path.read_text(encoding="utf-8", errors="replace")):
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
