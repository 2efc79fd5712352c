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

Every server makes a kernel's IPython shell once, when the first kernel is asked for; a kernel
whose environment is the server's takes that shell instead of making its own.
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
    "IPython.core.logger",  # imported by the first cell run
    *("jupyter_client.session", "psutil", "sqlite3", "tornado.platform.asyncio", "tornado.queues"),
    "faulthandler",
)
# Libraries that do more than ask "am I in a Jupyter kernel?" when imported (register
# display hooks, widgets, comms, start GPU or scheduler threads): imported in the kernel only,
# never by a template. The plain question is answered in a template as a kernel would.
AVOID = frozenset(
    {"tqdm", "ipywidgets", "plotly", "bokeh", "panel", "holoviews", "altair", "torch",
     "tensorflow", "jax", "dask", "distributed", "ray", "pyspark", "IPython",
     "matplotlib_inline"}
)  # fmt: skip
# What making a kernel's shell adds to builtins (besides sys.modules["__main__"] and the
# singleton): a template takes them away again while it imports the notebooks' libraries.
SHELL_BUILTINS = ("__IPYTHON__", "display")
# Variables set per kernel, which nothing that makes a shell reads.
PER_KERNEL_ENV = frozenset({"JPY_PARENT_PID", "JPY_SESSION_NAME"})


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
    import copy
    import datetime
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
    from pathlib import Path

    if os.path.realpath(sys.path[0]) == os.path.realpath(os.path.dirname(sys.argv[0])):
        del sys.path[0]  # the script's folder, like the cwd `python -m ipykernel_launcher` drops
    # No collections while importing (they find little and cost ~10% of an import), and in
    # the server itself; each child collects again, with what the server imported frozen.
    gc.disable()
    start_env = dict(os.environ)
    for name in preload:
        with contextlib.suppress(Exception):  # a module that fails to import only costs warmth
            importlib.import_module(name)
    # Variables set by those imports (pydevd sets some), which a kernel would set itself.
    preload_env = {k: v for k, v in os.environ.items() if start_env.get(k) != v}
    preloaded = set(sys.modules)  # what a template's warm imports add starts here

    class KernelStandIn:
        """What `get_ipython()` gives at import in a kernel, as far as "is this a kernel?" goes.

        pandas, for one, sizes display.max_columns at import by asking exactly that.
        """

        kernel = None

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    class PreparedShell:
        """A kernel's IPython shell, made before forking, and what it was made from."""

        def __init__(
            self,
            shell: Any,
            config: Any,
            profile_dir: Any,
            env: dict[str, str],
            main_module: Any,
            builtins: dict[str, Any],
        ) -> None:
            self.shell = shell
            self.config = config  # what the profile's configuration files gave
            self.profile_dir = profile_dir
            self.env = env  # the environment it was made in, but for PER_KERNEL_ENV
            self.main_module = main_module  # what sys.modules["__main__"] was before
            self.builtins = builtins  # what SHELL_BUILTINS were before

    def memory_history() -> Any:
        from traitlets.config import Config

        config = Config()
        # history in memory: a test run neither waits on nor writes to the user's ~/.ipython
        # history database
        config.HistoryManager.hist_file = ":memory:"
        return config

    def standard_kernel(app: Any) -> bool:
        """Whether app makes the kernel and shell that make_shell() makes."""
        from ipykernel.ipkernel import IPythonKernel

        sections = [app.config.get(name) or {} for name in ("Kernel", "IPythonKernel")]
        classes = ("shell_class", "compiler_class")
        chosen = any(key in section for section in sections for key in classes)
        return app.kernel_class is IPythonKernel and app.user_ns is None and not chosen

    def make_shell() -> PreparedShell | None:
        """The shell a kernel of this server would make, made once here instead of per kernel.

        It is what a third of a kernel's start went to (the shell's prefilters, magics,
        completer, history and display machinery: ~7 ms of CPU and ~600 copy-on-write page
        faults a kernel). It is made as the kernel would make it, from the profile and
        configuration files this environment leads to, and holds no user state: no code has
        run in it. A kernel adopts it only when its own environment is this one (see
        adopt_shell); anything that goes wrong here only costs that saving.
        """
        main_module = sys.modules.get("__main__")
        names = builtins.__dict__
        builtins_before = {k: names[k] for k in SHELL_BUILTINS if k in names}
        env = dict(os.environ)
        shell = None
        shell_env = {k: v for k, v in env.items() if k not in PER_KERNEL_ENV}
        try:
            from ipykernel.ipkernel import IPythonKernel
            from ipykernel.kernelapp import IPKernelApp

            probe = IPKernelApp()  # not the singleton: each kernel makes its own application
            probe.update_config(memory_history())
            probe.init_profile_dir()
            probe.init_config_files()
            probe.load_config_file()
            if not standard_kernel(probe):
                return None
            # as read from the files: the shell adds to its configuration object
            file_config = copy.deepcopy(probe.config)
            traits = IPythonKernel.class_traits()
            shell = traits["shell_class"].default_value.instance(
                config=probe.config,
                profile_dir=probe.profile_dir,
                user_module=None,
                user_ns=None,
                compiler_class=traits["compiler_class"].default_value,
            )
            autorestore = (probe.config.get("StoreMagics") or {}).get("autorestore")
            if "storemagic" in probe.default_extensions and not autorestore:
                shell.extension_manager.load_extension("storemagic")  # what every kernel loads
            # What every kernel's first cell made lazily: the tokenizer's and the input
            # transformers' compiled patterns, the display formatters. Neither call runs code
            # or keeps any: they transform a line of text and format a number.
            shell.transform_cell("x = 1\n")
            shell.display_formatter.format(1)
            if threading.active_count() > 1:
                raise RuntimeError(f"making a shell started threads: {threading.enumerate()}")
            return PreparedShell(
                shell, file_config, probe.profile_dir, shell_env, main_module, builtins_before
            )
        except Exception:
            traceback.print_exc()
            unmake_shell(shell, main_module, builtins_before)
            return None
        finally:
            os.environ.clear()
            os.environ.update(env)  # the shell set TERM, PAGER and more: a kernel does so again

    def unmake_shell(shell: Any, main_module: Any, builtins_before: dict[str, Any]) -> None:
        """Undo making shell (None: it was not made): the process is as it was before."""
        if shell is not None:
            type(shell).clear_instance()
            atexit.unregister(shell.atexit_operations)
        sys.modules["__main__"] = main_module
        for name in SHELL_BUILTINS:
            builtins.__dict__.pop(name, None)
        builtins.__dict__.update(builtins_before)

    def drop_shell(prepared: PreparedShell) -> None:
        """Undo make_shell(), for a kernel to make its own shell or a template to import."""
        unmake_shell(prepared.shell, prepared.main_module, prepared.builtins)

    def adopt_shell(app: Any, prepared: PreparedShell) -> None:
        """Have app's kernel take the prepared shell, and app its configuration, as made here.

        Called in the kernel, before app.initialize(), once the kernel's environment and folder
        are set. What making the shell would have read from the process that is not the
        same as in the server (the folder, the environment it sets, the standard streams, the
        application's logger) is set again.
        """
        from traitlets.config import LoggingConfigurable

        app.profile_dir = prepared.profile_dir  # found by the server, in this environment
        app.init_config_files = lambda: None
        app.load_config_file = lambda *args, **kwargs: app.update_config(prepared.config)
        make_kernel = app.init_kernel

        def init_kernel() -> None:
            if not standard_kernel(app):  # another kernel or shell class: it makes its own
                drop_shell(prepared)
                return make_kernel()
            shell = prepared.shell
            shell.init_environment()
            shell.starting_dir = os.getcwd()
            sys.modules["__main__"] = prepared.main_module
            shell.save_sys_module_state()  # this process's streams and excepthook
            shell.init_sys_modules()
            parts = [shell, *shell.configurables]
            make_kernel()  # IPythonKernel gets the shell from shell_class.instance()
            kernel = app.kernel
            shell.kernel = kernel
            shell.parent = kernel
            shell.config = app.config  # the same object, as the kernel's shell would have it
            for part in parts:
                if isinstance(part, LoggingConfigurable):
                    part.log = kernel.log
            history = shell.history_manager
            history.dir_hist[:] = [Path.cwd()]
            if history.enabled and history.session_number:
                with history.db:
                    history.db.execute(
                        "UPDATE sessions SET start=? WHERE session==?",
                        (datetime.datetime.now().isoformat(" "), history.session_number),
                    )

        app.init_kernel = init_kernel

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
        # as it was, as the kernels' environment will be (the server's shell is made in it)
        os.environ.pop("MPLBACKEND", None)
        if "MPLBACKEND" in start_env:
            os.environ["MPLBACKEND"] = start_env["MPLBACKEND"]
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

    def run_kernel(
        request: dict[str, Any], import_env: dict[str, str], prepared: PreparedShell | None
    ) -> None:
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
            arguments = request["argv"][3:]
            sys.argv = [launcher, *arguments, "--HistoryManager.hist_file=:memory:"]
            from ipykernel import kernelapp

            # parent_handle defaults to $JPY_PARENT_PID as read at import, in the server: pass
            # it, so the kernel exits when the server does, as a kernel exits with its parent.
            app = kernelapp.IPKernelApp.instance(parent_handle=os.getppid())
            standard = len(arguments) == 2 and arguments[0] == "-f"
            if standard:
                # The standard kernelspec's only argument, given as the configuration it
                # parses to: traitlets builds an argparse parser of every option of every
                # class to read it (~5 ms of a kernel's ~40 ms start).
                config = memory_history()
                config.IPKernelApp.connection_file = arguments[1]
                app.update_config(config)
                app.parse_command_line = lambda argv=None: None  # type: ignore[method-assign]
            if prepared is not None:
                env = {k: v for k, v in os.environ.items() if k not in PER_KERNEL_ENV}
                if standard and env == prepared.env:
                    adopt_shell(app, prepared)
                else:
                    drop_shell(prepared)
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

    def run_template(
        request: dict[str, Any],
        channel_fd: int,
        import_env: dict[str, str],
        inherited: PreparedShell | None,
    ) -> None:
        # After leave_server(): become a server that has imported the notebooks' libraries.
        try:
            if inherited is not None:  # the libraries import as before any shell; it makes its own
                drop_shell(inherited)
            os.dup2(channel_fd, 0)
            os.close(channel_fd)
            redirect_output(request["log"])
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"], **import_env)
            warm_env, unusable = warm_up(request["warm"])
            serve({**import_env, **warm_env}, unusable, template=True)
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
        # Made when the first kernel is asked for: templates, asked for first, do not wait for
        # it (nor take it: they make their own).
        prepared: PreparedShell | None = None
        shell_made = False
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
                        if "warm" not in request and not shell_made:
                            prepared, shell_made = make_shell(), True
                            gc.freeze()  # the shell too
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
                                run_template(request, theirs.detach(), import_env, prepared)
                            run_kernel(request, import_env, prepared)
                        children.add(pid)
                        if ours is not None and theirs is not None:
                            theirs.close()
                            reply({"pid": pid, "channel": True}, (ours.fileno(),))
                            ours.close()
                        else:
                            reply({"pid": pid})
        finally:
            for pid in children:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:  # not a group yet: nbcd.execute.prelaunch.kill_group's fallback
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            if not template:
                # if the pool was killed, no one else will remove the server's folder
                shutil.rmtree(folder, ignore_errors=True)
            # Nothing is left to flush or finalize, and tearing down a template's imports
            # (scikit-learn, matplotlib) takes the interpreter up to a second the pool waits for.
            sys.stderr.flush()
            os._exit(0)

    serve(preload_env, None, template=False)


if __name__ == "__main__":
    main(*json.loads(sys.argv[1]))
