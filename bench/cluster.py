"""Added cost per notebook of `nbcd test --cluster` over the local kernel pool.

Writes N (default 48) tiny notebooks with bench/tiny_suite.py's generator, starts a real
`dask scheduler` and `dask worker` processes on loopback, and times the test engine
(``run_tests``, cache off, the same verdicts checked every time) on the suite:

- local: the warm kernel pool here, ``-j 1`` and ``-j 2``;
- 1 worker x 1 thread (against ``-j 1``), 1 worker x 2 threads and 2 workers x 1 thread
  (against ``-j 2``): one Dask task per notebook.

Each cluster run connects anew (connect, version check, plugin), as `nbcd test --cluster`
does; the workers keep their kernel pools between runs, so round 1 is reported apart as the
cold start. Rounds are interleaved; medians. Then the latency of one notebook at a time
(nothing overlapping, so the cluster's added cost shows whole), here and on 1 worker x 1
thread, median per notebook. The client, the scheduler and the workers share this machine's
cores, which a real cluster would not. Asserts nothing.

    python bench/cluster.py [--count 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny_suite import write_suite

TARGET_MS = 50.0  # added per notebook through the cluster
DASK = str(Path(sys.executable).with_name("dask"))
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error",
}
ENV.pop("NBCD_CLUSTER", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int, threads: int) -> Iterator[str]:
    """A scheduler and ``workers`` workers of ``threads`` threads on loopback."""
    from distributed import Client

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (folder / "dask.log").open("ab")

    def start(*command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [DASK, *command], stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )

    processes = [start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")]
    try:
        for index in range(workers):
            name = f"w{workers}x{threads}-{index}"
            processes.append(
                start(
                    *("worker", address, "--host", "127.0.0.1", "--nthreads", str(threads)),
                    *("--name", name, "--no-dashboard", "--local-directory", str(folder / name)),
                )
            )
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def timed_run(paths: list[Path], folder: Path, cluster: str | None, jobs: int = 2) -> float:
    """Wall seconds of one cache-off test run (-j jobs here); every notebook must pass."""
    from nbcd.testing.runner import TestOptions, run_tests

    options = TestOptions(
        jobs=None if cluster else jobs,
        cache=False,
        cluster=cluster,
        project_root=folder,
        build_dir=folder / "build",
    )
    started = time.perf_counter()
    report = run_tests(paths, options)
    elapsed = time.perf_counter() - started
    bad = [o for o in report.outcomes if o.status != "passed"]
    if bad:
        raise SystemExit(f"{bad[0].path.name}: {bad[0].status}: {bad[0].message}")
    return elapsed


def latencies(paths: list[Path], folder: Path, address: str | None) -> list[float]:
    """Seconds per notebook, one at a time, after a first one warmed everything up.

    Nothing overlaps, so the cluster's added latency shows whole; medians resist the
    machine's other load better than wall times do.
    """
    import asyncio

    from nbcd.execute.dispatch import ExecutionRequest, Executions, LocalExecutions
    from nbcd.notebook import read_notebook

    async def measure() -> list[float]:
        where: Executions
        if address is None:
            where = LocalExecutions(1)
        else:
            from nbcd.cluster.executions import ClusterExecutions

            where = ClusterExecutions(address, root=folder, build_dir=folder / "build")
        requests = [ExecutionRequest(p, read_notebook(p), "python3", 60) for p in paths]
        await where.start([(r.path, r.kernel, r.imports) for r in requests])
        await where.execute(requests[0])
        seconds = []
        for request in requests:
            started = time.perf_counter()
            await where.execute(request)
            seconds.append(time.perf_counter() - started)
        await where.close()
        return seconds

    return asyncio.run(measure())


def connect_seconds(address: str) -> float:
    """Connect, check the workers' versions and close: the fixed cost of a cluster run."""
    from nbcd.cluster.connect import connect

    started = time.perf_counter()
    with connect(address):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48, help="notebooks (default 48)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbcd-cluster-bench-"))
    suite = work / "tiny"
    write_suite(suite, args.count)
    paths = sorted(suite.glob("*.ipynb"))
    import distributed  # noqa: F401  (imported once, as a CLI run would; not timed per run)

    # each cluster layout against the local pool with as many notebooks at once
    layouts = {
        "1 worker x 1 thread": ((1, 1), "local -j 1"),
        "1 worker x 2 threads": ((1, 2), "local -j 2"),
        "2 workers x 1 thread": ((2, 1), "local -j 2"),
    }
    local_jobs = {"local -j 1": 1, "local -j 2": 2}
    times: dict[str, list[float]] = {name: [] for name in [*local_jobs, *layouts]}
    cold: dict[str, float] = {}
    connects: dict[str, list[float]] = {name: [] for name in layouts}
    latency: dict[str, list[float]] = {"local": [], "1 worker x 1 thread": []}
    with contextlib.ExitStack() as stack:
        addresses = {
            name: stack.enter_context(dask_cluster(work / "dask", *shape))
            for name, (shape, _) in layouts.items()
        }
        for _ in range(args.rounds):  # one notebook at a time, interleaved
            latency["local"] += latencies(paths, suite, None)
            latency["1 worker x 1 thread"] += latencies(
                paths, suite, addresses["1 worker x 1 thread"]
            )
        for name, address in addresses.items():  # round 0: the workers' pools start
            cold[name] = timed_run(paths, suite, address)
        for round_number in range(1, args.rounds + 1):
            for name, jobs in local_jobs.items():
                times[name].append(timed_run(paths, suite, None, jobs))
            for name, address in addresses.items():
                times[name].append(timed_run(paths, suite, address))
                connects[name].append(connect_seconds(address))
            print(
                f"round {round_number}: "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                file=sys.stderr,
            )
    medians = {name: statistics.median(values) for name, values in times.items()}
    per_nb = {name: seconds / args.count * 1000 for name, seconds in medians.items()}
    print(f"\n{args.count} tiny notebooks, cache off, {args.rounds} rounds interleaved, medians")
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores (shared), loopback")
    print(
        f"\n{'where':<28} {'wall s':>7} {'ms/nb':>7} {'vs':>11} {'added ms/nb':>12}"
        f" {'connect s':>10}"
    )
    for name in local_jobs:
        print(f"{name:<28} {medians[name]:7.2f} {per_nb[name]:7.1f}")
    added_warm = []
    for name, (_, baseline) in layouts.items():
        added = per_nb[name] - per_nb[baseline]
        added_warm.append(added)
        connect = statistics.median(connects[name])
        print(
            f"{name:<28} {medians[name]:7.2f} {per_nb[name]:7.1f} {baseline:>11}"
            f" {added:12.1f} {connect:10.2f}"
        )
    for name, (_, baseline) in layouts.items():
        seconds = cold[name]
        added = seconds / args.count * 1000 - per_nb[baseline]
        print(
            f"{name + ', cold':<28} {seconds:7.2f} {seconds / args.count * 1000:7.1f}"
            f" {baseline:>11} {added:12.1f}"
        )
    one = {name: statistics.median(values) * 1000 for name, values in latency.items()}
    print(
        f"\none notebook at a time (warm pools; median of {len(latency['local'])}): local"
        f" {one['local']:.1f} ms, 1 worker x 1 thread {one['1 worker x 1 thread']:.1f} ms,"
        f" added {one['1 worker x 1 thread'] - one['local']:.1f} ms"
    )
    worst = max(added_warm)
    verdict = "met" if worst < TARGET_MS else "not met"
    print(
        f"\nadded per notebook, warm workers: at most {worst:.1f} ms"
        f" (target < {TARGET_MS:.0f} ms: {verdict})"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
