"""The worker's side of a notebook task: a warm kernel pool per worker process, and run_job.

A Dask worker process keeps one :class:`_Runtime` from its first notebook to its shutdown: an
event loop in a thread of its own (the worker's own loop keeps its heartbeats) and a few
*slots*, one per notebook running at once. A slot is a folder and a
:class:`~nbcd.execute.kernels.KernelPool` of one kernel at a time: the folder stays the same
from task to task, so the pool's spare kernel, started in the notebook's folder while the
notebook runs, serves the next notebook of that folder, and its warm-import templates keep
serving too. Each notebook still gets a fresh kernel process.

:func:`run_job` is the task. It notes its attempt with the scheduler, lays the files out under
the slot (nbcd.cluster.transfer), executes the notebook there with the same executor as a
local run, and returns a :class:`JobResult`: the executed notebook, how it ended, what it used
(as paths of the client) and the files it wrote. :class:`PoolsPlugin` closes the runtime when
the worker closes (and ``atexit`` when there is no plugin).

**Retries.** A worker that dies takes its tasks with it, and the scheduler runs them again
elsewhere, up to its ``allowed-failures``. A notebook runs at most twice: every attempt adds its
worker's address under ``("nbcd-attempts", run, job)`` in the scheduler's metadata first, and
an attempt that finds two before it returns ``lost`` instead of running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nbcd.cluster.connect import require_distributed
from nbcd.cluster.transfer import NOISE_NAMES, client_path, max_bytes, slot_path, too_big
from nbcd.errors import ExecutionError, NbcdError

require_distributed()  # a one-line UsageError here, rather than an ImportError below

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from nbcd.execute.executor import ExecutionResult
    from nbcd.execute.kernels import KernelPool
    from nbcd.execute.recorder import RecordedInputs

__all__ = [
    "ATTEMPTS_KEY",
    "Job",
    "JobResult",
    "PoolsPlugin",
    "close_runtime",
    "lost_error",
    "rebuild_error",
    "run_job",
]

ATTEMPTS_KEY = "nbcd-attempts"
MAX_ATTEMPTS = 2  # the first run and one retry
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """One notebook to execute on a worker (everything but its files)."""

    run: str  # the client's run token: attempts are counted per run and job
    job: str
    notebook: NotebookNode
    cwd: str  # the notebook's folder on the client; mirrored under the slot
    kernel: str
    timeout: float | None
    allow_errors: bool
    record_inputs: bool
    imports: frozenset[str] = frozenset()
    fork: bool = True
    warm_imports: bool = True
    archive_root: str = ""  # where the project archive, if one is sent, unpacks
    archive_id: str = ""  # which archive: a slot that holds it unchanged skips unpacking


@dataclass(frozen=True)
class JobResult:
    """What an attempt sends back; exactly one of ``execution``, ``error`` and ``lost`` is set."""

    worker: str
    execution: ExecutionResult | None = None
    written: tuple[tuple[str, bytes], ...] = ()  # (path on the client, content)
    error: tuple[str, str] | None = None  # ("module:class" of an NbcdError, message)
    lost: tuple[str, ...] = ()  # the workers that died running it, when this one did not
    tried: tuple[str, ...] = ()  # workers that started it before this one (and died)
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went


def run_job(
    job: Job, files: dict[str, tuple[bytes, int]], archive: bytes | None = None
) -> JobResult:
    """The Dask task: run one notebook in a fresh kernel of this worker's warm pool."""
    from distributed import get_worker

    began = time.perf_counter()
    address = get_worker().address
    tried = _note_attempt(job, address)
    if len(tried) >= MAX_ATTEMPTS:
        return JobResult(address, lost=tuple(tried))
    runtime = _runtime()
    slot = runtime.take()
    cwd = slot_path(slot.root, job.cwd)
    before: _Snapshot = {}
    try:
        before = slot.prepare(job, cwd, files, archive)
        prepared = time.perf_counter()
        execution = runtime.call(slot.execute(job, cwd))
        ran = time.perf_counter()
        written = _written(slot.root, before, _snapshot(slot.root))
        seconds = {"prepare": prepared - began, "execute": ran - prepared}
        seconds["collect"] = time.perf_counter() - ran
        execution = _as_client(execution, slot.root)
        return JobResult(address, execution, written, tried=tuple(tried), seconds=seconds)
    except NbcdError as exc:
        return JobResult(address, error=(_class_name(exc), str(exc)), tried=tuple(tried))
    except Exception as exc:  # a bug or a broken worker: an error of this notebook, not a crash
        message = f"the worker at {address} could not run it ({type(exc).__name__}: {exc})"
        error = (_class_name(ExecutionError(message)), message)
        return JobResult(address, error=error, tried=tuple(tried))
    finally:
        with contextlib.suppress(OSError):
            slot.tidy(before, cwd)
        runtime.give(slot)


