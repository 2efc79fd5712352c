"""Start the kernel fork server's process, as early as a run can.

The server spends ~0.4 s importing the kernel machinery, and every warm template waits for it.
`nbcd test|run|ci` therefore start it before they import anything else
(:func:`launch_early`, from nbcd.entry), and the run's kernel pool adopts it
(:func:`take_early`); a run that needs no kernel (everything cached, or a cluster) kills it
on exit. Only the standard library is imported here, so the launch costs a process spawn.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nbcd.errors import KernelError
from nbcd.execute.forkserver_main import AVOID, PRELOAD

__all__ = [
    "LaunchedServer",
    "discard",
    "kill_group",
    "launch_early",
    "launch_in_new_folder",
    "launch_server",
    "take_early",
]

PROGRAM = Path(__file__).with_name("forkserver_main.py")
# the commands that run kernels here, and the options that say they will not fork them
_KERNEL_COMMANDS = frozenset({"test", "run", "ci"})
_NO_SERVER_OPTIONS = ("--no-fork", "--cluster", "--help", "-h", "--help-params")


@dataclass
class LaunchedServer:
    """A fork server process, and the pool's end of its socket."""

    proc: subprocess.Popen[bytes]
    channel: socket.socket
    log_path: Path

    def discard(self) -> None:
        """Kill it without waiting: nothing it did is wanted."""
        kill_group(self.proc.pid, signal.SIGKILL)
        self.channel.close()


def launch_server(workdir: Path, env: Mapping[str, str]) -> LaunchedServer:
    """Start a fork server for kernels of this interpreter, in a folder of its own in workdir."""
    launcher = importlib.util.find_spec("ipykernel_launcher")
    if launcher is None or launcher.origin is None:
        raise KernelError("ipykernel is not installed")
    if not PROGRAM.is_file():  # a zipped install
        raise KernelError(f"cannot start the kernel fork server: no file {PROGRAM}")
    # its own folder, which it removes when it exits, even if the pool was killed
    folder = Path(tempfile.mkdtemp(prefix="server-", dir=workdir))
    log_path = folder / "fork_server.log"
    arguments = json.dumps([list(PRELOAD), launcher.origin, sorted(AVOID), str(folder)])
    ours, theirs = socket.socketpair()
    try:
        with open(log_path, "wb") as log:
            # Its own session, so a Ctrl-C in the terminal reaches only the pool, which then
            # cleans up; if the pool dies instead, the closed socket stops the server.
            proc = subprocess.Popen(
                [sys.executable, str(PROGRAM), arguments],
                stdin=theirs.fileno(),
                stdout=log,
                stderr=log,
                cwd=folder,
                env=dict(env),
                start_new_session=True,
            )
    except OSError as exc:  # no interpreter, out of processes
        ours.close()
        raise KernelError(f"cannot start the kernel fork server: {exc}") from None
    finally:
        theirs.close()
    return LaunchedServer(proc, ours, log_path)


_early: tuple[LaunchedServer, Path] | None = None


def launch_early(args: Sequence[str]) -> None:
    """For a command line that will run kernels here, start the fork server now.

    ``args`` are the command's arguments (``sys.argv[1:]``). Best effort: when it cannot
    start, the pool tries again later and says why.
    """
    global _early
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in _KERNEL_COMMANDS or _early is not None or not hasattr(os, "fork"):
        return
    if any(a.partition("=")[0] in _NO_SERVER_OPTIONS for a in args):
        return
    _early = launch_in_new_folder()
    if _early is not None:
        atexit.register(_discard_early)


def launch_in_new_folder() -> tuple[LaunchedServer, Path] | None:
    """A server for this process's environment, in a new pool folder; None if it cannot start.

    Best effort: the pool launches again when it starts, and says why it cannot.
    """
    workdir = Path(tempfile.mkdtemp(prefix="nbcd-kernels-"))
    try:
        return launch_server(workdir, os.environ), workdir
    except KernelError:
        shutil.rmtree(workdir, ignore_errors=True)
        return None


def take_early() -> tuple[LaunchedServer, Path] | None:
    """The server :func:`launch_early` started and its pool folder, once; None if none."""
    global _early
    early, _early = _early, None
    return early


def discard(launched: tuple[LaunchedServer, Path]) -> None:
    """Kill a server no pool took, and remove its pool folder."""
    server, workdir = launched
    server.discard()
    shutil.rmtree(workdir, ignore_errors=True)


def _discard_early() -> None:
    if (early := take_early()) is not None:
        discard(early)


def kill_group(pid: int, signum: int) -> None:
    """Signal the process group pid leads, which may be gone already.

    A child the server has just forked may not have made its own group yet (nor started
    anything that would be in it): then the process alone is signalled.
    """
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:  # gone, or not a group yet
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
