"""The county tables the analysis understands, and how each becomes a feature matrix.

Two schemas are known:

``acs2015``
    the American Community Survey 2015 county table (3220 rows x 37 columns): the id is
    ``State-County`` (``California-Fresno``), ``CensusId`` is dropped and the other 34 columns,
    all numeric, are the features.
``midwest``
    the 2000 census table of 437 Midwest counties shipped with plotnine: the id is
    ``state-county`` (``IL-ADAMS``). The features are the county's size (area, population,
    density) and its make-up in shares (race, education, poverty): 15 columns. Left out are
    ``PID`` (a row number), ``inmetro`` and ``category`` (labels, not measurements), the
    head counts per group (``popwhite`` ... ``poppovertyknown``: population times a share
    that is already a feature) and ``percpovertyknown`` (survey coverage, not a trait).

Cleaning keeps the id and feature columns and drops incomplete rows. :data:`FEATURE_LABELS`
names every feature in words, for the written conclusion.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
from pandas.api.types import is_numeric_dtype

from census_segmentation.errors import DataSourceError

__all__ = [
    "ACS2015",
    "FEATURE_LABELS",
    "MIDWEST",
    "SCHEMAS",
    "CleanTable",
    "Schema",
    "clean",
    "feature_label",
    "match_schema",
]

ID_SEPARATOR = "-"


@dataclass(frozen=True)
class Schema:
    """A known table: which columns make the county id and which are features."""

    name: str
    id_columns: tuple[str, ...]
    features: tuple[str, ...]
    ignored: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        """Columns a table must have to match this schema."""
        return self.id_columns + self.features

    def missing(self, columns: Iterable[str]) -> list[str]:
        """Required columns absent from ``columns``, in schema order."""
        present = set(columns)
        return [column for column in self.required if column not in present]


ACS2015 = Schema(
    name="acs2015",
    id_columns=("State", "County"),
    features=(
        "TotalPop",
        "Men",
        "Women",
        "Hispanic",
        "White",
        "Black",
        "Native",
        "Asian",
        "Pacific",
        "Citizen",
        "Income",
        "IncomeErr",
        "IncomePerCap",
        "IncomePerCapErr",
        "Poverty",
        "ChildPoverty",
        "Professional",
        "Service",
        "Office",
        "Construction",
        "Production",
        "Drive",
        "Carpool",
        "Transit",
        "Walk",
        "OtherTransp",
        "WorkAtHome",
        "MeanCommute",
        "Employed",
        "PrivateWork",
        "PublicWork",
        "SelfEmployed",
        "FamilyWork",
        "Unemployment",
    ),
    ignored=("CensusId",),
)

MIDWEST = Schema(
    name="midwest",
    id_columns=("state", "county"),
    features=(
        "area",
        "poptotal",
        "popdensity",
        "percwhite",
        "percblack",
        "percamerindan",
        "percasian",
        "percother",
        "perchsd",
        "percollege",
        "percprof",
        "percbelowpoverty",
        "percchildbelowpovert",
        "percadultpoverty",
        "percelderlypoverty",
    ),
    ignored=(
        "PID",
        "popwhite",
        "popblack",
        "popamerindian",
        "popasian",
        "popother",
        "popadults",
        "poppovertyknown",
        "percpovertyknown",
        "inmetro",
        "category",
    ),
)

SCHEMAS = (ACS2015, MIDWEST)

# Each label reads after "higher" or "lower" ("higher share working from home"). ACS 2015
# counts people in TotalPop, Men, Women, Citizen and Employed, dollars in the income columns
# and minutes in MeanCommute; every other feature of both tables is a percentage.
FEATURE_LABELS: Mapping[str, str] = types.MappingProxyType(
    {
        # ACS 2015
        "TotalPop": "population",
        "Men": "number of men",
        "Women": "number of women",
        "Hispanic": "share of Hispanic residents",
        "White": "share of White residents",
        "Black": "share of Black residents",
        "Native": "share of Native American residents",
        "Asian": "share of Asian residents",
        "Pacific": "share of Pacific Islander residents",
        "Citizen": "number of citizens",
        "Income": "median household income",
        "IncomeErr": "margin of error of the median household income",
        "IncomePerCap": "income per person",
        "IncomePerCapErr": "margin of error of the income per person",
        "Poverty": "poverty rate",
        "ChildPoverty": "child poverty rate",
        "Professional": "share in management and professional jobs",
        "Service": "share in service jobs",
        "Office": "share in sales and office jobs",
        "Construction": "share in construction and maintenance jobs",
        "Production": "share in production and transport jobs",
        "Drive": "share driving alone to work",
        "Carpool": "share carpooling to work",
        "Transit": "share taking public transit to work",
        "Walk": "share walking to work",
        "OtherTransp": "share getting to work by other means",
        "WorkAtHome": "share working from home",
        "MeanCommute": "mean commute time",
        "Employed": "number of employed residents",
        "PrivateWork": "share working in the private sector",
        "PublicWork": "share working in the public sector",
        "SelfEmployed": "share self-employed",
        "FamilyWork": "share in unpaid family work",
        "Unemployment": "unemployment rate",
        # midwest (2000 census)
        "area": "land area",
        "poptotal": "population",
        "popdensity": "population density",
        "percwhite": "share of White residents",
        "percblack": "share of Black residents",
        "percamerindan": "share of American Indian residents",
        "percasian": "share of Asian residents",
        "percother": "share of residents of other races",
        "perchsd": "share of adults with a high-school diploma",
        "percollege": "share of adults with a college degree",
        "percprof": "share of adults with a professional degree",
        "percbelowpoverty": "poverty rate",
        "percchildbelowpovert": "child poverty rate",
        "percadultpoverty": "adult poverty rate",
        "percelderlypoverty": "elderly poverty rate",
    }
)


def feature_label(name: str) -> str:
    """A feature's name in words; a column no schema knows keeps its own name."""
    return FEATURE_LABELS.get(name, name)


