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
identifier columns pass through, rows that fail validation are reported and skipped. Its
pieces (:func:`check_columns`, :func:`read_csv_chunks`, :func:`score_chunks`,
:func:`csv_header`) also score one partition of a folder, a glob or a Parquet file
(:mod:`nbcd.serve.partitions`), in this process or on a Dask worker
(:mod:`nbcd.cluster.scoring`), so every path validates and reports rows alike.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from nbcd.errors import ModelError, UsageError
from nbcd.files import atomic_writer
from nbcd.serve.scorer import (
    _OUT_OF_RANGE,
    CLUSTER_COLUMN,
    DISTANCE_COLUMN,
    PREDICTION_COLUMN,
    Array,
    Scorer,
    Scores,
    finite_rows,
)

__all__ = [
    "MAX_FAILURES",
    "PARQUET_SUFFIXES",
    "PredictProgress",
    "PredictResult",
    "ScoredChunk",
    "Scorer",
    "Scores",
    "added_columns",
    "check_columns",
    "csv_header",
    "finite_rows",
    "is_parquet",
    "predict_file",
    "read_csv_chunks",
    "read_header",
    "same_file",
    "score_chunks",
]

log = logging.getLogger(__name__)

# How many failing rows a PredictResult lists; all of them are counted.
MAX_FAILURES = 100
#: Suffixes read as Parquet; every other input file is read as CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")
# Strings read as a missing value in feature columns (pandas' defaults); identifier columns
# keep every string verbatim, so a county called "NA" stays "NA".
_NA_STRINGS = sorted(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"}
    | {"<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)

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
    #: (1-based line number in the input file, reason), the first MAX_FAILURES of them; for
    #: Parquet input the number is the row's (1-based, the file's first row is 1)
    failures: list[tuple[int, str]] = field(default_factory=list)
    #: the input file of each entry of ``failures``, in the same order
    failure_files: list[Path] = field(default_factory=list)
    #: the files written: ``[output]``, or the part files of an output folder
    outputs: list[Path] = field(default_factory=list)
    #: how many partitions the input was scored in
    partitions: int = 1
    #: partitions scored per Dask worker address; empty when scored in this process
    workers: dict[str, int] = field(default_factory=dict)

    def located_failures(self) -> list[tuple[str, str]]:
        """``(where, reason)`` per listed failure: ``FILE:LINE`` for CSV, ``FILE row N`` else."""
        return [
            (_place(path, number), reason)
            for path, (number, reason) in zip(self.failure_files, self.failures, strict=True)
        ]


def _place(path: Path, number: int) -> str:
    # a CSV row has a line number editors jump to; a Parquet row only has its position
    return f"{path} row {number}" if is_parquet(path) else f"{path}:{number}"


def is_parquet(path: Path) -> bool:
    """Whether a path names a Parquet file (by its suffix: .parquet or .pq)."""
    return path.suffix.lower() in PARQUET_SUFFIXES


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
    if same_file(input_csv, output_csv):
        raise UsageError(
            f"{output_csv}: the output is the input file {input_csv}; "
            "writing it would replace the rows being scored, so give -o another path"
        )
    scorer = Scorer.load(model_path)
    passthrough = check_columns(scorer, read_header(input_csv), input_csv)
    total_bytes = input_csv.stat().st_size
    rows_in = rows_scored = rows_failed = 0
    failures: list[tuple[int, str]] = []
    with atomic_writer(output_csv, "w", newline="") as out, input_csv.open("rb") as source:
        # the header even when no row follows, so the output always reads as a table
        out.write(csv_header([*passthrough, *added_columns(scorer.kind)]))
        chunks = read_csv_chunks(source, input_csv, scorer.features, passthrough, chunk_rows)
        position = 0  # rows of the file read so far, blank ones included
        for part in score_chunks(scorer, chunks, passthrough):
            position += part.rows
            rows_in += part.rows_in
            rows_scored += len(part.frame)
            rows_failed += part.rows_failed
            failures.extend((row + 2, reason) for row, reason in part.failures)  # header: 1
            if len(part.frame):
                part.frame.to_csv(out, header=False, index=False, lineterminator="\n")
            if on_progress is not None:
                on_progress(PredictProgress(position, min(source.tell(), total_bytes), total_bytes))
    return PredictResult(
        rows_in=rows_in,
        rows_scored=rows_scored,
        rows_failed=rows_failed,
        output=output_csv,
        duration=time.perf_counter() - started,
        failures=failures,
        failure_files=[input_csv] * len(failures),
        outputs=[output_csv],
    )


def check_columns(scorer: Scorer, columns: list[str], path: Path) -> list[str]:
    """The input's columns copied to the output; UsageError if the model cannot score it."""
    features = scorer.features
    missing = [name for name in features if name not in columns]
    if missing:
        raise UsageError(
            f"{path} lacks the model's feature columns {', '.join(missing)} "
            f"(its columns: {', '.join(columns) or 'none'})"
        )
    passthrough = [name for name in columns if name not in features]
    clash = [name for name in added_columns(scorer.kind) if name in passthrough]
    if clash:
        raise UsageError(
            f"{path} already has a column named {clash[0]!r}, which the output adds; rename it"
        )
    return passthrough


def read_csv_chunks(
    source: IO[bytes], path: Path, features: list[str], passthrough: list[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The rows of a CSV stream (header first) in chunks, read the one way every path reads."""
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
    return _chunks(reader, path)


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk scored by :func:`score_chunks`."""

    frame: pd.DataFrame  # the output rows: passthrough columns, then the added ones
    rows: int  # rows read, blank ones included (a CSV's lines, but for quoted line breaks)
    rows_in: int  # rows read that are not blank
    rows_failed: int
    #: (0-based position of the row in the whole stream, reason), while the budget lasts
    failures: list[tuple[int, str]]


def score_chunks(
    scorer: Scorer,
    chunks: Iterable[pd.DataFrame],
    passthrough: list[str],
    *,
    explain: int = MAX_FAILURES,
) -> Iterator[ScoredChunk]:
    """Validate and score chunks in order; the first ``explain`` failing rows get a reason."""
    position = 0
    for chunk in chunks:
        part = _score_chunk(scorer, chunk, passthrough, explain)
        explain -= len(part.reasons)
        failures = [
            (position + int(index), reason)
            for index, reason in zip(part.failed, part.reasons, strict=False)
        ]
        yield ScoredChunk(part.frame, len(chunk), part.rows_in, len(part.failed), failures)
        position += len(chunk)


def csv_header(columns: list[str]) -> str:
    """The header line pandas writes for these columns (quoted where needed)."""
    text: str = pd.DataFrame(columns=columns).to_csv(index=False, lineterminator="\n")
    return text


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
    columns: dict[str, Any] = {name: [] for name in added_columns(scorer.kind)}
    if len(rows):
        scores = _score_rows(scorer, X[rows])
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


def _score_rows(scorer: Scorer, X: Array) -> Scores:
    """Scores of the rows of ``X``, the same bits for a row whatever batch it comes in."""
    if len(X) == 1:
        # BLAS multiplies a single row by another path (matrix-vector) than a batch, which
        # rounds differently; scored as two rows, a row does not depend on its chunk, so a
        # file gives the same scores in any chunks or partitions
        return scorer.score(np.repeat(X, 2, axis=0)).select(np.zeros(1, dtype=np.intp))
    return scorer.score(np.ascontiguousarray(X))


def added_columns(kind: str) -> list[str]:
    """The columns the output adds after the input's own: cluster and distance, or prediction."""
    return [CLUSTER_COLUMN, DISTANCE_COLUMN] if kind == "cluster" else [PREDICTION_COLUMN]


def read_header(path: Path) -> list[str]:
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


def same_file(a: Path, b: Path) -> bool:
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
