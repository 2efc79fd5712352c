"""The test stage: execute notebooks in fresh kernels and check them.

``compare`` mode gives ``pytest --nbval``'s verdict (stored outputs must come back), with
tolerances and table/image comparison on request; ``run`` mode only checks that every cell
runs (nbmake's check). Notebooks run in parallel on a pool of pre-warmed kernels; each one
still gets its own fresh kernel process.

Where they run is an :class:`~nbcd.execute.dispatch.Executions`: the local pool, or with
``options.cluster`` a Dask cluster (nbcd.cluster.executions), one task per notebook. Cache
lookups and records stay here either way: only misses leave this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nbcd import interrupts
from nbcd.errors import (
    EXIT_OK,
    CellError,
    CheckFailed,
    NbcdError,
    NotebookError,
    exit_code_of,
    worst_exit_code,
)
from nbcd.execute.dispatch import ExecutionRequest, Executions, LocalExecutions
from nbcd.execute.imports import notebook_imports
from nbcd.notebook import cell_label, display_path, kernel_name, read_notebook
from nbcd.options import verdict_of
from nbcd.testing.cache import InputState, Lookup, PassCache, declared_inputs, notebook_parts
from nbcd.testing.compare import (
    CompareOptions,
    Mismatch,
    compare_notebook,
    load_sanitizers,
    unexpected_error,
)
from nbcd.testing.markers import SKIP_EXECUTION_TAG, cell_markers
from nbcd.testing.options import TestOptions
from nbcd.textnotebook import is_text_path, read_text_notebook

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from nbcd.execute.executor import CellFailure, ExecutionResult
    from nbcd.execute.recorder import RecordedInputs

__all__ = ["NotebookOutcome", "TestOptions", "TestReport", "compare_options", "run_tests"]

Status = Literal["passed", "failed", "error", "cached"]


@dataclass(frozen=True)
class NotebookOutcome:
    """The verdict on one notebook."""

    path: Path
    status: Status
    duration_s: float
    message: str = ""
    mismatches: tuple[Mismatch, ...] = ()
    failure: CellFailure | None = None
    error: NbcdError | None = None  # why it did not pass, as the error tree's class
    reason: str = ""  # why it ran ("new", "code changed", "data.csv changed"); "" if cached
    inputs: tuple[str, ...] = ()  # what it used when it passed (`nbcd test --explain`)
    # the execution itself, for `nbcd ci` to reuse in its run stage
    execution: ExecutionResult | None = field(default=None, repr=False, compare=False)
    started_at: float = 0.0  # wall-clock start of the execution
    worker: str = ""  # the cluster worker that ran it ("" when it ran here)

    @property
    def exit_code(self) -> int:
        """This notebook's exit code, by the one mapping of nbcd.errors."""
        return exit_code_of(self.error)

    @property
    def details(self) -> str:
        """The readable diffs of every mismatch, for terminals and JUnit files."""
        parts = []
        for m in self.mismatches:
            head = f"{cell_label(m.cell_index)}: {m.message}"
            parts.append(head + ("\n" + m.diff if m.diff else ""))
        return "\n\n".join(parts)


@dataclass(frozen=True)
class TestReport:
    """Every notebook's outcome, and the stage's exit code."""

    __test__ = False

    outcomes: tuple[NotebookOutcome, ...]
    duration_s: float
    warnings: tuple[str, ...] = ()  # problems that change no verdict (a cache not written)

    def count(self, status: Status) -> int:
        """How many notebooks ended with status."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        """True when no notebook failed or errored."""
        return self.exit_code == EXIT_OK

    @property
    def exit_code(self) -> int:
        """The worst of the notebooks' exit codes (nbcd.errors.worst_exit_code)."""
        return worst_exit_code(o.exit_code for o in self.outcomes)


def compare_options(options: TestOptions) -> CompareOptions:
    """The comparison's options; reads the sanitizer file (UsageError when it is invalid)."""
    return CompareOptions(
        lax=options.lax,
        rtol=options.rtol,
        atol=options.atol,
        sanitizers=load_sanitizers(options.sanitize_with) if options.sanitize_with else (),
        compare_images=options.compare_images,
        image_threshold=options.image_threshold,
    )


