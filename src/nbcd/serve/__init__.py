"""Deploying a model: the SageMaker-compatible server and batch scoring.

Engines: ``create_app`` / ``serve`` (HTTP) and ``predict_file`` (batch transform).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.serve.app import create_app, serve
    from nbcd.serve.predict import PredictResult, predict_file

__all__ = ["PredictResult", "create_app", "predict_file", "serve"]

__getattr__ = exports(
    __name__,
    {
        "PredictResult": "nbcd.serve.predict",
        "create_app": "nbcd.serve.app",
        "predict_file": "nbcd.serve.predict",
        "serve": "nbcd.serve.app",
    },
)
