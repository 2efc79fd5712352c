"""Benchmark `nbcd test` against pytest --nbval, pytest --nbmake -n 2 and the plain-script floor.

Generates the 12-notebook suite with ../shared/bench/make_suite.py (unless --suite points at
one), then times every command in one run, interleaved round by round so that drift in the
machine's speed hits every tool alike. Prints medians and ratios; asserts nothing.

    python bench/test_runner.py [--rounds 3] [--suite DIR]

$HOME stays as it is (warm: caches of matplotlib and IPython exist after the first round).
BLAS/OpenMP threads are fixed to 1 for every tool.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAKE_SUITE = REPO.parent / "shared" / "bench" / "make_suite.py"
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=env or ENV, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return elapsed


def scripts_from(suite: Path, out: Path) -> list[Path]:
    """Each notebook's code cells as a plain script (magics dropped), for the floor."""
    scripts = []
    for notebook in sorted(suite.glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        lines = [
            ln
            for block in code
            for ln in block.splitlines()
            if not ln.lstrip().startswith(("%", "!"))
        ]
        script = out / f"{notebook.stem}.py"
        script.write_text("\n".join(lines) + "\n")
        scripts.append(script)
    return scripts


def floor(scripts: list[Path], suite: Path) -> tuple[float, float]:
    """Serial plain-script time of the suite, and the longest single script."""
    # a script has no inline backend; Agg draws the figure as the kernel's inline backend does
    env = {**ENV, "MPLBACKEND": "Agg"}
    times = [timed([sys.executable, str(s)], suite, env) for s in scripts]
    return sum(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--suite", type=Path, help="an existing suite folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbcd-bench-"))
    suite = args.suite
    if suite is None:
        suite = work / "suite"
        subprocess.run(
            [sys.executable, str(MAKE_SUITE), str(suite)], env=ENV, check=True, capture_output=True
        )
    scripts = scripts_from(suite, work)
    cores = os.cpu_count() or 1
    nbcd = [str(BIN / "nbcd"), "test", str(suite)]
    # the peers run with nbcd's own pytest plugin switched off, each as its users run it
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbcd"]
    commands: dict[str, list[str]] = {
        "nbcd test": [*nbcd, "--no-cache"],
        "pytest --nbval": [*pytest, "--nbval", str(suite)],
        "pytest --nbmake -n 2": [*pytest, "--nbmake", "-n", "2", str(suite)],
    }
    results: dict[str, list[float]] = {name: [] for name in [*commands, "nbcd test (cached)"]}
    floors: list[float] = []
    longest: list[float] = []
    for round_number in range(1, args.rounds + 1):
        for name, command in commands.items():
            results[name].append(timed(command, suite))
        shutil.rmtree(suite / "build", ignore_errors=True)
        timed(nbcd, suite)  # fills the cache
        results["nbcd test (cached)"].append(timed(nbcd, suite))
        total, single = floor(scripts, suite)
        floors.append(total)
        longest.append(single)
        print(
            f"round {round_number}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items())
            + f", floor {total:.2f}s",
            file=sys.stderr,
        )
    floor_s = statistics.median(floors)
    ideal = max(floor_s / cores, statistics.median(longest))
    nbcd_s = statistics.median(results["nbcd test"])
    print(f"\n12-notebook suite, {cores} cores, {args.rounds} rounds, medians")
    print(f"{'command':<24} {'wall s':>8} {'x ideal':>8} {'nbcd faster by':>15}")
    for name, values in results.items():
        median = statistics.median(values)
        speedup = f"{median / nbcd_s:.2f}x" if "nbcd" not in name else ""
        print(f"{name:<24} {median:8.2f} {median / ideal:8.2f} {speedup:>15}")
    print(f"{'floor: scripts, serial':<24} {floor_s:8.2f} {floor_s / ideal:8.2f}")
    print(f"{'ideal (floor/cores)':<24} {ideal:8.2f} {1.0:8.2f}")
    print(f"\nnbcd test cold / ideal: {nbcd_s / ideal:.2f} (target 1.3)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
