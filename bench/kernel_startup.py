"""Kernel start-up and teardown: plain jupyter_client against nbcd's kernel pool.

Each mode runs ``--cycles`` acquire + execute-one-cell + release cycles, one after another
(1 worker) and two at a time (2 workers sharing the pool). "ready" is from asking for a kernel
until it can execute; "total" covers everything, pool start and close included. The modes:

- plain, graceful: AsyncKernelManager start, wait_for_ready, shutdown_kernel() (as nbclient)
- plain, kill:     the same, but shutdown_kernel(now=True) (as nbval)
- pool, no fork:   KernelPool(forked=False): fast ready check, immediate kill, spare kernel
- pool, fork:      KernelPool without spares, each kernel forked when asked for
- pool, fork+spare: KernelPool defaults: forked, with a spare started ahead

The machine's speed drifts, so modes are interleaved round by round and medians reported.
``--work`` makes the cell burn that much CPU, which leaves spares time to start.

    PYTHONPATH=src python bench/kernel_startup.py [--cycles 12] [--rounds 3] [--work 0.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from nbcd.execute.kernels import KernelPool


@dataclass
class Lease:
    """One kernel on loan: its client and how to give it back."""

    kc: AsyncKernelClient
    give_back: Callable[[], Awaitable[None]]


@dataclass
class Result:
    """Medians over rounds for one mode and worker count."""

    totals: list[float] = field(default_factory=list)
    readies: list[float] = field(default_factory=list)
    releases: list[float] = field(default_factory=list)
    opens: list[float] = field(default_factory=list)  # pool start, fork server warm-up


class Plain:
    """Kernels started and stopped the way nbclient (graceful) or nbval (kill) do."""

    def __init__(self, graceful: bool) -> None:
        self.graceful = graceful

    async def __aenter__(self) -> Plain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def acquire(self, cwd: Path) -> Lease:
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel(cwd=str(cwd))
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)

        async def give_back() -> None:
            kc.stop_channels()
            await km.shutdown_kernel(now=not self.graceful)

        return Lease(kc, give_back)


class Pooled:
    """Kernels from a KernelPool."""

    def __init__(self, size: int, forked: bool = True, prestart: bool = True) -> None:
        self.pool = KernelPool(size, forked=forked, prestart=prestart)

    async def __aenter__(self) -> Pooled:
        await self.pool.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.pool.close()

    async def acquire(self, cwd: Path) -> Lease:
        handle = await self.pool.acquire(cwd)
        return Lease(handle.kc, lambda: self.pool.release(handle))


Session = Plain | Pooled
MODES: dict[str, Callable[[int], Session]] = {
    "plain, graceful": lambda size: Plain(graceful=True),
    "plain, kill": lambda size: Plain(graceful=False),
    "pool, no fork": lambda size: Pooled(size, forked=False),
    "pool, fork": lambda size: Pooled(size, prestart=False),
    "pool, fork+spare": lambda size: Pooled(size),
}


async def run_mode(
    make: Callable[[int], Session], workers: int, cycles: int, work: float, cwd: Path, into: Result
) -> None:
    """Run the cycles; record the total wall time, each kernel's time to ready and release."""
    code = f"import time\nt = time.process_time()\nwhile time.process_time() - t < {work}: pass"
    left = list(range(cycles))
    began = time.perf_counter()
    async with make(workers) as session:
        into.opens.append(time.perf_counter() - began)

        async def worker() -> None:
            while left:
                left.pop()
                asked = time.perf_counter()
                lease = await session.acquire(cwd)
                into.readies.append(time.perf_counter() - asked)
                reply = await lease.kc.execute_interactive(code, timeout=60)
                assert reply["content"]["status"] == "ok"
                done = time.perf_counter()
                await lease.give_back()
                into.releases.append(time.perf_counter() - done)

        await asyncio.gather(*(worker() for _ in range(workers)))
    into.totals.append(time.perf_counter() - began)


async def main() -> None:
    """Run every mode, interleaved, and print a table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=float, default=0.0, help="CPU seconds per cell")
    args = parser.parse_args()
    results = {(mode, workers): Result() for mode in MODES for workers in (1, 2)}
    with tempfile.TemporaryDirectory(prefix="nbcd-bench-") as tmp:
        for _ in range(args.rounds):
            for mode, make in MODES.items():
                for workers in (1, 2):
                    await run_mode(
                        make, workers, args.cycles, args.work, Path(tmp), results[mode, workers]
                    )

    print(
        f"{args.cycles} cycles, cell CPU {args.work} s, {args.rounds} rounds, "
        f"{os.cpu_count()} cores, HOME={os.environ.get('HOME')} (warm caches)"
    )
    print("| mode | workers | open ms | ready ms median/p90 | release ms | total s | x faster |")
    print("|---|---|---|---|---|---|---|")
    for (mode, workers), result in results.items():
        base = statistics.median(results["plain, graceful", workers].totals)
        total = statistics.median(result.totals)
        ready = sorted(result.readies)
        p90 = ready[int(0.9 * (len(ready) - 1))]
        release = statistics.median(result.releases)
        print(
            f"| {mode} | {workers} | {1000 * statistics.median(result.opens):.0f} "
            f"| {1000 * statistics.median(ready):.0f} / {1000 * p90:.0f} "
            f"| {1000 * release:.0f} | {total:.2f} | {base / total:.1f} |"
        )
    print("x faster: median total of 'plain, graceful' with as many workers / this mode's")


if __name__ == "__main__":
    asyncio.run(main())
