"""Real Dask clusters for tests: a `dask scheduler` and `dask worker` processes on loopback.

Use the fixtures through ``from tests.cluster_fixtures import dask_cluster, fresh_cluster``
(pytest finds imported fixtures in a test module's namespace):

- ``dask_cluster``: one scheduler and two workers (one thread each, with nannies) for the
  whole test module;
- ``fresh_cluster``: the same for one test, for tests that kill workers.

Every process runs this venv's ``dask`` command, on 127.0.0.1 and free ports, with its
working and spill folders under the test's temporary folder, and is stopped (SIGTERM, then
SIGKILL) at teardown. :func:`start_cluster` is the plain context manager behind both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "DaskCluster",
    "dask_cluster",
    "free_port",
    "fresh_cluster",
    "start_cluster",
    "start_worker",
    "stop",
    "wait_for_port",
    "wait_for_workers",
]

DASK = str(Path(sys.executable).with_name("dask"))
START_TIMEOUT_S = 60.0
# quiet processes, and a notebook test never waits on the dashboard or on a slow heartbeat
ENV = {
    **os.environ,
    "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
ENV.pop("NBCD_CLUSTER", None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until something listens on host:port; fail with the process's log if it exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    pytest.fail(f"{process.args} did not listen on {host}:{port}:\n{log.read_text()}")


@dataclass
class DaskCluster:
    """A running scheduler and its worker processes."""

    address: str
    folder: Path
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker_pids(self) -> dict[str, int]:
        """Each connected worker's address and the pid of its worker process (not nanny)."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            return dict(client.run(os.getpid))

    def log(self) -> str:
        """Everything the processes wrote, for failure messages."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))


def start_worker(
    address: str,
    folder: Path,
    name: str,
    *,
    host: str = "127.0.0.1",
    prefix: Sequence[str] = (),
    nthreads: int = 1,
) -> subprocess.Popen[bytes]:
    """Start one `dask worker` (with its nanny) connecting to address; ``prefix`` wraps it."""
    log = (folder / f"{name}.log").open("wb")
    command = [
        *prefix,
        DASK,
        "worker",
        address,
        "--host",
        host,
        "--nthreads",
        str(nthreads),
        "--name",
        name,
        "--no-dashboard",
        "--local-directory",
        str(folder / name),
    ]
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
    )


def wait_for_workers(address: str, count: int, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until ``count`` workers are connected to the scheduler at address."""
    from distributed import Client

    with Client(address, timeout=timeout, set_as_default=False) as client:
        client.wait_for_workers(count, timeout=timeout)


def stop(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left after timeout."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@contextlib.contextmanager
def start_cluster(
    folder: Path, workers: int = 2, host: str = "127.0.0.1", extra_env: dict[str, str] | None = None
) -> Iterator[DaskCluster]:
    """A scheduler on host and ``workers`` workers on loopback; all stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    log_path = folder / "scheduler.log"
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", host, "--port", str(port), "--no-dashboard"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={**ENV, **(extra_env or {})},
        start_new_session=True,
    )
    cluster = DaskCluster(f"tcp://{host}:{port}", folder, scheduler)
    try:
        wait_for_port(host, port, scheduler, log_path)
        for index in range(workers):
            cluster.workers.append(start_worker(cluster.address, folder, f"worker-{index}"))
        if workers:
            wait_for_workers(cluster.address, workers)
        yield cluster
    finally:
        stop([*cluster.workers, scheduler])


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and two single-thread workers on loopback, shared by a test module."""
    with start_cluster(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A scheduler and two workers of this test alone (for tests that kill workers)."""
    with start_cluster(tmp_path / "dask") as cluster:
        yield cluster
