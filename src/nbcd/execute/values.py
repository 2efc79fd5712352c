"""Parameter values: YAML 1.2 typing of `-p` and `-f` values, checked against declared types.

A value given with ``-p`` is typed by the type its parameters cell declares (an annotation,
else the default's type); without one, by YAML 1.2 core-schema rules, a ``#`` always being
text. A value that does not fit its declared type is a ParameterError naming both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nbcd.errors import ParameterError
from nbcd.files import read_text

__all__ = [
    "ANY",
    "ParamType",
    "Parameter",
    "Yaml12Loader",
    "load_parameters_file",
    "parse_value",
    "union_of",
]


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the scalars of the YAML 1.2 core schema.

    Plain scalars resolve only to 1.2's null (``null Null NULL ~`` and nothing), bools
    (``true True TRUE false False FALSE``), ints (``10``, ``0o10``, ``0x10``) and floats
    (``0.5``, ``1e3``, ``.inf``, ``.nan``); everything else, YAML 1.1's ``yes``/``no``/``on``/
    ``off``, ``12:30`` and dates included, is a string, and ``010`` is the int 10.
    """

    yaml_implicit_resolvers = {}  # noqa: RUF012 (PyYAML's own class attribute)


def _int12(text: str) -> int:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _float12(text: str) -> float:
    if text.lower().endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    if text.lower() == ".nan":
        return math.nan
    return float(text)


def _scalar_constructor(convert: Callable[[str], Any]) -> Callable[[Any, yaml.Node], Any]:
    def construct(loader: Any, node: yaml.Node) -> Any:
        text = loader.construct_scalar(node)
        try:
            return convert(text)
        except (ValueError, IndexError):  # an explicit tag on a wrong value: !!int abc
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{text!r} is not a valid !!{node.tag.rsplit(':', 1)[-1]}",
                node.start_mark,
            ) from None

    return construct


@dataclass(frozen=True)
class ParamType:
    """A declared parameter type: a kind and, for list, dict and union, what it is made of.

    Kinds are ``int float bool str none list dict union any``; ``any`` (no annotation, a default
    of no plain type, an annotation nbcd does not know) types a value by YAML 1.2 rules alone.
    """

    kind: str
    args: tuple[ParamType, ...] = ()

    def __str__(self) -> str:
        if self.kind == "union":
            return " | ".join(map(str, self.args))
        if self.kind == "none":
            return "None"
        if self.args:
            return f"{self.kind}[{', '.join(map(str, self.args))}]"
        return self.kind

    @property
    def phrase(self) -> str:
        """The type in a sentence: ``an int``, ``a list[str]``, ``an int or None``."""
        if self.kind == "union":
            return " or ".join(arg.phrase for arg in self.args)
        if self.kind == "none":
            return "None"
        return f"{'an' if str(self)[0] in 'aeiou' else 'a'} {self}"


ANY = ParamType("any")


# a union tries its members in this order, so `str` (which takes any text) comes last
_UNION_ORDER = ("none", "bool", "int", "float", "list", "dict", "any", "str")


@dataclass(frozen=True)
class Parameter:
    """One name the parameters cell assigns: its type, default and trailing comment."""

    name: str
    type: ParamType = ANY
    annotation: str = ""  # as written after the colon; "" when there is none
    default: str = ""  # the source of the default value; "" for `k: int` alone
    comment: str = ""  # the comment at the end of its line, without the `#`
    source: str = ""  # the declaration on one line, for error messages

    @property
    def type_text(self) -> str:
        """The type as --help-params shows it: the annotation, else the default's type."""
        return self.annotation or ("" if self.type == ANY else str(self.type))

    @property
    def accepts(self) -> ParamType:
        """What a -p value must be: the annotation exactly; a default's type, or null.

        `x = 0` is often a placeholder the caller may set to None, so a type read from a
        default (not from an annotation, and not `str`, which takes the text) also takes null.
        """
        if self.annotation or self.type.kind in ("any", "str"):
            return self.type
        return union_of([self.type, ParamType("none")])


class _Mismatch(Exception):
    """A value that does not fit a declared type (turned into a ParameterError by the caller)."""


# -p values are never comments: every `#` is swapped for this character before YAML reads the
# value, and swapped back in the strings it makes (a private-use character, not in real values)
_HASH = "\ue000"


