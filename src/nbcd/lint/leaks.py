"""What a notebook must not publish: paths into someone's home folder, and credentials.

Each finder takes one piece of text (a source line, or a cell's outputs as text) and returns
what it found, described without repeating a secret, or None. :mod:`nbcd.lint.rules` runs them on
every cell as NB301 and NB302.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["find_credential", "find_user_path", "output_text"]

# --- what is scanned ------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def output_text(outputs: Iterable[Mapping[str, Any]]) -> str:
    """The text of a cell's outputs; images are skipped (base64 is neither text nor cheap)."""
    parts: list[str] = []
    for output in outputs:
        values: list[Any] = [output.get("text", ""), output.get("evalue", "")]
        values.append(output.get("traceback", []))
        data = output.get("data")
        if isinstance(data, dict):
            values += [v for k, v in data.items() if k.startswith("text/") or k.endswith("json")]
        for value in values:
            if isinstance(value, list):
                value = "\n".join(str(v) for v in value)
            elif not isinstance(value, str):
                value = json.dumps(value)
            parts.append(value)
    # Tracebacks are colored; an escape code glued to a path would hide it from the patterns.
    return _ANSI.sub("", "\n".join(p for p in parts if p))


# --- machine-specific paths -----------------------------------------------------------------

# Not after a word, dot or dash: "/home/x" inside a URL path ("https://a.org/home/x") is fine.
_USER_PATH = re.compile(
    r"(?<![\w.~-])(?:/home/|/Users/|[A-Za-z]:(?:\\\\|\\|/)[Uu]sers(?:\\\\|\\|/))"
    r"(?P<user>[A-Za-z0-9_][\w.-]*)"
)
# Documentation placeholders and shared folders name no one.
_NOT_A_USER = frozenset(
    {"user", "username", "yourname", "your_name", "you", "me", "name", "example"}
    | {"shared", "public", "default"}
)


def find_user_path(text: str) -> str | None:
    """A home-folder path in ``text`` (placeholders like /home/user aside), or None."""
    for match in _USER_PATH.finditer(text):
        if match.group("user").lower().rstrip(".") not in _NOT_A_USER:
            return f"absolute path into a home folder ({match.group(0)})"
    home = str(Path.home())
    # The linting user's own home wherever it lives ("~" expanded), unless it is "/" or "/root".
    if home.count("/") + home.count("\\") >= 2 and home in text:
        return "absolute path into the home folder (~)"
    return None


# --- credentials ----------------------------------------------------------------------------

_SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS access key id", re.compile(r"\b(?P<value>(?:AKIA|ASIA)[0-9A-Z]{16})\b")),
    (
        "AWS secret access key",
        re.compile(
            r"aws_secret_access_key['\"]?\s*[:=]\s*['\"]?(?P<value>[A-Za-z0-9/+=]{40})"
            r"(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
    ),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Slack webhook", re.compile(r"hooks\.slack\.com/services/T\w+/B\w+/\w+")),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    (
        "password in a URL",
        re.compile(r"\b[A-Za-z][\w+.-]*://[^\s:/@'\"]*:(?P<value>[^\s@/'\"]+)@[^\s/'\"@]+"),
    ),
    (
        "password literal",
        re.compile(
            r"\b(?:\w+_)?(?:password|passwd|secret|secret_key|api_?key|access_token|auth_token)"
            r"['\"]?\s*[:=]\s*(?P<quote>['\"])(?P<value>[^'\"\n]+)(?P=quote)",
            re.IGNORECASE,
        ),
    ),
)
# Values that stand for a secret rather than being one: ${PASSWORD}, {pw}, <password>, ***.
_PLACEHOLDER = re.compile(
    r"""^(?:
        [*xX.•…_-]+
      | %\(\w+\)s | %s
      | (?:my|your)?[-_]?(?:password|passwd|pass|pwd|secret|token|key|api_?key)
      | changeme | redacted | hidden | placeholder | dummy | example
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


def _is_placeholder(value: str) -> bool:
    return (
        bool(_PLACEHOLDER.match(value))
        or any(mark in value for mark in ("${", "{", "}", "<", ">", "$"))
        or "EXAMPLE" in value.upper()  # the keys in AWS's documentation end in EXAMPLE
    )


def find_credential(text: str) -> str | None:
    """The kind of credential in ``text`` (placeholders aside), or None; never its value."""
    for kind, pattern in _SECRETS:
        for match in pattern.finditer(text):
            value = match.groupdict().get("value")
            if value is None or not _is_placeholder(value):
                return f"possible {kind}"  # never the secret itself: reports end up in CI logs
    return None
