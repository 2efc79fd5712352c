"""Dockerfile checks of nbcd's own (hadolint runs in tools.py): COPY sources that exist."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

from nbcd.lint.findings import Finding
from nbcd.lint.rules import RULES

__all__ = ["check_dockerfile", "dockerfile_copy_sources", "logical_lines"]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
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
    for number, line in logical_lines(text):
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


def check_dockerfile(path: Path, shown: str) -> list[Finding]:
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