def _class_name(error: BaseException) -> str:
    return f"{type(error).__module__}:{type(error).__qualname__}"


def rebuild_error(name: str, message: str) -> NbcdError:
    """The NbcdError a worker reported, as its own class (ExecutionError if unknown here).

    Built without calling the class's ``__init__``: some take other arguments than a message
    (KernelNotFoundError takes the kernel's name), and the message is already made.
    """
    import importlib

    module, _, qualname = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError, ValueError):
        cls = ExecutionError
    if not (isinstance(cls, type) and issubclass(cls, NbcdError)):
        cls = ExecutionError
    error: NbcdError = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def _note_attempt(job: Job, address: str) -> list[str]:
    """Record this attempt with the scheduler; the workers that started it before."""
    from distributed import get_client

    client = get_client()  # the worker's own client, made once per worker process
    keys = [ATTEMPTS_KEY, job.run, job.job]
    before = list(client.get_metadata(keys, default=[]) or [])
    client.set_metadata(keys, [*before, address])
    return before


def _as_client(execution: ExecutionResult, slot: Path) -> ExecutionResult:
    """The execution with recorded inputs named by their paths on the client."""
    inputs: RecordedInputs | None = execution.inputs
    if inputs is None:
        return execution
    mapped = replace(
        inputs,
        files=tuple(client_path(slot, p) for p in inputs.files),
        dirs=tuple(client_path(slot, p) for p in inputs.dirs),
        modules=tuple(client_path(slot, p) for p in inputs.modules),
    )
    return replace(execution, inputs=mapped)


def _clear(root: Path, keep: Path) -> None:
    """Empty ``root`` but for the folders on the way to ``keep``, which stay (emptied).

    A spare kernel may already be working in ``keep``; a folder made again would leave it in a
    deleted one.
    """
    if not root.is_dir():
        return
    for entry in list(os.scandir(root)):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and (path == keep or path in keep.parents):
            _clear(path, keep)
        elif entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _unpack(
    slot: Path, job: Job, files: dict[str, tuple[bytes, int]], archive: bytes | None
) -> None:
    if archive is not None:
        target = slot_path(slot, job.archive_root)
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=_bytes_io(archive)) as tar:
            # our own client's archive of its project: links may point anywhere, as there
            if hasattr(tarfile, "fully_trusted_filter"):
                tar.extractall(target, filter="fully_trusted")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(target)
    for name, (data, mtime_ns) in files.items():
        path = slot_path(slot, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(mtime_ns, mtime_ns))  # as it is on the client: some code looks
    slot_path(slot, job.cwd).mkdir(parents=True, exist_ok=True)


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


_Snapshot = dict[str, tuple[int, int]]  # path -> (size, mtime_ns); a folder's size is -1
_FOLDER = (-1, 0)


def _snapshot(root: Path) -> _Snapshot:
    """Every file and folder under root (tool caches left out)."""
    found: _Snapshot = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOISE_NAMES]
        found.update((os.path.join(folder, d), _FOLDER) for d in dirs)
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                stat = os.lstat(path)
                found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


def _written(root: Path, before: _Snapshot, after: _Snapshot) -> tuple[tuple[str, bytes], ...]:
    """The files made or changed under root since ``before``, as (client path, content)."""
    limit = max_bytes()
    total = 0
    written = []
    for path, state in after.items():
        if before.get(path) == state or state == _FOLDER or os.path.islink(path):
            continue
        if path.endswith((".pyc", ".pyo")):
            continue
        total += state[0]
        if total > limit:
            raise too_big("what the notebook wrote", total, limit)
        with contextlib.suppress(OSError):
            written.append((client_path(root, path), Path(path).read_bytes()))
    return tuple(written)


