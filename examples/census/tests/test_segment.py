"""The model pipeline, k selection, the reference figures and the saved artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nbcd.model import fingerprint_frame, load_model
from sklearn.datasets import make_blobs

from census_segmentation import (
    CleanTable,
    ParameterError,
    choose_k,
    save_segmentation,
    segment,
)
from census_segmentation.segment import _elbow_index


def test_acs2015_top_five_components_explain_72_percent(acs2015_table: CleanTable) -> None:
    result = segment(acs2015_table.features, n_components=5, k=7)

    assert result.explained_variance_ratio.sum() == pytest.approx(0.718, abs=0.001)


def test_acs2015_fresno_and_yuma_share_a_cluster_at_k7(acs2015_table: CleanTable) -> None:
    result = segment(acs2015_table.features, n_components=5, k=7, seed=0)

    assert result.k == 7
    assert result.assignments["California-Fresno"] == result.assignments["Arizona-Yuma"]


def test_same_seed_gives_identical_assignments(acs2015_table: CleanTable) -> None:
    first = segment(acs2015_table.features, k=7, seed=3)
    second = segment(acs2015_table.features, k=7, seed=3)

    pd.testing.assert_series_equal(first.assignments, second.assignments)


def test_when_k_is_none_then_it_is_chosen_and_justified(midwest_table: CleanTable) -> None:
    result = segment(midwest_table.features, n_components=5)

    selection = result.selection
    assert selection is not None
    assert result.k == selection.chosen
    assert selection.ks == list(range(2, 11))
    assert selection.elbow <= selection.chosen
    best_after_elbow = max(
        s for k, s in zip(selection.ks, selection.silhouettes, strict=True) if k >= selection.elbow
    )
    assert result.silhouette == pytest.approx(best_after_elbow)
    assert f"k={selection.chosen}" in selection.reason
    assert list(selection.as_frame().columns) == ["inertia", "silhouette"]


def test_pipeline_predicts_the_fitted_assignments(midwest_table: CleanTable) -> None:
    result = segment(midwest_table.features, k=4)

    np.testing.assert_array_equal(
        result.pipeline.predict(midwest_table.features), result.assignments.to_numpy()
    )
    assert [name for name, _ in result.pipeline.steps] == ["scale", "pca", "kmeans"]
    assert sum(result.cluster_sizes.values()) == 437
    assert result.loadings.shape == (5, 15)
    assert result.selection is None


def test_choose_k_finds_well_separated_blobs() -> None:
    points, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.5, random_state=1)

    selection = choose_k(points, ks=range(2, 9))

    assert selection.elbow == 4
    assert selection.chosen == 4


def test_elbow_is_the_point_farthest_below_the_chord() -> None:
    assert _elbow_index([2, 3, 4, 5, 6], [100, 40, 20, 15, 12]) == 1
    assert _elbow_index([2, 3, 4], [5.0, 5.0, 5.0]) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_components": 0}, "n_components=0 must be between 1 and 15"),
        ({"n_components": 16}, "n_components=16 must be between 1 and 15"),
        ({"k": 1}, "k=1 must be between 2 and 436"),
        ({"ks": [2, 3]}, "needs at least 3 values"),
    ],
)
def test_when_parameters_are_out_of_range_then_error(
    midwest_table: CleanTable, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ParameterError, match=message):
        segment(midwest_table.features, **kwargs)  # type: ignore[arg-type]


def test_save_writes_nbcd_model_and_assignments(midwest_table: CleanTable, tmp_path: Path) -> None:
    result = segment(midwest_table.features, k=5)

    saved = save_segmentation(result, midwest_table, tmp_path / "build")

    loaded = load_model(tmp_path / "build" / "model")
    assert loaded.features == list(midwest_table.features.columns)
    assert loaded.metadata["data_fingerprint"] == fingerprint_frame(midwest_table.features)
    assert loaded.metadata["dataset"] == "midwest"
    metrics = loaded.metadata["metrics"]
    assert metrics["k"] == 5
    assert metrics["k_chosen_by"] == "parameter"
    assert metrics["cluster_sizes"] == {str(k): v for k, v in result.cluster_sizes.items()}
    assert metrics["explained_variance_ratio"] == pytest.approx(result.explained_variance_ratio)
    assert metrics["silhouette"] == pytest.approx(result.silhouette)
    np.testing.assert_array_equal(
        loaded.estimator.predict(midwest_table.features), result.assignments.to_numpy()
    )
    assignments = pd.read_csv(saved.assignments)
    assert list(assignments.columns) == ["id", "cluster"]
    assert len(assignments) == 437
    assert sorted(p.name for p in saved.assignments.parent.iterdir()) == [
        "assignments.csv",
        "model",
    ]
