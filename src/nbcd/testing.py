"""The test stage: execute notebooks in fresh kernels and check them.

``compare`` mode gives ``pytest --nbval``'s verdict (stored outputs must come back), with
tolerances and table/image comparison on request; ``run`` mode only checks that every cell
runs (nbmake's check). Notebooks run in parallel on a pool of pre-warmed kernels; each one
still gets its own fresh kernel process.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nbcd.cache import PassCache, declared_inputs, notebook_key
from nbcd.compare import (
    CompareOptions,
    Mismatch,
    compare_notebook,
    load_sanitizers,
    unexpected_error,
)
from nbcd.config import Config
from nbcd.errors import EXIT_CHECK_FAILED, EXIT_EXECUTION, EXIT_OK, EXIT_USAGE, NbcdError
from nbcd.markers import cell_markers
from nbcd.notebook import cell_label, kernel_name, read_notebook, source_excerpt

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from nbcd.execute import CellFailure, ExecutionResult

__all__ = ["NotebookOutcome", "TestOptions", "TestReport", "run_tests"]

Status = Literal["passed", "failed", "error", "cached"]
SKIP_EXECUTION_TAG = "skip-execution"


@dataclass(frozen=True)
class TestOptions:
    """How `nbcd test` checks notebooks."""

    __test__ = False  # not a pytest test class, whatever its name

    mode: Literal["compare", "run"] = "compare"
    compare: CompareOptions = field(default_factory=CompareOptions)
    jobs: int = 0  # 0: one per core
    timeout: float = 600.0
    kernel: str | None = None
    use_cache: bool = True
    cache_dir: Path | None = None
    forked: bool = True  # start kernels from a warm fork server when the kernel allows it

    def cache_options(self) -> dict[str, Any]:
        """The options that can change a verdict, as part of the cache key."""
        c = self.compare
        sanitizers = [(s.pattern.pattern, s.replace) for s in c.sanitizers]
        return {
            "mode": self.mode,
            "lax": c.lax,
            "rtol": c.rtol,
            "atol": c.atol,
            "sanitizers": sanitizers,
            "images": c.compare_images,
            "image_threshold": c.image_threshold,
            "kernel": self.kernel,
            "timeout": self.timeout,
        }


@dataclass(frozen=True)
class NotebookOutcome:
    """The verdict on one notebook."""

    path: Path
    status: Status
    duration_s: float
    message: str = ""
    mismatches: tuple[Mismatch, ...] = ()
    failure: CellFailure | None = None
    exit_code: int = EXIT_OK

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

    def count(self, status: Status) -> int:
        """How many notebooks ended with status."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        """True when no notebook failed or errored."""
        return self.exit_code == EXIT_OK

    @property
    def exit_code(self) -> int:
        """2 for a usage problem, else 3 for a notebook that could not run, else 1, else 0."""
        codes = {o.exit_code for o in self.outcomes}
        for code in (EXIT_USAGE, EXIT_EXECUTION, EXIT_CHECK_FAILED):
            if code in codes:
                return code
        return EXIT_OK


def test_options_from(
    config: Config,
    *,
    mode: str | None = None,
    lax: bool | None = None,
    sanitize_with: Path | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    compare_images: bool | None = None,
    image_threshold: float = 0.95,
    jobs: int | None = None,
    use_cache: bool = True,
    timeout: float | None = None,
    kernel: str | None = None,
    forked: bool = True,
) -> TestOptions:
    """TestOptions from [tool.nbcd.test], each given value overriding the configured one."""
    settings = config.test
    sanitizer_file = sanitize_with or settings.sanitize_with
    compare = CompareOptions(
        lax=settings.lax if lax is None else lax,
        rtol=settings.rtol if rtol is None else rtol,
        atol=settings.atol if atol is None else atol,
        sanitizers=load_sanitizers(sanitizer_file) if sanitizer_file else (),
        compare_images=settings.compare_images if compare_images is None else compare_images,
        image_threshold=image_threshold,
    )
    chosen_mode = mode or settings.mode
    return TestOptions(
        mode="run" if chosen_mode == "run" else "compare",
        compare=compare,
        jobs=jobs or settings.jobs or 0,
        timeout=timeout or config.timeout,
        kernel=kernel,
        use_cache=use_cache and settings.cache,
        cache_dir=config.build_dir / "nbcd" / "cache",
        forked=forked,
    )


OutcomeCallback = Callable[[NotebookOutcome], None]


def run_tests(
    paths: Sequence[Path],
    options: TestOptions,
    *,
    on_outcome: OutcomeCallback | None = None,
) -> TestReport:
    """Test every notebook in paths and return the report (the engine of `nbcd test`)."""
    return asyncio.run(async_run_tests(paths, options, on_outcome=on_outcome))


async def async_run_tests(
    paths: Sequence[Path],
    options: TestOptions,
    *,
    on_outcome: OutcomeCallback | None = None,
) -> TestReport:
    """The async implementation of run_tests."""
    started = time.perf_counter()
    jobs = options.jobs or os.cpu_count() or 1
    cache = PassCache(options.cache_dir) if options.use_cache and options.cache_dir else None
    outcomes: dict[int, NotebookOutcome] = {}

    def report(index: int, outcome: NotebookOutcome) -> None:
        outcomes[index] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    # unreadable and unchanged notebooks are settled before any kernel starts, so an
    # all-cached rerun never pays for the fork server
    pending: list[tuple[int, _Pending]] = []
    for index, path in enumerate(paths):
        checked = _check(path, options, cache)
        if isinstance(checked, NotebookOutcome):
            report(index, checked)
        else:
            pending.append((index, checked))
    if pending:
        semaphore = asyncio.Semaphore(jobs)
        pool = _open_pool(min(jobs, len(pending)), options)

        async def one(index: int, item: _Pending) -> None:
            async with semaphore:
                report(index, await _test_one(item, options, cache, pool))

        try:
            if pool is not None:
                await pool.__aenter__()
            await asyncio.gather(*(one(index, item) for index, item in pending))
        finally:
            if pool is not None:
                await pool.__aexit__(None, None, None)
    ordered = tuple(outcomes[index] for index in range(len(paths)))
    return TestReport(ordered, time.perf_counter() - started)


def _open_pool(jobs: int, options: TestOptions) -> Any:
    if not options.forked:
        return None
    try:
        from nbcd.kernels import KernelPool
    except ImportError:
        return None
    return KernelPool(size=jobs, kernel_name=options.kernel or "python3")


@dataclass(frozen=True)
class _Pending:
    """A readable notebook that has to run, with its cache key ("" without a cache)."""

    path: Path
    stored: NotebookNode
    key: str


def _check(path: Path, options: TestOptions, cache: PassCache | None) -> NotebookOutcome | _Pending:
    """Read a notebook and look it up in the cache: an outcome already, or work to do."""
    started = time.perf_counter()
    try:
        raw = path.read_bytes()
        key = ""
        if cache is not None:
            # the key needs only the bytes and the metadata: a hit skips nbformat's validation
            inputs = declared_inputs(path, _metadata_of(raw))
            key = notebook_key(path, raw, options=options.cache_options(), inputs=inputs)
            if cache.hit(key) is not None:
                return NotebookOutcome(path, "cached", time.perf_counter() - started, "unchanged")
        stored = read_notebook(path)
    except (NbcdError, OSError) as exc:
        code = exc.exit_code if isinstance(exc, NbcdError) else EXIT_USAGE
        return NotebookOutcome(path, "error", 0.0, str(exc), exit_code=code)
    return _Pending(path, stored, key)


def _metadata_of(raw: bytes) -> dict[str, Any]:
    """A notebook's metadata from its raw JSON, or {} when it is not a notebook."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    metadata = data.get("metadata") if isinstance(data, dict) else None
    return metadata if isinstance(metadata, dict) else {}


