"""Scoring with a saved model: the engine the server shares, and batch scoring of CSV files.

:class:`Scorer` turns a matrix of feature values into predictions. For a scikit-learn
pipeline that ends in k-means it answers like SageMaker's k-means: the closest cluster, the
distance to its centre and the projection (the features after every step but the last).
Other estimators give a class label or a score.

The common steps (MinMaxScaler, StandardScaler, PCA, KMeans) are re-expressed as a few NumPy
operations: scikit-learn's input checks cost about 100 µs per step and call, which is most
of a single-row request. The NumPy plan is checked against the estimator itself when the
scorer is built, and the estimator is used unchanged whenever a step is not covered or the
check disagrees.

:func:`predict_file` scores a CSV file chunk by chunk, like a SageMaker batch transform:
identifier columns pass through, rows that fail validation are reported and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbcd.errors import ModelError, UsageError
from nbcd.files import atomic_writer
from nbcd.model import ModelArtifact, load_model

__all__ = [
    "MAX_FAILURES",
    "PredictProgress",
    "PredictResult",
    "Scorer",
    "Scores",
    "finite_rows",
    "predict_file",
]

log = logging.getLogger(__name__)

# How many failing rows a PredictResult lists; all of them are counted.
MAX_FAILURES = 100
# Output columns that a clustering model adds, and the one other estimators add.
CLUSTER_COLUMN = "cluster"
DISTANCE_COLUMN = "distance"
PREDICTION_COLUMN = "prediction"
_OUT_OF_RANGE = "values out of range (the model's output is not finite)"
# Strings read as a missing value in feature columns (pandas' defaults); identifier columns
# keep every string verbatim, so a county called "NA" stays "NA".
_NA_STRINGS = sorted(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"}
    | {"<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)

Array = np.ndarray[Any, Any]
_Transform = Callable[[Array], Array]


@dataclass(frozen=True)
class Scores:
    """Predictions for the rows of one matrix.

    ``kind`` is ``"cluster"`` (``labels`` are cluster ids, ``distances`` and maybe
    ``projection`` are set), ``"label"`` (class labels) or ``"score"`` (regression values).
    """

    kind: str
    labels: Array
    distances: Array | None = None
    projection: Array | None = None

    def select(self, rows: Array) -> Scores:
        """The scores of some rows only (a boolean mask or positions)."""
        return Scores(
            self.kind,
            self.labels[rows],
            None if self.distances is None else self.distances[rows],
            None if self.projection is None else self.projection[rows],
        )


def finite_rows(scores: Scores) -> Array:
    """Which rows got finite numbers: huge inputs can overflow inside the model."""
    finite = np.ones(len(scores.labels), dtype=bool)
    for values in (scores.labels, scores.distances, scores.projection):
        if values is not None and values.dtype.kind == "f":
            finite &= np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return finite


class Scorer:
    """Predictions from a loaded model, on float64 matrices whose columns are its features."""

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self.features: list[str] = artifact.features
        self.estimator = artifact.estimator
        self._check_features()
        # "passthrough" and None are Pipeline's spellings of a step that does nothing
        steps: list[Any] = [
            step
            for _, step in getattr(self.estimator, "steps", [])
            if step is not None and not isinstance(step, str)
        ]
        before, self._final = (steps[:-1], steps[-1]) if steps else ([], self.estimator)
        self._has_projection = bool(before)
        self.kind = _kind_of(self._final)
        # A model fitted on a DataFrame checks the column names of what it is given; handing
        # it a frame with those names keeps the fallback path free of feature-name warnings.
        first = before[0] if before else self._final
        self._wants_frame = hasattr(first, "feature_names_in_")
        self._before = before
        self._plan = self._compile(before)

    @classmethod
    def load(cls, model_path: Path) -> Scorer:
        """Load the model saved at ``model_path`` (see :func:`nbcd.model.load_model`)."""
        return cls(load_model(model_path))

    @property
    def fast(self) -> bool:
        """Whether predictions use the NumPy plan rather than the estimator's own methods."""
        return self._plan is not None

    def score(self, X: Array) -> Scores:
        """Predict for every row of ``X`` (float64, finite, one column per feature)."""
        # Overflow from huge inputs shows as infinity in the result, which callers check.
        with np.errstate(over="ignore", invalid="ignore"):
            if self._plan is not None:
                return self._plan(X)
            return self._score_estimator(X)

    def _check_features(self) -> None:
        """Refuse a model whose metadata and estimator disagree about the inputs."""
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is not None and [str(n) for n in names] != self.features:
            raise ModelError(
                f"{self.artifact.path}: the features in model.json differ from the names the "
                "estimator was fitted on; save the model again"
            )
        count = getattr(self.estimator, "n_features_in_", len(self.features))
        if count != len(self.features):
            raise ModelError(
                f"{self.artifact.path}: model.json lists {len(self.features)} features, the "
                f"estimator takes {count}; save the model again"
            )

    def _score_estimator(self, X: Array) -> Scores:
        """The general path: the estimator's own transform/predict methods."""
        data: Any = pd.DataFrame(X, columns=self.features) if self._wants_frame else X
        for step in self._before:
            data = step.transform(data)
        if self.kind != "cluster":
            return Scores(self.kind, np.asarray(self._final.predict(data)))
        projection = np.asarray(data, dtype=np.float64)
        distances = np.asarray(self._final.transform(data), dtype=np.float64)
        return _nearest(distances, projection if self._has_projection else None, squared=False)

    def _compile(self, before: list[Any]) -> Callable[[Array], Scores] | None:
        """A NumPy version of the model if every step is covered and agrees with it, else None."""
        if self.kind != "cluster":
            return None
        transforms = [_compile_step(step) for step in before]
        if any(t is None for t in transforms) or type(self._final).__name__ not in _KMEANS:
            return None
        steps = [t for t in transforms if t is not None]
        centers = np.asarray(self._final.cluster_centers_, dtype=np.float64)
        centers_t = np.ascontiguousarray(centers.T)
        center_norms = (centers * centers).sum(axis=1)
        keep_projection = self._has_projection

        def plan(X: Array) -> Scores:
            Z = X
            for transform in steps:
                Z = transform(Z)
            # |z - c|^2 = |z|^2 - 2 z.c + |c|^2: one matrix product, as scikit-learn does.
            squared = (Z * Z).sum(axis=1)[:, None] - 2.0 * (Z @ centers_t) + center_norms
            return _nearest(squared, Z if keep_projection else None, squared=True)

        if not self._agrees(plan, before):
            log.warning("the NumPy plan for %s disagrees with it; using the estimator", self)
            return None
        return plan

    def _agrees(self, plan: Callable[[Array], Scores], before: list[Any]) -> bool:
        """Whether the plan gives the estimator's own answers on a few synthetic rows."""
        first = before[0] if before else self._final
        rng = np.random.default_rng(0)
        low = getattr(first, "data_min_", None)
        if low is not None:
            X = low + rng.random((16, len(self.features))) * first.data_range_
        else:
            X = rng.normal(size=(16, len(self.features)))
        ours, theirs = plan(X), self._score_estimator(X)
        assert ours.distances is not None and theirs.distances is not None
        scale = max(1.0, float(np.abs(theirs.distances).max()))
        if not np.allclose(ours.distances, theirs.distances, rtol=1e-6, atol=1e-9 * scale):
            return False
        if ours.projection is not None and theirs.projection is not None:
            tol = 1e-9 * max(1.0, float(np.abs(theirs.projection).max()))
            if not np.allclose(ours.projection, theirs.projection, rtol=1e-7, atol=tol):
                return False
        return bool(np.array_equal(ours.labels, theirs.labels))

    def __repr__(self) -> str:
        return f"Scorer({self.artifact.path}, kind={self.kind!r}, fast={self.fast})"


