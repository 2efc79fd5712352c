"""The fork server behind the kernel pool: a warm process that forks a kernel per request.

The server is a separate interpreter that imports the kernel machinery once (``_PRELOAD``),
then reads one JSON request per line from a Unix socket (its fd 0). ``{"argv", "cwd", "env",
"log"}`` forks a child that runs a real ``IPKernelApp``; ``{"warm", "cwd", "env", "log"}``
forks a *template*, a server of the same kind that has also imported the notebooks' own
libraries, and sends the pool a socket of its own with the reply. It answers one JSON line per
event: ``{"ready": pid}`` once, ``{"pid": pid}`` or ``{"error": message}`` per request, in
order, and ``{"exit": pid, "status": code}`` whenever a child ends. Requests may be sent
before the server is ready: they wait in the socket.

Its program is :func:`_fork_server_main`, written to a script as source and run by the
interpreter alone: the server and every kernel forked from it must not import the nbcd package
(and so all of nbcd's dependencies). That function therefore uses nothing from this module.

:class:`ForkServer` is the pool's end of the socket; ``nbcd.execute.provisioner`` lets an
ordinary ``AsyncKernelManager`` start kernels through it. This module imports only the standard
library (and nbcd's errors), so a run can start the server before it loads Jupyter.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nbcd.errors import KernelError
from nbcd.execute.imports import SNIFFERS

__all__ = ["POLL_S", "ForkServer", "kill_group"]

# What a kernel imports while it starts. No user libraries: matplotlib, for one, reads
# matplotlibrc from the working folder and its config dir from the environment at import.
_PRELOAD = (
    *("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger"),
    *("IPython.core.completerlib", "IPython.core.debugger", "IPython.extensions.storemagic"),
    *("IPython.core.oinspect", "IPython.utils.wildcard"),  # imported by the shell's set-up
    *("jupyter_client.session", "psutil", "sqlite3", "tornado.platform.asyncio", "tornado.queues"),
)
POLL_S = 0.002  # between liveness checks while killing: cheap, and a kill takes ~1 ms


def _fork_server_main(preload: list[str], launcher: str, avoid: list[str]) -> None:
    """Fork a kernel or a template per JSON request line on fd 0; reply on the same socket.

    Runs in the server, copied there as source: importing the nbcd package instead would load
    all of nbcd's dependencies into every kernel. A request with ``warm`` forks a *template*:
    a server of the same kind that first imports the notebooks' own libraries (working in the
    notebooks' folder, which some libraries read at import) and answers on a socket of its
    own, which goes to the pool with the reply. A library that fails to import only costs
    warmth; one that starts a thread, or pulls in a library in ``avoid`` (those that inspect
    their surroundings at import), makes the template unusable.
    """
    import atexit
    import builtins
    import contextlib
    import gc
    import importlib
    import json
    import os
    import select
    import shutil
    import signal
    import socket
    import sys
    import threading
    import traceback

    if os.path.realpath(sys.path[0]) == os.path.realpath(os.path.dirname(sys.argv[0])):
        del sys.path[0]  # the script's folder, like the cwd `python -m ipykernel_launcher` drops
    # No collections while importing (they find little and cost ~10% of an import), and in
    # the server itself; each child collects again, with what the server imported frozen.
    gc.disable()
    for name in preload:
        with contextlib.suppress(Exception):  # a module that fails to import only costs warmth
            importlib.import_module(name)
    preloaded = set(sys.modules)  # what a template's warm imports add starts here

    class KernelStandIn:
        """What `get_ipython()` gives at import in a kernel, as far as "is this a kernel?" goes.

        pandas, for one, sizes display.max_columns at import by asking exactly that.
        """

        kernel = None

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    def warm_up(warm: list[str]) -> tuple[dict[str, str], str | None]:
        """Import the notebooks' libraries: the variables they set, and what makes it unusable."""
        start_env = dict(os.environ)
        if not os.environ.get("MPLBACKEND"):
            # what ipykernel sets before any user code: matplotlib picks its backend at import
            os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
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
        if threading.active_count() > 1:  # forking a threaded process can deadlock the child
            return import_env, f"warm imports started threads: {threading.enumerate()}"
        if failed:  # half-imported packages would make kernels unlike fresh ones
            return import_env, f"warm imports failed: {failed}"
        pulled = sorted(name for name in avoid if name in sys.modules and name not in preloaded)
        if pulled:
            return import_env, f"warm imports pulled in {pulled}, which must load in a kernel"
        return import_env, None

    def leave_server(channel: socket.socket, wake: tuple[int, int]) -> None:
        """In a forked child: drop the server's signal set-up, wake pipe and channel."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in (*wake, channel.detach()):  # detached: a collected socket object closes fd 0
            os.close(fd)
        os.setsid()  # own process group: a kill also takes its subprocesses

    def redirect_output(log_path: str) -> None:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)

    def run_kernel(request: dict[str, Any], import_env: dict[str, str]) -> None:
        # After leave_server(), what `python -m ipykernel_launcher` does.
        code: object = 1
        try:
            gc.enable()
            # A fresh process must not share the template's random state: numpy's legacy
            # global generator was seeded at import (Python's random reseeds itself at fork).
            numpy = sys.modules.get("numpy")
            if numpy is not None:
                with contextlib.suppress(Exception):
                    numpy.random.seed()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            redirect_output(request["log"])
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"], **import_env, JPY_PARENT_PID=str(os.getppid()))
            # the server's script stays on the kernel's stack; the input recorder (nbcd's
            # cache) must not count it as something the notebook read
            sys._nbcd_launcher = os.path.abspath(sys.argv[0])  # type: ignore[attr-defined]
            # history in memory: a test run neither waits on nor writes to the user's
            # ~/.ipython history database
            arguments = request["argv"][3:]
            sys.argv = [launcher, *arguments, "--HistoryManager.hist_file=:memory:"]
            from ipykernel import kernelapp
            from traitlets.config import Config

            # parent_handle defaults to $JPY_PARENT_PID as read at import, in the server: pass
            # it, so the kernel exits when the server does, as a kernel exits with its parent.
            app = kernelapp.IPKernelApp.instance(parent_handle=os.getppid())
            if len(arguments) == 2 and arguments[0] == "-f":
                # The standard kernelspec's only argument, given as the configuration it
                # parses to: traitlets builds an argparse parser of every option of every
                # class to read it (~5 ms of a kernel's ~40 ms start).
                config = Config()
                config.IPKernelApp.connection_file = arguments[1]
                config.HistoryManager.hist_file = ":memory:"
                app.update_config(config)
                app.parse_command_line = lambda argv=None: None  # type: ignore[method-assign]
            app.initialize()
            app.start()
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

    def run_template(request: dict[str, Any], channel_fd: int) -> None:
        # After leave_server(): become a server that has imported the notebooks' libraries.
        try:
            os.dup2(channel_fd, 0)
            os.close(channel_fd)
            redirect_output(request["log"])
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            serve(*warm_up(request["warm"]), template=True)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(1)  # serve() leaves with os._exit(0) itself

    def serve(import_env: dict[str, str], unusable: str | None, template: bool) -> None:
        # fd 0 is a Unix socket to the pool: requests come in on it and replies go out
        channel = socket.socket(fileno=0)

        def reply(message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
            # short: one atomic message; a template's socket travels with the reply naming it
            data = json.dumps(message).encode() + b"\n"
            socket.send_fds(channel, [data], list(fds)) if fds else channel.sendall(data)

        if unusable:
            return reply({"error": unusable})
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        children: set[int] = set()
        # What is imported now lives as long as any kernel: frozen, a kernel's collections
        # skip it, so they neither spend time on it nor copy its memory (copy-on-write pages
        # that a collection would touch).
        gc.freeze()
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
                        status = os.waitstatus_to_exitcode(reaped[1])
                        reply({"exit": reaped[0], "status": status})
                if 0 in readable:
                    if not (chunk := os.read(0, 1 << 16)):
                        return  # the pool closed its end, or its process died
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        request = json.loads(line)
                        ours, theirs = socket.socketpair() if "warm" in request else (None, None)
                        try:
                            pid = os.fork()
                        except OSError as exc:  # out of processes or memory: this one fails
                            reply({"error": str(exc)})
                            for end in (ours, theirs):
                                if end is not None:
                                    end.close()
                            continue
                        if pid == 0:
                            leave_server(channel, (wake_r, wake_w))
                            if ours is not None and theirs is not None:
                                os.close(ours.detach())
                                run_template(request, theirs.detach())
                            run_kernel(request, import_env)
                        children.add(pid)
                        if ours is not None and theirs is not None:
                            theirs.close()
                            reply({"pid": pid, "channel": True}, (ours.fileno(),))
                            ours.close()
                        else:
                            reply({"pid": pid})
        finally:
            for pid in children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            if not template:
                # The pool's temporary folder holds this script and the logs; if the pool was
                # killed, no one else will remove it.
                shutil.rmtree(os.path.dirname(os.path.abspath(sys.argv[0])), ignore_errors=True)
            # Nothing is left to flush or finalize, and tearing down a template's imports
            # (scikit-learn, matplotlib) takes the interpreter up to a second the pool waits for.
            sys.stderr.flush()
            os._exit(0)

    serve({}, None, template=False)


class ForkServer:
    """The pool's end of a fork server: requests and replies over one Unix socket.

    The base server is started with :meth:`launch`; a template is forked from it with
    :meth:`fork_template` and answers on a socket of its own.
    """

    def __init__(self, channel: socket.socket, process: _ServerProcess, log_path: Path) -> None:
        self._channel = channel
        self._process = process
        self._log_path = log_path
        self._lock = threading.Lock()
        self._ready: Future[dict[str, Any]] = Future()
        self._replies: deque[Future[dict[str, Any]]] = deque([self._ready])
        self._exits: dict[int, Future[int]] = {}
        self._dead = False
        # A thread rather than the event loop: exit notices then arrive while no loop runs
        # (the blocking API), and the pool works from whichever loop calls it.
        self._reader = threading.Thread(target=self._read, name="nbcd-fork-server", daemon=True)
        self._reader.start()

    @classmethod
    def launch(cls, workdir: Path, env: Mapping[str, str]) -> ForkServer:
        """Start the base server: a new interpreter that imports the kernel machinery."""
        launcher = importlib.util.find_spec("ipykernel_launcher")
        if launcher is None or launcher.origin is None:
            raise KernelError("ipykernel is not installed")
        # in a folder of its own, which it removes when it exits
        workdir = Path(tempfile.mkdtemp(prefix="server-", dir=workdir))
        script, log_path = workdir / "fork_server.py", workdir / "fork_server.log"
        arguments = [list(_PRELOAD), launcher.origin, sorted(SNIFFERS)]
        call = f"_fork_server_main(*{arguments!r})"
        ours, theirs = socket.socketpair()
        try:
            source = inspect.getsource(_fork_server_main)
            script.write_text(f"from __future__ import annotations\nfrom typing import Any\n\n"
                              f"{source}\n{call}\n")  # fmt: skip
            with open(log_path, "wb") as log:
                # Its own session, so a Ctrl-C in the terminal reaches only the pool, which
                # then cleans up; if the pool dies instead, the closed socket stops the server.
                proc = subprocess.Popen(
                    [sys.executable, str(script)],
                    stdin=theirs.fileno(),
                    stdout=log,
                    stderr=log,
                    cwd=workdir,
                    env=dict(env),
                    start_new_session=True,
                )
        except OSError as exc:  # no source files (a zipped install), or no interpreter
            ours.close()
            raise KernelError(f"cannot start the kernel fork server: {exc}") from None
        finally:
            theirs.close()
        return cls(ours, _Launched(proc), log_path)

    async def fork_template(
        self, warm: tuple[str, ...], cwd: Path, env: Mapping[str, str], log_path: Path
    ) -> ForkServer:
        """Fork a server that imports ``warm`` in ``cwd``; wait_ready() says if it is usable."""
        request = {"warm": list(warm), "cwd": str(cwd), "env": dict(env), "log": str(log_path)}
        pid, exit_code, channel = await self._request(request)
        assert channel is not None
        return ForkServer(channel, _Forked(pid, exit_code), log_path)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the server has imported what it preloads."""
        try:
            message = await asyncio.wait_for(asyncio.wrap_future(self._ready), timeout)
        except (asyncio.TimeoutError, KernelError):
            message = {"error": self._log_tail() or "no reply"}
        if "error" in message:
            raise KernelError(f"kernel fork server unusable: {message['error']}")

    async def spawn(self, request: dict[str, Any]) -> tuple[int, Future[int]]:
        """Fork a kernel; return its pid and a future of its exit code."""
        pid, exit_code, _ = await self._request(request)
        return pid, exit_code

    async def _request(
        self, request: dict[str, Any]
    ) -> tuple[int, Future[int], socket.socket | None]:
        reply: Future[dict[str, Any]] = Future()
        with self._lock:
            try:
                if self._dead:
                    raise BrokenPipeError
                self._replies.append(reply)
                self._channel.sendall(json.dumps(request).encode() + b"\n")
            except OSError:
                raise KernelError("the kernel fork server has exited") from None
        try:
            message = await asyncio.wrap_future(reply)
        except asyncio.CancelledError:  # if the pid came back just now, no one else kills it
            if reply.done() and not reply.cancelled() and "pid" in reply.result():
                _abandon(reply.result())
            raise
        if "error" in message:
            raise KernelError(f"could not fork a kernel: {message['error']}")
        return message["pid"], message["exit"], message.get("channel")

    def _read(self) -> None:
        pending, passed = b"", deque[int]()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._channel, 1 << 16, 4)
            except OSError:
                break
            passed.extend(fds)  # a template's socket arrives with the reply that names it
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                message = json.loads(line)
                with self._lock:
                    if "exit" in message:
                        if exit_code := self._exits.pop(message["exit"], None):
                            _settle(exit_code, message["status"])
                        continue
                    if "pid" in message:  # made here, so it exists before the exit notice
                        message["exit"] = self._exits[message["pid"]] = Future()
                        if message.get("channel"):
                            message["channel"] = socket.socket(fileno=passed.popleft())
                    if not _settle(self._replies.popleft(), message) and "pid" in message:
                        _abandon(message)  # whoever asked has given up
        for fd in passed:
            os.close(fd)
        with self._lock:
            self._dead = True
            for reply in self._replies:
                with contextlib.suppress(InvalidStateError):
                    reply.set_exception(KernelError("the kernel fork server has exited"))
            for pid, exit_code in self._exits.items():
                kill_group(pid, signal.SIGKILL)
                _settle(exit_code, -signal.SIGKILL)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self._log_path.read_text(errors="replace")[-1000:]
        return ""

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server, which kills any kernel still running on its way out."""
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)  # the server reads its end of file
        if not self._process.wait(timeout):
            self._process.kill()
            self._process.wait(timeout)
        self._reader.join(timeout)
        self._channel.close()


class _ServerProcess(Protocol):
    def wait(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout``."""

    def kill(self) -> None:
        """Kill the process and all it started."""


@dataclass
class _Launched:
    """The base server: a child of the pool."""

    proc: subprocess.Popen[bytes]

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        kill_group(self.proc.pid, signal.SIGKILL)


@dataclass
class _Forked:
    """A template: a child of the base server, which reports its exit."""

    pid: int
    exit_code: Future[int]

    def wait(self, timeout: float) -> bool:
        with contextlib.suppress(FutureTimeoutError):
            self.exit_code.result(timeout)
        return self.exit_code.done()

    def kill(self) -> None:
        kill_group(self.pid, signal.SIGKILL)


def _abandon(reply: dict[str, Any]) -> None:
    """Kill what a reply started for a waiter that has gone."""
    kill_group(reply["pid"], signal.SIGKILL)
    if (channel := reply.get("channel")) is not None:
        channel.close()


def _settle(future: Future[Any], result: object) -> bool:
    """Resolve ``future`` unless the waiter cancelled it; say whether it was resolved."""
    try:
        future.set_result(result)
    except InvalidStateError:
        return False
    return True


def kill_group(pid: int, signum: int) -> None:
    """Signal a process group, which may be gone already."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signum)
