"""What a notebook must not publish: paths into someone's home folder, and credentials.

Each finder takes one piece of text (a source line, or a cell's outputs as text) and returns
what it found, described without repeating a secret, or None. :mod:`nbcd.lint.rules` runs them
as NB301 (code cells and their outputs) and NB302 (every cell, markdown too).
``bench/secret_detection.py`` measures NB302 against detect-secrets on a corpus of made-up
secrets and look-alikes.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["find_code_credential", "find_credential", "find_user_path", "output_text"]

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
#
# Three kinds of evidence, from the most to the least certain:
#
# 1. a token whose format names its issuer (AKIA..., ghp_..., sk_live_..., a PEM header);
# 2. a value in a place only credentials go: a URL's user:password@, an Authorization header,
#    requests' auth=(user, password), an ``AccountKey=``;
# 3. a literal assigned to a credential-sounding name (``db_password = "..."``,
#    ``WANDB_API_KEY = "..."``, ``{"client_secret": "..."}``), the value checked for looking
#    like a secret, so ``pad_token = "[PAD]"`` and ``secret_name = "prod/db"`` stay quiet.
#
# A fourth, weaker kind is only looked for in code (find_code_credential): a long random
# literal assigned to a neutral name, as detect-secrets' entropy plugins find it. It is not
# looked for in outputs and markdown, which are full of hashes, run ids, widget ids and plots,
# nor under names that say what the value is (run_id, checksum, url).


@dataclass(frozen=True)
class _Pattern:
    """A kind of credential, its pattern, and words one of which any match contains.

    The words (lower case) are a prefilter: ``in`` on the lowered text is far cheaper than a
    regex scan, and most text holds none of them, so a 1 MB output costs milliseconds.
    Patterns start only where a token can start (a look-behind instead of ``\b``), so a long
    run of characters never costs one attempt per character.
    """

    kind: str
    regex: re.Pattern[str]
    needles: tuple[str, ...] = ()  # empty: always scanned


def _p(kind: str, regex: str, *needles: str, flags: int = 0) -> _Pattern:
    return _Pattern(kind, re.compile(regex, flags), needles)


_TOKENS = (
    _p(
        "AWS access key id",
        r"(?<![A-Z0-9])(?P<value>(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})(?![A-Z0-9])",
        *("akia", "asia", "abia", "acca", "a3t"),
    ),
    _p(
        "GitHub token",
        r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})",
        *("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _p(
        "GitLab token",
        r"(?<![\w-])(?:(?:glpat|gldt|glrt|glsoat|glcbt|glptt|glft|glimt|glagent|gloas)-"
        r"|GR1348941)[\w-]{20,}",
        *("gl", "gr1348941"),
    ),
    _p(
        "Slack token",
        r"(?<![\w-])(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Z0-9]+-\d+-\w+)",
        *("xox", "xapp-"),
    ),
    _p("Slack webhook", r"hooks\.slack\.com/services/T\w+/B\w+/\w+", "hooks.slack.com"),
    _p("Stripe key", r"(?<![\w-])[rs]k_live_[0-9A-Za-z]{24,}", "k_live_"),
    _p("OpenAI key", r"(?<![\w-])sk-[\w-]{20,}T3BlbkFJ[\w-]{20,}", "t3blbkfj"),
    _p("Anthropic key", r"(?<![\w-])sk-ant-(?:api|admin)\d{2}-[\w-]{80,}", "sk-ant-"),
    _p("SendGrid key", r"(?<![\w.-])SG\.[\w-]{22}\.[\w-]{43}(?![\w-])", "sg."),
    _p(
        "PyPI token",
        r"(?<![\w-])pypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[\w-]{50,}",
        "pypi-",
    ),
    _p("npm token", r"(?<![\w-])npm_[A-Za-z0-9]{36}(?![\w-])", "npm_"),
    _p("Twilio key", r"(?<![\w-])(?:AC|SK)[0-9a-f]{32}(?![\w-])"),
    _p("Mailchimp key", r"(?<![\w-])[0-9a-f]{32}-us\d{1,2}(?![\w-])", "-us"),
    _p(
        "Discord bot token",
        r"(?<![\w.-])[MNO][\w-]{23,25}\.[\w-]{6}\.[\w-]{27,38}(?![\w.-])",
    ),
    _p("Telegram bot token", r"(?<![\w:])\d{8,10}:AA[\w-]{33}(?![\w-])", ":aa"),
    _p("Square token", r"(?<![\w-])sq0(?:csp|atp)-[\w-]{22,}", "sq0"),
    _p("Artifactory key", r"(?<![\w-])AKCp[A-Za-z0-9]{20,}", "akcp"),
    _p("Google API key", r"(?<![\w-])AIza[\w-]{35}(?![\w-])", "aiza"),
    _p("Hugging Face token", r"(?<![\w-])hf_[A-Za-z0-9]{30,}(?![\w-])", "hf_"),
    _p("Databricks token", r"(?<![\w-])dapi[0-9a-f]{32}(?:-\d+)?(?![\w-])", "dapi"),
    _p(
        "private key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-\d",
        *("private key", "putty-user-key-file"),
    ),
    # A JWT's header and payload are JSON objects, so their base64 starts "eyJ" ('{"').
    _p("JSON web token", r"(?<![\w-])(?P<value>eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{10,})", "eyj"),
)

_PLACES = (
    _p(
        "AWS secret access key",
        r"aws[\w.-]{0,20}?(?:secret|key)\w*['\"\]]{0,2}\s*[:=]\s*['\"]?"
        r"(?P<value>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        "aws",
        flags=re.IGNORECASE,
    ),
    _p(
        "password in a URL",
        r"(?<![\w+.-])[A-Za-z][\w+.-]*://[^\s:/@'\"]*:(?P<value>[^\s@/'\"]+)@[^\s/'\"@]+",
        "://",
    ),
    _p(
        "Authorization header",
        r"authorization['\"]?\s*[:=]\s*['\"]?(?:basic|bearer|token)\s+"
        r"(?P<value>[A-Za-z0-9+/=._~-]{8,})",
        "authorization",
        flags=re.IGNORECASE,
    ),
    _p(
        "basic-auth password",
        r"(?:\bauth\s*=\s*\(|\bHTTP(?:Basic|Digest)Auth\()\s*(['\"])[^'\"\n]*\1\s*,\s*"
        r"(?P<quote>['\"])(?P<value>[^'\"\n]+)(?P=quote)",
        "auth",
    ),
    _p("Azure storage key", r"AccountKey=(?P<value>[A-Za-z0-9+/=]{86,88})", "accountkey="),
    _p("npm token", r"_authToken\s*=\s*(?P<value>[^\s'\"]+)", "_authtoken"),
    _p(  # ~/.kaggle/kaggle.json, shown by `!cat`
        "Kaggle key",
        r"\"username\"\s*:\s*\"[^\"]*\"\s*,\s*\"key\"\s*:\s*\"(?P<value>[0-9a-f]{32})\"",
        '"username"',
    ),
)

# A name, then an optional closing quote or bracket (dict keys, os.environ["X"]) and an
# annotation, then =, := or a mapping colon (not ==), then a quoted value. The look-behind
# starts names only at word starts, so a long run of base64 costs one attempt, not one each.
_ASSIGNED = re.compile(
    r"(?<![\w.-])(?P<name>[A-Za-z_][\w.-]*)(?:['\"]\]?|\])?\s*(?::\s*str\s*)?(?::=|=(?!=)|:)"
    r"\s*@?(?P<quote>['\"`])(?P<value>[^'\"`\n]+)(?P=quote)"
)
# Environment style, unquoted: `%env NAME=value` in IPython, `export NAME=value`, and
# `NAME=value` lines (an `env` dump); the bare form only for UPPER_CASE names with no spaces,
# which Python code does not write.
_ENV_ASSIGNED = re.compile(
    r"^[ \t]*(?:(?:%(?:set_)?env|!?export)[ \t]+(?P<name>[A-Za-z_]\w*)(?:[ \t]*=[ \t]*|[ \t]+)"
    r"|(?P<bare>[A-Z][A-Z0-9_]*)=)(?P<value>[^\s'\"()]+)[ \t]*$",
    re.MULTILINE,
)
_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "pwd", "contrasena"})
_SECRET_WORDS = frozenset({"secret", "token", "apikey", "credential", "credentials", "auth"})
# "<qualifier> key" is a credential; a bare "key" (dict keys, sort keys) is not.
_KEY_QUALIFIERS = frozenset(
    {"api", "secret", "access", "private", "client", "auth", "service", "account", "master"}
    | {"encryption", "signing", "subscription", "app", "license", "db", "database", "storage"}
    | {"consumer", "webhook", "session"}
)

# Values that stand for a secret rather than being one: ${PASSWORD}, {pw}, <password>, ***.
_PLACEHOLDER = re.compile(
    r"""^(?:
        [*xX.•…_-]+
      | %\(\w+\)s | %s
      | (?:my|your|the)?[-_ ]?(?:db[-_ ]?|api[-_ ]?|secret[-_ ]?|access[-_ ]?)?
        (?:password|passwd|pass|pwd|secret|token|key|api_?key)(?:[-_ ]?here)?
      | (?:your|my)[-_ ].* | .*[-_ ]here
      | changeme | redacted | hidden | placeholder | dummy | example | none | null | todo
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# A shell or template variable ($NAME, ${NAME}, $(cmd)), or a crypt(3) hash ($2b$12$...).
_VARIABLE = re.compile(r"^\$\w+$|\$\{|\$\(|^\$\d\w?\$")


def _is_placeholder(value: str) -> bool:
    return (
        not value.strip()
        or bool(_PLACEHOLDER.match(value) or _VARIABLE.search(value))
        or any(mark in value for mark in ("{", "}", "<", ">", "...", "…"))
        or "EXAMPLE" in value.upper()  # the keys in AWS's documentation end in EXAMPLE
    )


def _words(name: str) -> list[str]:
    """A name's words, lower case: "dbPassword", "DB_PASSWORD" and "db-password" alike."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return [w for w in re.split(r"[^a-z0-9ñ]+", spaced.lower()) if w]


def _name_kind(name: str) -> str | None:
    """The kind of credential a name sounds like, by its last words: password, secret or None."""
    words = [w.replace("ñ", "n") for w in _words(name)]
    if not words:
        return None
    last = words[-1]
    if last in _PASSWORD_WORDS or (last == "pass" and len(words) > 1):  # db_pass, not pass
        return "password"
    if last in _SECRET_WORDS or (last == "key" and len(words) > 1 and words[-2] in _KEY_QUALIFIERS):
        return "secret"
    return None


def _looks_secret(value: str) -> bool:
    """Whether a value under a token/key/secret name looks generated rather than a word.

    Tokens mix digits and letters or cases; "[PAD]", "bearer", "prod/census/db" and URLs do
    not, and a path is never a secret.
    """
    if len(value) < 8 or any(c.isspace() for c in value) or "://" in value:
        return False
    if value.startswith(("/", "./", "~/")) or re.match(r"[A-Za-z]:[\\/]", value):
        return False
    letters = any(c.isalpha() for c in value)
    mixed_case = any(c.isupper() for c in value) and any(c.islower() for c in value)
    return (letters and any(c.isdigit() for c in value)) or mixed_case


def _assigned_credential(name: str, value: str) -> str | None:
    kind = _name_kind(name)
    if kind is None or _is_placeholder(value):
        return None
    if kind == "password":
        path = value.startswith(("/", "~/")) and " " not in value  # pwd = "/home/x" is a folder
        return None if path else "password literal"
    return "secret literal" if _looks_secret(value) else None


def _valid(kind: str, value: str) -> bool:
    """Extra checks of a token's value: not a placeholder; a JWT's header is JSON."""
    if _is_placeholder(value):
        return False
    if kind == "JSON web token":
        header = value.split(".", 1)[0]
        try:
            decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(decoded, dict) and "alg" in decoded
    return True


# Every credential-sounding name contains one of these (see _name_kind).
_NAME_NEEDLES = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "contrase")


def find_credential(text: str) -> str | None:
    """The kind of credential in ``text`` (placeholders aside), or None; never its value."""
    # The message names only the kind, never the secret itself: reports end up in CI logs.
    lowered = text.lower()
    for pattern in _TOKENS + _PLACES:
        if pattern.needles and not any(needle in lowered for needle in pattern.needles):
            continue
        for match in pattern.regex.finditer(text):
            value = match.groupdict().get("value")
            if value is None or _valid(pattern.kind, value):
                return f"possible {pattern.kind}"
    if not any(needle in lowered for needle in _NAME_NEEDLES):
        return None
    for match in _ASSIGNED.finditer(text):
        found = _assigned_credential(match["name"], match["value"])
        if found:
            return f"possible {found}"
    for match in _ENV_ASSIGNED.finditer(text):
        found = _assigned_credential(match["name"] or match["bare"], match["value"])
        if found:
            return f"possible {found}"
    return None


# --- random literals in code -----------------------------------------------------------------

_LITERAL = re.compile(
    r"(?<![\w.-])(?P<name>[A-Za-z_][\w.]*)(?:['\"]\])?\s*(?::\s*str\s*)?=(?!=)\s*"
    r"(?P<quote>['\"])(?P<value>[A-Za-z0-9+/=_-]{32,})(?P=quote)"
)
# Names that say what a random-looking value is, when it is not a secret.
_DESCRIBED = frozenset(
    {"id", "ids", "uuid", "guid", "hash", "digest", "sha", "md5", "checksum", "etag", "commit"}
    | {"rev", "revision", "version", "url", "uri", "path", "file", "name", "seed", "integrity"}
)
# Base64 of images and documents begins with their magic numbers: PNG, JPEG, GIF, WebP, SVG,
# PDF; "sha256-..." is a subresource-integrity digest.
_ENCODED_FILE = re.compile(r"^(?:iVBOR|/9j/|R0lGOD|UklGR|PHN2Zy|PD94bW|JVBER|sha\d+-)")
#: detect-secrets' threshold for base64 strings, in bits per character.
_ENTROPY_LIMIT = 4.5


def _entropy(value: str) -> float:
    """Shannon entropy of ``value`` in bits per character."""
    return -sum(
        count / len(value) * math.log2(count / len(value))
        for count in (value.count(c) for c in set(value))
    )


def _random_literal(name: str, value: str) -> bool:
    words = _words(name)
    if not words or words[-1] in _DESCRIBED or _ENCODED_FILE.match(value):
        return False
    classes = (str.isupper, str.islower, str.isdigit)
    mixed = all(any(test(c) for c in value) for test in classes)
    return mixed and _entropy(value) >= _ENTROPY_LIMIT


def find_code_credential(line: str) -> str | None:
    """:func:`find_credential`, and a long random literal under a neutral name, in code."""
    found = find_credential(line)
    if found:
        return found
    for match in _LITERAL.finditer(line):
        if _random_literal(match["name"], match["value"]):
            return "possible high-entropy literal"
    return None
