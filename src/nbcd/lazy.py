"""Public names of a package, imported from their home modules on first use.

Packages re-export their engines this way so that `import nbcd` (and an all-cached
`nbcd test`) does not pay for nbconvert, nbclient, pandas or FastAPI, and so that stage
packages may import each other's modules without import cycles through their __init__.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["exports"]


def exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that loads ``name`` from ``homes[name]`` (a module path)."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
