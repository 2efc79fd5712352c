"""The fork server behind the kernel pool: a warm process that forks a kernel per request.

The server is a separate interpreter that imports the kernel machinery once (``_PRELOAD``),
then reads one JSON request per line on stdin, ``{"argv", "cwd", "env", "log"}``, and forks a
child that runs a real ``IPKernelApp``. It answers one JSON line per event on stdout:
``{"ready": pid}`` once, ``{"pid": pid}`` or ``{"error": message}`` per request, in order, and
``{"exit": pid, "status": code}`` whenever a kernel ends.

Its program is :func:`_fork_server_main`, written to a script as source and run by the
interpreter alone: the server and every kernel forked from it must not import the nbcd package
(and so all of nbcd's dependencies). That function therefore uses nothing from this module.

:class:`ForkServer` is the pool's end of the pipes; :class:`ForkProvisioner` lets an ordinary
``AsyncKernelManager`` start kernels through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import LocalProvisioner

from nbcd.errors import KernelError
from nbcd.execute.imports import SNIFFERS

__all__ = ["POLL_S", "ForkProvisioner", "ForkServer"]

# What a kernel imports while it starts. No user libraries: matplotlib, for one, reads
# matplotlibrc from the working folder and its config dir from the environment at import.
_PRELOAD = (
    *("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger"),
    *("IPython.core.completerlib", "IPython.core.debugger", "IPython.extensions.storemagic"),
    *("jupyter_client.session", "psutil", "sqlite3", "tornado.platform.asyncio", "tornado.queues"),
)
POLL_S = 0.002  # between liveness checks while killing: cheap, and a kill takes ~1 ms


def _fork_server_main(preload: list[str], launcher: str, warm: list[str], avoid: list[str]) -> None:
    """Fork a kernel per JSON request line on stdin; report pids and exit codes on stdout.

    Runs in the server, copied there as source: importing the nbcd package instead would load
    all of nbcd's dependencies into every kernel. ``warm`` are the notebooks' own libraries,
    imported after the kernel machinery in a template server (working in the notebooks'
    folder, which some libraries read at import); a library that fails to import only costs
    warmth; one that starts a thread, or pulls in a library in ``avoid`` (those that inspect
    their surroundings at import), makes the template unusable.
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
    if warm and not os.environ.get("MPLBACKEND"):
        # what ipykernel sets before any user code: matplotlib picks its backend at import
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for name in preload:
        with contextlib.suppress(Exception):  # a module that fails to import only costs warmth
            importlib.import_module(name)
    loaded = set(sys.modules)  # what the warm imports add starts here

    class KernelStandIn:
        """What `get_ipython()` gives at import in a kernel, as far as "is this a kernel?" goes.

        pandas, for one, sizes display.max_columns at import by asking exactly that.
        """

        kernel = None

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    import builtins

    builtins.get_ipython = KernelStandIn  # type: ignore[attr-defined]
    failed = []
    for name in warm:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    del builtins.get_ipython  # type: ignore[attr-defined]
    # Variables set by those imports (debugpy sets some), which a kernel would set itself.
    import_env = {k: v for k, v in os.environ.items() if start_env.get(k) != v}
    import_env.pop("MPLBACKEND", None)  # the kernel sets it again, or the user's wins
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from imported code must not corrupt the replies

    def reply(message: dict[str, Any]) -> None:
        os.write(reply_fd, json.dumps(message).encode() + b"\n")  # short: one atomic write

    if threading.active_count() > 1:  # forking a threaded process can deadlock the child
        return reply({"error": f"preloaded modules started threads: {threading.enumerate()}"})
    if failed:  # half-imported packages would make kernels unlike fresh ones
        return reply({"error": f"warm imports failed: {failed}"})
    pulled = sorted(name for name in avoid if name in sys.modules and name not in loaded)
    if pulled:
        return reply({"error": f"warm imports pulled in {pulled}, which must load in a kernel"})
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
            # A fresh process must not share the template's random state: numpy's legacy
            # global generator was seeded at import (Python's random reseeds itself at fork).
            numpy = sys.modules.get("numpy")
            if numpy is not None:
                with contextlib.suppress(Exception):
                    numpy.random.seed()
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"], **import_env, JPY_PARENT_PID=str(os.getppid()))
            # the server's script stays on the kernel's stack; the input recorder (nbcd's
            # cache) must not count it as something the notebook read
            sys._nbcd_launcher = os.path.abspath(sys.argv[0])  # type: ignore[attr-defined]
            # history in memory: a test run neither waits on nor writes to the user's
            # ~/.ipython history database
            sys.argv = [launcher, *request["argv"][3:], "--HistoryManager.hist_file=:memory:"]
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


class ForkServer:
    """The pool's end of the fork server: requests down one pipe, replies up the other."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        warm: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> None:
        launcher = importlib.util.find_spec("ipykernel_launcher")
        if launcher is None or launcher.origin is None:
            raise KernelError("ipykernel is not installed")
        # each server in a folder of its own, which it removes when it exits
        workdir = Path(tempfile.mkdtemp(prefix="server-", dir=workdir))
        script, self._log_path = workdir / "fork_server.py", workdir / "fork_server.log"
        self.warm = warm
        arguments = [list(_PRELOAD), launcher.origin, list(warm), sorted(SNIFFERS)]
        call = f"_fork_server_main(*{arguments!r})"
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
                    cwd=cwd or workdir,
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


class ForkProvisioner(LocalProvisioner):
    """Launches through the fork server; ports, connection file and env stay standard."""

    server: ForkServer | None = None
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
            await asyncio.sleep(POLL_S)
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
