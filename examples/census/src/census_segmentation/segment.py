"""The model: MinMax scaling, PCA and k-means as one scikit-learn Pipeline.

When ``k`` is not given it is chosen over :data:`K_RANGE` from two curves computed on the
principal components: the elbow of the k-means inertia (the k farthest below the straight
line joining the first and last points, both axes scaled to 0..1) gives the smallest k worth
having; from the elbow on, the k with the highest silhouette is taken.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from nbcd.model import ModelArtifact, fingerprint_frame, save_model
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from census_segmentation.errors import ParameterError
from census_segmentation.schemas import CleanTable

__all__ = [
    "K_RANGE",
    "N_INIT",
    "KSelection",
    "SavedSegmentation",
    "Segmentation",
    "build_pipeline",
    "choose_k",
    "save_segmentation",
    "segment",
]

K_RANGE = range(2, 11)
# Fixed rather than "auto" so results do not change with the scikit-learn default.
N_INIT = 10


@dataclass(frozen=True)
class KSelection:
    """Inertia and silhouette for each candidate k, and the k they point to."""

    ks: list[int]
    inertias: list[float]
    silhouettes: list[float]
    elbow: int
    chosen: int

    @property
    def reason(self) -> str:
        """One sentence stating why ``chosen`` was picked."""
        best = self.silhouettes[self.ks.index(self.chosen)]
        return (
            f"the inertia curve bends at k={self.elbow}; from there on, k={self.chosen} "
            f"has the highest silhouette ({best:.3f})"
        )

    def as_frame(self) -> pd.DataFrame:
        """The curves as a table indexed by k."""
        return pd.DataFrame(
            {"inertia": self.inertias, "silhouette": self.silhouettes},
            index=pd.Index(self.ks, name="k"),
        )


@dataclass(frozen=True)
class Segmentation:
    """A fitted pipeline and what it says about the counties it was fitted on."""

    pipeline: Pipeline
    features: list[str]
    scores: pd.DataFrame
    assignments: pd.Series
    silhouette: float
    selection: KSelection | None

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.pipeline["kmeans"].n_clusters)

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """Share of the scaled data's variance each principal component explains."""
        return np.asarray(self.pipeline["pca"].explained_variance_ratio_)

    @property
    def inertia(self) -> float:
        """Sum of squared distances of counties to their cluster centre (component space)."""
        return float(self.pipeline["kmeans"].inertia_)

    @property
    def cluster_sizes(self) -> dict[int, int]:
        """Counties per cluster, by cluster number."""
        counts = np.bincount(self.assignments.to_numpy(), minlength=self.k)
        return {cluster: int(size) for cluster, size in enumerate(counts)}

    @property
    def loadings(self) -> pd.DataFrame:
        """Component make-up: weight of each (scaled) feature in each component."""
        pca = self.pipeline["pca"]
        return pd.DataFrame(pca.components_, index=self.scores.columns, columns=self.features)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready figures for the model artifact's metadata."""
        metrics: dict[str, Any] = {
            "n_components": len(self.explained_variance_ratio),
            "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
            "explained_variance_total": float(self.explained_variance_ratio.sum()),
            "k": self.k,
            "k_chosen_by": "elbow+silhouette" if self.selection else "parameter",
            "cluster_sizes": {str(key): size for key, size in self.cluster_sizes.items()},
            "silhouette": self.silhouette,
            "inertia": self.inertia,
            "n_counties": len(self.assignments),
        }
        if self.selection is not None:
            metrics["k_selection"] = {
                "k": self.selection.ks,
                "inertia": self.selection.inertias,
                "silhouette": self.selection.silhouettes,
                "elbow": self.selection.elbow,
            }
        return metrics


@dataclass(frozen=True)
class SavedSegmentation:
    """Where a segmentation was written."""

    model: ModelArtifact
    assignments: Path


def build_pipeline(n_components: int, k: int, seed: int) -> Pipeline:
    """An unfitted MinMaxScaler -> PCA -> KMeans pipeline."""
    return Pipeline(
        [
            ("scale", MinMaxScaler()),
            # "full" keeps the decomposition exact and independent of the data's size.
            ("pca", PCA(n_components=n_components, svd_solver="full")),
            ("kmeans", KMeans(n_clusters=k, n_init=N_INIT, random_state=seed)),
        ]
    )


