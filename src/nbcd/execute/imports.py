"""Which installed libraries a notebook imports, read from its code cells without running them.

The kernel pool uses this to fork kernels from a template process that has imported them
already (nbcd.execute.kernels). Only third-party modules installed in site-packages qualify:
the standard library is cheap and local code may change between runs, so neither is warmed.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbcd.execute.forkserver_main import AVOID

__all__ = ["SNIFFERS", "installed_imports", "notebook_imports"]

# already in every kernel, or meaningless to warm
_SKIPPED = frozenset({"IPython", "ipykernel", "jupyter_client", "nbcd", "__future__"})
# Libraries that do more than ask "am I in a Jupyter kernel?" at import: never warmed (the
# fork server's list, nbcd.execute.forkserver_main.AVOID).
SNIFFERS = AVOID


def notebook_imports(nb: Any) -> frozenset[str]:
    """The installed third-party modules a notebook's code cells import (dotted names)."""
    names: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            names |= _imports_of("".join(source) if isinstance(source, list) else str(source))
    return installed_imports(names)


def _imports_of(source: str) -> set[str]:
    if "import" not in source:  # most cells: no need to parse them
        return set()
    # IPython syntax (magics, shell escapes) is not Python: blank those lines out
    lines = [
        "" if line.lstrip().startswith(("%", "!", "?")) else line for line in source.splitlines()
    ]
    try:
        tree = ast.parse("\n".join(lines))
    except (SyntaxError, ValueError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def installed_imports(names: Iterable[str]) -> frozenset[str]:
    """The names whose top-level package is installed in site-packages, not the stdlib."""
    return frozenset(n for n in names if _is_installed(n.partition(".")[0]))


@functools.cache
def _is_installed(top: str) -> bool:
    if top in _SKIPPED or top in SNIFFERS or top in sys.stdlib_module_names:
        return False
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = spec.origin if spec is not None else None
    if not origin or spec is None:
        return False
    return any(Path(origin).is_relative_to(p) for p in _site_packages())


@functools.cache
def _site_packages() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    folders = {paths.get("purelib"), paths.get("platlib")}
    folders |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(Path(p).resolve() for p in folders if p)
