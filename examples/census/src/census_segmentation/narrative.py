"""The conclusion in words: what each cluster is, why this many clusters, how stable they are.

Everything here is computed from a fitted :class:`Segmentation` and the features it was fitted
on, so the text changes with the data and the parameters:

- each cluster by its most distinctive features: the standardized difference of the cluster's
  mean from the mean of all counties, in standard deviations of the feature across counties;
  the largest first, skipping a feature that moves almost in step with one already named
  (|correlation| >= :data:`REDUNDANT` across counties, e.g. population and number of women);
- the choice of k: the elbow and silhouette figures of the search, or that k was a parameter;
- stability: k-means refitted with several seeds on the same principal components, and the
  adjusted Rand index between every two of those clusterings (1: identical up to the cluster
  numbers; about 0: no more alike than chance).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from census_segmentation.conclude import closest_members
from census_segmentation.errors import ParameterError
from census_segmentation.schemas import feature_label
from census_segmentation.segment import N_INIT, KSelection, Segmentation

__all__ = [
    "REDUNDANT",
    "STABILITY_SEEDS",
    "ClusterProfile",
    "Conclusion",
    "Stability",
    "Trait",
    "cluster_stability",
    "describe_clusters",
    "distinctive_traits",
    "k_choice",
    "standardized_differences",
    "write_conclusion",
]

STABILITY_SEEDS = (0, 1, 2, 3, 4)
# Population, men, women, citizens and employed correlate at 0.99 in ACS 2015: naming all of
# them would spend a cluster's description on one trait.
REDUNDANT = 0.85
# Standardized differences, in standard deviations: "much" from 1, plain from 0.5, "slightly"
# from 0.25; a smaller difference is not worth naming.
MUCH, PLAIN, SLIGHT = 1.0, 0.5, 0.25


@dataclass(frozen=True)
class Trait:
    """One feature in which a cluster differs from the average county."""

    feature: str
    cluster_mean: float
    overall_mean: float
    difference: float  # (cluster mean - overall mean) / standard deviation across counties

    @property
    def words(self) -> str:
        """E.g. ``much higher share working from home (7.9 vs 4.6)``."""
        size = abs(self.difference)
        degree = "much " if size >= MUCH else "" if size >= PLAIN else "slightly "
        direction = "higher" if self.difference > 0 else "lower"
        figures = f"{_number(self.cluster_mean)} vs {_number(self.overall_mean)}"
        return f"{degree}{direction} {feature_label(self.feature)} ({figures})"


@dataclass(frozen=True)
class ClusterProfile:
    """A cluster's size, a few typical members and its most distinctive traits."""

    cluster: int
    size: int
    share: float  # of all counties
    examples: tuple[str, ...]
    traits: tuple[Trait, ...]

    @property
    def sentence(self) -> str:
        """The cluster in one Markdown sentence."""
        example = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        head = f"**Cluster {self.cluster}** ({_counties(self.size)}, {self.share:.0%}{example})"
        if not self.traits:
            return (
                f"{head}: close to the average county in every feature (none is a quarter of "
                "a standard deviation away)."
            )
        return (
            f"{head}: {_enumerate(trait.words for trait in self.traits)} than the average county."
        )


@dataclass(frozen=True)
class Stability:
    """Agreement between k-means clusterings that differ only in the random seed."""

    seeds: tuple[int, ...]
    pairs: Mapping[tuple[int, int], float]  # adjusted Rand index of each pair of seeds

    @classmethod
    def from_labelings(cls, labelings: Mapping[int, ArrayLike]) -> Stability:
        """The adjusted Rand index between every two of the labelings, keyed by seed."""
        if len(labelings) < 2:
            raise ParameterError(f"stability needs at least 2 seeds, got {len(labelings)}")
        labels = {seed: np.asarray(value) for seed, value in labelings.items()}
        pairs = {
            (first, second): float(adjusted_rand_score(labels[first], labels[second]))
            for first, second in itertools.combinations(labels, 2)
        }
        return cls(seeds=tuple(labels), pairs=pairs)

    @property
    def mean(self) -> float:
        """Mean adjusted Rand index over the pairs of seeds."""
        return float(np.mean(list(self.pairs.values())))

    @property
    def min(self) -> float:
        """Lowest adjusted Rand index over the pairs of seeds: the two most different runs."""
        return float(min(self.pairs.values()))

    @property
    def verdict(self) -> str:
        """What the mean agreement means for reading the clusters."""
        if self.min > 0.9995:
            return "every seed gives the same clusters"
        if self.mean >= 0.9:
            return "the clusters hardly depend on the seed"
        if self.mean >= 0.75:
            return "the clusters are stable; a few counties on their borders change cluster"
        if self.mean >= 0.5:
            return (
                "the clusters are only moderately stable; some counties change cluster with "
                "the seed, so read borderline assignments with care"
            )
        return (
            "the clusters are unstable; another seed gives another grouping, so treat this "
            "one as one of several plausible ones"
        )

    @property
    def sentence(self) -> str:
        """The stability in one Markdown sentence."""
        seeds = _enumerate(str(seed) for seed in self.seeds)
        return (
            f"Refitting k-means ({N_INIT} initialisations each) with seeds {seeds}, the adjusted "
            f"Rand index between two runs' clusterings is {self.mean:.3f} on average and "
            f"{self.min:.3f} at the lowest over the {len(self.pairs)} pairs (1 is the same "
            f"clustering, 0 no more alike than chance): {self.verdict}."
        )


