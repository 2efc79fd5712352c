"""Batch scoring's input as partitions: which files, where each piece starts, scoring one piece.

An input is one file, a folder (its ``*.csv`` or its ``*.parquet`` files, sorted by name) or
a glob; CSV and Parquet never mix. :func:`plan_partitions` checks every file's columns
against the model and cuts it into partitions of about ``partition_size`` bytes:

- a CSV file at line breaks outside quoted values, found by one pass that counts quote
  characters (RFC 4180 quoting: a value holding a line break is quoted, a quote inside one is
  doubled), so a quoted value spanning lines never straddles two partitions. A stray quote
  inside an unquoted value (``12" pipe``) upsets the count; the partitions then still start
  at line breaks, perhaps fewer of them, but a quoted line break after such a stray quote
  could be cut: split such files by hand, or give a partition size above the file's size;
- a Parquet file at row groups (``partition_size`` counts their uncompressed bytes), so a
  row group is the smallest partition.

:func:`score_partition` reads one partition as a stream of ``chunk_rows`` rows (a CSV
partition is its file's header record followed by its byte range) and scores it with the
same code as :func:`nbcd.serve.predict.predict_file`. Nothing here imports Dask: the same
functions run in this process and, through :mod:`nbcd.cluster.scoring`, on Dask workers.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from nbcd.errors import UsageError
from nbcd.serve.predict import (
    MAX_FAILURES,
    PARQUET_SUFFIXES,
    Scorer,
    check_columns,
    is_parquet,
    read_csv_chunks,
    read_header,
    score_chunks,
)

__all__ = [
    "CSV_SUFFIXES",
    "Partition",
    "PartitionScores",
    "Plan",
    "input_files",
    "plan_partitions",
    "score_partition",
]

#: Suffixes a folder's CSV files have (a single file or a glob may name any file).
CSV_SUFFIXES = (".csv",)
# Bytes read at a time by the pass that finds record boundaries.
_READ = 1 << 22


@dataclass(frozen=True)
class Partition:
    """One piece of the input, scored on its own; ``index`` is its place in the output."""

    index: int
    path: Path  # the input file, as the user named it
    start: int  # CSV: offset of the first row's first byte; Parquet: the first row group
    end: int  # CSV: offset just after the last row; Parquet: the row group after the last
    size: int  # bytes of input, for progress
    passthrough: tuple[str, ...]  # the input columns the output copies
    # the file to read: absolute, made here, since a Dask worker has another working folder
    location: Path
    header: bytes = b""  # CSV: the file's header record, read before the rows


@dataclass(frozen=True)
class Plan:
    """The input files, the columns each passes through, and its partitions in input order."""

    files: list[Path]
    passthrough: list[tuple[str, ...]]  # per file
    partitions: list[Partition]

    @property
    def size(self) -> int:
        """Bytes of input, for progress."""
        return sum(p.size for p in self.partitions)


@dataclass(frozen=True)
class PartitionScores:
    """One partition scored: the output rows as CSV (no header), counts and failures."""

    body: bytes
    rows: int  # rows read, blank ones included: the offset of the next partition's rows
    rows_in: int
    rows_scored: int
    rows_failed: int
    #: (0-based position of the row in the partition, reason), at most MAX_FAILURES
    failures: list[tuple[int, str]]
    worker: str = ""  # the Dask worker's address; empty in this process


def input_files(spec: str | Path) -> list[Path]:
    """The files an input names: the file, a folder's CSV or Parquet files, or a glob's matches.

    Folders and globs give their files sorted by name; hidden files (``.name``) are left out.
    A mix of CSV and Parquet is refused.
    """
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        wanted = (*CSV_SUFFIXES, *PARQUET_SUFFIXES)
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()
        )
        if not files:
            raise UsageError(f"{text}: the folder has no .csv or .parquet files")
    elif path.exists():
        files = [path]
    elif any(mark in text for mark in "*?["):
        matches = glob.glob(text, recursive=True)
        files = sorted(Path(p) for p in matches if os.path.isfile(p))
        if not files:
            raise UsageError(f"{text}: the pattern matches no files")
    else:
        raise UsageError(f"{text}: no such input file")
    parquet = [p for p in files if is_parquet(p)]
    if parquet and len(parquet) < len(files):
        other = next(p for p in files if not is_parquet(p))
        raise UsageError(
            f"{text}: mixes Parquet ({parquet[0]}) and CSV ({other}) files; "
            "score each format on its own"
        )
    return files


def plan_partitions(files: list[Path], scorer: Scorer, partition_size: int) -> Plan:
    """Check each file's columns against the model and cut it into partitions (see module)."""
    if partition_size < 1:
        raise UsageError(f"the partition size must be at least 1 byte, not {partition_size}")
    passthrough: list[tuple[str, ...]] = []
    partitions: list[Partition] = []
    for path in files:
        if is_parquet(path):
            kept = tuple(check_columns(scorer, _parquet_columns(path), path))
            pieces = list(_parquet_pieces(path, partition_size))
        else:
            kept = tuple(check_columns(scorer, read_header(path), path))
            pieces = list(_csv_pieces(path, partition_size))
        passthrough.append(kept)
        location = path.absolute()
        for start, end, size, header in pieces:
            partitions.append(
                Partition(len(partitions), path, start, end, size, kept, location, header)
            )
    return Plan(files, passthrough, partitions)