def parse_value(name: str, raw: str, declared: Parameter | None = None) -> Any:
    """Type a command-line value by its declared type, else by YAML 1.2 core-schema rules.

    A ``str`` parameter takes the text verbatim; others take YAML 1.2 scalars (``010`` is 10,
    ``yes`` a string), lists and mappings, and refuse a value that does not fit.
    """
    kind = declared.accepts if declared is not None else ANY
    if kind.kind == "str":
        return raw
    if not raw.strip() and declared is None:
        return ""
    try:
        node = _compose(raw) if raw.strip() else yaml.ScalarNode("tag:yaml.org,2002:null", "")
    except (yaml.YAMLError, RecursionError) as exc:
        if _accepts_text(kind):
            return raw
        raise ParameterError(
            f"-p {name}: {_clipped(raw)!r} is not a valid YAML value ({_yaml_problem(exc)}); "
            "quote it to pass a string, e.g. -p name \"'text'\""
        ) from None
    try:
        return _typed(node, kind, raw)
    except _Mismatch:
        assert declared is not None  # ANY takes every value
        raise ParameterError(
            f"-p {name}: {_clipped(raw)!r} is not {kind.phrase} "
            f"(declared `{_clipped(declared.source)}` in the parameters cell)"
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ParameterError(
            f"-p {name}: {_clipped(raw)!r} is not a valid YAML value ({_yaml_problem(exc)})"
        ) from None


def _accepts_text(kind: ParamType) -> bool:
    return kind.kind == "str" or any(
        _accepts_text(arg) for arg in kind.args if kind.kind == "union"
    )


def _compose(raw: str) -> yaml.Node:
    """The YAML 1.2 node tree of a -p value, with every `#` read as text."""
    text = raw if _HASH in raw else raw.replace("#", _HASH)
    node = yaml.compose(text, Loader=Yaml12Loader)
    if node is None:  # a value of only spaces or only comments (there are none: # is text)
        return yaml.ScalarNode("tag:yaml.org,2002:null", "")
    _restore_hashes(node, set())
    return node


def _restore_hashes(node: yaml.Node, seen: set[int]) -> None:
    if id(node) in seen:  # an alias to an enclosing anchor makes a cycle
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        node.value = node.value.replace(_HASH, "#")
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _restore_hashes(child, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _restore_hashes(key, seen)
            _restore_hashes(value, seen)


def _construct(node: yaml.Node) -> Any:
    loader = Yaml12Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _typed(node: yaml.Node, kind: ParamType, raw: str | None = None) -> Any:
    """The value of node as kind; raw is the whole -p text (a top-level `str` takes it as is)."""
    if kind.kind == "any":
        return _construct(node)
    if kind.kind == "union":
        for member in sorted(kind.args, key=lambda arg: _UNION_ORDER.index(arg.kind)):
            try:
                return _typed(node, member, raw)
            except _Mismatch:
                continue
        raise _Mismatch
    if kind.kind == "list":
        if not isinstance(node, yaml.SequenceNode):
            raise _Mismatch
        return [_typed(child, kind.args[0] if kind.args else ANY) for child in node.value]
    if kind.kind == "dict":
        if not isinstance(node, yaml.MappingNode):
            raise _Mismatch
        key_kind, value_kind = kind.args if len(kind.args) == 2 else (ANY, ANY)
        try:
            return {_typed(k, key_kind): _typed(v, value_kind) for k, v in node.value}
        except TypeError:  # an unhashable key
            raise _Mismatch from None
    if not isinstance(node, yaml.ScalarNode):
        raise _Mismatch
    if kind.kind == "str":
        return raw if raw is not None else node.value
    tag = node.tag.rsplit(":", 1)[-1]
    if kind.kind == "float" and tag in ("int", "float"):
        try:
            return float(_construct(node))
        except OverflowError:
            raise _Mismatch from None
    if tag == {"none": "null"}.get(kind.kind, kind.kind):
        return _construct(node)
    raise _Mismatch


def load_parameters_file(path: Path) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping of parameter names to values."""
    text = read_text(
        path,
        ParameterError,
        missing="no such parameters file",
        folder="is a folder, not a parameters file",
    )
    try:
        data = yaml.load(text, Loader=Yaml12Loader)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParameterError(
            f"{path}: not valid YAML{where} ({_yaml_problem(exc)}); fix the file"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError(f"{path}: must be a mapping of parameter names to values")
    bad = next((k for k in data if not k.isidentifier()), None)
    if bad is not None:
        # it would be injected as `bad = value`, a syntax error in the notebook's kernel
        raise ParameterError(f"{path}: {bad!r} is not a valid parameter name; use a Python name")
    return data


def _yaml_problem(exc: BaseException) -> str:
    """PyYAML's short description of a problem (its str() spans several lines)."""
    if isinstance(exc, RecursionError):  # the YAML composer recurses once per nesting level
        return "nested too deeply"
    problem = getattr(exc, "problem", None)
    lines = str(exc).splitlines()
    return str(problem or (lines[0] if lines else type(exc).__name__))


def _clipped(raw: str, width: int = 60) -> str:
    # the error must stay one line even for a huge value
    return raw if len(raw) <= width else raw[: width - 1] + "…"


def union_of(members: list[ParamType]) -> ParamType:
    """One type for several: members flattened, ANY absorbing the rest."""
    flat: list[ParamType] = []
    for member in members:
        for arg in member.args if member.kind == "union" else (member,):
            if arg not in flat:
                flat.append(arg)
    if ANY in flat:  # a member nbcd does not know could take any value
        return ANY
    return flat[0] if len(flat) == 1 else ParamType("union", tuple(flat))


_SCALARS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    # tag: (YAML 1.2 core regexp, first characters, constructor); int before float matters
    "null": (r"null|Null|NULL|~|", "~nN", lambda text: None),
    "bool": (r"true|True|TRUE|false|False|FALSE", "tTfF", lambda text: text[0] in "tT"),
    "int": (r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789", _int12),
    "float": (
        r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
        "-+.0123456789",
        _float12,
    ),
}


for _tag, (_pattern, _first, _convert) in _SCALARS.items():
    Yaml12Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}",
        re.compile(rf"(?:{_pattern})\Z"),
        [*_first, ""] if _tag == "null" else list(_first),
    )
    Yaml12Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _scalar_constructor(_convert))
