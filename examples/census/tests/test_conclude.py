"""Conclusions: centroid profiles, typical counties, county pairs."""

from __future__ import annotations

import pandas as pd
import pytest

from census_segmentation import (
    CleanTable,
    Segmentation,
    centroid_profiles,
    component_summary,
    example_counties,
    pair_table,
    segment,
)


@pytest.fixture(scope="module")
def result(midwest_table: CleanTable) -> Segmentation:
    return segment(midwest_table.features, n_components=5, k=4)


def test_with_all_components_profiles_are_cluster_means(midwest_table: CleanTable) -> None:
    # PCA keeping every component is lossless, so the centres map back to plain means.
    full = segment(midwest_table.features, n_components=15, k=4)

    profiles = centroid_profiles(full)

    means = midwest_table.features.groupby(full.assignments.to_numpy()).mean()
    pd.testing.assert_frame_equal(profiles, means, check_names=False, check_index_type=False)


def test_scaled_profiles_are_on_the_scaler_range(result: Segmentation) -> None:
    scaled = centroid_profiles(result, scaled=True)
    original = centroid_profiles(result)

    assert scaled.shape == original.shape == (4, 15)
    back = result.pipeline["scale"].inverse_transform(scaled)
    pd.testing.assert_frame_equal(
        pd.DataFrame(back, index=original.index, columns=original.columns), original
    )


def test_example_counties_belong_to_their_cluster(result: Segmentation) -> None:
    examples = example_counties(result, n=3)

    assert list(examples.index) == [0, 1, 2, 3]
    assert examples["size"].sum() == 437
    for cluster, row in examples.iterrows():
        names = row["examples"].split(", ")
        assert len(names) == min(3, row["size"])
        assert (result.assignments[names] == cluster).all()


def test_pair_table_keeps_pairs_present_in_data(result: Segmentation) -> None:
    table = pair_table(result, [("IL-COOK", "MI-WAYNE"), ("California-Fresno", "Arizona-Yuma")])

    assert list(table["county"]) == ["IL-COOK"]
    same = result.assignments["IL-COOK"] == result.assignments["MI-WAYNE"]
    assert table.loc[0, "same cluster"] == same


def test_pair_table_is_empty_with_columns_when_no_pair_matches(result: Segmentation) -> None:
    table = pair_table(result, [("A-B", "C-D")])

    assert table.empty
    assert list(table.columns) == [
        "county",
        "cluster",
        "other county",
        "other cluster",
        "same cluster",
    ]


def test_component_summary_names_heaviest_features(result: Segmentation) -> None:
    summary = component_summary(result, n=2)

    assert list(summary.index) == ["PC1", "PC2", "PC3", "PC4", "PC5"]
    assert summary["variance"].tolist() == pytest.approx(list(result.explained_variance_ratio))
    first = result.loadings.loc["PC1"].abs().idxmax()
    assert str(summary.loc["PC1", "heaviest features"]).startswith(f"{first} (")
