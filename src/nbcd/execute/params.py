"""Parameter injection with papermill's semantics.

The first cell tagged ``parameters`` declares the defaults; the injected values go into a new
cell tagged ``injected-parameters`` right after it (replacing one left by an earlier run).
Values given as text are typed by YAML rules, so ``7`` is an int and ``[a, b]`` a list.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from nbcd.errors import ParameterError
from nbcd.execute.values import (
    ANY,
    Parameter,
    ParamType,
    load_parameters_file,
    parse_value,
    union_of,
)
from nbcd.notebook import cell_label

__all__ = [
    "InjectionResult",
    "declared_parameters",
    "describe_parameters",
    "inject_parameters",
    "load_parameters_file",
    "notebook_parameters",
    "parameters_of_cell",
    "parse_value",
    "user_cell_index",
    "user_cell_label",
]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


@dataclass(frozen=True)
class InjectionResult:
    """The notebook with parameters injected, and what the injection found."""

    notebook: NotebookNode
    injected_index: int | None
    declared: tuple[str, ...]
    undeclared: tuple[str, ...] = field(default=())
    has_parameters_cell: bool = True


def user_cell_index(index: int, injected: int | None) -> int | None:
    """A cell of an injected notebook as the user's file numbers it; None: the injected cell."""
    if injected is None or index < injected:
        return index
    return None if index == injected else index - 1


def user_cell_label(index: int, injected: int | None) -> str:
    """A cell of an injected notebook as the user knows it: `cell 3`, or the injected one."""
    shown = user_cell_index(index, injected)
    return "the injected-parameters cell" if shown is None else cell_label(shown)


def declared_parameters(source: str) -> tuple[str, ...]:
    """Names assigned at top level in a parameters cell (magics and syntax errors tolerated)."""
    return tuple(p.name for p in parameters_of_cell(source))


def notebook_parameters(nb: NotebookNode) -> tuple[Parameter, ...] | None:
    """What the notebook's first `parameters` cell declares; None when it has no such cell."""
    cell = next(
        (c for c in nb.cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])), None
    )
    return None if cell is None else parameters_of_cell(cell.source)


def parameters_of_cell(source: str) -> tuple[Parameter, ...]:
    """Every name a parameters cell assigns at top level, with its type, default and comment.

    A line that is not Python (a magic, a syntax error) is skipped; the other lines still count.
    A name assigned twice keeps its first place and its last declaration.
    """
    code = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    found: dict[str, Parameter] = {}
    for node, chunk in _statements(code):
        for parameter in _declared_by(node, chunk):
            found[parameter.name] = parameter
    return tuple(found.values())


def _statements(code: str) -> list[tuple[ast.stmt, str]]:
    """Top-level statements of code, each with the source its positions refer to.

    When the whole cell does not parse, it is read statement by statement: from each line the
    shortest run of lines that parses is a statement; a line that starts none is skipped.
    """
    try:
        return [(node, code) for node in ast.parse(code).body]
    except SyntaxError:
        pass
    lines = code.splitlines(keepends=True)
    found: list[tuple[ast.stmt, str]] = []
    start = 0
    while start < len(lines):
        for end in range(start + 1, len(lines) + 1):
            if end < len(lines) and lines[end][:1] in (" ", "\t"):
                continue  # an indented line belongs to the statement before it
            chunk = "".join(lines[start:end])
            try:
                tree = ast.parse(chunk)
            except SyntaxError:
                continue
            found.extend((node, chunk) for node in tree.body)
            start = end
            break
        else:
            start += 1
    return found


def _declared_by(node: ast.stmt, chunk: str) -> list[Parameter]:
    """The parameters one top-level statement declares (none for anything but an assignment)."""
    if isinstance(node, ast.Assign):
        targets, annotation = list(node.targets), None
    elif isinstance(node, ast.AnnAssign):
        targets, annotation = [node.target], node.annotation
    else:
        return []
    value = node.value
    kind = _annotation_type(annotation) if annotation is not None else _default_type(value)
    declaration = ast.get_source_segment(chunk, node) or ""
    base = Parameter(
        name="",
        type=kind,
        annotation=" ".join((ast.get_source_segment(chunk, annotation) or "").split())
        if annotation is not None
        else "",
        default=" ".join((ast.get_source_segment(chunk, value) or "").split()) if value else "",
        comment=_trailing_comment(node, chunk),
        source=" ".join(declaration.split()),
    )
    return [replace(base, name=t.id) for t in targets if isinstance(t, ast.Name)]


