"""One declaration per stage's options, from which every way of setting them is derived.

A stage's options are a frozen dataclass whose fields are made with :func:`option`. From that
one declaration come:

- the keys of its ``[tool.nbcd.<stage>]`` table, checked for unknown names and wrong types
  (:func:`parse_table`);
- its command-line flags (:func:`click_options`) and ``pytest --nbcd-*`` options
  (:func:`add_pytest_options`), with the same names, help and limits;
- the precedence flag > table > inherited ``[tool.nbcd]`` key > default (:func:`resolve`);
- the part of a cache key that can change a verdict (:func:`verdict_of`).

A field added to the dataclass therefore appears everywhere at once; none can be forgotten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from nbcd.errors import ConfigError

__all__ = [
    "Spec",
    "add_pytest_options",
    "click_options",
    "option",
    "options_of",
    "parse_table",
    "resolve",
    "values_from_pytest",
    "verdict_of",
]

T = TypeVar("T")
Merge = Literal["replace", "union"]


@dataclass(frozen=True)
class Spec:
    """How one option field is set from outside; stored in the field's metadata."""

    help: str
    flag: str | None = ""  # "" derives --field-name; None: no CLI flag or pytest option
    short: str | None = None  # a one-letter alias such as "-j"
    key: str | None = ""  # "" derives the field name; None: no key in the stage's table
    inherit: str | None = None  # a [tool.nbcd] key (Config attribute) used when unset
    verdict: bool = False  # can change a verdict: part of the cache key
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False  # the minimum itself is not allowed (timeouts must be > 0)
    merge: Merge = "replace"  # "union": a flag's values add to the table's (ignore lists)
    metavar: str | None = None

    def flag_name(self, name: str) -> str | None:
        """The long flag of field ``name``, or None when it has none."""
        if self.flag is None:
            return None
        return self.flag or "--" + name.replace("_", "-")

    def key_name(self, name: str) -> str | None:
        """The table key of field ``name``, or None when it has none."""
        if self.key is None:
            return None
        return self.key or name


def option(default: Any = None, *, default_factory: Any = None, **spec: Any) -> Any:
    """A dataclass field that is an option; keyword arguments are those of :class:`Spec`."""
    metadata = {"nbcd": Spec(**spec)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class _Option:
    name: str
    spec: Spec
    hint: Any  # the field's resolved type annotation
    default: Any


def options_of(cls: type) -> list[_Option]:
    """The option fields of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("nbcd")
        if isinstance(spec, Spec):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            found.append(_Option(f.name, spec, hints[f.name], default))
    return found


# --- types ----------------------------------------------------------------------------------


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _choices(hint: Any) -> tuple[str, ...] | None:
    base, _ = _unwrap(hint)
    return tuple(typing.get_args(base)) if typing.get_origin(base) is Literal else None


def _describe(hint: Any) -> str:
    base, _ = _unwrap(hint)
    choices = _choices(hint)
    if choices:
        return " or ".join(f'"{c}"' for c in choices)
    if typing.get_origin(base) in (tuple, frozenset):
        return "a list of strings"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(base, "a path" if base is Path else str(base))


def _convert(opt: _Option, value: Any, where: str, root: Path | None) -> Any:
    """A table value checked against the field's type and limits; ConfigError naming it."""
    base, optional = _unwrap(opt.hint)
    key = opt.spec.key_name(opt.name)
    wrong = ConfigError(f"{where}: {key!r} must be {_describe(opt.hint)}, not {value!r}")
    if value is None and optional:
        return None
    choices = _choices(opt.hint)
    if choices is not None:
        if value not in choices:
            raise wrong
        return value
    if typing.get_origin(base) in (tuple, frozenset):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong
        return typing.get_origin(base)(value)
    if base is Path:
        if not isinstance(value, str) or not value:
            raise wrong
        return (root / value) if root is not None else Path(value)
    # bool is an int subclass, and a boolean where a number is expected is a mistake
    if isinstance(value, bool) != (base is bool):
        raise wrong
    if base is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, base):
        raise wrong
    _check_limits(opt, value, lambda m: ConfigError(f"{where}: {key!r} {m}"))
    return value


def _check_limits(opt: _Option, value: Any, error: Callable[[str], Exception]) -> None:
    low, high = opt.spec.minimum, opt.spec.maximum
    if low is not None and (value < low or (opt.spec.min_open and value == low)):
        raise error(f"must be {'above' if opt.spec.min_open else 'at least'} {low:g}")
    if high is not None and value > high:
        raise error(f"must be at most {high:g}")


# --- [tool.nbcd.<stage>] -------------------------------------------------------------------


def parse_table(cls: type, table: Mapping[str, Any], where: str, root: Path) -> dict[str, Any]:
    """The values a stage's table sets, by field name; unknown keys and bad values refused."""
    by_key = {o.spec.key_name(o.name): o for o in options_of(cls) if o.spec.key is not None}
    unknown = sorted(set(table) - set(by_key))
    if unknown:
        known = ", ".join(sorted(k for k in by_key if k))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys are {known}")
    return {by_key[k].name: _convert(by_key[k], v, where, root) for k, v in table.items()}


