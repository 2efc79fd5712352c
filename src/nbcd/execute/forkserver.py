"""The pool's end of the kernel fork server: a warm process that forks a kernel per request.

The server's program is nbcd.execute.forkserver_main (its docstring has the protocol), started
by nbcd.execute.prelaunch. :class:`ForkServer` sends requests and reads replies over the
server's Unix socket; nbcd.execute.provisioner lets an ordinary ``AsyncKernelManager`` start
kernels through it. This module imports only the standard library (and nbcd's errors), so a
run can start the server before it loads Jupyter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nbcd.errors import KernelError
from nbcd.execute.prelaunch import LaunchedServer, kill_group, launch_server

__all__ = ["POLL_S", "ForkServer", "kill_group"]

POLL_S = 0.002  # between liveness checks while killing: cheap, and a kill takes ~1 ms


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
        return cls.adopt(launch_server(workdir, env))

    @classmethod
    def adopt(cls, launched: LaunchedServer) -> ForkServer:
        """Talk to a server started by nbcd.execute.prelaunch (from now on, the pool's)."""
        return cls(launched.channel, _Launched(launched.proc), launched.log_path)

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

    def close(self, timeout: float = 5.0, kill: bool = False) -> None:
        """Stop the server, which kills any kernel still running on its way out.

        With ``kill``, for a server that never forked anything, it is killed at once rather
        than left to finish importing before it reads the end of its socket.
        """
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)  # the server reads its end of file
        if kill:
            self._process.kill()
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
