"""`nbcd ci`: the stages in order, and the summary every stage's result is written into.

Engine: ``run_pipeline`` takes a Config and PipelineOptions and returns a PipelineResult.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.pipeline.ci import PipelineOptions, PipelineResult, run_pipeline
    from nbcd.pipeline.summary import Summary, read_summary, write_summary

__all__ = [
    "PipelineOptions",
    "PipelineResult",
    "Summary",
    "read_summary",
    "run_pipeline",
    "write_summary",
]

__getattr__ = exports(
    __name__,
    {
        "PipelineOptions": "nbcd.pipeline.ci",
        "PipelineResult": "nbcd.pipeline.ci",
        "Summary": "nbcd.pipeline.summary",
        "read_summary": "nbcd.pipeline.summary",
        "run_pipeline": "nbcd.pipeline.ci",
        "write_summary": "nbcd.pipeline.summary",
    },
)
