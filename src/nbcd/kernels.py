"""A pool of fresh IPython kernels, forked from a warm parent so each starts in milliseconds.

A kernel started the usual way spends ~0.5 s importing IPython, and jupyter_client's ready
check and graceful shutdown idle on top. Here a *fork server*, a process that has imported the
kernel machinery once, forks a child per kernel that changes folder, takes its environment and
runs a real ``IPKernelApp``: a process and a fresh interpreter per notebook, only the imports
shared. An ordinary ``AsyncKernelManager`` drives it (its provisioner asks the server instead of
``Popen``), so nbclient runs it unchanged::

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
import importlib.util
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.utils import run_sync

from nbcd.errors import KernelError

__all__ = ["KernelHandle", "KernelPool"]

_log = logging.getLogger(__name__)

# What a kernel imports while it starts. No user libraries: matplotlib, for one, reads
# matplotlibrc from the working folder and its config dir from the environment at import.
_PRELOAD = (
    *("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger"),
    *("IPython.core.completerlib", "IPython.core.debugger", "IPython.extensions.storemagic"),
    *("jupyter_client.session", "psutil", "sqlite3", "tornado.platform.asyncio", "tornado.queues"),
)
_RECONNECT_MS = 5
_POLL_S = 0.002  # between liveness checks while killing: cheap, and a kill takes ~1 ms


def _fork_server_main(preload: list[str], launcher: str) -> None:
    """Fork a kernel per JSON request line on stdin; report pids and exit codes on stdout.

    Runs in the server, copied there as source: importing the nbcd package instead would load
    all of nbcd's dependencies into every kernel.
    """
    import atexit
    import contextlib
    import importlib
    import json
    import os
    import select
    import shutil
    import signal
    import sys
    import threading
    import traceback

    if os.path.realpath(sys.path[0]) == os.path.realpath(os.path.dirname(sys.argv[0])):
        del sys.path[0]  # the script's folder, like the cwd `python -m ipykernel_launcher` drops
    start_env = dict(os.environ)
    for name in preload:
        with contextlib.suppress(Exception):  # a module that fails to import only costs warmth
            importlib.import_module(name)
    # Variables set by those imports (debugpy sets some), which a kernel would set itself.
    import_env = {k: v for k, v in os.environ.items() if start_env.get(k) != v}
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from imported code must not corrupt the replies

    def reply(message: dict[str, Any]) -> None:
        os.write(reply_fd, json.dumps(message).encode() + b"\n")  # short: one atomic write

    if threading.active_count() > 1:  # forking a threaded process can deadlock the child
        return reply({"error": f"preloaded modules started threads: {threading.enumerate()}"})
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children: set[int] = set()

    def run_child(request: dict[str, Any]) -> None:
        # Undo the server's set-up, then do what `python -m ipykernel_launcher` does.
        code: object = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (wake_r, wake_w, reply_fd):
                os.close(fd)
            os.setsid()  # own process group: a kill also takes the kernel's subprocesses
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"], **import_env, JPY_PARENT_PID=str(os.getppid()))
            sys.argv = [launcher, *request["argv"][3:]]
            from ipykernel import kernelapp

            # parent_handle defaults to $JPY_PARENT_PID as read at import, in the server: pass
            # it, so the kernel exits when the server does, as a kernel exits with its parent.
            kernelapp.IPKernelApp.launch_instance(parent_handle=os.getppid())
            code = 0
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
        finally:
            atexit._run_exitfuncs()  # what a normal interpreter exit would do
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 0 if code is None else 1)

    reply({"ready": os.getpid()})
    pending = b""
    try:
        while True:
            readable, _, _ = select.select([0, wake_r], [], [])
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                while children and (reaped := os.waitpid(-1, os.WNOHANG))[0]:
                    children.discard(reaped[0])
                    reply({"exit": reaped[0], "status": os.waitstatus_to_exitcode(reaped[1])})
            if 0 in readable:
                if not (chunk := os.read(0, 1 << 16)):
                    return  # the pool closed the pipe, or its process died
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    try:
                        pid = os.fork()
                    except OSError as exc:  # out of processes or memory: this kernel fails
                        reply({"error": str(exc)})
                        continue
                    if pid == 0:
                        run_child(json.loads(line))
                    children.add(pid)
                    reply({"pid": pid})
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        # The pool's temporary folder holds this script and the logs; if the pool was killed,
        # no one else will remove it.
        shutil.rmtree(os.path.dirname(os.path.abspath(sys.argv[0])), ignore_errors=True)


class _ForkServer:
    """The pool's end of the fork server: requests down one pipe, replies up the other."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        launcher = importlib.util.find_spec("ipykernel_launcher")
        if launcher is None or launcher.origin is None:
            raise KernelError("ipykernel is not installed")
        script, self._log_path = workdir / "fork_server.py", workdir / "fork_server.log"
        call = f"_fork_server_main({list(_PRELOAD)!r}, {launcher.origin!r})"
        try:
            source = inspect.getsource(_fork_server_main)
            script.write_text(f"from __future__ import annotations\nfrom typing import Any\n\n"
                              f"{source}\n{call}\n")  # fmt: skip
            with open(self._log_path, "wb") as log:
                # Its own session, so a Ctrl-C in the terminal reaches only the pool, which
                # then cleans up; if the pool dies instead, the closed stdin stops the server.
                self._proc = subprocess.Popen(
                    [sys.executable, str(script)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    cwd=workdir,
                    env=dict(env),
                    start_new_session=True,
                )
        except OSError as exc:  # no source files (a zipped install), or no interpreter
            raise KernelError(f"cannot start the kernel fork server: {exc}") from None
        self._lock = threading.Lock()
        self._ready: Future[dict[str, Any]] = Future()
        self._replies: deque[Future[dict[str, Any]]] = deque([self._ready])
        self._exits: dict[int, Future[int]] = {}
        self._dead = False
        # A thread rather than the event loop: exit notices then arrive while no loop runs
        # (the blocking API), and the pool works from whichever loop calls it.
        self._reader = threading.Thread(target=self._read, name="nbcd-fork-server", daemon=True)
        self._reader.start()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the server has imported the kernel machinery."""
        try:
            message = await asyncio.wait_for(asyncio.wrap_future(self._ready), timeout)
        except (asyncio.TimeoutError, KernelError):
            message = {"error": self._log_path.read_text(errors="replace")[-1000:] or "no reply"}
        if "error" in message:
            raise KernelError(f"kernel fork server unusable: {message['error']}")

    async def spawn(self, request: dict[str, Any]) -> tuple[int, Future[int]]:
        """Fork a kernel; return its pid and a future of its exit code."""
        reply: Future[dict[str, Any]] = Future()
        with self._lock:
            try:
                if self._dead or self._proc.stdin is None:
                    raise BrokenPipeError
                self._replies.append(reply)
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:
                raise KernelError("the kernel fork server has exited") from None
        try:
            message = await asyncio.wrap_future(reply)
        except asyncio.CancelledError:  # if the pid came back just now, no one else kills it
            if reply.done() and not reply.cancelled() and "pid" in reply.result():
                _killpg(reply.result()["pid"], signal.SIGKILL)
            raise
        if "error" in message:
            raise KernelError(f"could not fork a kernel: {message['error']}")
        return message["pid"], message["exit"]

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._lock:
                if "exit" in message:
                    if exit_code := self._exits.pop(message["exit"], None):
                        _settle(exit_code, message["status"])
                    continue
                if "pid" in message:  # made here, so it exists before the exit notice
                    message["exit"] = self._exits[message["pid"]] = Future()
                if not _settle(self._replies.popleft(), message) and "pid" in message:
                    _killpg(message["pid"], signal.SIGKILL)  # whoever asked has given up
        with self._lock:
            self._dead = True
            for reply in self._replies:
                with contextlib.suppress(InvalidStateError):
                    reply.set_exception(KernelError("the kernel fork server has exited"))
            for pid, exit_code in self._exits.items():
                _killpg(pid, signal.SIGKILL)
                _settle(exit_code, -signal.SIGKILL)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server, which kills any kernel still running on its way out."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _settle(future: Future[Any], result: object) -> bool:
    """Resolve ``future`` unless the waiter cancelled it; say whether it was resolved."""
    try:
        future.set_result(result)
    except InvalidStateError:
        return False
    return True


def _killpg(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signum)


class _ForkProvisioner(LocalProvisioner):
    """Launches through the fork server; ports, connection file and env stay standard."""

    server: _ForkServer | None = None
    log_path = os.devnull
    _exit: Future[int] | None = None

    @property
    def has_process(self) -> bool:
        return self._exit is not None

    async def poll(self) -> int | None:
        if self._exit is None:
            return 0
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(_POLL_S)
        self._exit = None
        return code

    async def send_signal(self, signum: int) -> None:
        if self.pid is not None and await self.poll() is None:  # never a reused pid
            _killpg(self.pid, signum)

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        assert self.server is not None
        self.cwd = kwargs["cwd"]
        request = {"argv": cmd, "cwd": self.cwd, "env": kwargs["env"], "log": self.log_path}
        self.pid, self._exit = await self.server.spawn(request)
        self.pgid = self.pid
        return self.connection_info


@dataclass(eq=False)
class KernelHandle:
    """A kernel ready to execute; give ``km`` and ``kc`` to nbclient."""

    km: AsyncKernelManager
    kc: AsyncKernelClient
    cwd: Path
    forked: bool
    log_path: Path  # the kernel process's own stdout and stderr
    startup_seconds: float = 0.0  # how long acquire() took

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

    With ``prestart``, each acquire() starts one spare kernel in the same folder, so the next
    start overlaps this notebook's run. A spare serves only that folder: IPython records the
    folder it starts in, so a kernel cannot move without leaving a trace. Use the pool from
    one event loop (or only through the blocking methods).
    """

    def __init__(
        self,
        size: int = 1,
        kernel_name: str = "python3",
        env: Mapping[str, str] | None = None,
        forked: bool = True,
        prestart: bool = True,
        startup_timeout: float = 60.0,
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
        self._spare: tuple[Path, asyncio.Future[KernelHandle]] | None = None
        self._server: _ForkServer | None = None
        self._context: zmq.asyncio.Context | None = None
        self._workdir: Path | None = None

    async def start(self) -> None:
        """Check the kernelspec and, if it can be forked, start the fork server."""
        try:
            spec = AsyncKernelManager(kernel_name=self.kernel_name).kernel_spec
        except NoSuchKernel:
            raise KernelError(f"no kernel named {self.kernel_name!r} is installed") from None
        assert spec is not None
        # One context for all kernels: one I/O thread, not a thread and a linger per kernel.
        self._context = zmq.asyncio.Context()
        # Channels connect before the kernel listens, and ZMQ retries a refused connection
        # after RECONNECT_IVL: 100 ms by default, most of a forked kernel's start.
        self._context.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_MS)
        self._workdir = Path(tempfile.mkdtemp(prefix="nbcd-kernels-"))
        custom = spec.metadata.get("kernel_provisioner")
        self.forked = self.forked and not custom and _is_forkable(spec.argv)
        if self.forked:
            try:
                self._server = _ForkServer(self._workdir, {**os.environ, **self.env})
                await self._server.wait_ready(self.startup_timeout)
            except KernelError as exc:  # slower kernels beat none
                _log.warning("%s; starting kernels without fork", exc)
                if self._server is not None:
                    await asyncio.to_thread(self._server.close)
                self._workdir.mkdir(exist_ok=True)  # a server removes it on its way out
                self._server, self.forked = None, False

    async def close(self) -> None:
        """Kill every kernel, the spare too, stop the fork server, remove temporary files."""
        await self._drop_spare()
        for handle in list(self._live):
            await self.release(handle)
        if self._server is not None:
            await asyncio.to_thread(self._server.close)
            self._server = None
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

    async def acquire(self, cwd: Path | str) -> KernelHandle:
        """Return a fresh kernel working in ``cwd``, ready to execute; wait for a free slot."""
        cwd = Path(cwd).resolve()
        if not cwd.is_dir():
            raise KernelError(f"cannot start a kernel in {cwd}: not a directory")
        await self._slots.acquire()
        began = time.perf_counter()
        try:
            handle = await self._take_spare(cwd) or await self._start_kernel(cwd)
        except BaseException:
            self._slots.release()
            raise
        self._held.add(handle)
        handle.startup_seconds = time.perf_counter() - began
        if self.prestart and self._spare is None:  # else a concurrent acquire() made one
            self._spare = cwd, asyncio.ensure_future(self._start_kernel(cwd))
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
                await asyncio.sleep(_POLL_S)
            if await provisioner.poll() is not None:
                await provisioner.wait()
        await handle.km.cleanup_resources()
        handle.log_path.unlink(missing_ok=True)

    async def _take_spare(self, cwd: Path) -> KernelHandle | None:
        if self._spare is not None and self._spare[0] != cwd:
            await self._drop_spare()
        if self._spare is None:
            return None
        _, spare = self._spare
        self._spare = None
        with contextlib.suppress(KernelError):  # a start that keeps failing fails again below
            if await (handle := await spare).is_alive():
                return handle
            await self.release(handle)
        return None

    async def _drop_spare(self) -> None:
        if self._spare is not None:
            _, spare = self._spare
            self._spare = None
            spare.cancel()  # if still starting, it kills its own kernel
            await asyncio.wait([spare])
            if not spare.cancelled() and spare.exception() is None:
                await self.release(spare.result())

    async def _start_kernel(self, cwd: Path) -> KernelHandle:
        assert self._workdir is not None, "KernelPool used before start()"
        km = AsyncKernelManager(kernel_name=self.kernel_name, context=self._context)
        km.kernel_id = str(uuid.uuid4())
        log_path = self._workdir / f"kernel-{km.kernel_id}.log"
        if self._server is not None:
            km.provisioner = _ForkProvisioner(
                kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km
            )
            km.provisioner.server, km.provisioner.log_path = self._server, str(log_path)
        # The client exists before the kernel so that every failure cleans up one way.
        handle = KernelHandle(km, km.client(context=self._context), cwd, self.forked, log_path)
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

    def acquire_sync(self, cwd: Path | str) -> KernelHandle:
        """Blocking :meth:`acquire`."""
        handle: KernelHandle = run_sync(self.acquire)(cwd)
        return handle

    def release_sync(self, handle: KernelHandle) -> None:
        """Blocking :meth:`release`."""
        run_sync(self.release)(handle)
