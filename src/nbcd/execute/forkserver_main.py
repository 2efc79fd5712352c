"""The kernel fork server's program: run as a script, by the interpreter alone.

The server and every kernel forked from it must not import the nbcd package (and so all of
nbcd's dependencies): this file imports nothing at module level but the standard library, and
:func:`main` imports what it needs itself. nbcd.execute.prelaunch starts it as
``python forkserver_main.py '<json arguments>'``; nbcd.execute.forkserver is the pool's end.

The server imports the kernel machinery once (``PRELOAD``), then reads one JSON request per
line from a Unix socket (its fd 0). ``{"argv", "cwd", "env", "log"}`` forks a child that runs a
real ``IPKernelApp``; ``{"warm", "cwd", "env", "log"}`` forks a *template*, a server of the
same kind that has also imported the notebooks' own libraries, and sends the pool a socket of
its own with the reply. It answers one JSON line per event: ``{"ready": pid}`` once,
``{"pid": pid}`` or ``{"error": message}`` per request, in order, and ``{"exit": pid,
"status": code}`` whenever a child ends. Requests may be sent before the server is ready: they
wait in the socket.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["AVOID", "PRELOAD", "main"]

# What a kernel imports while it starts. No user libraries: matplotlib, for one, reads
# matplotlibrc from the working folder and its config dir from the environment at import.
PRELOAD = (
    *("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger"),
    *("IPython.core.completerlib", "IPython.core.debugger", "IPython.extensions.storemagic"),
    *("IPython.core.oinspect", "IPython.utils.wildcard"),  # imported by the shell's set-up
    *("jupyter_client.session", "psutil", "sqlite3", "tornado.platform.asyncio", "tornado.queues"),
)
# Libraries that do more than ask "am I in a Jupyter kernel?" when imported (register
# display hooks, widgets, comms, start GPU or scheduler threads): imported in the kernel only,
# never by a template. The plain question is answered in a template as a kernel would.
AVOID = frozenset(
    {"tqdm", "ipywidgets", "plotly", "bokeh", "panel", "holoviews", "altair", "torch",
     "tensorflow", "jax", "dask", "distributed", "ray", "pyspark", "IPython",
     "matplotlib_inline"}
)  # fmt: skip


def main(preload: list[str], launcher: str, avoid: list[str], folder: str) -> None:
    """Fork a kernel or a template per JSON request line on fd 0; reply on the same socket.

    ``folder`` is the server's own (its log), removed when it exits. A request with ``warm``
    forks a *template*: a server of the same kind that first imports the notebooks' own
    libraries (working in the notebooks' folder, which some libraries read at import) and
    answers on a socket of its own, which goes to the pool with the reply. A library that
    fails to import only costs warmth; one that starts a thread, or pulls in a library in
    ``avoid`` (those that inspect their surroundings at import), makes the template unusable.
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
                # if the pool was killed, no one else will remove the server's folder
                shutil.rmtree(folder, ignore_errors=True)
            # Nothing is left to flush or finalize, and tearing down a template's imports
            # (scikit-learn, matplotlib) takes the interpreter up to a second the pool waits for.
            sys.stderr.flush()
            os._exit(0)

    serve({}, None, template=False)


if __name__ == "__main__":
    main(*json.loads(sys.argv[1]))
