"""Load on `nbcd serve` with the census model: single-row CSV requests over keep-alive.

For 1 and 2 uvicorn workers and 1 and 8 concurrent connections it reports requests per
second, median and 99th-percentile latency and errors, beside the targets: p50 <= 2 ms at
concurrency 1, >= 1000 req/s at concurrency 8 with 2 workers, and no errors.

The load comes from ``wrk`` (Debian package ``wrk``) when it is installed, else from a
Python asyncio client on raw sockets; either shares the machine's cores with the server,
which the report says. Traffic goes to 127.0.0.1 only; every run is bounded by --duration
(wrk) or by --duration and --max-requests (Python client).

    python bench/serve_load.py [--duration 5] [--model examples/census/build/model]

The census model is trained first (`nbcd run` on the example notebook) if it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CENSUS = REPO / "examples" / "census"
DEFAULT_MODEL = CENSUS / "build" / "model"
# Fixed BLAS/OpenMP threads: a single-row request must not wake a thread pool.
THREADS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
P50_TARGET_MS = 2.0
RPS_TARGET = 1000.0


@dataclass(frozen=True)
class Run:
    """One load run's outcome."""

    workers: int
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--max-requests", type=int, default=200_000, help="Python client cap")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-access-log", action="store_true", help="serve without access log")
    args = parser.parse_args()

    model = args.model.resolve()
    if not (model / "model.skops").is_file():
        train_census_model(model)
    client = "wrk" if args.client == "auto" and shutil.which("wrk") else args.client
    client = "python" if client == "auto" else client
    body = example_row(model)
    print(describe_machine(client))

    runs: list[Run] = []
    for workers in (1, 2):
        with running_server(model, workers, access_log=not args.no_access_log) as url:
            check_answer(url, body)
            load(client, url, body, 1, 1.0, 2_000)  # warm-up: first-request costs, caches
            for concurrency in (1, 8):
                stats = load(client, url, body, concurrency, args.duration, args.max_requests)
                runs.append(Run(workers, concurrency, *stats))
    print(table(runs))


def train_census_model(model: Path) -> None:
    """Run the census notebook, which saves the model under build/model."""
    if model != DEFAULT_MODEL:
        sys.exit(f"no model at {model}")
    print("training the census model: nbcd run notebooks/census_segmentation.ipynb", flush=True)
    subprocess.run(
        [sys.executable, "-m", "nbcd", "run", "notebooks/census_segmentation.ipynb"],
        cwd=CENSUS,
        check=True,
        env={**os.environ, **THREADS_ENV},
    )


def example_row(model: Path) -> bytes:
    """One CSV row in the middle of the training data's range, as a client would send."""
    from nbcd.model import load_model

    artifact = load_model(model)
    estimator = artifact.estimator
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    low = getattr(first, "data_min_", None)
    if low is None:
        values = [1.0] * len(artifact.features)
    else:
        values = [float(v) for v in low + first.data_range_ / 2]
    return (",".join(f"{v:.6g}" for v in values) + "\n").encode()


def describe_machine(client: str) -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load1, load5, _ = os.getloadavg()
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401

        stack = "uvicorn with httptools + uvloop"
    except ImportError:
        stack = "uvicorn with h11 + asyncio (install uvicorn[standard] for httptools + uvloop)"
    where = "wrk" if client == "wrk" else "a Python asyncio raw-socket client"
    return (
        f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
        f"load average {load1:.1f}/{load5:.1f} before the runs\n"
        f"server: {stack}; load: {where} on the same cores"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(model: Path, workers: int, *, access_log: bool) -> Iterator[str]:
    """`nbcd.serve.app.serve` in a subprocess; yields its URL once /ping answers."""
    port = _free_port()
    code = (
        "from pathlib import Path; from nbcd.serve.app import serve; "
        f"serve(Path({str(model)!r}), port={port}, workers={workers}, access_log={access_log})"
    )
    with tempfile.NamedTemporaryFile(prefix="nbcd-serve-", suffix=".log") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=log, stderr=log, env={**os.environ, **THREADS_ENV}
        )
        try:
            deadline = time.monotonic() + 120
            while not _pings(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the server did not start:\n{Path(log.name).read_text()}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _request(body: bytes, *, close: bool = False) -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def check_answer(url: str, body: bytes) -> None:
    """One request by hand, so a broken server fails loudly rather than as fast errors."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request(body, close=True))
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    if not reply.startswith(b"HTTP/1.1 200") or b"closest_cluster" not in reply:
        sys.exit(f"unexpected answer from the server: {reply[:300]!r}")


def load(
    client: str, url: str, body: bytes, concurrency: int, seconds: float, max_requests: int
) -> tuple[int, float, float, float, int]:
    """(requests, seconds, p50 ms, p99 ms, errors) of one bounded run."""
    if client == "wrk":
        return _wrk(url, body, concurrency, seconds)
    return asyncio.run(_python_load(url, body, concurrency, seconds, max_requests))


def _wrk(
    url: str, body: bytes, concurrency: int, seconds: float
) -> tuple[int, float, float, float, int]:
    script = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "text/csv"\n'
        f"wrk.body = {body.decode()!r}\n".replace("'", '"')
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        threads = min(concurrency, 2)
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{concurrency}",
                f"-d{seconds:g}s",
                "--latency",
                "-s",
                handle.name,
                f"{url}/invocations",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(handle.name)
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert done is not None, out
    elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return int(done.group(1)), elapsed, _percentile(out, "50%"), _percentile(out, "99%"), errors


def _percentile(out: str, label: str) -> float:
    """A latency percentile from wrk's --latency table, in milliseconds."""
    found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    assert found is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
    return float(found.group(1)) * scale


async def _python_load(
    url: str, body: bytes, concurrency: int, seconds: float, max_requests: int
) -> tuple[int, float, float, float, int]:
    """Keep-alive connections each sending requests back to back until time or count runs out."""
    port = int(url.rsplit(":", 1)[1])
    request = _request(body)
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                sent = time.perf_counter()
                writer.write(request)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                errors += not status.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies), elapsed, cuts[49] * 1000, cuts[98] * 1000, errors


def table(runs: list[Run]) -> str:
    """The results beside the targets they are held to."""
    lines = [
        "",
        "| workers | concurrency | req/s | p50 ms | p99 ms | errors | target | met |",
        "|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for run in runs:
        if run.concurrency == 1:
            target, met = f"p50 <= {P50_TARGET_MS:g} ms", run.p50_ms <= P50_TARGET_MS
        elif run.workers == 2:
            target, met = f">= {RPS_TARGET:g} req/s", run.rps >= RPS_TARGET
        else:
            target, met = "-", True
        met = met and run.errors == 0
        lines.append(
            f"| {run.workers} | {run.concurrency} | {run.rps:,.0f} | {run.p50_ms:.2f} | "
            f"{run.p99_ms:.2f} | {run.errors} | {target}, 0 errors | {'yes' if met else 'NO'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
