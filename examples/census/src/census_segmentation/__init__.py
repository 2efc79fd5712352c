"""US county population segmentation: the logic behind the census notebook.

Collect (:func:`load_table`); explore (:func:`clean`, :func:`strongest_correlations`,
:func:`most_skewed`); model (:func:`segment`, :func:`save_segmentation`); conclude
(:func:`centroid_profiles`, :func:`component_summary`, :func:`example_counties`,
:func:`pair_table`) and the conclusion in words (:func:`write_conclusion`). Figures live in
:mod:`census_segmentation.plots`.
"""

from __future__ import annotations

from census_segmentation.conclude import (
    REFERENCE_PAIRS,
    centroid_profiles,
    component_summary,
    example_counties,
    pair_table,
)
from census_segmentation.errors import DataSourceError, ParameterError
from census_segmentation.explore import most_skewed, strongest_correlations
from census_segmentation.narrative import (
    Conclusion,
    Stability,
    cluster_stability,
    distinctive_traits,
    write_conclusion,
)
from census_segmentation.schemas import ACS2015, MIDWEST, CleanTable, Schema, clean
from census_segmentation.segment import (
    KSelection,
    SavedSegmentation,
    Segmentation,
    choose_k,
    save_segmentation,
    segment,
)
from census_segmentation.sources import Table, load_table

__all__ = [
    "ACS2015",
    "MIDWEST",
    "REFERENCE_PAIRS",
    "CleanTable",
    "Conclusion",
    "DataSourceError",
    "KSelection",
    "ParameterError",
    "SavedSegmentation",
    "Schema",
    "Segmentation",
    "Stability",
    "Table",
    "centroid_profiles",
    "choose_k",
    "clean",
    "cluster_stability",
    "component_summary",
    "distinctive_traits",
    "example_counties",
    "load_table",
    "most_skewed",
    "pair_table",
    "save_segmentation",
    "segment",
    "strongest_correlations",
    "write_conclusion",
]
