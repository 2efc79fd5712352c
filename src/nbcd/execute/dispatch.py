"""Where notebooks execute: the Executions protocol, and LocalExecutions on the warm kernel pool.

The test stage (and the run stage, with ``--cluster``) describe each execution as an
:class:`ExecutionRequest` and hand it to an :class:`Executions`, which returns an
:class:`Executed`. Two implementations exist:

- :class:`LocalExecutions`: a :class:`~nbcd.execute.kernels.KernelPool` here, as `nbcd test`
  has always run (a notebook of another kernel starts its kernel the ordinary way);
- ``nbcd.cluster.executions.ClusterExecutions``: one Dask task per notebook, run on a worker's
  own warm pool, with the files it needs sent along and the files it wrote brought back.

Whoever makes an Executions closes it; ``start`` may be called once per batch, ``execute``
concurrently from one event loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from nbcd.execute.executor import ExecutionResult, ProgressCallback
    from nbcd.execute.prelaunch import LaunchedServer

__all__ = ["Executed", "ExecutionRequest", "Executions", "LocalExecutions", "Plan"]

#: What a batch will run, for warming up before the first execution: (notebook, kernel, imports)
Plan = tuple[Path, str, frozenset[str]]


@dataclass(frozen=True)
class ExecutionRequest:
    """One notebook to execute in a fresh kernel working in its folder."""

    path: Path  # the notebook file (absolute); its folder is the kernel's working folder
    notebook: NotebookNode  # what to execute (prepared by the caller; never changed)
    kernel: str
    timeout: float | None
    allow_errors: bool = True  # the test stage runs every cell; the run stage stops
    record_inputs: bool = False  # report what it used (nbcd.execute.recorder), for the cache
    imports: frozenset[str] = frozenset()  # installed libraries it imports (warm templates)
    # what it reads, where known: the cache's record of its last pass (None: no record)
    inputs: tuple[Path, ...] | None = None
    declared: tuple[Path, ...] = ()  # metadata nbcd.inputs, which the recorder cannot see
    on_progress: ProgressCallback | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Executed:
    """An execution's result, and where it happened."""

    result: ExecutionResult
    worker: str = ""  # the Dask worker's address; "" for this machine
    written: tuple[Path, ...] = ()  # files the cluster wrote back here
    warnings: tuple[str, ...] = ()  # what went wrong without changing the verdict
    # seconds it took where it ran, without the time it waited in a cluster's queue
    duration_s: float | None = None


class Executions(Protocol):
    """Runs ExecutionRequests somewhere: here, or on a cluster."""

    @property
    def limit(self) -> int | None:
        """How many executions to have running at once; None: as many as there are."""

    async def start(self, plans: Sequence[Plan]) -> None:
        """Get ready for a batch (start kernels, connect); plans say what will run."""

    async def execute(self, request: ExecutionRequest) -> Executed:
        """Run one notebook; raises NbcdError when it cannot run at all."""

    async def close(self) -> None:
        """Stop everything start() and execute() started."""


class LocalExecutions:
    """Executions on this machine: forked kernels from a KernelPool, at most ``jobs`` at once.

    A pool of ``min(jobs, batch)`` kernels for ``kernel`` is made by :meth:`start` (with
    ``fork``); notebooks of another kernel, or every notebook without ``fork``, start their
    kernel the ordinary way.
    """

    def __init__(
        self, jobs: int, *, kernel: str = "python3", fork: bool = True, warm_imports: bool = True
    ) -> None:
        self.jobs = jobs
        self.kernel = kernel
        self.fork = fork
        self.warm_imports = warm_imports
        self._pool: Any = None
        self._early: tuple[LaunchedServer, Path] | None = None  # launched before start()

    @property
    def limit(self) -> int | None:
        """At most ``jobs`` notebooks at once."""
        return self.jobs

    def launch(self) -> None:
        """Have the kernel fork server starting, so that it imports while the caller prepares.

        Takes the server the command line started (nbcd.execute.prelaunch), or starts one:
        cheap, a process spawn and no Jupyter import. Optional; start() uses it.
        """
        if not self.fork or self._early is not None or self._pool is not None:
            return
        from nbcd.execute.prelaunch import launch_in_new_folder, take_early

        self._early = take_early()
        if self._early is None and hasattr(os, "fork"):
            self._early = launch_in_new_folder()

    async def start(self, plans: Sequence[Plan]) -> None:
        """Start the pool and, in the background, templates for the notebooks' imports."""
        if not self.fork or not plans or self._pool is not None:
            return
        try:
            from nbcd.execute.kernels import KernelPool
        except ImportError:
            return
        pool = KernelPool(
            size=min(self.jobs, len(plans)),
            kernel_name=self.kernel,
            warm_imports=self.warm_imports,
        )
        if self._early is not None:
            from nbcd.execute.forkserver import ForkServer

            launched, workdir = self._early
            self._early = None
            pool.adopt(ForkServer.adopt(launched), workdir)
        await pool.__aenter__()
        self._pool = pool
        for path, kernel, imports in plans:  # templates start while the first notebooks run
            if kernel == pool.kernel_name:
                pool.plan(path.parent, imports)

    async def execute(self, request: ExecutionRequest) -> Executed:
        """Run the notebook in a fresh kernel here."""
        from nbcd.execute.executor import async_execute_notebook

        folder = request.path.parent
        pool = self._pool
        # notebooks of another kernel than the pool's start their kernel the ordinary way
        pooled = pool is not None and request.kernel == pool.kernel_name
        handle = await pool.acquire(folder, request.imports) if pooled else None
        try:
            result = await async_execute_notebook(
                request.notebook,
                cwd=folder,
                kernel_name=request.kernel,
                timeout=request.timeout,
                allow_errors=request.allow_errors,
                on_progress=request.on_progress,
                kernel=handle,
                record_inputs=request.record_inputs,
            )
        finally:
            if handle is not None:
                await pool.release(handle)
        return Executed(result)

    async def close(self) -> None:
        """Stop the pool: every kernel, the spare and the fork servers."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.__aexit__(None, None, None)
        early, self._early = self._early, None
        if early is not None:  # launched, never started
            from nbcd.execute.prelaunch import discard

            discard(early)