def resolve(
    cls: type[T],
    *,
    table: Mapping[str, Any] | None = None,
    inherited: object = None,
    given: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> T:
    """An options object: given (not None) > table > inherited [tool.nbcd] key > default.

    ``inherited`` is the Config whose attributes the ``inherit`` keys name; ``fixed`` sets
    fields that are not options (paths the caller derives, for example).
    """
    table, given = table or {}, given or {}
    values: dict[str, Any] = dict(fixed)
    for opt in options_of(cls):
        value = table.get(opt.name)
        if value is None and opt.spec.inherit is not None:
            value = getattr(inherited, opt.spec.inherit, None)
        flag_value = given.get(opt.name)
        if opt.spec.merge == "union" and flag_value:
            value = (*(value or ()), *flag_value)
        elif flag_value is not None and flag_value != ():
            value = flag_value
        if value is not None:
            values[opt.name] = _as_declared(opt, value)
    return cls(**values)


def _as_declared(opt: _Option, value: Any) -> Any:
    """Collections as the field declares them (click and pytest hand over tuples or lists)."""
    origin = typing.get_origin(_unwrap(opt.hint)[0])
    return origin(value) if origin in (tuple, frozenset) else value


def verdict_of(options: Any) -> dict[str, Any]:
    """The options that can change a verdict, JSON-ready, for cache keys.

    A path stands for its file's content, so editing a sanitizer file is a change.
    """
    found: dict[str, Any] = {}
    for opt in options_of(type(options)):
        if opt.spec.verdict:
            found[opt.name] = _key_value(getattr(options, opt.name))
    return found


def _key_value(value: Any) -> Any:
    if isinstance(value, Path):
        try:
            return hashlib.sha256(value.read_bytes()).hexdigest()
        except OSError:
            return f"<unreadable {value}>"
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# --- command line and pytest ----------------------------------------------------------------


def click_options(cls: type, *, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """A decorator adding one click option per field of ``cls`` (keyword = field name)."""
    import click

    def decorate(command: Any) -> Any:
        for opt in reversed(options_of(cls)):
            flag = opt.spec.flag_name(opt.name)
            if flag is None or opt.name in skip:
                continue
            names = [n for n in (opt.spec.short, flag) if n]
            command = click.option(*names, opt.name, **_click_kwargs(opt, flag))(command)
        return command

    return decorate


def _click_kwargs(opt: _Option, flag: str) -> dict[str, Any]:
    import click

    base, _ = _unwrap(opt.hint)
    kwargs: dict[str, Any] = {"help": opt.spec.help, "default": None}
    choices = _choices(opt.hint)
    if base is bool:
        # "--no-cache" switches off an option that is on by default; other switches turn on
        kwargs.update(is_flag=True, flag_value=not flag.startswith("--no-"))
    elif choices:
        kwargs["type"] = click.Choice(choices)
    elif typing.get_origin(base) in (tuple, frozenset):
        kwargs.update(multiple=True, default=())
    elif base is Path:
        kwargs["type"] = click.Path(path_type=Path)
    elif base in (int, float):
        limits: dict[str, Any] = {"min": opt.spec.minimum, "max": opt.spec.maximum}
        if opt.spec.min_open:
            limits["min_open"] = True
        kwargs["type"] = (click.IntRange if base is int else click.FloatRange)(**limits)
    if opt.spec.metavar:
        kwargs["metavar"] = opt.spec.metavar
    return kwargs


def add_pytest_options(group: Any, cls: type, prefix: str = "--nbcd-") -> None:
    """Register one ``--nbcd-*`` option per field of ``cls`` on a pytest option group."""
    for opt in options_of(cls):
        flag = opt.spec.flag_name(opt.name)
        if flag is None:
            continue
        base, _ = _unwrap(opt.hint)
        name = prefix + flag.removeprefix("--")
        kwargs: dict[str, Any] = {"dest": "nbcd_" + opt.name, "help": opt.spec.help}
        choices = _choices(opt.hint)
        if base is bool:
            on = not flag.startswith("--no-")
            kwargs.update(action="store_true" if on else "store_false", default=None)
        elif choices:
            kwargs.update(choices=list(choices), default=None)
        elif typing.get_origin(base) in (tuple, frozenset):
            kwargs.update(action="append", default=None)
        elif base in (int, float):
            kwargs.update(type=_ranged(opt, base), default=None)
        else:
            kwargs["default"] = None
        group.addoption(name, **kwargs)


def _ranged(opt: _Option, base: type) -> Callable[[str], Any]:
    import argparse

    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_describe(base)}") from None
        _check_limits(opt, value, argparse.ArgumentTypeError)
        return value

    parse.__name__ = base.__name__
    return parse


def values_from_pytest(config: Any, cls: type) -> dict[str, Any]:
    """The ``--nbcd-*`` values given on pytest's command line, by field name."""
    values: dict[str, Any] = {}
    for opt in options_of(cls):
        if opt.spec.flag_name(opt.name) is None:
            continue
        value = config.getoption("nbcd_" + opt.name)
        base, _ = _unwrap(opt.hint)
        if base is Path and value is not None:
            value = Path(value)
        if typing.get_origin(base) in (tuple, frozenset) and value is not None:
            value = tuple(value)
        values[opt.name] = value
    return values