# k-means estimators whose cluster_centers_ and Euclidean distances define the prediction.
_KMEANS = frozenset({"KMeans", "MiniBatchKMeans", "BisectingKMeans"})


def _kind_of(estimator: Any) -> str:
    """What the final estimator predicts: clusters with centres, class labels or scores."""
    if hasattr(estimator, "cluster_centers_") and hasattr(estimator, "transform"):
        return "cluster"
    estimator_type = getattr(estimator, "_estimator_type", None)
    if estimator_type is None:
        with contextlib.suppress(Exception):  # scikit-learn >= 1.6 keeps it in the tags
            estimator_type = estimator.__sklearn_tags__().estimator_type
    return "label" if estimator_type in ("classifier", "clusterer") else "score"


def _nearest(distances: Array, projection: Array | None, *, squared: bool) -> Scores:
    """Closest centre and the distance to it, from a rows x centres distance matrix."""
    labels = distances.argmin(axis=1)
    nearest = distances[np.arange(len(labels)), labels]
    if squared:
        # Rounding can leave a tiny negative square for a point on a centre.
        nearest = np.sqrt(np.maximum(nearest, 0.0))
    return Scores("cluster", labels, nearest, projection)


def _compile_step(step: Any) -> _Transform | None:
    """A NumPy function equal to ``step.transform`` for the common dense transformers."""
    name = type(step).__name__
    module = type(step).__module__
    if not module.startswith("sklearn."):
        return None
    if name == "MinMaxScaler":
        scale, shift = np.asarray(step.scale_), np.asarray(step.min_)
        if step.clip:
            low, high = step.feature_range
            return lambda X: np.clip(X * scale + shift, low, high)
        return lambda X: X * scale + shift
    if name == "StandardScaler":
        mean = np.asarray(step.mean_) if step.with_mean else 0.0
        std = np.asarray(step.scale_) if step.with_std else 1.0
        return lambda X: (X - mean) / std
    if name == "PCA" and not step.whiten:
        components_t = np.ascontiguousarray(np.asarray(step.components_).T)
        offset = np.asarray(step.mean_) @ components_t
        return lambda X: X @ components_t - offset
    return None