class _Slot:
    """A folder and the kernel pools of one notebook at a time.

    The project archive stays unpacked from one task to the next while the notebooks leave it
    as it was (new files and folders are removed after each task): unpacking a project for
    every notebook would cost more than running a small one.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pools: dict[tuple[str, bool], KernelPool] = {}
        self.archive = ""  # the archive unpacked here and left as it was, if any
        self.pristine: _Snapshot = {}

    def prepare(
        self, job: Job, cwd: Path, files: dict[str, tuple[bytes, int]], archive: bytes | None
    ) -> _Snapshot:
        """Lay out the job's files under the slot; what is there before the notebook runs."""
        if archive is not None and not files and job.archive_id == self.archive:
            return self.pristine
        self.archive, self.pristine = "", {}
        _clear(self.root, cwd)
        _unpack(self.root, job, files, archive)
        snapshot = _snapshot(self.root)
        if archive is not None and not files:
            self.archive, self.pristine = job.archive_id, snapshot
        return snapshot

    def tidy(self, before: _Snapshot, cwd: Path) -> None:
        """After a task: back to the unpacked archive, if only new files came; else empty."""
        if not self.archive:
            _clear(self.root, cwd)  # the disk is freed; the folder stays for the spare kernel
            return
        after = _snapshot(self.root)
        if any(after.get(path) != state for path, state in before.items()):
            self.archive, self.pristine = "", {}  # changed or deleted: unpack it again
            _clear(self.root, cwd)
            return
        for path in sorted(after.keys() - before.keys(), reverse=True):  # files before folders
            if after[path] == _FOLDER:
                shutil.rmtree(path, ignore_errors=True)
            else:
                Path(path).unlink(missing_ok=True)

    async def pool(self, kernel: str, warm_imports: bool) -> KernelPool:
        key = (kernel, warm_imports)
        if key not in self.pools:
            from nbcd.execute.kernels import KernelPool

            pool = KernelPool(size=1, kernel_name=kernel, warm_imports=warm_imports)
            try:
                await pool.start()
            except BaseException:
                await pool.close()
                raise
            self.pools[key] = pool
        return self.pools[key]

    async def execute(self, job: Job, cwd: Path) -> ExecutionResult:
        from nbcd.execute.executor import async_execute_notebook

        pool = await self.pool(job.kernel, job.warm_imports) if job.fork else None
        if pool is not None:
            pool.plan(cwd, job.imports, expect=False)  # tasks come one at a time
        handle = await pool.acquire(cwd, job.imports) if pool is not None else None
        try:
            return await async_execute_notebook(
                job.notebook,
                cwd=cwd,
                kernel_name=job.kernel,
                timeout=job.timeout,
                allow_errors=job.allow_errors,
                kernel=handle,
                record_inputs=job.record_inputs,
            )
        finally:
            if pool is not None and handle is not None:
                await pool.release(handle)

    async def close(self) -> None:
        for pool in self.pools.values():
            with contextlib.suppress(Exception):
                await pool.close()
        self.pools.clear()


class _Runtime:
    """The worker process's kernel loop thread and slots."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="nbcd-kernels", daemon=True
        )
        self.thread.start()
        self._lock = threading.Lock()
        self._free: list[_Slot] = []
        self._all: list[_Slot] = []

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the kernel loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def take(self) -> _Slot:
        with self._lock:
            if self._free:
                return self._free.pop()
            slot = _Slot(self.base / f"slot-{len(self._all)}")
            self._all.append(slot)
            return slot

    def give(self, slot: _Slot) -> None:
        with self._lock:
            self._free.append(slot)

    def close(self) -> None:
        async def close_all() -> None:
            for slot in self._all:
                await slot.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        shutil.rmtree(self.base, ignore_errors=True)


_lock = threading.Lock()
_current: _Runtime | None = None


def _runtime() -> _Runtime:
    global _current
    with _lock:
        if _current is None:
            from distributed import get_worker

            local = getattr(get_worker(), "local_directory", None) or tempfile.gettempdir()
            _current = _Runtime(Path(tempfile.mkdtemp(prefix="nbcd-", dir=local)))
            atexit.register(close_runtime)
        return _current


def close_runtime() -> None:
    """Stop this process's kernel pools and remove its slots (worker shutdown)."""
    global _current
    with _lock:
        runtime, _current = _current, None
    if runtime is not None:
        runtime.close()


class PoolsPlugin(WorkerPlugin):
    """Closes the worker's kernel pools when the worker closes (not when re-registered)."""

    name = "nbcd-kernel-pools"

    def teardown(self, worker: Any) -> None:
        """Close the pools if the worker is closing; a client registering again keeps them."""
        status = getattr(getattr(worker, "status", None), "name", "")
        if status in ("closing", "closed", "closing_gracefully", "failed"):
            close_runtime()


def lost_error(path: str, workers: tuple[str, ...]) -> NbcdError:
    """The error of a notebook whose workers died twice: names them; exit 3 (a kernel death)."""
    from nbcd.errors import KernelDiedError

    last = workers[-1] if workers else "unknown"
    before = f" (it was retried after the worker at {workers[0]} died)" if len(workers) > 1 else ""
    return KernelDiedError(f"{path}: the worker at {last} died while running it{before}")