def score_partition(
    scorer: Scorer, partition: Partition, *, chunk_rows: int = 50_000
) -> PartitionScores:
    """Read and score one partition, ``chunk_rows`` rows at a time, as predict_file would."""
    passthrough = list(partition.passthrough)
    body = io.StringIO()
    rows = rows_in = rows_scored = rows_failed = 0
    failures: list[tuple[int, str]] = []
    try:
        with _partition_chunks(partition, scorer.features, chunk_rows) as chunks:
            for part in score_chunks(scorer, chunks, passthrough, explain=MAX_FAILURES):
                rows += part.rows
                rows_in += part.rows_in
                rows_scored += len(part.frame)
                rows_failed += part.rows_failed
                failures.extend(part.failures)
                if len(part.frame):
                    part.frame.to_csv(body, header=False, index=False, lineterminator="\n")
    except UsageError as exc:
        # pandas counts lines from the partition's own start; the user counts from the file's
        raise UsageError(_file_lines(str(exc), partition)) from None
    return PartitionScores(
        body.getvalue().encode("utf-8"), rows, rows_in, rows_scored, rows_failed, failures
    )


# ----------------------------------------------------------------------------------- CSV


def _csv_pieces(path: Path, size_limit: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(start, end, size, header) of each partition of a CSV file."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        starts = _record_starts(handle, size, size_limit)
        header_end = starts[0] if starts else size
        handle.seek(0)
        header = handle.read(header_end)
    # a file of nothing but its header (with or without a line break) has no partition
    bounds = [s for s in starts if s < size]
    for start, end in zip(bounds, [*bounds[1:], size][: len(bounds)], strict=True):
        yield start, end, end - start, header


def _record_starts(handle: IO[bytes], size: int, step: int) -> list[int]:
    """The end of the header record, then where a record starts at or after every ``step`` bytes.

    A record ends at a line break outside quotes: after an even number of quote characters.
    """
    cuts: list[int] = []
    # the first offset where a line break may end a piece: the header ends at the first one
    # outside quotes, a partition at the first that leaves it ``step`` bytes or more
    target = 0
    parity = 0  # quote characters seen so far, mod 2: 1 inside a quoted value
    position = 0
    handle.seek(0)
    while target < size:
        piece = handle.read(_READ)
        if not piece:
            break
        i, n = 0, len(piece)
        while i < n:
            if position + i < target:  # before the target only the quotes count
                j = min(n, target - position)
                parity ^= piece.count(b'"', i, j) & 1
                i = j
                continue
            newline = piece.find(b"\n", i)
            if newline < 0:
                parity ^= piece.count(b'"', i) & 1
                break
            parity ^= piece.count(b'"', i, newline) & 1
            i = newline + 1
            if not parity:
                cuts.append(position + i)
                target = position + i + step - 1
        position += n
    return cuts


class _Stitched(io.RawIOBase):
    """A file's header record, then one byte range of it: a partition as a CSV file of its own."""

    def __init__(self, header: bytes, handle: io.BufferedReader, start: int, end: int) -> None:
        super().__init__()
        self._header = memoryview(header)
        self._handle = handle
        self._left = end - start
        handle.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if len(self._header):
            n = min(len(view), len(self._header))
            view[:n] = self._header[:n]
            self._header = self._header[n:]
            return n
        if self._left <= 0:
            return 0
        n = self._handle.readinto(view[: min(len(view), self._left)]) or 0
        self._left = self._left - n if n else 0  # a file cut short since planning ends here
        return n


_LINE = re.compile(r"\bline (\d+)")


def _file_lines(message: str, partition: Partition) -> str:
    """A pandas error about a partition's stream, with its line numbers counted in the file.

    pandas numbers records, not physical lines (a quoted line break does not count), from
    the header as line 1: the partition's line N is the file's N + the records before it.
    """
    first = partition.start == len(partition.header)
    if first or is_parquet(partition.path) or not _LINE.search(message):
        return message  # the file's first partition: its lines are the file's
    shift = _records_before(partition)
    return _LINE.sub(lambda m: f"line {int(m.group(1)) + shift}", message)


def _records_before(partition: Partition) -> int:
    """Records (line breaks outside quotes) between the file's header and the partition."""
    count = parity = 0
    with partition.location.open("rb") as handle:
        handle.seek(len(partition.header))
        left = partition.start - len(partition.header)
        while left > 0:
            piece = handle.read(min(_READ, left))
            if not piece:
                break
            left -= len(piece)
            if not parity and b'"' not in piece:
                count += piece.count(b"\n")
                continue
            i = 0
            while (newline := piece.find(b"\n", i)) >= 0:
                parity ^= piece.count(b'"', i, newline) & 1
                count += not parity
                i = newline + 1
            parity ^= piece.count(b'"', i) & 1
    return count


# ------------------------------------------------------------------------------- Parquet


def _parquet_file(path: Path, location: Path | None = None) -> Any:
    """The open pyarrow ParquetFile at ``location`` (else ``path``); UsageErrors name ``path``.

    A missing file is a UsageError while planning; a partition's (``location``) stays a
    FileNotFoundError, which a Dask worker reports as an input it cannot see.
    """
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        return pq.ParquetFile(location or path)
    except FileNotFoundError:
        if location is not None:
            raise
        raise UsageError(f"{path}: no such input file") from None
    except (OSError, pyarrow.ArrowException) as exc:
        text = str(exc).strip().splitlines()
        raise UsageError(
            f"{path}: cannot be read as Parquet ({text[0] if text else type(exc).__name__})"
        ) from None


def _parquet_columns(path: Path) -> list[str]:
    # pandas stores a named index as __index_level_N__; it is not data
    names = _parquet_file(path).schema_arrow.names
    return [str(n) for n in names if not str(n).startswith("__index_level_")]


def _parquet_pieces(path: Path, size_limit: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(first row group, row group after the last, bytes, b"") of each partition."""
    metadata = _parquet_file(path).metadata
    first, size = 0, 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        if size >= size_limit:
            yield first, group + 1, size, b""
            first, size = group + 1, 0
    if first < metadata.num_row_groups:
        yield first, metadata.num_row_groups, size, b""


# ------------------------------------------------------------------------------- reading


@contextlib.contextmanager
def _partition_chunks(
    partition: Partition, features: list[str], chunk_rows: int
) -> Iterator[Iterator[pd.DataFrame]]:
    """The partition's rows as DataFrames of at most ``chunk_rows`` rows, file open meanwhile."""
    passthrough = list(partition.passthrough)
    if is_parquet(partition.path):
        source = _parquet_file(partition.path, partition.location)
        batches = source.iter_batches(
            batch_size=chunk_rows,
            row_groups=range(partition.start, partition.end),
            columns=[*passthrough, *features],
        )
        yield (batch.to_pandas() for batch in batches)
        return
    with partition.location.open("rb") as handle:
        stream = _Stitched(partition.header, handle, partition.start, partition.end)
        with io.BufferedReader(stream, buffer_size=1 << 20) as buffered:
            yield read_csv_chunks(buffered, partition.path, features, passthrough, chunk_rows)