# --------------------------------------------------------------------------- batch scoring


@dataclass(frozen=True)
class PredictProgress:
    """How far :func:`predict_file` is: rows read so far, and bytes of the input read."""

    rows_done: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class PredictResult:
    """What a batch scoring did: row counts, the first failures and where the output went."""

    rows_in: int
    rows_scored: int
    rows_failed: int
    output: Path
    duration: float
    #: (1-based line number in the input file, reason), the first MAX_FAILURES of them
    failures: list[tuple[int, str]] = field(default_factory=list)


def predict_file(
    model_path: Path,
    input_csv: Path,
    output_csv: Path,
    *,
    chunk_rows: int = 50_000,
    on_progress: Callable[[PredictProgress], None] | None = None,
) -> PredictResult:
    """Score every row of ``input_csv`` with the model at ``model_path`` into ``output_csv``.

    The input needs a header naming at least the model's features; its other columns are
    copied verbatim to the output, followed by ``cluster`` and ``distance`` (or
    ``prediction``). Rows with a missing, non-numeric or infinite feature are skipped and
    reported by line number (counting the header as line 1; a quoted value spanning lines
    shifts the count). Empty rows are skipped silently. The output appears only when complete.
    """
    if chunk_rows < 1:
        raise UsageError(f"chunk_rows must be at least 1, not {chunk_rows}")
    started = time.perf_counter()
    input_csv, output_csv = Path(input_csv), Path(output_csv)
    if _same_file(input_csv, output_csv):
        raise UsageError(
            f"{output_csv}: the output is the input file {input_csv}; "
            "writing it would replace the rows being scored, so give -o another path"
        )
    scorer = Scorer.load(model_path)
    columns = _read_header(input_csv)
    features = scorer.features
    missing = [name for name in features if name not in columns]
    if missing:
        raise UsageError(
            f"{input_csv} lacks the model's feature columns {', '.join(missing)} "
            f"(its columns: {', '.join(columns) or 'none'})"
        )
    passthrough = [name for name in columns if name not in features]
    clash = [name for name in _added_columns(scorer.kind) if name in passthrough]
    if clash:
        raise UsageError(
            f"{input_csv} already has a column named {clash[0]!r}, which the output adds; rename it"
        )
    total_bytes = input_csv.stat().st_size
    rows_in = rows_scored = rows_failed = 0
    failures: list[tuple[int, str]] = []
    with atomic_writer(output_csv, "w", newline="") as out, input_csv.open("rb") as source:
        reader = pd.read_csv(
            source,
            chunksize=chunk_rows,
            encoding="utf-8-sig",
            # identifiers verbatim (leading zeros, "NA"); features parsed, bad cells found below
            dtype=dict.fromkeys(passthrough, str),
            keep_default_na=False,
            na_values=dict.fromkeys(features, _NA_STRINGS),
            # keep blank lines as rows so row positions stay line numbers
            skip_blank_lines=False,
            # never an implicit index: a first row longer than the header would shift every
            # column by one (ids read as features); _chunks refuses it instead
            index_col=False,
        )
        position = 0  # rows of the file read so far, blank ones included
        header = True
        for chunk in _chunks(reader, input_csv):
            first_line = position + 2  # the header is line 1
            position += len(chunk)
            part = _score_chunk(scorer, chunk, passthrough, MAX_FAILURES - len(failures))
            rows_in += part.rows_in
            rows_scored += len(part.frame)
            rows_failed += len(part.failed)
            failures.extend(
                (first_line + int(index), reason)
                for index, reason in zip(part.failed, part.reasons, strict=False)
            )
            if len(part.frame) or header:
                part.frame.to_csv(out, header=header, index=False, lineterminator="\n")
                header = False
            if on_progress is not None:
                on_progress(PredictProgress(position, min(source.tell(), total_bytes), total_bytes))
    return PredictResult(
        rows_in=rows_in,
        rows_scored=rows_scored,
        rows_failed=rows_failed,
        output=output_csv,
        duration=time.perf_counter() - started,
        failures=failures,
    )


