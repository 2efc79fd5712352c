"""ClusterExecutions: the test and run stages' notebooks as Dask tasks, one task per notebook.

The client side of nbcd.cluster.worker. For each :class:`~nbcd.execute.dispatch.ExecutionRequest`
it sends what the notebook needs (nbcd.cluster.transfer: the cache's record of its inputs, or
the project archive, each file or archive put on the cluster once per run), submits
:func:`~nbcd.cluster.worker.run_job`, waits without holding a thread, writes back the files the
notebook wrote and returns the execution as a local run would have.

It connects on the first batch (an all-cached run never connects) and keeps one connection
until :meth:`ClusterExecutions.close`, so `nbcd ci` shares it between its test and run stages.

**A worker that dies** mid-notebook: the scheduler runs the task again on another worker, and
the task itself refuses a third attempt (nbcd.cluster.worker). When the scheduler gives up first
(``KilledWorker``, with ``allowed-failures`` under 2), the notebook is submitted again here if it
has had only one attempt. Two lost workers make a KernelDiedError naming them, exit 3 as for a
dead kernel; a retry that passed leaves a warning. A cluster left without any worker for
``timeout`` seconds ends the waiting with a ClusterError rather than a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcd.cluster.connect import CONNECT_TIMEOUT_S, ClusterError, connect, describe_address
from nbcd.cluster.transfer import (
    known_files,
    max_bytes,
    project_archive,
    read_files,
    too_big,
    write_back,
)
from nbcd.cluster.worker import (
    ATTEMPTS_KEY,
    MAX_ATTEMPTS,
    Job,
    JobResult,
    PoolsPlugin,
    lost_error,
    rebuild_error,
    run_job,
)
from nbcd.errors import ExecutionError
from nbcd.execute.dispatch import Executed, ExecutionRequest, Plan
from nbcd.notebook import display_path

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["ClusterExecutions"]

_POLL_S = 2.0  # how often a wait looks whether the cluster still has workers


class ClusterExecutions:
    """Executions on the Dask cluster at ``address`` (``tcp://...`` or ``local:N``).

    ``root`` is the project: a notebook under it without a cache record takes the project
    archive along (``build_dir`` left out), any other notebook its own folder. ``jobs``
    limits how many notebooks are submitted at once (None: all, the scheduler queues them).
    ``fork`` and ``warm_imports`` are the test options of the same names, for the workers'
    pools.
    """

    def __init__(
        self,
        address: str,
        *,
        root: Path | None = None,
        build_dir: Path | None = None,
        jobs: int | None = None,
        fork: bool = True,
        warm_imports: bool = True,
        config: Any = None,
        timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.address = address
        self.root = root.resolve() if root is not None else None
        self.build_dir = build_dir
        self.jobs = jobs
        self.fork = fork
        self.warm_imports = warm_imports
        self.config = config
        self.timeout = timeout
        self.run = uuid.uuid4().hex
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None
        # data scattered to the cluster this run, kept referenced so it stays there
        self._archives: dict[Path, Future] = {}
        self._files: dict[tuple[str, int, int], Future] = {}
        self._no_workers_since: float | None = None
        self._checked_at = 0.0

    @property
    def limit(self) -> int | None:
        """``jobs`` when given; else every notebook is submitted and the scheduler queues."""
        return self.jobs

    async def start(self, plans: Sequence[Plan]) -> None:
        """Connect (once) before the batch; a ClusterError when the cluster cannot be used."""
        await asyncio.to_thread(self._connect)

    def _connect(self) -> Client:
        with self._lock:
            if self._client is None:
                client = self._stack.enter_context(
                    connect(self.address, config=self.config, timeout=self.timeout)
                )
                # the workers' pools live as long as the worker; the plugin closes them then
                client.register_plugin(PoolsPlugin(), name=PoolsPlugin.name)
                self._client = client
            return self._client

    async def execute(self, request: ExecutionRequest) -> Executed:
        """Run the notebook on a worker; its written files are written here before returning."""
        client = await asyncio.to_thread(self._connect)
        files, archive, archive_root = await asyncio.to_thread(self._upload, client, request)
        archive_id = archive.key if archive is not None else ""
        job = Job(
            run=self.run,
            job=str(next(self._count)),
            notebook=request.notebook,
            cwd=str(request.path.parent.resolve()),
            kernel=request.kernel,
            timeout=request.timeout,
            allow_errors=request.allow_errors,
            record_inputs=request.record_inputs,
            imports=request.imports,
            fork=self.fork,
            warm_imports=self.warm_imports,
            archive_root=archive_root,
            archive_id=str(archive_id),
        )
        shown = display_path(request.path)
        for attempt in itertools.count():
            key = f"nbcd-{request.path.stem}-{self.run[:8]}-{job.job}-{attempt}"
            future = client.submit(run_job, job, files, archive, key=key, pure=False)
            try:
                result: JobResult = await self._wait(client, future)
            except Exception as exc:
                from distributed import KilledWorker

                if not isinstance(exc, KilledWorker):
                    reason = " ".join(str(exc).split()) or type(exc).__name__  # one line
                    message = f"{shown}: the cluster failed to run it ({reason})"
                    raise ExecutionError(message) from None
                # the scheduler gave up on its own (allowed-failures < 2): retry if we have not
                tried = await asyncio.to_thread(self._attempts, client, job)
                if len(tried) < MAX_ATTEMPTS:
                    continue
                raise lost_error(shown, tuple(tried)) from None
            finally:
                future.release()
            return self._finish(shown, result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish(self, shown: str, result: JobResult) -> Executed:
        if result.lost:
            raise lost_error(shown, result.lost)
        if result.error is not None:
            raise rebuild_error(*result.error)
        assert result.execution is not None
        warnings = tuple(
            f"{shown}: the worker at {dead} died while running it; it ran again on {result.worker}"
            for dead in result.tried
        )
        written = write_back(result.written)
        took = sum(result.seconds.values()) if result.seconds else None
        return Executed(result.execution, result.worker, written, warnings, took)

    def _attempts(self, client: Client, job: Job) -> list[str]:
        return list(client.get_metadata([ATTEMPTS_KEY, job.run, job.job], default=[]) or [])

    def _upload(
        self, client: Client, request: ExecutionRequest
    ) -> tuple[dict[str, Any], Future | None, str]:
        """Put what the notebook needs on the cluster (once per file or archive per run)."""
        limit = max_bytes()
        shown = display_path(request.path)
        folder = request.path.parent.resolve()
        inside = self.root is not None and (folder == self.root or self.root in folder.parents)
        root = self.root if inside and self.root is not None else folder
        archive = None
        wanted = list(request.declared)
        if request.inputs is None:
            archive = self._archive(client, root, limit)
            # declared inputs inside the project are in the archive already
            wanted = [p for p in wanted if root not in p.resolve().parents]
        else:
            wanted += request.inputs
        shipment = read_files(known_files(wanted), shown, limit)
        if shipment.size > limit:
            raise too_big(f"{shown}: the files it reads", shipment.size, limit)
        files: dict[str, Any] = {}
        fresh: dict[tuple[str, int, int], bytes] = {}
        for name, (data, mtime_ns) in shipment.files.items():
            memo = (name, len(data), mtime_ns)
            if memo not in self._files:
                fresh[memo] = data
            files[name] = memo
        for memo, data in fresh.items():
            self._files[memo] = _hold(client, data, f"nbcd-file-{self.run[:8]}-{len(self._files)}")
        # (future, mtime): the worker receives (bytes, mtime), Dask resolving the future
        by_name = {name: (self._files[memo], memo[2]) for name, memo in files.items()}
        return by_name, archive, str(root) if archive is not None else ""

    def _archive(self, client: Client, root: Path, limit: int) -> Future:
        with self._lock:
            if root not in self._archives:
                exclude = [self.build_dir] if self.build_dir is not None else []
                data = project_archive(root, exclude, limit)
                key = f"nbcd-archive-{self.run[:8]}-{len(self._archives)}"
                self._archives[root] = _hold(client, data, key)
            return self._archives[root]

    async def _wait(self, client: Client, future: Future) -> Any:
        """The task's result, awaited without a thread; a cluster with no workers left fails."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def settle(_: Any) -> None:  # runs in the client's own thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits anymore
                loop.call_soon_threadsafe(_done, finished)

        future.add_done_callback(settle)
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(finished), _POLL_S)
                    break
                except asyncio.TimeoutError:  # not TimeoutError: they differ on Python 3.10
                    await asyncio.to_thread(self._check_workers, client)
        except BaseException:
            future.cancel()  # interrupted: the cluster drops it (a running notebook ends there)
            raise
        return await asyncio.to_thread(future.result)

    def _check_workers(self, client: Client) -> None:
        """Fail once the cluster has had no worker for ``timeout`` s (asked once per poll)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at < _POLL_S:
                return  # another waiting notebook just asked
            self._checked_at = now
        count = len(client.nthreads())
        if count:
            self._no_workers_since = None
            return
        now = time.monotonic()
        self._no_workers_since = self._no_workers_since or now
        if now - self._no_workers_since > self.timeout:
            raise ClusterError(
                f"{describe_address(self.address)} has had no workers for "
                f"{self.timeout:g} s; its notebooks cannot run"
            )

    async def close(self) -> None:
        """Drop the data sent, forget the attempts, close what connect() opened."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Blocking :meth:`close`."""
        with self._lock:
            client, self._client = self._client, None
            futures = [*self._archives.values(), *self._files.values()]
            self._archives.clear()
            self._files.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                client.set_metadata([ATTEMPTS_KEY, self.run], None)
            for future in futures:
                with contextlib.suppress(Exception):
                    future.release()
        self._stack.close()

    def __enter__(self) -> ClusterExecutions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_sync()


def _blob(data: bytes) -> bytes:
    """The task that holds data: its result is its argument."""
    return data


def _hold(client: Client, data: bytes, key: str) -> Future:
    """Put data on the cluster once for every task that needs it, surviving lost workers.

    Not ``client.scatter``: scattered data lost with its worker cannot be made again, and the
    scheduler then cancels every task that needs it, retries included. A task whose spec holds
    the bytes is run again on another worker instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "large object in the task graph": on purpose
        return client.submit(_blob, data, key=key, pure=False)


def _done(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)
