"""Figures: each helper draws a figure with the expected panels, outside pyplot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from census_segmentation import CleanTable, Segmentation, centroid_profiles, plots, segment


@pytest.fixture(scope="module")
def result(midwest_table: CleanTable) -> Segmentation:
    return segment(midwest_table.features, n_components=3, ks=range(2, 6))


def _visible_axes(figure: Figure) -> int:
    return sum(ax.get_visible() for ax in figure.axes)


def test_figures_have_expected_panels(midwest_table: CleanTable, result: Segmentation) -> None:
    assert result.selection is not None
    figures = {
        "distributions": (plots.distributions(midwest_table.features), 15),
        "correlation": (plots.correlation_heatmap(midwest_table.features), 2),
        "variance": (plots.explained_variance(result), 1),
        "makeup": (plots.component_makeup(result), 2),
        "k": (plots.k_selection(result.selection), 2),
        "centres": (plots.centroid_heatmap(centroid_profiles(result, scaled=True)), 2),
    }

    for name, (figure, panels) in figures.items():
        assert isinstance(figure, Figure), name
        assert _visible_axes(figure) == panels, name
    assert plt.get_fignums() == []
