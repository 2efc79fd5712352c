"""The conclusion in words: distinctive features, the choice of k, stability across seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs

from census_segmentation import (
    ACS2015,
    MIDWEST,
    CleanTable,
    ParameterError,
    Stability,
    cluster_stability,
    distinctive_traits,
    segment,
    write_conclusion,
)
from census_segmentation.narrative import (
    ClusterProfile,
    Trait,
    k_choice,
    standardized_differences,
)
from census_segmentation.schemas import FEATURE_LABELS
from census_segmentation.segment import KSelection


def three_groups(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """120 counties in 3 groups of 40: one works from home a lot, one earns little, one neither.

    Every other feature is the same noise in all groups.
    """
    rng = np.random.default_rng(seed)
    n = 40
    features = pd.DataFrame(
        {
            "WorkAtHome": rng.normal(4.0, 1.0, 3 * n),
            "Income": rng.normal(50_000, 5_000, 3 * n),
            "Poverty": rng.normal(15.0, 3.0, 3 * n),
            "Transit": rng.normal(1.0, 0.3, 3 * n),
        },
        index=pd.Index([f"State-County{i}" for i in range(3 * n)], name="id"),
    )
    features.iloc[:n, 0] += 8.0  # group 0: working from home
    features.iloc[n : 2 * n, 1] -= 20_000  # group 1: low income
    labels = pd.Series(np.repeat([0, 1, 2], n), index=features.index, name="cluster")
    return features, labels


def test_traits_name_the_feature_that_sets_each_group_apart() -> None:
    features, labels = three_groups()

    traits = distinctive_traits(features, labels, n=1)

    assert [trait.feature for trait in traits[0]] == ["WorkAtHome"]
    assert [trait.feature for trait in traits[1]] == ["Income"]
    assert traits[0][0].words.startswith("much higher share working from home (")
    assert traits[1][0].words.startswith("much lower median household income (")


def test_traits_come_largest_difference_first_and_carry_the_means() -> None:
    features, labels = three_groups()

    traits = distinctive_traits(features, labels, n=3)[0]

    sizes = [abs(trait.difference) for trait in traits]
    assert sizes == sorted(sizes, reverse=True)
    first = traits[0]
    assert first.cluster_mean == pytest.approx(features["WorkAtHome"][labels == 0].mean())
    assert first.overall_mean == pytest.approx(features["WorkAtHome"].mean())
    expected = (first.cluster_mean - first.overall_mean) / features["WorkAtHome"].std()
    assert first.difference == pytest.approx(expected)


def test_a_feature_in_step_with_one_already_named_is_skipped() -> None:
    features, labels = three_groups()
    # Women is population times a near-constant: the same trait under another name.
    features.insert(0, "TotalPop", 10_000 + 50_000 * (labels == 1))
    features.insert(1, "Women", features["TotalPop"] * 0.51 + np.arange(len(features)) % 7)

    skipped = [trait.feature for trait in distinctive_traits(features, labels, n=2)[1]]
    kept = [trait.feature for trait in distinctive_traits(features, labels, n=2, redundant=1.01)[1]]

    assert skipped[0] in {"TotalPop", "Women"}
    assert "TotalPop" not in skipped or "Women" not in skipped
    assert sorted(kept) == ["TotalPop", "Women"]


def test_an_average_cluster_has_no_trait_and_says_so() -> None:
    # Two random halves of one homogeneous table: neither differs from the whole.
    rng = np.random.default_rng(1)
    features = pd.DataFrame(rng.normal(size=(400, 4)), columns=["a", "b", "c", "d"])
    labels = pd.Series(np.arange(400) % 2, index=features.index)

    traits = distinctive_traits(features, labels)
    profile = ClusterProfile(cluster=0, size=200, share=0.5, examples=(), traits=traits[0])

    assert traits == {0: (), 1: ()}
    assert profile.sentence == (
        "**Cluster 0** (200 counties, 50%): close to the average county in every feature "
        "(none is a quarter of a standard deviation away)."
    )


@pytest.mark.parametrize(
    ("difference", "words"),
    [
        (1.2, "much higher poverty rate (20.0 vs 15.0)"),
        (0.6, "higher poverty rate (20.0 vs 15.0)"),
        (-0.3, "slightly lower poverty rate (20.0 vs 15.0)"),
    ],
)
def test_trait_words_grade_the_difference(difference: float, words: str) -> None:
    trait = Trait(feature="Poverty", cluster_mean=20.0, overall_mean=15.0, difference=difference)

    assert trait.words == words


def test_trait_of_an_unknown_column_uses_its_name_and_readable_figures() -> None:
    trait = Trait(feature="x_col", cluster_mean=72_418.4, overall_mean=0.04871, difference=2.0)

    assert trait.words == "much higher x_col (72,418 vs 0.0487)"


def test_cluster_sentence_joins_size_examples_and_traits() -> None:
    traits = (
        Trait("WorkAtHome", 9.3, 4.6, 1.5),
        Trait("PrivateWork", 64.1, 74.2, -1.3),
    )
    profile = ClusterProfile(
        cluster=1, size=1395, share=0.4335, examples=("A-B", "C-D"), traits=traits
    )

    assert profile.sentence == (
        "**Cluster 1** (1,395 counties, 43%; e.g. A-B, C-D): much higher share working from "
        "home (9.3 vs 4.6) and much lower share working in the private sector (64.1 vs 74.2) "
        "than the average county."
    )


def test_a_constant_feature_differs_by_zero() -> None:
    features, labels = three_groups()
    features["flat"] = 3.0

    differences = standardized_differences(features, labels)

    assert (differences["flat"] == 0.0).all()
    assert list(differences.index) == [0, 1, 2]


def test_identical_labelings_agree_perfectly() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])

    stability = Stability.from_labelings({0: labels, 1: labels, 2: labels})

    assert stability.mean == stability.min == 1.0
    assert list(stability.pairs) == [(0, 1), (0, 2), (1, 2)]
    assert stability.verdict == "every seed gives the same clusters"


def test_renumbered_clusters_are_the_same_clustering() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])

    stability = Stability.from_labelings({3: labels, 4: (labels + 1) % 3})

    assert stability.pairs == {(3, 4): pytest.approx(1.0)}


def test_different_labelings_lower_the_mean_and_the_minimum() -> None:
    first = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    other = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])

    stability = Stability.from_labelings({0: first, 1: first, 2: other})

    assert stability.min < 0.0 + 1e-9 < stability.mean < 1.0
    assert stability.pairs[(0, 1)] == 1.0
    assert "unstable" in stability.verdict


def test_stability_is_computed_over_the_seeds_given() -> None:
    points, _ = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=2)

    stability = cluster_stability(points, 3, seeds=[7, 11, 13])

    assert stability.seeds == (7, 11, 13)
    assert list(stability.pairs) == [(7, 11), (7, 13), (11, 13)]
    assert stability.mean == pytest.approx(1.0)
    assert "seeds 7, 11 and 13" in stability.sentence
    assert "over the 3 pairs" in stability.sentence


def test_stability_needs_two_seeds() -> None:
    with pytest.raises(ParameterError, match="at least 2 seeds, got 1"):
        cluster_stability(np.zeros((10, 2)), 2, seeds=[0])


def test_searched_k_is_justified_by_elbow_and_silhouettes() -> None:
    features, _ = three_groups()
    result = segment(features, n_components=2, k=3)
    searched = dataclasses.replace(
        result,
        selection=KSelection(
            ks=[2, 3, 4, 5, 6],
            inertias=[100.0, 60.0, 30.0, 25.0, 22.0],
            silhouettes=[0.6, 0.4, 0.5, 0.45, 0.3],
            elbow=4,
            chosen=4,
        ),
    )

    text = k_choice(searched)

    assert text.startswith("k was searched from 2 to 6. ")
    assert "falls by 70% over the 2 steps from k = 2 to its elbow at k = 4" in text
    assert "by 27% over the 2 steps from there to k = 6" in text
    assert "k = 4 has the highest silhouette, 0.500 (the next best, k = 5, has 0.450)" in text
    assert "k = 2 separates the counties more cleanly still (silhouette 0.600)" in text


def test_fixed_k_is_reported_as_a_parameter_with_its_silhouette() -> None:
    features, _ = three_groups()
    result = segment(features, n_components=2, k=3)

    assert k_choice(result) == (
        "k = 3 was set by the `k` parameter, so no search was run; the clustering's "
        f"silhouette is {result.silhouette:.3f} (from -1 to 1, higher means better separated "
        "clusters)."
    )


def test_conclusion_markdown_covers_clusters_k_and_stability() -> None:
    features, _ = three_groups()
    result = segment(features, n_components=2, k=3)

    conclusion = write_conclusion(result, features, seeds=range(3))
    text = conclusion.to_markdown()

    assert text.startswith("**In short.** K-means groups the 120 counties, described by 4 ")
    assert "into **3 clusters** on the top 2 principal components" in text
    assert [line[:15] for line in text.splitlines() if line.startswith("- ")] == [
        "- **Cluster 0**",
        "- **Cluster 1**",
        "- **Cluster 2**",
    ]
    assert "**Why 3 clusters.** k = 3 was set by the `k` parameter" in text
    assert (
        "**How stable.** Refitting k-means (10 initialisations each) with seeds 0, 1 and 2" in text
    )
    assert conclusion._repr_markdown_() == text
    # The group that works from home is found and named.
    assert "much higher share working from home" in text


def test_conclusion_refuses_features_of_other_counties() -> None:
    features, _ = three_groups()
    result = segment(features, n_components=2, k=3)

    with pytest.raises(ParameterError, match="not the counties the segmentation was fitted on"):
        write_conclusion(result, features.iloc[:-1])


def test_every_feature_of_both_tables_has_a_label() -> None:
    for schema in (ACS2015, MIDWEST):
        assert [name for name in schema.features if name not in FEATURE_LABELS] == []


def test_acs2015_conclusion_describes_the_reference_clusters(acs2015_table: CleanTable) -> None:
    features = acs2015_table.features
    result = segment(features, n_components=5, k=7, seed=0)

    conclusion = write_conclusion(result, features)

    assert [profile.cluster for profile in conclusion.clusters] == list(range(7))
    assert sum(profile.size for profile in conclusion.clusters) == 3218
    assert all(profile.traits for profile in conclusion.clusters)
    # Fresno and Yuma's cluster: agricultural counties with large Hispanic populations.
    fresno = conclusion.clusters[int(result.assignments["California-Fresno"])]
    hispanic = next(trait for trait in fresno.traits if trait.feature == "Hispanic")
    assert hispanic.difference > 1.0
    assert conclusion.variance == pytest.approx(0.718, abs=0.001)
    assert conclusion.stability.seeds == (0, 1, 2, 3, 4)
    assert conclusion.stability.mean > 0.95
    text = conclusion.to_markdown()
    assert "k = 7 was set by the `k` parameter" in text
    assert "much higher share of Hispanic residents" in text
