"""Explore summaries: strongest correlations and skewness."""

from __future__ import annotations

import pandas as pd
import pytest

from census_segmentation import most_skewed, strongest_correlations


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, 4.0, 50.0],
            "b": [2.0, 4.0, 6.0, 8.0, 100.0],
            "c": [5.0, 3.0, 4.0, 1.0, 2.0],
        }
    )


def test_strongest_correlations_lists_each_pair_once_by_strength(frame: pd.DataFrame) -> None:
    table = strongest_correlations(frame, n=3)

    assert list(table.columns) == ["feature", "other feature", "correlation"]
    assert len(table) == 3
    assert tuple(table.iloc[0, :2]) == ("a", "b")
    assert table.loc[0, "correlation"] == pytest.approx(1.0)
    assert list(table["correlation"].abs()) == sorted(table["correlation"].abs(), reverse=True)


def test_most_skewed_puts_long_right_tails_first(frame: pd.DataFrame) -> None:
    skew = most_skewed(frame, n=2)

    assert skew.name == "skewness"
    assert list(skew.index) == ["a", "b"] or list(skew.index) == ["b", "a"]
    assert (skew > 1).all()
