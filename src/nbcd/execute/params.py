"""Parameter injection with papermill's semantics.

The first cell tagged ``parameters`` declares the defaults; the injected values go into a new
cell tagged ``injected-parameters`` right after it (replacing one left by an earlier run).
Values given as text are typed by YAML rules, so ``7`` is an int and ``[a, b]`` a list.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbformat import NotebookNode

from nbcd.errors import ParameterError

__all__ = [
    "InjectionResult",
    "declared_parameters",
    "inject_parameters",
    "load_parameters_file",
    "parse_value",
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


def parse_value(name: str, raw: str) -> Any:
    """Type a command-line value by YAML rules: ints, floats, bools, null, lists, mappings."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError) as exc:
        raise ParameterError(
            f"-p {name}: {_clipped(raw)!r} is not a valid YAML value ({_yaml_problem(exc)}); "
            "quote it to pass a string, e.g. -p name \"'text'\""
        ) from None


def load_parameters_file(path: Path) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping of parameter names to values."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such parameters file") from None
    except IsADirectoryError:
        raise ParameterError(f"{path}: is a folder, not a parameters file") from None
    except UnicodeDecodeError as exc:
        raise ParameterError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ParameterError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
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


def declared_parameters(source: str) -> tuple[str, ...]:
    """Names assigned at top level in a parameters cell (magics and syntax errors tolerated)."""
    code = "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ()
    names: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id not in names:
                names.append(target.id)
    return tuple(names)


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