def _trailing_comment(node: ast.stmt, chunk: str) -> str:
    """The comment after the statement on its last line ('' if there is none)."""
    lines = chunk.splitlines()
    if node.end_lineno is None or node.end_col_offset is None or node.end_lineno > len(lines):
        return ""
    rest = lines[node.end_lineno - 1].encode()[node.end_col_offset :].decode(errors="replace")
    rest = rest.strip()
    return rest[1:].strip() if rest.startswith("#") else ""


_TYPE_NAMES = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "List": "list",
    "dict": "dict",
    "Dict": "dict",
    "None": "none",
    "NoneType": "none",
}


def _annotation_type(expr: ast.expr) -> ParamType:
    """The ParamType an annotation names (ANY for what nbcd does not know, e.g. a Path)."""
    if isinstance(expr, ast.Constant) and expr.value is None:
        return ParamType("none")
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):  # k: "int" = 3
        try:
            return _annotation_type(ast.parse(expr.value, mode="eval").body)
        except SyntaxError:
            return ANY
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
        return union_of([_annotation_type(expr.left), _annotation_type(expr.right)])
    if isinstance(expr, ast.Subscript):
        base = _name_of(expr.value)
        items = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        args = [_annotation_type(item) for item in items]
        if base == "Optional" and len(args) == 1:
            return union_of([args[0], ParamType("none")])
        if base == "Union":
            return union_of(args)
        if _TYPE_NAMES.get(base) == "list" and len(args) == 1:
            return ParamType("list", (args[0],))
        if _TYPE_NAMES.get(base) == "dict" and len(args) == 2:
            return ParamType("dict", (args[0], args[1]))
        return ANY
    return ParamType(_TYPE_NAMES[_name_of(expr)]) if _name_of(expr) in _TYPE_NAMES else ANY


def _name_of(expr: ast.expr) -> str:
    """`int` for int, `Optional` for typing.Optional; '' for anything else."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return ""


def _default_type(value: ast.expr | None) -> ParamType:
    """The type of a literal default (`rate = 0.5` is a float); ANY for None or an expression."""
    if value is None:
        return ANY
    try:
        default = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return ANY
    for python_type in (bool, int, float, str, list, dict):  # bool first: True is an int too
        if isinstance(default, python_type):
            return ParamType(python_type.__name__)
    return ANY


def describe_parameters(notebook: Path, declared: tuple[Parameter, ...] | None) -> str:
    """The --help-params listing: a table of names, types, defaults and comments."""
    if declared is None:
        return (
            f"{notebook}: no cell is tagged `parameters`; "
            "-p values are typed by YAML 1.2 rules and injected at the top"
        )
    if not declared:
        return f"{notebook}: its parameters cell assigns no names"
    rows = [("NAME", "TYPE", "DEFAULT", "COMMENT")] + [
        (p.name, p.type_text or "any", p.default or "-", p.comment) for p in declared
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"Parameters of {notebook}:"] + [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def inject_parameters(nb: NotebookNode, parameters: dict[str, Any]) -> InjectionResult:
    """Return a copy of nb with parameters injected after its `parameters` cell."""
    nb = nbformat.from_dict(nb)  # deep copy: the caller's notebook stays untouched
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    params_index = next(
        (i for i, c in enumerate(cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])),
        None,
    )
    declared = declared_parameters(cells[params_index].source) if params_index is not None else ()
    nb.cells = cells
    if not parameters:
        return InjectionResult(nb, None, declared, (), params_index is not None)
    source = "# Parameters\n" + "".join(
        f"{name} = {_python_literal(name, value)}\n" for name, value in parameters.items()
    )
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    index = params_index + 1 if params_index is not None else 0
    nb.cells.insert(index, injected)
    undeclared = tuple(name for name in parameters if name not in declared)
    return InjectionResult(nb, index, declared, undeclared, params_index is not None)


def _python_literal(name: str, value: Any) -> str:
    """Python source for a YAML-typed value (papermill's Python translator, in short)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return f"float({str(value)!r})"
    if isinstance(value, (str, bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_python_literal(name, v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{_python_literal(name, k)}: {_python_literal(name, v)}" for k, v in value.items()
        )
        return "{" + items + "}"
    # YAML dates and timestamps: pass them as ISO strings rather than guessing an import
    if hasattr(value, "isoformat"):
        return repr(value.isoformat())
    raise ParameterError(
        f"parameter {name}: values of type {type(value).__name__} are not supported"
    )