@dataclass(frozen=True)
class _Chunk:
    """One chunk's outcome: the output rows, and which input rows failed and why."""

    frame: pd.DataFrame
    rows_in: int
    failed: Array  # positions in the chunk, ascending
    reasons: list[str]  # for the first ``want`` failed rows only


def _score_chunk(scorer: Scorer, chunk: pd.DataFrame, passthrough: list[str], want: int) -> _Chunk:
    """Validate and score one chunk; explain at most ``want`` failures (explaining is slow)."""
    features = scorer.features
    X, not_numbers = _feature_matrix(chunk, features)
    blank = _blank_rows(chunk, passthrough, X)
    valid = np.isfinite(X).all(axis=1)
    rows = np.flatnonzero(valid)
    failed = np.flatnonzero(~valid & ~blank)
    overflowed: set[int] = set()
    columns: dict[str, Any] = {name: [] for name in _added_columns(scorer.kind)}
    if len(rows):
        scores = scorer.score(np.ascontiguousarray(X[rows]))
        finite = finite_rows(scores)
        if not finite.all():
            overflowed = {int(i) for i in rows[~finite]}
            failed = np.union1d(failed, rows[~finite])
            scores, rows = scores.select(finite), rows[finite]
        columns = _output_columns(scores)
    reasons = [
        _OUT_OF_RANGE if i in overflowed else _row_reason(chunk, features, X, not_numbers, i)
        for i in (int(k) for k in failed[: max(want, 0)])
    ]
    frame = chunk[passthrough].iloc[rows].assign(**columns)
    return _Chunk(frame, int((~blank).sum()), failed, reasons)


