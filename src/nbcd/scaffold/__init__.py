"""`nbcd init`: a new notebook project in the recommended layout.

Engine: ``init_project`` takes a folder and returns a ScaffoldResult.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.scaffold.project import ScaffoldResult, init_project

__all__ = ["ScaffoldResult", "init_project"]

__getattr__ = exports(
    __name__,
    {
        "ScaffoldResult": "nbcd.scaffold.project",
        "init_project": "nbcd.scaffold.project",
    },
)