OutcomeCallback = Callable[[NotebookOutcome], None]


def run_tests(
    paths: Sequence[Path],
    options: TestOptions,
    *,
    on_outcome: OutcomeCallback | None = None,
    executions: Executions | None = None,
) -> TestReport:
    """Test every notebook in paths and return the report (the engine of `nbcd test`).

    Notebooks run on ``executions`` when given (its maker closes it), else on the local
    kernel pool, or on ``options.cluster`` when set.
    """
    begun = _begin(options)
    if executions is None:
        # An unchanged rerun is settled from the cache alone, without loading asyncio (~20 ms
        # of a ~0.25 s rerun); the notebooks settled here are not looked up again.
        for index, path in enumerate(paths):
            checked = _check(path, options, begun.cache)
            if not isinstance(checked, NotebookOutcome) or checked.status != "cached":
                break
            begun.settled[index] = checked
        else:
            for outcome in begun.settled.values():
                if on_outcome is not None:
                    on_outcome(outcome)
            return TestReport(tuple(begun.settled.values()), time.perf_counter() - begun.started)
    import asyncio

    return asyncio.run(
        async_run_tests(paths, options, on_outcome=on_outcome, executions=executions, _begun=begun)
    )


@dataclass
class _Begun:
    """What a run sets up before its first notebook, done once whichever entry point it took."""

    started: float
    compare: CompareOptions
    cache: PassCache | None
    settled: dict[int, NotebookOutcome] = field(default_factory=dict)  # by index, from cache


def _begin(options: TestOptions) -> _Begun:
    started = time.perf_counter()
    compare = compare_options(options)  # a bad sanitizer file fails before any kernel starts
    cache = PassCache(options.cache_dir) if options.cache and options.cache_dir else None
    if cache is not None:
        # made before any notebook runs, so the build folder a notebook's folder may hold
        # looks the same in every listing the recorder takes
        with contextlib.suppress(OSError):
            cache.folder.mkdir(parents=True, exist_ok=True)
    return _Begun(started, compare, cache)


async def async_run_tests(
    paths: Sequence[Path],
    options: TestOptions,
    *,
    on_outcome: OutcomeCallback | None = None,
    executions: Executions | None = None,
    _begun: _Begun | None = None,
) -> TestReport:
    """The async implementation of run_tests (``_begun``: what run_tests set up and found)."""
    import asyncio

    begun = _begun or _begin(options)
    started, compare, cache, settled = begun.started, begun.compare, begun.cache, begun.settled
    jobs = options.jobs or os.cpu_count() or 1
    outcomes: dict[int, NotebookOutcome] = {}
    warnings: list[str] = []

    stopping = False

    def report(index: int, outcome: NotebookOutcome) -> None:
        # once interrupted, kernels are being killed: what they report is no verdict
        if stopping or interrupts.requested():
            return
        outcomes[index] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    # unreadable and unchanged notebooks are settled before any kernel starts, so an
    # all-cached rerun never pays for the fork server
    pending: list[tuple[int, _Pending]] = []
    where = executions
    try:
        for index, path in enumerate(paths):
            checked = settled.get(index) or _check(path, options, cache)
            if isinstance(checked, NotebookOutcome):
                report(index, checked)
                continue
            pending.append((index, checked))
            if where is None:
                # made at the first notebook to run: an all-cached run starts no kernel and
                # contacts no cluster. The fork server starts at once and imports the kernel
                # machinery while the other notebooks are read.
                where = _executions(options, jobs)
                if isinstance(where, LocalExecutions):
                    where.launch()
        if pending:
            assert where is not None
            runner: Executions = where
            semaphore = asyncio.Semaphore(runner.limit or len(pending))

            async def one(index: int, item: _Pending) -> None:
                async with semaphore:
                    outcome, found = await _test_one(item, options, compare, cache, runner)
                    warnings.extend(found)
                    report(index, outcome)

            await runner.start([(item.path, item.kernel, item.imports) for _, item in pending])
            await asyncio.gather(*(one(index, item) for index, item in pending))
    except BaseException:
        stopping = True
        raise
    finally:
        if where is not None and executions is None:
            await where.close()
    ordered = tuple(outcomes[index] for index in range(len(paths)))
    return TestReport(ordered, time.perf_counter() - started, tuple(dict.fromkeys(warnings)))


