"""A pool of fresh IPython kernels, forked from a warm parent so each starts in milliseconds.

A kernel started the usual way spends ~0.5 s importing IPython, and jupyter_client's ready
check and graceful shutdown idle on top. Here a *fork server*, a process that has imported the
kernel machinery once, forks a child per kernel that changes folder, takes its environment and
runs a real ``IPKernelApp``: a process and a fresh interpreter per notebook, only the imports
shared (the server lives in :mod:`nbcd.execute.forkserver`). An ordinary
``AsyncKernelManager`` drives it (its provisioner asks the server instead of ``Popen``), so
nbclient runs it unchanged::

    async with KernelPool(2) as pool:
        handle = await pool.acquire(path.parent)
        client = NotebookClient(nb, km=handle.km)
        client.kc = handle.kc
        await client.async_execute()
        await pool.release(handle)

Without fork (no ``os.fork``, a kernelspec that is not this interpreter's ipykernel, or
``forked=False``) kernels start the ordinary way, still without the idle waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

from nbcd.errors import KernelError, KernelNotFoundError
from nbcd.execute.forkserver import POLL_S, ForkServer
from nbcd.execute.provisioner import ForkProvisioner

__all__ = ["KernelHandle", "KernelPool"]

_log = logging.getLogger(__name__)

_RECONNECT_MS = 5
_Where = tuple[Path, frozenset[str]]  # a kernel's working folder and the libraries it imports


@dataclass(eq=False)
class KernelHandle:
    """A kernel ready to execute; give ``km`` and ``kc`` to nbclient."""

    km: AsyncKernelManager
    kc: AsyncKernelClient
    cwd: Path
    forked: bool
    log_path: Path  # the kernel process's own stdout and stderr
    startup_seconds: float = 0.0  # how long acquire() took
    kernel_info: dict[str, Any] | None = None  # the content of its kernel_info reply

    @property
    def pid(self) -> int | None:
        """The kernel's process id (also its process group)."""
        pid: int | None = getattr(self.km.provisioner, "pid", None)
        return pid

    async def is_alive(self) -> bool:
        """Whether the kernel process is still running."""
        return bool(await self.km.is_alive())

    def log_tail(self, limit: int = 2000) -> str:
        """The end of what the kernel process wrote outside of its messages."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-limit:]
        return ""


def _is_forkable(argv: list[str]) -> bool:
    """Whether a kernelspec runs `python -m ipykernel_launcher` with this interpreter."""
    # jupyter_client replaces these names with sys.executable; other paths may be other venvs.
    pythons = {"python", "python{}".format(*sys.version_info), sys.executable}
    pythons.add("python{}.{}".format(*sys.version_info))
    launch = argv[1:3] in (["-m", "ipykernel_launcher"], ["-m", "ipykernel"])
    return hasattr(os, "fork") and bool(argv) and argv[0] in pythons and launch


class KernelPool:
    """Hand out fresh kernels, at most ``size`` at once, and kill them on release.

    With ``prestart``, each acquire() starts spare kernels in the same folder, so the next
    starts overlap this notebook's run: as many as :meth:`plan` said notebooks of that kind
    are still to come, up to ``size`` (one when nothing was planned). A spare serves only that
    folder: IPython records the folder it starts in, so a kernel cannot move without leaving a
    trace. Use the pool from
    one event loop (or only through the blocking methods).

    With ``warm_imports``, :meth:`plan` starts a *template* fork server per folder and set of
    libraries that notebooks there import; a kernel asked for with ``imports`` is forked from
    the template with the most of them that imports nothing else, so its notebook does not
    pay for importing them. It is still a fresh process with no user state.
    """

    def __init__(
        self,
        size: int = 1,
        kernel_name: str = "python3",
        env: Mapping[str, str] | None = None,
        forked: bool = True,
        prestart: bool = True,
        startup_timeout: float = 60.0,
        warm_imports: bool = True,
        max_templates: int = 4,
    ) -> None:
        self.size = size
        self.kernel_name = kernel_name
        self.env = dict(env or {})  # on top of os.environ
        self.forked = forked  # after start(): whether kernels really are forked
        self.prestart = prestart
        self.startup_timeout = startup_timeout
        self._slots = asyncio.Semaphore(size)
        self._held: set[KernelHandle] = set()
        self._live: set[KernelHandle] = set()
        self._spares: list[tuple[_Where, asyncio.Future[KernelHandle]]] = []
        self._expected: dict[_Where, int] = {}  # planned kernels not yet acquired
        self._server: ForkServer | None = None
        self._base: asyncio.Future[ForkServer | None] | None = None  # the server, once ready
        self.warm_imports = warm_imports
        self.max_templates = max_templates
        self._templates: dict[_Where, asyncio.Future[ForkServer | None]] = {}
        self._context: zmq.asyncio.Context | None = None
        self._workdir: Path | None = None
        self._spec: KernelSpec | None = None  # read once by start(), not once per kernel

    def adopt(self, server: ForkServer, workdir: Path) -> None:
        """Use a fork server launched before the pool, in ``workdir`` (which the pool removes).

        Launched early, the server imports the kernel machinery while the caller still
        prepares; :meth:`start` drops it if the kernelspec is not this interpreter's ipykernel.
        """
        assert self._server is None and self._workdir is None, "adopt() before start()"
        self._server, self._workdir = server, workdir

    async def start(self) -> None:
        """Check the kernelspec and, if it can be forked, start the fork server.

        It does not wait for the server: kernels and templates asked for meanwhile are
        forked as soon as it is ready (or start the ordinary way if it never is).
        """
        try:
            spec = AsyncKernelManager(kernel_name=self.kernel_name).kernel_spec
        except NoSuchKernel:
            await self._drop_server(kill=True)  # adopted, never used
            raise KernelNotFoundError(self.kernel_name) from None
        assert spec is not None
        self._spec = spec
        # One context for all kernels: one I/O thread, not a thread and a linger per kernel.
        self._context = zmq.asyncio.Context()
        # Channels connect before the kernel listens, and ZMQ retries a refused connection
        # after RECONNECT_IVL: 100 ms by default, most of a forked kernel's start.
        self._context.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_MS)
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="nbcd-kernels-"))
        custom = spec.metadata.get("kernel_provisioner")
        self.forked = self.forked and not custom and _is_forkable(spec.argv)
        if not self.forked:
            await self._drop_server(kill=True)  # adopted, never used
            return
        try:
            self._server = self._server or ForkServer.launch(
                self._workdir, {**os.environ, **self.env}
            )
        except KernelError as exc:  # slower kernels beat none
            _log.warning("%s; starting kernels without fork", exc)
            self.forked = False
            return
        self._base = asyncio.ensure_future(self._wait_base(self._server))

    async def _wait_base(self, server: ForkServer) -> ForkServer | None:
        try:
            await server.wait_ready(self.startup_timeout)
        except KernelError as exc:  # slower kernels beat none
            _log.warning("%s; starting kernels without fork", exc)
            self.forked = False
            await self._drop_server()
            return None
        return server

    async def _drop_server(self, kill: bool = False) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.close, kill=kill)

    def plan(self, cwd: Path | str, imports: frozenset[str], expect: bool = True) -> None:
        """Start, in the background, a template for kernels in cwd that import these.

        With ``expect``, one more kernel of this kind is to come (spares are made for those);
        without, the pool keeps one spare of the kind last acquired, for callers that cannot
        say what comes next.
        """
        where = (Path(cwd).resolve(), frozenset(imports))
        if expect:
            self._expected[where] = self._expected.get(where, 0) + 1
        usable = self._server is not None and self.warm_imports and where[1]
        if not usable or where in self._templates or len(self._templates) >= self.max_templates:
            return
        self._templates[where] = asyncio.ensure_future(self._start_template(where))

    async def _start_template(self, where: _Where) -> ForkServer | None:
        assert self._workdir is not None
        cwd, imports = where
        base, server = self._server, None
        if base is None:  # the base server failed meanwhile
            return None
        try:
            # forked from the base server: the kernel machinery is imported once for all
            env = {**os.environ, **self.env}
            log_path = self._workdir / f"template-{uuid.uuid4().hex[:8]}.log"
            server = await base.fork_template(tuple(sorted(imports)), cwd, env, log_path)
            await server.wait_ready(self.startup_timeout)
            return server
        except (KernelError, OSError) as exc:  # a template that fails only costs warmth
            _log.info("no warm template for %s in %s: %s", sorted(imports), cwd, exc)
            if server is not None:
                await asyncio.to_thread(server.close)
            return None
        except BaseException:  # cancelled while it started: its process must not outlive us
            if server is not None:
                await asyncio.shield(asyncio.to_thread(server.close))
            raise

    async def _server_for(self, where: _Where) -> ForkServer | None:
        """The template with the most of a kernel's imports and nothing else, or the base."""
        cwd, imports = where
        fits = [w for w in self._templates if w[0] == cwd and w[1] <= imports]
        # shielded: a cancelled acquire() must not cancel what other kernels wait for
        for best in sorted(fits, key=lambda w: len(w[1]), reverse=True):
            server = await asyncio.shield(self._templates[best])
            if server is not None:
                return server
        return await asyncio.shield(self._base) if self._base is not None else None

    async def close(self) -> None:
        """Kill every kernel, the spares too, stop the fork servers, remove temporary files."""
        while self._spares:
            await self._drop_spare(self._spares[0])
        for handle in list(self._live):
            await self.release(handle)
        templates = list(self._templates.values())
        self._templates.clear()
        for template in templates:
            template.cancel()
        # each server exits as soon as its socket closes: close them all at once
        servers = [s for t in templates if (s := await _quietly(t)) is not None]
        await asyncio.gather(*(asyncio.to_thread(server.close) for server in servers))
        if self._base is not None:
            self._base.cancel()
            await _quietly(self._base)
            self._base = None
        await self._drop_server()
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def __aenter__(self) -> KernelPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def acquire(self, cwd: Path | str, imports: frozenset[str] = frozenset()) -> KernelHandle:
        """Return a fresh kernel working in ``cwd``, ready to execute; wait for a free slot.

        ``imports`` are the libraries its notebook imports: the kernel comes from the best
        template :meth:`plan` started for them, if any.
        """
        cwd = Path(cwd).resolve()
        if not cwd.is_dir():
            raise KernelError(f"cannot start a kernel in {cwd}: not a directory")
        where = (cwd, frozenset(imports))
        await self._slots.acquire()
        began = time.perf_counter()
        try:
            handle = await self._take_spare(where) or await self._start_kernel(where)
        except BaseException:
            self._slots.release()
            raise
        self._held.add(handle)
        handle.startup_seconds = time.perf_counter() - began
        if where in self._expected:
            self._expected[where] = max(0, self._expected[where] - 1)
        if self.prestart:
            # the kernels still to come of this kind, as far as plan() said, up to one per slot
            wanted = min(self.size, self._expected.get(where, 1))
            while sum(1 for w, _ in self._spares if w == where) < wanted:
                self._spares.append((where, asyncio.ensure_future(self._start_kernel(where))))
        return handle

    async def release(self, handle: KernelHandle) -> None:
        """Kill the kernel now: its state is thrown away, so a graceful shutdown is idle time."""
        if handle in self._held:
            self._held.discard(handle)
            self._slots.release()
        if handle not in self._live:
            return
        self._live.discard(handle)
        handle.kc.stop_channels()
        provisioner = handle.km.provisioner
        if provisioner is not None and provisioner.has_process:
            # Not km.shutdown_kernel(now=True): it interrupts first and polls every 0.1 s.
            await provisioner.kill()
            deadline = time.monotonic() + 5.0
            while await provisioner.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            if await provisioner.poll() is not None:
                await provisioner.wait()
        await handle.km.cleanup_resources()
        handle.log_path.unlink(missing_ok=True)

    async def _take_spare(self, where: _Where) -> KernelHandle | None:
        # Spares of another kind are dropped: the run has moved on from them. Loops, because
        # while one spare is dropped, a concurrent acquire() may make another.
        while other := next((s for s in self._spares if s[0] != where), None):
            await self._drop_spare(other)
        while self._spares:
            _, spare = self._spares.pop(0)
            with contextlib.suppress(KernelError):  # a start that keeps failing fails below
                if await (handle := await spare).is_alive():
                    return handle
                await self.release(handle)
        return None

    async def _drop_spare(self, spare: tuple[_Where, asyncio.Future[KernelHandle]]) -> None:
        if spare in self._spares:
            self._spares.remove(spare)
            _, starting = spare
            starting.cancel()  # if still starting, it kills its own kernel
            await asyncio.wait([starting])
            if not starting.cancelled() and starting.exception() is None:
                await self.release(starting.result())

    async def _start_kernel(self, where: _Where) -> KernelHandle:
        assert self._workdir is not None, "KernelPool used before start()"
        cwd = where[0]
        server = await self._server_for(where)
        km = AsyncKernelManager(kernel_name=self.kernel_name, context=self._context)
        km._kernel_spec = self._spec  # its property would read kernel.json from disk again
        km.kernel_id = str(uuid.uuid4())
        # local sockets, not TCP: no race for free ports between kernels started at once, and
        # nothing listening on the network (ipykernel warns about unencrypted TCP otherwise)
        km.transport = "ipc"
        km.ip = str(self._workdir / f"ipc-{km.kernel_id[:8]}")
        log_path = self._workdir / f"kernel-{km.kernel_id}.log"
        if server is not None:
            km.provisioner = ForkProvisioner(
                kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km
            )
            km.provisioner.server, km.provisioner.log_path = server, str(log_path)
        # The client exists before the kernel so that every failure cleans up one way.
        forked = server is not None
        handle = KernelHandle(km, km.client(context=self._context), cwd, forked, log_path)
        self._live.add(handle)
        try:
            with open(log_path, "ab") as log:  # Popen dups it; a forked child opens the path
                env = {**os.environ, **self.env}
                await km.start_kernel(cwd=str(cwd), env=env, stdout=log, stderr=log)
            handle.kc.load_connection_info(km.get_connection_info())
            # No stdin channel, so input() raises rather than waiting for a human; no
            # heartbeat thread, as liveness comes from the process itself.
            handle.kc.start_channels(stdin=False, hb=False)
            await self._wait_ready(handle)
        except BaseException:
            await self.release(handle)
            raise
        return handle

    async def _wait_ready(self, handle: KernelHandle) -> None:
        # Like kc.wait_for_ready(), which retries on a 1 s timeout and always idles 0.2 s at
        # the end, but every wait here returns as soon as a message arrives.
        kc, deadline = handle.kc, time.monotonic() + self.startup_timeout
        while True:
            msg_id = kc.kernel_info()
            reply: dict[str, Any] = {"parent_header": {}}
            while reply["parent_header"].get("msg_id") != msg_id:
                try:
                    reply = await kc.shell_channel.get_msg(timeout=0.05)
                except Empty:
                    await self._check_starting(handle, deadline)
            # The reply proves shell works. iopub drops messages until its subscription has
            # reached the kernel, so only a message there proves iopub works.
            try:
                await kc.iopub_channel.get_msg(timeout=0.25)
            except Empty:
                await self._check_starting(handle, deadline)
                continue
            while await kc.iopub_channel.msg_ready():
                await kc.iopub_channel.get_msg(timeout=0)
            handle.kernel_info = reply.get("content")
            return

    async def _check_starting(self, handle: KernelHandle, deadline: float) -> None:
        if not await handle.is_alive():
            tail = handle.log_tail()
            raise KernelError(
                f"kernel {self.kernel_name!r} exited before it was ready"
                + (f"; it wrote:\n{tail}" if tail else "")
            )
        if time.monotonic() > deadline:
            raise KernelError(f"kernel {self.kernel_name!r} not ready in {self.startup_timeout} s")

    # Blocking versions for callers without an event loop. They use jupyter_core's run_sync
    # like nbclient, so they share one loop per thread with nbclient's blocking execute().
    def __enter__(self) -> KernelPool:
        run_sync(self.start)()
        return self

    def __exit__(self, *exc_info: object) -> None:
        run_sync(self.close)()

    def acquire_sync(self, cwd: Path | str, imports: frozenset[str] = frozenset()) -> KernelHandle:
        """Blocking :meth:`acquire`."""
        handle: KernelHandle = run_sync(self.acquire)(cwd, imports)
        return handle

    def release_sync(self, handle: KernelHandle) -> None:
        """Blocking :meth:`release`."""
        run_sync(self.release)(handle)


async def _quietly(future: asyncio.Future[ForkServer | None]) -> ForkServer | None:
    """A server future's result; None when it was cancelled or failed."""
    with contextlib.suppress(BaseException):
        return await future
    return None