def choose_k(scores: np.ndarray, *, ks: Sequence[int] = K_RANGE, seed: int = 0) -> KSelection:
    """Fit k-means for each k in ``ks`` and pick k by elbow and silhouette (module doc)."""
    ks = [int(k) for k in ks]
    if len(ks) < 3 or min(ks) < 2 or max(ks) >= len(scores):
        raise ParameterError(
            f"k range {ks[0]}..{ks[-1]} needs at least 3 values between 2 and "
            f"{len(scores) - 1} (the number of counties - 1)"
        )
    inertias, silhouettes = [], []
    for k in ks:
        kmeans = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(scores)
        inertias.append(float(kmeans.inertia_))
        silhouettes.append(float(silhouette_score(scores, kmeans.labels_)))
    elbow = ks[_elbow_index(ks, inertias)]
    candidates = [i for i, k in enumerate(ks) if k >= elbow]
    chosen = ks[max(candidates, key=lambda i: silhouettes[i])]
    return KSelection(ks, inertias, silhouettes, elbow=elbow, chosen=chosen)


def segment(
    features: pd.DataFrame,
    *,
    n_components: int = 5,
    k: int | None = None,
    seed: int = 0,
    ks: Sequence[int] = K_RANGE,
) -> Segmentation:
    """Fit the pipeline on ``features`` (indexed by county id); choose k if it is None."""
    n_rows, n_features = features.shape
    if not 1 <= n_components <= min(n_rows, n_features):
        raise ParameterError(
            f"n_components={n_components} must be between 1 and {min(n_rows, n_features)} "
            "(the number of features)"
        )
    if k is not None and not 2 <= k < n_rows:
        raise ParameterError(f"k={k} must be between 2 and {n_rows - 1} (counties - 1)")
    pipeline = build_pipeline(n_components, k or 2, seed)
    # Scale and project once; k selection and the final k-means both work on these scores.
    reduce = pipeline[:-1]
    scores = reduce.fit_transform(features)
    selection = None if k is not None else choose_k(scores, ks=ks, seed=seed)
    kmeans = pipeline["kmeans"]
    kmeans.set_params(n_clusters=k if selection is None else selection.chosen)
    labels = kmeans.fit_predict(scores)
    columns = [f"PC{i + 1}" for i in range(n_components)]
    return Segmentation(
        pipeline=pipeline,
        features=[str(column) for column in features.columns],
        scores=pd.DataFrame(scores, index=features.index, columns=columns),
        assignments=pd.Series(labels, index=features.index, name="cluster"),
        silhouette=float(silhouette_score(scores, labels)),
        selection=selection,
    )


def save_segmentation(
    segmentation: Segmentation, table: CleanTable, output_dir: Path
) -> SavedSegmentation:
    """Write ``output_dir/model/`` (nbcd model artifact) and ``output_dir/assignments.csv``."""
    output_dir = Path(output_dir)
    artifact = save_model(
        segmentation.pipeline,
        output_dir / "model",
        features=segmentation.features,
        metrics=segmentation.metrics(),
        data_fingerprint=fingerprint_frame(table.features),
        extra={"dataset": table.schema.name, "rows_dropped": table.n_dropped},
    )
    path = output_dir / "assignments.csv"
    fd, partial = tempfile.mkstemp(dir=output_dir, prefix=".assignments.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            segmentation.assignments.rename_axis("id").to_csv(handle, header=True)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return SavedSegmentation(model=artifact, assignments=path)


def _elbow_index(ks: Sequence[int], inertias: Sequence[float]) -> int:
    """Index of the point farthest below the chord from the first to the last point."""
    x = np.asarray(ks, dtype=float)
    y = np.asarray(inertias, dtype=float)
    x = (x - x[0]) / (x[-1] - x[0])
    span = y[0] - y[-1]
    y = (y - y[-1]) / span if span > 0 else np.zeros_like(y)
    # The chord runs from (0, 1) to (1, 0): distance below it is proportional to 1 - x - y.
    return int(np.argmax(1.0 - x - y))