def _executions(options: TestOptions, jobs: int) -> Executions:
    """The local kernel pool, or the cluster of ``options.cluster``."""
    if options.cluster:
        from nbcd.cluster.executions import ClusterExecutions

        return ClusterExecutions(
            options.cluster,
            root=options.project_root,
            build_dir=options.build_dir,
            jobs=options.jobs,  # -j limits a cluster only when given; else its scheduler queues
            fork=options.fork,
            warm_imports=options.warm_imports,
        )
    return LocalExecutions(
        jobs,
        kernel=options.kernel or "python3",
        fork=options.fork,
        warm_imports=options.warm_imports,
    )


@dataclass(frozen=True)
class _Pending:
    """A readable notebook that has to run, with its cache lookup (None without a cache)."""

    path: Path
    stored: NotebookNode
    kernel: str
    parts: dict[str, str]
    lookup: Lookup | None
    imports: frozenset[str] = frozenset()  # installed libraries its code cells import
    declared: tuple[Path, ...] = ()  # its declared inputs (metadata nbcd.inputs)

    def request(self, nb: NotebookNode, options: TestOptions, record: bool) -> ExecutionRequest:
        """The execution of ``nb`` (this notebook, prepared) for the test stage."""
        entry = self.lookup.entry if self.lookup is not None else None
        return ExecutionRequest(
            path=self.path,
            notebook=nb,
            kernel=self.kernel,
            timeout=options.timeout,
            # every cell runs even after an error, as in nbval, so that all problems are
            # reported; which errors were expected is decided afterwards from the cell markers
            allow_errors=True,
            record_inputs=record,
            imports=self.imports,
            # what it used when it last passed, if that run had this key (a cluster sends these)
            inputs=tuple(Path(i.path) for i in entry.inputs) if entry is not None else None,
            declared=self.declared,
        )


def _check(path: Path, options: TestOptions, cache: PassCache | None) -> NotebookOutcome | _Pending:
    """Read a notebook and look it up in the cache: an outcome already, or work to do."""
    started = time.perf_counter()
    try:
        # the key needs only the JSON: a hit skips nbformat's validation. A text notebook's
        # JSON is jupytext's reading of it, with its paired .ipynb's stored outputs
        data = read_text_notebook(path) if is_text_path(path) else _json_of(path.read_bytes())
        kernel = options.kernel or kernel_name(data) or "python3"
        parts: dict[str, str] = {}
        lookup = None
        if cache is not None:
            parts = notebook_parts(
                path,
                data,
                compare_outputs=options.mode == "compare",
                # the kernel that will run, so `--kernel python3` on a python3 notebook is
                # no change
                options=verdict_of(replace(options, kernel=kernel)),
                kernel=kernel,
            )
            lookup = cache.lookup(path, parts)
            if lookup.hit and lookup.entry is not None:
                inputs = tuple(display_path(Path(i.path)) for i in lookup.entry.inputs)
                took = time.perf_counter() - started
                return NotebookOutcome(path, "cached", took, "unchanged", inputs=inputs)
        stored = read_notebook(path)
    except OSError as exc:
        error = NotebookError(f"{path}: cannot read ({exc.strerror or exc})")
        return NotebookOutcome(path, "error", 0.0, str(error), error=error)
    except NbcdError as exc:
        return NotebookOutcome(path, "error", 0.0, str(exc), error=exc)
    imports = notebook_imports(stored) if options.warm_imports else frozenset()
    declared = tuple(declared_inputs(path, _mapping(data.get("metadata"))))
    return _Pending(path, stored, kernel, parts, lookup, imports, declared)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_of(raw: bytes) -> dict[str, Any]:
    """A notebook's raw JSON object, or {} when it is not one (read_notebook says why)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


async def _test_one(
    item: _Pending,
    options: TestOptions,
    compare: CompareOptions,
    cache: PassCache | None,
    executions: Executions,
) -> tuple[NotebookOutcome, list[str]]:
    """Run one notebook and judge it; a passed run is recorded (a warning if it cannot be)."""
    path, stored = item.path, item.stored
    started, started_at = time.perf_counter(), time.time()
    reason = item.lookup.reason if item.lookup is not None else "cache off"
    try:
        done = await executions.execute(item.request(_prepared(stored), options, cache is not None))
    except NbcdError as exc:
        took = time.perf_counter() - started
        return NotebookOutcome(path, "error", took, str(exc), error=exc, reason=reason), []
    fresh, warnings = done.result, list(done.warnings)
    # on a cluster, the time on the worker: a notebook's wait in the queue is not its own
    duration = done.duration_s if done.duration_s is not None else time.perf_counter() - started
    outcome = _judge(path, stored, fresh.notebook, fresh.failure, options.mode, compare, duration)
    used = _used(fresh.inputs, path)
    outcome = replace(
        outcome,
        reason=reason,
        inputs=tuple(display_path(Path(state.path)) for state in used),
        execution=fresh,
        started_at=started_at,
        worker=done.worker,
    )
    if cache is not None and item.lookup is not None and outcome.status == "passed":
        if fresh.inputs is None:
            return outcome, warnings  # nothing recorded (a kernel without the recorder)
        warning = cache.record(item.lookup, path, item.parts, duration, used)
        warnings += [warning] if warning else []
    return outcome, warnings


def _used(inputs: RecordedInputs | None, notebook: Path) -> list[InputState]:
    """The recorded inputs as they are on disk now, the notebook's own file left out."""
    if inputs is None:
        return []
    own = str(notebook.resolve())
    states = [InputState.now(p, "file") for p in inputs.files if p != own]
    states += [InputState.now(p, "dir") for p in inputs.dirs]
    states += [InputState.now(p, "module") for p in inputs.modules]
    return states


