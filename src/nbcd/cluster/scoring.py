"""Batch scoring of a file, a folder or a glob, in this process or on a Dask cluster.

:func:`predict_partitions` is ``nbcd predict``'s engine. It cuts the input into partitions
(:mod:`nbcd.serve.partitions`), scores them with :func:`~nbcd.serve.partitions.score_partition`
and writes the output in input order: one CSV file, or with ``parts`` a folder of
``part-00000.csv`` files, one per partition, each with its header. Bad rows are reported by
file and line, as :func:`~nbcd.serve.predict.predict_file` reports them, whose output a
single CSV file scored here equals byte for byte; in this process such a file is in fact
handed to it (it streams, with progress inside the file).

On a cluster (an address for :func:`nbcd.cluster.connect.connect`, or a ``Client``):

- the model's two files travel once, scattered to every worker (the workers need not see
  the model's folder), and each worker process loads it once, keyed by its checksum;
- the workers read the input by its absolute path, so they must see it at the same path
  (a shared filesystem); the client reads it too, once, to find where partitions start;
- at most twice as many partitions as the cluster has threads are in flight, and finished
  ones wait on the client only until the ones before them are written: a worker holds one
  partition's input chunk and output at a time, the client a bounded number of outputs;
- the client writes every output file, atomically (:mod:`nbcd.files`), so the workers need
  no write access and a failed run leaves the previous output as it was.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nbcd.cluster.connect import connect
from nbcd.errors import ExecutionError, ModelError, NbcdError, UsageError
from nbcd.files import atomic_writer, replace_folder, writing
from nbcd.model import METADATA_FILE, MODEL_FILE
from nbcd.serve.partitions import (
    Partition,
    PartitionScores,
    Plan,
    input_files,
    plan_partitions,
    score_partition,
)
from nbcd.serve.predict import (
    MAX_FAILURES,
    PredictProgress,
    PredictResult,
    Scorer,
    added_columns,
    csv_header,
    is_parquet,
    predict_file,
    same_file,
)

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = [
    "DEFAULT_PARTITION_SIZE",
    "PART_NAME",
    "default_output",
    "parse_size",
    "predict_partitions",
]

#: Input bytes per partition unless told otherwise (dask.dataframe's default blocksize).
DEFAULT_PARTITION_SIZE = 64_000_000
#: The name of the part file of each partition in an output folder.
PART_NAME = "part-{:05d}.csv"
# Models a worker keeps loaded; an older one is loaded again if a job asks for it.
_CACHED_MODELS = 4


def predict_partitions(
    model_path: Path,
    inputs: str | Path,
    output: Path,
    *,
    parts: bool = False,
    cluster: str | None = None,
    client: Client | None = None,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    chunk_rows: int = 50_000,
    on_progress: Callable[[PredictProgress], None] | None = None,
) -> PredictResult:
    """Score every row of ``inputs`` (a file, a folder or a glob) with the model.

    The output is the CSV file ``output``, or with ``parts`` the folder ``output`` of one
    ``part-NNNNN.csv`` per partition (replaced whole; it may hold only part files). The work
    runs on ``client``, else on a client of ``cluster`` (closed after), else in this process.
    Rows are validated and reported as by :func:`~nbcd.serve.predict.predict_file`; a
    Parquet file's failures are numbered by row (1-based) rather than line.
    """
    if chunk_rows < 1:
        raise UsageError(f"chunk_rows must be at least 1, not {chunk_rows}")
    started = time.perf_counter()
    files = input_files(inputs)
    output = Path(output)
    local = cluster is None and client is None
    if local and not parts and len(files) == 1 and not is_parquet(files[0]):
        return predict_file(
            model_path, files[0], output, chunk_rows=chunk_rows, on_progress=on_progress
        )
    _refuse_overwriting(output, files, parts=parts)
    with contextlib.ExitStack() as stack:
        model: Future[_ModelBlob] | None = None
        if not local:
            if client is None:
                # first: a cluster that cannot be used is said at once, not after the input
                client = stack.enter_context(connect(cluster))
            # the workers load the model while this process does and plans: seconds each;
            # a model that cannot be read is left to Scorer.load to explain
            with contextlib.suppress(ModelError):
                model = stack.enter_context(_shipped(client, _ModelBlob.read(model_path)))
        scorer = Scorer.load(model_path)
        plan = plan_partitions(files, scorer, partition_size)
        if not parts:
            _check_same_columns(plan)
        tally = _Tally(plan, on_progress)
        scored: Iterator[PartitionScores]
        if client is None:
            scored = (score_partition(scorer, p, chunk_rows=chunk_rows) for p in plan.partitions)
        else:
            if model is None:  # it could not be read before Scorer.load: it can now
                model = stack.enter_context(_shipped(client, _ModelBlob.read(model_path)))
            # closed before the client: the tasks still in flight are cancelled
            scored = stack.enter_context(
                contextlib.closing(_on_cluster(client, model, plan.partitions, chunk_rows))
            )
        sink = stack.enter_context(_output(output, parts, plan, added_columns(scorer.kind)))
        for partition, scores in zip(plan.partitions, scored, strict=True):
            sink.write(partition, scores.body)
            tally.add(partition, scores)
    return tally.result(output, sink.paths, time.perf_counter() - started)


def default_output(inputs: str | Path) -> Path:
    """Where ``nbcd predict`` writes without ``-o``: NAME.predictions.csv in the working folder.

    NAME is the file's stem or the folder's name; a glob gives ``predictions.csv``.
    """
    path = Path(inputs)
    if path.is_dir():
        return Path(f"{path.resolve().name or 'input'}.predictions.csv")
    if not path.exists() and any(mark in str(inputs) for mark in "*?["):
        return Path("predictions.csv")
    return Path(f"{path.stem}.predictions.csv")


def parse_size(text: str) -> int:
    """Bytes from ``64MB``, ``1GiB``, ``500kB`` or ``1000000`` (decimal and binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; give bytes like 64MB, 1GiB or 1000000")
    number, unit = float(match.group(1)), (match.group(2) or "").lower().removesuffix("b")
    size = int(number * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{text!r} is less than one byte")
    return size


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b?|b)?", re.IGNORECASE)
_UNITS = {"": 1} | {
    prefix + suffix: (1024 if suffix else 1000) ** power
    for power, prefix in enumerate("kmgt", start=1)
    for suffix in ("", "i")
}


# ------------------------------------------------------------------------------- results


class _Tally:
    """Counts, failures (with their line in the file) and progress, partition by partition."""

    def __init__(self, plan: Plan, on_progress: Callable[[PredictProgress], None] | None) -> None:
        self.plan = plan
        self.on_progress = on_progress
        self.rows_in = self.rows_scored = self.rows_failed = 0
        self.rows_done = self.bytes_done = 0
        self.failures: list[tuple[int, str]] = []
        self.failure_files: list[Path] = []
        self.workers: collections.Counter[str] = collections.Counter()
        # rows of each file in the partitions already added: where the next one's rows start
        self._rows_before: dict[Path, int] = {}

    def add(self, partition: Partition, scores: PartitionScores) -> None:
        """Count one partition's scores; partitions must come in input order."""
        before = self._rows_before.get(partition.path, 0)
        self._rows_before[partition.path] = before + scores.rows
        # a CSV's first row is line 2, under the header; a Parquet file's first row is row 1
        first = 1 if is_parquet(partition.path) else 2
        for position, reason in scores.failures[: MAX_FAILURES - len(self.failures)]:
            self.failures.append((before + position + first, reason))
            self.failure_files.append(partition.path)
        self.rows_in += scores.rows_in
        self.rows_scored += scores.rows_scored
        self.rows_failed += scores.rows_failed
        if scores.worker:
            self.workers[scores.worker] += 1
        self.rows_done += scores.rows
        self.bytes_done += partition.size
        if self.on_progress is not None:
            self.on_progress(PredictProgress(self.rows_done, self.bytes_done, self.plan.size))

    def result(self, output: Path, outputs: list[Path], duration: float) -> PredictResult:
        return PredictResult(
            rows_in=self.rows_in,
            rows_scored=self.rows_scored,
            rows_failed=self.rows_failed,
            output=output,
            duration=duration,
            failures=self.failures,
            failure_files=self.failure_files,
            outputs=outputs,
            partitions=len(self.plan.partitions),
            workers=dict(self.workers),
        )


# -------------------------------------------------------------------------------- output


def _refuse_overwriting(output: Path, files: list[Path], *, parts: bool) -> None:
    """Never write over an input: not as the output file, nor by replacing a folder holding it."""
    if not parts:
        for path in files:
            if same_file(path, output):
                raise UsageError(
                    f"{output}: the output is the input file {path}; "
                    "writing it would replace the rows being scored, so give -o another path"
                )
        return
    folder = output.resolve()
    for path in files:
        if folder == path.resolve().parent or folder in path.resolve().parents:
            raise UsageError(
                f"{output}: the output folder holds the input file {path}; replacing the folder "
                "would delete the rows being scored, so give -o another folder"
            )
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: is a file; an -o ending in / names a folder of part files")
    if output.is_dir():
        strangers = [p for p in sorted(output.iterdir()) if not _PART.fullmatch(p.name)]
        if strangers:
            raise UsageError(
                f"{output}: holds {strangers[0].name}, not a part file; the output folder is "
                "replaced whole, so give -o a new folder, an empty one or an earlier output"
            )


_PART = re.compile(r"part-\d{5,}\.csv")


def _check_same_columns(plan: Plan) -> None:
    """One output file takes one header: every input must pass the same columns through."""
    for path, columns in zip(plan.files[1:], plan.passthrough[1:], strict=True):
        if columns != plan.passthrough[0]:
            raise UsageError(
                f"{path}: its columns besides the features ({', '.join(columns) or 'none'}) "
                f"differ from {plan.files[0]}'s ({', '.join(plan.passthrough[0]) or 'none'}); "
                "one output file needs the same columns in every input, so end -o with / "
                "for a part file per partition"
            )


@dataclass
class _Sink:
    """Where scored partitions go: appended to one file, or each to a part file of a folder."""

    write: Callable[[Partition, bytes], None]
    paths: list[Path]


@contextlib.contextmanager
def _output(target: Path, parts: bool, plan: Plan, added: list[str]) -> Iterator[_Sink]:
    """The output, in place only when the block completes (the previous one is kept else)."""
    headers = {
        path: csv_header([*columns, *added]).encode("utf-8")
        for path, columns in zip(plan.files, plan.passthrough, strict=True)
    }
    if not parts:
        with atomic_writer(target, "wb") as handle:
            handle.write(headers[plan.files[0]])

            def append(partition: Partition, body: bytes) -> None:
                handle.write(body)

            yield _Sink(append, [target])
        return
    with writing(target, folder=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    written: list[Path] = []

    def write(partition: Partition, body: bytes) -> None:
        name = PART_NAME.format(partition.index)
        with atomic_writer(staged / name, "wb") as handle:
            handle.write(headers[partition.path])
            handle.write(body)
        written.append(target / name)

    try:
        yield _Sink(write, written)
        replace_folder(staged, target)
    finally:
        if staged.exists():  # the run failed: the previous output stays, the staging goes
            shutil.rmtree(staged, ignore_errors=True)


# ------------------------------------------------------------------------------- cluster


@contextlib.contextmanager
def _shipped(client: Client, blob: _ModelBlob) -> Iterator[Future[_ModelBlob]]:
    """The model's files on every worker, each worker loading it already; released on exit.

    The model travels once (scattered to all workers) rather than with every task. A worker
    that cannot load it fails quietly here and loudly in its first task.
    """
    [model] = client.scatter([blob], broadcast=True, hash=False)
    token = uuid.uuid4().hex[:12]
    loads = [
        client.submit(_load_task, model, key=f"nbcd-predict-load-{token}-{i}", workers=[address])
        for i, address in enumerate(client.nthreads())
    ]
    try:
        yield model
    finally:
        client.cancel([*loads, model])


def _load_task(blob: _ModelBlob) -> None:
    """Runs on a worker: load the model into the worker's cache before its first partition."""
    from distributed import get_worker

    with contextlib.suppress(NbcdError):  # the partitions' tasks will report it
        _worker_scorer(blob, get_worker().address)


def _on_cluster(
    client: Client, model: Future[_ModelBlob], partitions: list[Partition], chunk_rows: int
) -> Generator[PartitionScores, None, None]:
    """Score the partitions on the cluster's workers; the scores come in input order.

    A window of twice the cluster's threads bounds the tasks in flight, and finished
    partitions waiting for an earlier one to finish are at most twice that many.
    """
    from distributed import as_completed

    window = 2 * max(1, sum(client.nthreads().values()))
    token = uuid.uuid4().hex[:12]
    running: dict[Future[PartitionScores], int] = {}
    finished: dict[int, PartitionScores] = {}
    queue: as_completed = as_completed(loop=client.loop)
    submitted = yielded = 0
    try:
        while yielded < len(partitions):
            while (
                submitted < len(partitions)
                and len(running) < window
                and submitted < yielded + 2 * window
            ):
                future = client.submit(
                    _score_task,
                    model,
                    partitions[submitted],
                    chunk_rows,
                    key=f"nbcd-predict-{token}-{submitted}",
                    pure=False,
                    priority=-submitted,  # earlier partitions first: the output waits on them
                )
                running[future] = submitted
                queue.add(future)
                submitted += 1
            future = next(queue)
            index = running.pop(future)
            finished[index] = _task_result(future, partitions[index])
            del future  # the worker may drop the result now
            while yielded in finished:
                yield finished.pop(yielded)
                yielded += 1
    finally:
        if running:
            client.cancel(list(running))


def _task_result(future: Future[PartitionScores], partition: Partition) -> PartitionScores:
    """A task's scores; a lost worker becomes one line naming the partition."""
    try:
        return future.result()
    except NbcdError:
        raise
    except Exception as exc:
        # KilledWorker (the worker died, perhaps of its memory limit), a lost connection...
        raise ExecutionError(
            f"the cluster failed scoring partition {partition.index} ({partition.path}): "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}; if a worker ran out of "
            "memory, give a smaller --partition-size"
        ) from None


def _score_task(blob: _ModelBlob, partition: Partition, chunk_rows: int) -> PartitionScores:
    """Runs on a worker: score one partition with the worker's copy of the model."""
    from distributed import get_worker

    address = get_worker().address
    scorer = _worker_scorer(blob, address)
    try:
        scores = score_partition(scorer, partition, chunk_rows=chunk_rows)
    except FileNotFoundError:
        raise UsageError(
            f"{partition.path}: not found on the worker at {address} (as "
            f"{partition.location}); workers read the input by path, so it must be on a "
            "filesystem they share with this machine"
        ) from None
    return dataclasses.replace(scores, worker=address)


@dataclass(frozen=True)
class _ModelBlob:
    """A saved model's two files as bytes, to send to workers that cannot read its folder."""

    name: str  # the model path the user gave, for messages
    digest: str  # SHA-256 over both files: the key of the workers' cache
    model: bytes
    metadata: bytes

    @classmethod
    def read(cls, model_path: Path) -> _ModelBlob:
        # the layout load_model reads: a folder, or a .skops file with its .json beside it
        path = Path(model_path)
        model_file, json_file = (
            (path / MODEL_FILE, path / METADATA_FILE)
            if path.is_dir()
            else (path, path.with_suffix(".json"))
        )
        try:
            model, metadata = model_file.read_bytes(), json_file.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read the model at {path}: {exc.strerror or exc}") from None
        digest = hashlib.sha256(hashlib.sha256(model).digest() + metadata).hexdigest()
        return cls(str(model_path), digest, model, metadata)


# Per worker process: the loaded models by digest, and how often each was loaded (tests).
_SCORERS: collections.OrderedDict[str, Scorer] = collections.OrderedDict()
_LOADS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()


def _worker_scorer(blob: _ModelBlob, address: str) -> Scorer:
    """This process's Scorer of the model, loaded on first use (one load per process)."""
    with _LOCK:  # a worker's threads score at once; the model loads once all the same
        scorer = _SCORERS.get(blob.digest)
        if scorer is not None:
            _SCORERS.move_to_end(blob.digest)
            return scorer
        # load_model's checks (checksum, trusted types) run on the files as saved
        with tempfile.TemporaryDirectory(prefix="nbcd-model-") as folder:
            (Path(folder) / MODEL_FILE).write_bytes(blob.model)
            (Path(folder) / METADATA_FILE).write_bytes(blob.metadata)
            try:
                scorer = Scorer.load(Path(folder))
            except ModelError as exc:
                raise ModelError(
                    f"the worker at {address} cannot load the model {blob.name}: {exc}"
                ) from None
        _SCORERS[blob.digest] = scorer
        _LOADS[blob.digest] += 1
        while len(_SCORERS) > _CACHED_MODELS:
            _SCORERS.popitem(last=False)
        return scorer