@dataclass(frozen=True)
class Conclusion:
    """The written conclusion of one segmentation; :meth:`to_markdown` renders it."""

    n_counties: int
    n_features: int
    n_components: int
    variance: float
    k: int
    k_choice: str
    clusters: tuple[ClusterProfile, ...]
    stability: Stability

    def to_markdown(self) -> str:
        """The conclusion as Markdown: a summary, one item per cluster, k, stability."""
        lines = [
            f"**In short.** K-means groups the {self.n_counties:,} counties, described by "
            f"{self.n_features} features, into **{self.k} clusters** on the top "
            f"{self.n_components} principal components, which keep {self.variance:.1%} of the "
            "variance of the scaled features.",
            "",
            "**The clusters**, each by its most distinctive features against the average "
            "county (in brackets: the cluster's mean, then the mean of all counties; *much* "
            "means more than one standard deviation apart, *slightly* less than half of one):",
            "",
            *(f"- {cluster.sentence}" for cluster in self.clusters),
            "",
            f"**Why {self.k} clusters.** {self.k_choice}",
            "",
            f"**How stable.** {self.stability.sentence}",
        ]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def standardized_differences(features: pd.DataFrame, assignments: pd.Series) -> pd.DataFrame:
    """Per cluster (rows) and feature: (cluster mean - mean of all) / std across counties."""
    spread = features.std().replace(0.0, np.nan)  # a constant feature tells clusters apart by 0
    means = features.groupby(assignments.to_numpy()).mean()
    differences = ((means - features.mean()) / spread).fillna(0.0)
    return differences.rename_axis("cluster")


def distinctive_traits(
    features: pd.DataFrame,
    assignments: pd.Series,
    *,
    n: int = 3,
    redundant: float = REDUNDANT,
) -> dict[int, tuple[Trait, ...]]:
    """Per cluster, up to ``n`` features that set it apart, the largest difference first.

    A feature is left out when its difference is under a quarter of a standard deviation, or
    when it correlates with a feature already named at ``redundant`` or more (either sign).
    """
    differences = standardized_differences(features, assignments)
    means = features.groupby(assignments.to_numpy()).mean().reindex(differences.index)
    # Plain arrays from here: positions, not labels, index the features.
    names = [str(name) for name in features.columns]
    difference, cluster_mean = differences.to_numpy(), means.to_numpy()
    overall = features.mean().to_numpy()
    correlation = np.nan_to_num(np.abs(features.corr().to_numpy()))
    traits: dict[int, tuple[Trait, ...]] = {}
    for row, cluster in enumerate(differences.index.astype(int)):
        named: list[int] = []
        for column in np.argsort(-np.abs(difference[row]), kind="stable"):
            if len(named) == n or abs(difference[row, column]) < SLIGHT:
                break
            if any(correlation[column, other] >= redundant for other in named):
                continue
            named.append(int(column))
        traits[int(cluster)] = tuple(
            Trait(
                feature=names[column],
                cluster_mean=float(cluster_mean[row, column]),
                overall_mean=float(overall[column]),
                difference=float(difference[row, column]),
            )
            for column in named
        )
    return traits


def describe_clusters(
    segmentation: Segmentation, features: pd.DataFrame, *, n: int = 3, examples: int = 2
) -> tuple[ClusterProfile, ...]:
    """Each cluster's size, ``examples`` typical counties and ``n`` distinctive traits."""
    _check_same_counties(segmentation, features)
    traits = distinctive_traits(features, segmentation.assignments, n=n)
    typical = closest_members(segmentation, examples)
    total = len(segmentation.assignments)
    return tuple(
        ClusterProfile(
            cluster=cluster,
            size=size,
            share=size / total,
            examples=tuple(typical[cluster]),
            traits=traits.get(cluster, ()),
        )
        for cluster, size in segmentation.cluster_sizes.items()
    )