async def _test_one(
    item: _Pending, options: TestOptions, cache: PassCache | None, pool: Any
) -> NotebookOutcome:
    path, stored = item.path, item.stored
    started = time.perf_counter()
    kernel = options.kernel or kernel_name(stored) or "python3"
    try:
        fresh = await _execute(path, _prepared(stored), kernel, options, pool)
    except NbcdError as exc:
        return NotebookOutcome(
            path, "error", time.perf_counter() - started, str(exc), exit_code=exc.exit_code
        )
    outcome = _judge(
        path, stored, fresh.notebook, fresh.failure, options, time.perf_counter() - started
    )
    if cache is not None and outcome.status == "passed":
        cache.record(item.key, path, outcome.duration_s)
    return outcome


async def _execute(
    path: Path, nb: NotebookNode, kernel: str, options: TestOptions, pool: Any
) -> ExecutionResult:
    from nbcd.execute import async_execute_notebook

    # notebooks of another kernel than the pool's start their kernel the ordinary way
    pooled = pool is not None and kernel == pool.kernel_name
    handle = await pool.acquire(path.parent) if pooled else None
    try:
        # every cell runs even after an error, as in nbval, so that all problems are
        # reported; which errors were expected is decided afterwards from the cell markers
        return await async_execute_notebook(
            nb,
            cwd=path.parent,
            kernel_name=kernel,
            timeout=options.timeout,
            allow_errors=True,
            km=handle.km if handle else None,
            kc=handle.kc if handle else None,
        )
    finally:
        if handle is not None:
            await pool.release(handle)


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
    options: TestOptions,
    duration: float,
) -> NotebookOutcome:
    if failure is not None and failure.kind in ("timeout", "died"):
        what = "timed out" if failure.kind == "timeout" else "killed the kernel"
        message = (
            f"{cell_label(failure.cell_index)} {what} ({failure.evalue}); "
            f"source: {source_excerpt(failure.source)}"
        )
        return NotebookOutcome(
            path, "error", duration, message, failure=failure, exit_code=EXIT_EXECUTION
        )
    if options.mode == "run":
        mismatches = _unexpected_errors(fresh, failure)
    else:
        mismatches = compare_notebook(stored, fresh, options.compare)
    if mismatches:
        first = mismatches[0]
        more = f" (+{len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        message = f"{cell_label(first.cell_index)}: {first.message}{more}"
        return NotebookOutcome(
            path, "failed", duration, message, tuple(mismatches), failure, EXIT_CHECK_FAILED
        )
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
