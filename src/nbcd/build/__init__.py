"""The build stage: a deployable Docker context (Dockerfile, locked requirements, model, site).

Engine: ``build_context`` takes a Config and returns a BuildResult.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.build.context import BuildResult, build_context

__all__ = ["BuildResult", "build_context"]

__getattr__ = exports(__name__, {
    "BuildResult": "nbcd.build.context",
    "build_context": "nbcd.build.context",
})
