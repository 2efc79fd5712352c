"""Batch scoring of a 1 GB CSV: `nbcd predict` here and on 2 Dask workers, with peak memory.

It writes a CSV of census-shaped rows (the ACS county table's rows, repeated to --size bytes),
trains a MinMax -> PCA(5) -> KMeans(7) pipeline on the table (or takes --model), then scores
the file with

- ``nbcd predict MODEL big.csv`` (this process, streaming ``--chunk-rows`` rows at a time), and
- ``nbcd predict MODEL big.csv --cluster ADDRESS`` on a real ``dask scheduler`` and two
  ``dask worker`` processes (one thread each, with nannies) on 127.0.0.1, twice: cold (the
  fresh workers load the model during the run) and warm (it is loaded already),

and prints a table: wall time, CPU seconds and peak RSS of the client (``os.wait4``'s rusage)
and of every worker process (CPU from /proc/PID/stat before and after the run; ``VmHWM`` of
/proc/PID/status after it: the workers start fresh, so it is their peak), beside the
target: each process under 1 GB. On a shared machine the CPU seconds show how the work was
split better than the wall time does. It checks that both
outputs are byte-identical, and deletes the big file and the outputs unless --keep.

    python bench/cluster_predict.py [--size 1GB] [--partition-size 64MB] [--work /tmp]

Every process shares the machine's cores with the others (and with whatever else runs);
the report says how many cores and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACS = REPO.parent / "shared" / "data" / "acs2015_county_data.csv"
DASK = str(Path(sys.executable).with_name("dask"))
TARGET_MIB = 1024.0
# neither this run nor its children should pick up a developer's default cluster
ENV = {k: v for k, v in os.environ.items() if k != "NBCD_CLUSTER"}


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    run: str
    process: str
    peak_mib: float
    cpu_seconds: float  # user + system time the run took in this process
    seconds: float | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GB", help="bytes of CSV to score (1GB, 200MB...)")
    parser.add_argument("--partition-size", default="64MB")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--model", type=Path, help="a saved model taking ACS columns")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the outputs")
    args = parser.parse_args()

    from nbcd.cluster.scoring import parse_size

    work = Path(tempfile.mkdtemp(prefix="nbcd-cluster-predict-", dir=args.work))
    print(describe_machine())
    try:
        model = args.model or train_model(work / "model")
        source = make_csv(work / "big.csv", parse_size(args.size))
        common = ["--chunk-rows", str(args.chunk_rows), "--partition-size", args.partition_size]
        rows: list[Row] = []

        seconds, peak, cpu = run_measured(
            ["predict", model, source, "-o", "local.csv", *common], work
        )
        rows.append(Row("local", "nbcd predict", peak, cpu, seconds))

        with dask_cluster(work / "dask", workers=2) as (address, nannies):
            pids = worker_pids(address)
            # cold: fresh workers load the model in the run; warm: a second run finds it loaded
            for run in ("cold", "warm"):
                label = f"2 workers, {run}"
                before = {pid: cpu_seconds(pid) for pid in [*pids.values(), *nannies]}
                seconds, peak, cpu = run_measured(
                    ["predict", model, source, "-o", f"{run}.csv", "--cluster", address, *common],
                    work,
                )
                rows.append(Row(label, "nbcd predict --cluster (client)", peak, cpu, seconds))
                for name, pid in [*sorted(pids.items()), *((f"nanny {n}", n) for n in nannies)]:
                    used = cpu_seconds(pid) - before[pid]
                    rows.append(Row(label, name, peak_rss_mib(pid), used))

        same = all(filecmp(work / "local.csv", work / f"{run}.csv") for run in ("cold", "warm"))
        report(rows, source.stat().st_size, same)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def describe_machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load1, load5, _ = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
        f"load average {load1:.1f}/{load5:.1f} before the runs"
    )


def train_model(folder: Path) -> Path:
    """The census pipeline's shape on the ACS table's numeric columns, saved to ``folder``."""
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler

    from nbcd.model import save_model

    if not ACS.is_file():
        sys.exit(f"the ACS table is not at {ACS}; pass --model")
    table = pd.read_csv(ACS)
    features = [c for c in table.select_dtypes("number").columns if c != "CensusId"]
    pipeline = Pipeline(
        [
            ("scale", MinMaxScaler()),
            ("pca", PCA(n_components=5)),
            ("kmeans", KMeans(7, n_init=3, random_state=0)),
        ]
    ).fit(table.dropna()[features])
    save_model(pipeline, folder, features=features)
    return folder


def make_csv(path: Path, size: int) -> Path:
    """The ACS table's rows repeated until the file holds ``size`` bytes (its 2 bad rows too)."""
    header, _, body = ACS.read_bytes().partition(b"\n")
    body = body if body.endswith(b"\n") else body + b"\n"
    started = time.perf_counter()
    with path.open("wb") as handle:
        handle.write(header + b"\n")
        written = len(header) + 1
        while written < size:
            handle.write(body)
            written += len(body)
    print(f"wrote {path} ({written / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s")
    return path


