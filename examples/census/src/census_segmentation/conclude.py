"""Read a segmentation back in terms of the data: centroid profiles and example counties."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from census_segmentation.segment import Segmentation

__all__ = [
    "REFERENCE_PAIRS",
    "centroid_profiles",
    "closest_members",
    "component_summary",
    "example_counties",
    "pair_table",
]

# Pairs of counties worth checking in each dataset: places one would expect to resemble
# each other. The first pair is the one the original analysis highlights.
REFERENCE_PAIRS = (
    ("California-Fresno", "Arizona-Yuma"),
    ("Illinois-Cook", "Michigan-Wayne"),
    ("IL-COOK", "MI-WAYNE"),
    ("IL-CHAMPAIGN", "IN-TIPPECANOE"),
    ("WI-DANE", "MI-WASHTENAW"),
)


def centroid_profiles(segmentation: Segmentation, *, scaled: bool = False) -> pd.DataFrame:
    """Cluster centres mapped back through PCA (and the scaler unless ``scaled``).

    In original units each row reads like a typical county of that cluster; in scaled units
    (0 = the smallest county value, 1 = the largest) features can share one colour scale.
    """
    pipeline = segmentation.pipeline
    centres = pipeline["pca"].inverse_transform(pipeline["kmeans"].cluster_centers_)
    if not scaled:
        centres = pipeline["scale"].inverse_transform(centres)
    return pd.DataFrame(
        centres,
        index=pd.RangeIndex(segmentation.k, name="cluster"),
        columns=segmentation.features,
    )


def component_summary(segmentation: Segmentation, n: int = 3) -> pd.DataFrame:
    """Per principal component: its share of variance and its ``n`` heaviest features."""
    rows = []
    for (component, weights), ratio in zip(
        segmentation.loadings.iterrows(), segmentation.explained_variance_ratio, strict=True
    ):
        heaviest = weights.abs().sort_values(ascending=False, kind="stable").index[:n]
        rows.append(
            {
                "component": component,
                "variance": float(ratio),
                "heaviest features": ", ".join(
                    f"{name} ({weights[name]:+.2f})" for name in heaviest
                ),
            }
        )
    return pd.DataFrame(rows).set_index("component")


def example_counties(segmentation: Segmentation, n: int = 5) -> pd.DataFrame:
    """Per cluster: its size and the ``n`` counties closest to its centre (most typical)."""
    closest = closest_members(segmentation, n)
    sizes = segmentation.cluster_sizes
    rows = [
        {"cluster": cluster, "size": sizes[cluster], "examples": ", ".join(closest[cluster])}
        for cluster in range(segmentation.k)
    ]
    return pd.DataFrame(rows).set_index("cluster")


def closest_members(segmentation: Segmentation, n: int) -> dict[int, list[str]]:
    """Per cluster: the ids of its ``n`` counties closest to the centre, closest first."""
    centres = segmentation.pipeline["kmeans"].cluster_centers_
    labels = segmentation.assignments.to_numpy()
    scores = segmentation.scores.to_numpy()
    distance = np.linalg.norm(scores - centres[labels], axis=1)
    closest = {}
    for cluster in range(segmentation.k):
        members = np.flatnonzero(labels == cluster)
        nearest = members[np.argsort(distance[members], kind="stable")[:n]]
        closest[cluster] = [str(name) for name in segmentation.assignments.index[nearest]]
    return closest


def pair_table(
    segmentation: Segmentation, pairs: Iterable[tuple[str, str]] = REFERENCE_PAIRS
) -> pd.DataFrame:
    """For each pair whose two counties are both in the data: their clusters, and if equal."""
    assignments = segmentation.assignments
    rows = [
        {
            "county": first,
            "cluster": int(assignments[first]),
            "other county": second,
            "other cluster": int(assignments[second]),
            "same cluster": bool(assignments[first] == assignments[second]),
        }
        for first, second in pairs
        if first in assignments.index and second in assignments.index
    ]
    columns = ["county", "cluster", "other county", "other cluster", "same cluster"]
    return pd.DataFrame(rows, columns=columns)