def cluster_stability(
    scores: ArrayLike, k: int, seeds: Iterable[int] = STABILITY_SEEDS
) -> Stability:
    """Fit k-means with each seed (the model's settings otherwise) and compare the labelings."""
    seeds = [int(seed) for seed in seeds]
    if len(seeds) < 2:
        # Before fitting anything: one run has nothing to agree with.
        raise ParameterError(f"stability needs at least 2 seeds, got {len(seeds)}")
    points = np.asarray(scores)
    labelings = {
        seed: KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit_predict(points)
        for seed in seeds
    }
    return Stability.from_labelings(labelings)


def k_choice(segmentation: Segmentation) -> str:
    """How k was chosen and the figures that justify it, in Markdown sentences."""
    selection = segmentation.selection
    if selection is None:
        return (
            f"k = {segmentation.k} was set by the `k` parameter, so no search was run; the "
            f"clustering's silhouette is {segmentation.silhouette:.3f} (from -1 to 1, higher "
            "means better separated clusters)."
        )
    return _searched_k(selection)


def write_conclusion(
    segmentation: Segmentation,
    features: pd.DataFrame,
    *,
    seeds: Iterable[int] = STABILITY_SEEDS,
    n: int = 3,
) -> Conclusion:
    """The written conclusion of ``segmentation``, fitted on ``features``."""
    _check_same_counties(segmentation, features)
    return Conclusion(
        n_counties=len(features),
        n_features=features.shape[1],
        n_components=len(segmentation.explained_variance_ratio),
        variance=float(segmentation.explained_variance_ratio.sum()),
        k=segmentation.k,
        k_choice=k_choice(segmentation),
        clusters=describe_clusters(segmentation, features, n=n),
        stability=cluster_stability(segmentation.scores, segmentation.k, seeds),
    )


def _searched_k(selection: KSelection) -> str:
    silhouette = dict(zip(selection.ks, selection.silhouettes, strict=True))
    inertia = dict(zip(selection.ks, selection.inertias, strict=True))
    first, last = selection.ks[0], selection.ks[-1]
    elbow, chosen = selection.elbow, selection.chosen
    text = (
        f"k was searched from {first} to {last}. {_inertia_sentence(inertia, elbow)} From the "
        f"elbow on, k = {chosen} has the highest silhouette, {silhouette[chosen]:.3f}"
    )
    others = [k for k in selection.ks if k >= elbow and k != chosen]
    if others:
        runner_up = max(others, key=lambda k: silhouette[k])
        text += f" (the next best, k = {runner_up}, has {silhouette[runner_up]:.3f})"
    text += "."
    best = max(selection.ks, key=lambda k: silhouette[k])
    if best < elbow:
        text += (
            f" k = {best} separates the counties more cleanly still (silhouette "
            f"{silhouette[best]:.3f}) but lies before the elbow, where one more cluster still "
            "cuts the spread within clusters steeply."
        )
    return text


def _inertia_sentence(inertia: Mapping[int, float], elbow: int) -> str:
    """Why the elbow: how much the inertia falls before it and after it."""
    ks = sorted(inertia)
    first, last = ks[0], ks[-1]
    # Steps of the search, which need not be 1 apart.
    before, after = ks.index(elbow), len(ks) - 1 - ks.index(elbow)
    if not first < elbow < last:
        return (
            f"The inertia (the spread within clusters) has no bend inside the range: its elbow "
            f"is at k = {elbow}, an end of it."
        )
    return (
        f"The inertia (the spread within clusters) falls by "
        f"{_drop(inertia[first], inertia[elbow])} over the {before} steps from "
        f"k = {first} to its elbow at k = {elbow}, and by {_drop(inertia[elbow], inertia[last])} "
        f"over the {after} steps from there to k = {last}: past the elbow an extra "
        "cluster buys less."
    )


def _check_same_counties(segmentation: Segmentation, features: pd.DataFrame) -> None:
    if not features.index.equals(segmentation.assignments.index):
        raise ParameterError(
            "the features are not the counties the segmentation was fitted on "
            f"({len(features)} rows against {len(segmentation.assignments)} assignments)"
        )


def _drop(before: float, after: float) -> str:
    return f"{(before - after) / before:.0%}" if before > 0 else "0%"


def _counties(count: int) -> str:
    return f"{count:,} count{'y' if count == 1 else 'ies'}"


def _enumerate(items: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words: Sequence[str] = list(items)
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _number(value: float) -> str:
    """A figure in its own units, rounded for reading: 45,992; 16.7; 0.0332."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"