def _prepared(stored: NotebookNode) -> NotebookNode:
    """A copy to execute: cells marked to skip get nbclient's skip-execution tag."""
    import nbformat

    nb = nbformat.from_dict(stored)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        markers = cell_markers(cell)
        if markers.skip or markers.skip_execution:
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if SKIP_EXECUTION_TAG not in tags:
                tags.append(SKIP_EXECUTION_TAG)
        else:
            cell.outputs = []
    return nb


def _judge(
    path: Path,
    stored: NotebookNode,
    fresh: NotebookNode,
    failure: CellFailure | None,
    mode: str,
    compare: CompareOptions,
    duration: float,
) -> NotebookOutcome:
    if failure is not None and failure.kind in ("timeout", "died"):
        error = failure.error(cell_label(failure.cell_index))
        message = str(error).replace("\n    source: ", "; source: ")
        return NotebookOutcome(path, "error", duration, message, failure=failure, error=error)
    if mode == "run":
        mismatches = _unexpected_errors(fresh, failure)
    else:
        mismatches = compare_notebook(stored, fresh, compare)
    if mismatches:
        first = mismatches[0]
        more = f" (+{len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        message = f"{cell_label(first.cell_index)}: {first.message}{more}"
        # run mode fails only on errors; compare mode on any difference
        error = CellError(message) if mode == "run" else CheckFailed(message)
        return NotebookOutcome(path, "failed", duration, message, tuple(mismatches), failure, error)
    return NotebookOutcome(path, "passed", duration)


def _unexpected_errors(fresh: NotebookNode, failure: CellFailure | None) -> list[Mismatch]:
    if failure is not None:
        trace = "\n".join(failure.traceback[-6:])
        return [_error_mismatch(failure.cell_index, failure.ename, failure.evalue, trace)]
    found = []
    for index, cell in enumerate(fresh.cells):
        if cell.cell_type == "code" and not cell_markers(cell).raises_exception:
            error = unexpected_error(cell.get("outputs", []))
            if error is not None:
                found.append(_error_mismatch(index, error.get("ename"), error.get("evalue")))
    return found


def _error_mismatch(index: int, ename: object, evalue: object, trace: str = "") -> Mismatch:
    return Mismatch(index, "error", f"cell raised {ename}: {evalue}", trace)
