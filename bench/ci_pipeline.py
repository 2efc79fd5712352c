"""Benchmark `nbcd ci` on examples/census against the work it cannot avoid.

One execution per notebook per pipeline means `nbcd ci` from a clean build folder should cost
about what running the notebook once costs, plus the cheap stages. This times, in one run and
interleaved round by round:

- **ci (clean build)**: ``rm -rf build; nbcd ci`` (the test cache starts empty; the user-level
  wheel cache is warm after the first round, as on any developer machine);
- **floor**: ``nbcd run NOTEBOOK`` plus ``nbcd ci --stages lint,report,build`` with every cache
  warm, i.e. one execution and the stages that execute nothing.

Prints medians and the ratio ci / floor (the target is at most 1.25); asserts nothing.

    python bench/ci_pipeline.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "examples" / "census"
NOTEBOOK = "notebooks/census_segmentation.ipynb"
NBCD = [sys.executable, "-m", "nbcd"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbcd-ci-bench-") as tmp:
        project = Path(tmp) / "census"
        shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("build", "__pycache__"))
        timed([*NBCD, "ci"], project)  # warm-up: wheel cache, matplotlib and IPython caches
        ci_times, floor_times = [], []
        for _ in range(args.rounds):
            shutil.rmtree(project / "build", ignore_errors=True)
            ci_times.append(timed([*NBCD, "ci"], project))
            run = timed([*NBCD, "run", NOTEBOOK], project)
            rest = timed([*NBCD, "ci", "--stages", "lint,report,build"], project)
            floor_times.append(run + rest)
        ci, floor = statistics.median(ci_times), statistics.median(floor_times)
        print(f"census, {args.rounds} rounds, {os.cpu_count()} cores, BLAS threads 1, medians")
        print(f"{'nbcd ci (clean build folder)':<44} {ci:6.2f} s")
        print(f"{'floor: nbcd run + lint, report, build warm':<44} {floor:6.2f} s")
        print(f"{'ratio ci / floor (target <= 1.25)':<44} {ci / floor:6.2f}")


if __name__ == "__main__":
    main()
