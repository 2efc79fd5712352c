"""Scoring a feature matrix with a saved model, shared by the server and batch scoring.

Scorer turns the model's pipeline into a plan of numpy steps where it can (fast, no feature-name
warnings) and answers like SageMaker's k-means for clustering models, labels or scores otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbcd.errors import ModelError
from nbcd.model import ModelArtifact, load_model

__all__ = [
    "CLUSTER_COLUMN",
    "DISTANCE_COLUMN",
    "PREDICTION_COLUMN",
    "Array",
    "Scorer",
    "Scores",
    "finite_rows",
]


log = logging.getLogger(__name__)


Array = np.ndarray[Any, Any]


_Transform = Callable[[Array], Array]


@dataclass(frozen=True)
class Scores:
    """Predictions for the rows of one matrix.

    ``kind`` is ``"cluster"`` (``labels`` are cluster ids, ``distances`` and maybe
    ``projection`` are set), ``"label"`` (class labels) or ``"score"`` (regression values).
    """

    kind: str
    labels: Array
    distances: Array | None = None
    projection: Array | None = None

    def select(self, rows: Array) -> Scores:
        """The scores of some rows only (a boolean mask or positions)."""
        return Scores(
            self.kind,
            self.labels[rows],
            None if self.distances is None else self.distances[rows],
            None if self.projection is None else self.projection[rows],
        )


def finite_rows(scores: Scores) -> Array:
    """Which rows got finite numbers: huge inputs can overflow inside the model."""
    finite = np.ones(len(scores.labels), dtype=bool)
    for values in (scores.labels, scores.distances, scores.projection):
        if values is not None and values.dtype.kind == "f":
            finite &= np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return finite


class Scorer:
    """Predictions from a loaded model, on float64 matrices whose columns are its features."""

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self.features: list[str] = artifact.features
        self.estimator = artifact.estimator
        self._check_features()
        # "passthrough" and None are Pipeline's spellings of a step that does nothing
        steps: list[Any] = [
            step
            for _, step in getattr(self.estimator, "steps", [])
            if step is not None and not isinstance(step, str)
        ]
        before, self._final = (steps[:-1], steps[-1]) if steps else ([], self.estimator)
        self._has_projection = bool(before)
        self.kind = _kind_of(self._final)
        # A model fitted on a DataFrame checks the column names of what it is given; handing
        # it a frame with those names keeps the fallback path free of feature-name warnings.
        first = before[0] if before else self._final
        self._wants_frame = hasattr(first, "feature_names_in_")
        self._before = before
        self._plan = self._compile(before)

    @classmethod
    def load(cls, model_path: Path) -> Scorer:
        """Load the model saved at ``model_path`` (see :func:`nbcd.model.load_model`)."""
        return cls(load_model(model_path))

    @property
    def fast(self) -> bool:
        """Whether predictions use the NumPy plan rather than the estimator's own methods."""
        return self._plan is not None

    def score(self, X: Array) -> Scores:
        """Predict for every row of ``X`` (float64, finite, one column per feature)."""
        # Overflow from huge inputs shows as infinity in the result, which callers check.
        with np.errstate(over="ignore", invalid="ignore"):
            if self._plan is not None:
                return self._plan(X)
            return self._score_estimator(X)

    def _check_features(self) -> None:
        """Refuse a model whose metadata and estimator disagree about the inputs."""
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is not None and [str(n) for n in names] != self.features:
            raise ModelError(
                f"{self.artifact.path}: the features in model.json differ from the names the "
                "estimator was fitted on; save the model again"
            )
        count = getattr(self.estimator, "n_features_in_", len(self.features))
        if count != len(self.features):
            raise ModelError(
                f"{self.artifact.path}: model.json lists {len(self.features)} features, the "
                f"estimator takes {count}; save the model again"
            )

    def _score_estimator(self, X: Array) -> Scores:
        """The general path: the estimator's own transform/predict methods."""
        data: Any = pd.DataFrame(X, columns=self.features) if self._wants_frame else X
        for step in self._before:
            data = step.transform(data)
        if self.kind != "cluster":
            return Scores(self.kind, np.asarray(self._final.predict(data)))
        projection = np.asarray(data, dtype=np.float64)
        distances = np.asarray(self._final.transform(data), dtype=np.float64)
        return _nearest(distances, projection if self._has_projection else None, squared=False)

    def _compile(self, before: list[Any]) -> Callable[[Array], Scores] | None:
        """A NumPy version of the model if every step is covered and agrees with it, else None."""
        if self.kind != "cluster":
            return None
        transforms = [_compile_step(step) for step in before]
        if any(t is None for t in transforms) or type(self._final).__name__ not in _KMEANS:
            return None
        steps = [t for t in transforms if t is not None]
        centers = np.asarray(self._final.cluster_centers_, dtype=np.float64)
        centers_t = np.ascontiguousarray(centers.T)
        center_norms = (centers * centers).sum(axis=1)
        keep_projection = self._has_projection

        def plan(X: Array) -> Scores:
            Z = X
            for transform in steps:
                Z = transform(Z)
            # |z - c|^2 = |z|^2 - 2 z.c + |c|^2: one matrix product, as scikit-learn does.
            squared = (Z * Z).sum(axis=1)[:, None] - 2.0 * (Z @ centers_t) + center_norms
            return _nearest(squared, Z if keep_projection else None, squared=True)

        if not self._agrees(plan, before):
            log.warning("the NumPy plan for %s disagrees with it; using the estimator", self)
            return None
        return plan

    def _agrees(self, plan: Callable[[Array], Scores], before: list[Any]) -> bool:
        """Whether the plan gives the estimator's own answers on a few synthetic rows."""
        first = before[0] if before else self._final
        rng = np.random.default_rng(0)
        low = getattr(first, "data_min_", None)
        if low is not None:
            X = low + rng.random((16, len(self.features))) * first.data_range_
        else:
            X = rng.normal(size=(16, len(self.features)))
        ours, theirs = plan(X), self._score_estimator(X)
        assert ours.distances is not None and theirs.distances is not None
        scale = max(1.0, float(np.abs(theirs.distances).max()))
        if not np.allclose(ours.distances, theirs.distances, rtol=1e-6, atol=1e-9 * scale):
            return False
        if ours.projection is not None and theirs.projection is not None:
            tol = 1e-9 * max(1.0, float(np.abs(theirs.projection).max()))
            if not np.allclose(ours.projection, theirs.projection, rtol=1e-7, atol=tol):
                return False
        return bool(np.array_equal(ours.labels, theirs.labels))

    def __repr__(self) -> str:
        return f"Scorer({self.artifact.path}, kind={self.kind!r}, fast={self.fast})"


