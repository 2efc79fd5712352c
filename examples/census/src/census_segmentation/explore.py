"""Summaries of the cleaned features for the explore step."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["most_skewed", "strongest_correlations"]


def strongest_correlations(features: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """The ``n`` feature pairs with the largest absolute Pearson correlation."""
    corr = features.corr()
    upper = np.triu(np.ones(corr.shape, dtype=bool), k=1)
    pairs = corr.where(upper).stack().rename("correlation")
    top = pairs.loc[pairs.abs().sort_values(ascending=False, kind="stable").index[:n]]
    return top.rename_axis(["feature", "other feature"]).reset_index()


def most_skewed(features: pd.DataFrame, n: int = 5) -> pd.Series:
    """The ``n`` features with the largest skewness (long right tails first)."""
    return features.skew().sort_values(ascending=False, kind="stable").head(n).rename("skewness")
