"""Schemas and cleaning: county ids, feature columns, incomplete rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from census_segmentation import ACS2015, MIDWEST, CleanTable, DataSourceError, clean
from census_segmentation.schemas import match_schema


def test_acs2015_reference_cleaning_drops_two_rows(acs2015_table: CleanTable) -> None:
    assert acs2015_table.schema is ACS2015
    assert acs2015_table.n_dropped == 2
    assert acs2015_table.features.shape == (3218, 34)
    assert "CensusId" not in acs2015_table.features.columns
    assert {"California-Fresno", "Arizona-Yuma"} <= set(acs2015_table.features.index)


def test_midwest_features_are_documented_set(midwest_table: CleanTable) -> None:
    assert midwest_table.schema is MIDWEST
    assert midwest_table.features.shape == (437, 15)
    assert midwest_table.features.index[0] == "IL-ADAMS"
    assert midwest_table.n_dropped == 0
    assert not set(MIDWEST.features) & set(MIDWEST.ignored)


def test_every_midwest_column_is_id_feature_or_ignored(midwest_frame: pd.DataFrame) -> None:
    accounted = set(MIDWEST.id_columns) | set(MIDWEST.features) | set(MIDWEST.ignored)

    assert accounted == set(midwest_frame.columns)


def test_clean_drops_incomplete_rows_and_names_them(midwest_frame: pd.DataFrame) -> None:
    frame = midwest_frame.head(5).copy()
    frame.loc[1, "percollege"] = np.nan
    frame.loc[3, "county"] = None

    table = clean(frame, MIDWEST, "test")

    assert table.dropped == ["IL-ALEXANDER", "<NA>"]
    assert list(table.features.index) == ["IL-ADAMS", "IL-BOND", "IL-BROWN"]
    assert table.features.index.name == "id"
    assert (table.features.dtypes == "float64").all()


def test_when_ids_repeat_then_error(midwest_frame: pd.DataFrame) -> None:
    frame = pd.concat([midwest_frame.head(3), midwest_frame.head(1)])

    with pytest.raises(
        DataSourceError, match="test: county ids must be unique, repeated: IL-ADAMS"
    ):
        clean(frame, MIDWEST, "test")


def test_when_feature_is_not_numeric_then_error(midwest_frame: pd.DataFrame) -> None:
    frame = midwest_frame.head(3).astype({"area": "string"})

    with pytest.raises(DataSourceError, match="test: columns area are not numeric"):
        clean(frame, MIDWEST, "test")


def test_match_schema_reports_closest_schema_and_elides_long_lists() -> None:
    with pytest.raises(DataSourceError) as caught:
        match_schema(["State", "County", "TotalPop"], "x.csv")

    assert str(caught.value) == (
        "x.csv: not a known county table; closest is acs2015, which needs the missing "
        "columns Men, Women, Hispanic, White, Black, Native, Asian, Pacific and 25 more"
    )
