"""The build stage: a deployable Docker context (Dockerfile, locks, model, site).

Engine: ``build_context`` takes a Config and returns a BuildResult. The two locks it writes
(``write_locks``: requirements.lock for the notebooks, requirements-serve.lock for the
image) are the dependency closures ``resolve_closure`` reads from the installed metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.build.closure import Closure, Target, resolve_closure
    from nbcd.build.context import BuildResult, build_context
    from nbcd.build.lock import LockFile, Locks, write_locks

__all__ = [
    "BuildResult",
    "Closure",
    "LockFile",
    "Locks",
    "Target",
    "build_context",
    "resolve_closure",
    "write_locks",
]

__getattr__ = exports(
    __name__,
    {
        "BuildResult": "nbcd.build.context",
        "Closure": "nbcd.build.closure",
        "LockFile": "nbcd.build.lock",
        "Locks": "nbcd.build.lock",
        "Target": "nbcd.build.closure",
        "build_context": "nbcd.build.context",
        "resolve_closure": "nbcd.build.closure",
        "write_locks": "nbcd.build.lock",
    },
)
