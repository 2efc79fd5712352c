"""Figures for the notebook, drawn with matplotlib's object API.

Each function returns a :class:`matplotlib.figure.Figure` that is not registered with
pyplot, so a notebook shows it exactly once (as the cell's value) and nothing leaks
between cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from census_segmentation.segment import KSelection, Segmentation

__all__ = [
    "centroid_heatmap",
    "component_makeup",
    "correlation_heatmap",
    "distributions",
    "explained_variance",
    "k_selection",
]

CELL_INCHES = 0.32


def distributions(features: pd.DataFrame, *, columns: int = 6, bins: int = 30) -> Figure:
    """One histogram per feature, in a grid."""
    rows = math.ceil(features.shape[1] / columns)
    fig = Figure(figsize=(2.2 * columns, 1.7 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, features.columns, strict=False):
        ax.hist(features[name].to_numpy(), bins=bins, color="#4c72b0")
        ax.set_title(str(name), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes[features.shape[1] :]:
        ax.set_visible(False)
    fig.suptitle(f"Distribution of each feature ({len(features)} counties)")
    return fig


def correlation_heatmap(features: pd.DataFrame) -> Figure:
    """Pearson correlation between every pair of features."""
    corr = features.corr()
    fig = _square_figure(len(corr), len(corr))
    ax = fig.subplots()
    image = _heatmap(ax, corr.to_numpy(), corr.index, corr.columns, cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.6, label="correlation")
    ax.set_title("Correlation between features")
    return fig


def explained_variance(segmentation: Segmentation) -> Figure:
    """Variance explained per principal component, and cumulatively."""
    ratio = segmentation.explained_variance_ratio
    labels = list(segmentation.scores.columns)
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.bar(labels, ratio * 100, color="#4c72b0", label="per component")
    ax.plot(labels, np.cumsum(ratio) * 100, marker="o", color="#dd8452", label="cumulative")
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of variance (scaled features)")
    ax.set_title("Variance explained by the principal components")
    ax.legend(loc="center right")
    return fig


def component_makeup(segmentation: Segmentation) -> Figure:
    """Weight of each scaled feature in each principal component."""
    loadings = segmentation.loadings
    limit = float(np.abs(loadings.to_numpy()).max())
    fig = _square_figure(len(loadings), loadings.shape[1])
    ax = fig.subplots()
    image = _heatmap(
        ax,
        loadings.to_numpy(),
        loadings.index,
        loadings.columns,
        cmap="PuOr_r",
        vmin=-limit,
        vmax=limit,
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight", orientation="horizontal")
    ax.set_title("What the principal components are made of")
    return fig


def k_selection(selection: KSelection) -> Figure:
    """Inertia (elbow marked) and silhouette (chosen k marked) against k."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(selection.ks, selection.inertias, marker="o", color="#4c72b0")
    left.axvline(selection.elbow, color="grey", linestyle="--", label=f"elbow k={selection.elbow}")
    left.set(xlabel="k (clusters)", ylabel="inertia", title="Elbow: within-cluster spread")
    left.legend()
    right.plot(selection.ks, selection.silhouettes, marker="o", color="#55a868")
    right.axvline(
        selection.chosen, color="#c44e52", linestyle="--", label=f"chosen k={selection.chosen}"
    )
    right.set(xlabel="k (clusters)", ylabel="silhouette", title="Silhouette: separation")
    right.legend()
    return fig


def centroid_heatmap(profiles: pd.DataFrame) -> Figure:
    """Cluster centres (rows) by feature (columns), coloured on the 0..1 scaled range."""
    fig = _square_figure(len(profiles), profiles.shape[1])
    ax = fig.subplots()
    image = _heatmap(
        ax,
        profiles.to_numpy(),
        [f"cluster {i}" for i in profiles.index],
        profiles.columns,
        cmap="viridis",
        vmin=0,
        vmax=1,
    )
    fig.colorbar(
        image,
        ax=ax,
        shrink=0.8,
        orientation="horizontal",
        label="scaled value (0 = lowest county, 1 = highest)",
    )
    ax.set_title("Cluster centres by feature")
    return fig


def _square_figure(rows: int, columns: int) -> Figure:
    width = max(6.0, 2.5 + CELL_INCHES * columns)
    height = max(3.0, 2.5 + CELL_INCHES * rows)
    return Figure(figsize=(width, height), layout="constrained")


def _heatmap(
    ax: Axes,
    values: np.ndarray,
    row_labels: Iterable[object],
    column_labels: Iterable[object],
    *,
    cmap: str,
    vmin: float,
    vmax: float,
) -> AxesImage:
    rows = [str(label) for label in row_labels]
    columns = [str(label) for label in column_labels]
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    return image