@dataclass(frozen=True)
class CleanTable:
    """A table reduced to complete rows: features indexed by county id."""

    schema: Schema
    source: str
    features: pd.DataFrame
    dropped: list[str]

    @property
    def n_dropped(self) -> int:
        """How many incomplete rows cleaning removed."""
        return len(self.dropped)


def match_schema(columns: Iterable[str], source: str) -> Schema:
    """Return the first schema whose required columns are all present.

    Raises DataSourceError naming the missing columns of the closest schema.
    """
    names = list(columns)
    for schema in SCHEMAS:
        if not schema.missing(names):
            return schema
    # Closest = the most required columns present; a tie goes to the fewest missing.
    closest = max(
        SCHEMAS, key=lambda s: (len(s.required) - len(s.missing(names)), -len(s.missing(names)))
    )
    missing = closest.missing(names)
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise DataSourceError(
        f"{source}: not a known county table; closest is {closest.name}, "
        f"which needs the missing columns {shown}"
    )


def clean(frame: pd.DataFrame, schema: Schema, source: str) -> CleanTable:
    """Index ``frame`` by county id, keep the schema's features and drop incomplete rows."""
    not_numeric = [name for name in schema.features if not is_numeric_dtype(frame[name])]
    if not_numeric:
        raise DataSourceError(
            f"{source}: columns {', '.join(not_numeric)} are not numeric; "
            "check the file's separator and number format"
        )
    parts = [frame[name].astype("string") for name in schema.id_columns]
    # String addition keeps a missing part missing, so such a row counts as incomplete.
    ids = functools.reduce(lambda left, right: left + ID_SEPARATOR + right, parts)
    features = frame[list(schema.features)].astype("float64").set_axis(ids.rename("id"))
    complete = features.notna().all(axis=1).to_numpy() & ids.notna().to_numpy()
    dropped = [str(name) for name in ids[~complete]]
    features = features[complete]
    duplicated = features.index[features.index.duplicated()].unique()
    if len(duplicated):
        raise DataSourceError(
            f"{source}: county ids must be unique, repeated: {', '.join(duplicated[:5])}"
        )
    return CleanTable(schema=schema, source=source, features=features, dropped=dropped)