# k-means estimators whose cluster_centers_ and Euclidean distances define the prediction.
_KMEANS = frozenset({"KMeans", "MiniBatchKMeans", "BisectingKMeans"})


def _kind_of(estimator: Any) -> str:
    """What the final estimator predicts: clusters with centres, class labels or scores."""
    if hasattr(estimator, "cluster_centers_") and hasattr(estimator, "transform"):
        return "cluster"
    estimator_type = getattr(estimator, "_estimator_type", None)
    if estimator_type is None:
        with contextlib.suppress(Exception):  # scikit-learn >= 1.6 keeps it in the tags
            estimator_type = estimator.__sklearn_tags__().estimator_type
    return "label" if estimator_type in ("classifier", "clusterer") else "score"


def _nearest(distances: Array, projection: Array | None, *, squared: bool) -> Scores:
    """Closest centre and the distance to it, from a rows x centres distance matrix."""
    labels = distances.argmin(axis=1)
    nearest = distances[np.arange(len(labels)), labels]
    if squared:
        # Rounding can leave a tiny negative square for a point on a centre.
        nearest = np.sqrt(np.maximum(nearest, 0.0))
    return Scores("cluster", labels, nearest, projection)


def _compile_step(step: Any) -> _Transform | None:
    """A NumPy function equal to ``step.transform`` for the common dense transformers."""
    name = type(step).__name__
    module = type(step).__module__
    if not module.startswith("sklearn."):
        return None
    if name == "MinMaxScaler":
        scale, shift = np.asarray(step.scale_), np.asarray(step.min_)
        if step.clip:
            low, high = step.feature_range
            return lambda X: np.clip(X * scale + shift, low, high)
        return lambda X: X * scale + shift
    if name == "StandardScaler":
        mean = np.asarray(step.mean_) if step.with_mean else 0.0
        std = np.asarray(step.scale_) if step.with_std else 1.0
        return lambda X: (X - mean) / std
    if name == "PCA" and not step.whiten:
        components_t = np.ascontiguousarray(np.asarray(step.components_).T)
        offset = np.asarray(step.mean_) @ components_t
        return lambda X: X @ components_t - offset
    return None


# Output columns that a clustering model adds, and the one other estimators add.
CLUSTER_COLUMN = "cluster"


DISTANCE_COLUMN = "distance"


PREDICTION_COLUMN = "prediction"


_OUT_OF_RANGE = "values out of range (the model's output is not finite)"