def run_measured(args: list[str | Path], cwd: Path) -> tuple[float, float, float]:
    """Run `python -m nbcd ARGS`: wall time, peak RSS (MiB) and CPU seconds (wait4's rusage)."""
    command = [sys.executable, "-m", "nbcd", *map(str, args)]
    errors = cwd / "stderr.txt"
    started = time.perf_counter()
    with errors.open("w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=ENV, stderr=stderr)
        # wait4, not wait: it gives this child's own rusage, peak RSS included
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped already; keeps Popen from waiting again
    lines = [line for line in errors.read_text().splitlines() if line.strip()]
    print(f"  stderr: {len(lines)} lines, the last: {lines[-1] if lines else '-'}")
    if code not in (0, 1):  # 1: the table's incomplete rows were skipped
        sys.exit(f"{' '.join(command)} exited with {code}")
    # ru_maxrss is in KiB on Linux
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat)."""
    # the fields after the command's closing parenthesis; utime and stime are the 12th, 13th
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int) -> Iterator[tuple[str, list[int]]]:
    """A `dask scheduler` and ``workers`` `dask worker` processes on loopback; nanny pids."""
    folder.mkdir(parents=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (folder / "dask.log").open("wb")
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                sys.exit(f"the scheduler did not start; see {folder / 'dask.log'}")
            time.sleep(0.1)
        for index in range(workers):
            name = f"w{index}"
            worker = [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1"]
            options = ["--name", name, "--no-dashboard", "--local-directory", str(folder / name)]
            processes.append(
                subprocess.Popen(
                    [*worker, *options],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=ENV,
                    start_new_session=True,
                )
            )
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address, [p.pid for p in processes[1:]]
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def worker_pids(address: str) -> dict[str, int]:
    """Each worker's name and the pid of its worker process (the nanny's child)."""
    from distributed import Client

    with Client(address, timeout=60, set_as_default=False) as client:
        pids: dict[str, int] = client.run(os.getpid)
        names = {a: str(w.get("name", a)) for a, w in client.scheduler_info()["workers"].items()}
    return {f"worker {names[a]} ({a})": pid for a, pid in pids.items()}


def filecmp(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes, read in blocks."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            x, y = left.read(1 << 22), right.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


def report(rows: list[Row], size: int, same: bool) -> None:
    print(f"\n{size / 1e9:.2f} GB CSV; target: every process under {TARGET_MIB:.0f} MiB peak RSS")
    print(f"{'run':<16} {'process':<40} {'peak RSS':>10} {'CPU':>8} {'wall':>8}  target")
    for row in rows:
        wall = f"{row.seconds:.1f} s" if row.seconds is not None else ""
        ok = "ok" if row.peak_mib < TARGET_MIB else "OVER"
        print(
            f"{row.run:<16} {row.process:<40} {row.peak_mib:>6.0f} MiB "
            f"{row.cpu_seconds:>6.1f} s {wall:>8}  {ok}"
        )
    print(f"outputs identical (local, cold, warm): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
