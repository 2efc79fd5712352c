"""Start kernels through the fork server (nbcd.execute.forkserver) from jupyter_client."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import Future
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import LocalProvisioner

from nbcd.execute.forkserver import POLL_S, ForkServer, kill_group

__all__ = ["ForkProvisioner"]


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
            kill_group(self.pid, signum)

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