def _added_columns(kind: str) -> list[str]:
    return [CLUSTER_COLUMN, DISTANCE_COLUMN] if kind == "cluster" else [PREDICTION_COLUMN]


def _read_header(path: Path) -> list[str]:
    """The input's column names; a missing, unreadable or empty file is a UsageError."""
    try:
        with path.open("rb") as handle:
            return [str(c) for c in pd.read_csv(handle, nrows=0, encoding="utf-8-sig").columns]
    except FileNotFoundError:
        raise UsageError(f"{path}: no such input file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path}: is empty; it needs a header row naming the columns") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UsageError(f"{path}: cannot be read as CSV ({_first_line(exc)})") from None


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path once resolved, or a hard link of it."""
    # os.path.realpath, unlike Path.resolve on Python < 3.13, does not raise on a symlink loop
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one does not exist (yet): not the same file
        return False


def _chunks(reader: Any, path: Path) -> Iterator[pd.DataFrame]:
    """The reader's chunks, with a malformed line turned into a one-line UsageError."""
    chunks = iter(reader)
    while True:
        try:
            # the filter only around reading: the caller's code runs between chunks
            with warnings.catch_warnings():
                # pandas merely warns, and drops fields, when a row is longer than the header
                warnings.simplefilter("error", pd.errors.ParserWarning)
                chunk = next(chunks)
        except StopIteration:
            return
        except pd.errors.ParserWarning:
            raise UsageError(
                f"{path}: cannot be read as CSV (a row has more fields than the header); "
                "fix the file"
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            # A row with more fields than the header cannot be skipped safely: every later
            # column would be misread.
            raise UsageError(f"{path}: cannot be read as CSV ({_first_line(exc)})") from None
        yield chunk


def _feature_matrix(chunk: pd.DataFrame, features: list[str]) -> tuple[Array, dict[str, Array]]:
    """The features as float64 (NaN where unusable) and, per column, which cells are not numbers.

    A column with a text value arrives as strings; numbers in it are converted, and the
    cells that were present but are not numbers are marked so the report can say so.
    """
    columns: list[Array] = []
    not_numbers: dict[str, Array] = {}
    for name in features:
        column = chunk[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            columns.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
            continue
        converted = pd.to_numeric(column.astype(object), errors="coerce")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
        not_numbers[name] = np.isnan(values) & column.notna().to_numpy()
        columns.append(values)
    return np.column_stack(columns) if columns else np.empty((len(chunk), 0)), not_numbers


def _blank_rows(chunk: pd.DataFrame, passthrough: list[str], X: Array) -> Array:
    """Rows with no value at all (blank lines), which are skipped without a report."""
    blank: Array = np.asarray(np.isnan(X).all(axis=1))
    for name in passthrough:
        column = chunk[name]
        blank &= (column.isna() | (column == "")).to_numpy(dtype=bool)
    return blank


def _row_reason(
    chunk: pd.DataFrame, features: list[str], X: Array, not_numbers: dict[str, Array], index: int
) -> str:
    """Why one row cannot be scored: its first unusable feature."""
    for name, value in zip(features, X[index], strict=True):
        if np.isfinite(value):
            continue
        if name in not_numbers and not_numbers[name][index]:
            return f"column {name!r}: {str(chunk[name].iloc[index])!r} is not a number"
        if np.isnan(value):
            return f"column {name!r}: missing value"
        return f"column {name!r}: {value} is not a finite number"
    return "no usable value"  # not reached: only rows with a non-finite value fail


def _output_columns(scores: Scores) -> dict[str, Any]:
    """The columns a chunk's predictions add to the output."""
    if scores.kind == "cluster":
        return {CLUSTER_COLUMN: scores.labels, DISTANCE_COLUMN: scores.distances}
    if scores.labels.ndim != 1:
        raise ModelError(
            "the model predicts several values per row; batch scoring writes one prediction "
            "column, so serve it instead (`nbcd serve`) or save a single-output model"
        )
    return {PREDICTION_COLUMN: scores.labels}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
