"""Benchmark `nbcd test` against pytest --nbval (serial, -n N), --nbmake -n N and plain scripts.

Generates the 12-notebook suite with bench/make_suite.py (unless --suite points at one), then
times every command in one run, interleaved round by round so that drift in the machine's speed
hits every tool alike. Prints medians and ratios; asserts nothing.

    python bench/test_runner.py [--rounds 3] [--workers 2] [--suite DIR]

Every parallel tool runs with the same worker count (`nbcd test -j N`, `pytest --nbmake -n N`,
`pytest --nbval -n N --dist loadfile`); serial `pytest --nbval` is the reference serial peer.
nbcd runs cold (`--no-cache`, with and without warm imports) and as an unchanged rerun with its
cache warm. The ideal is the notebooks' code run as plain scripts, serially, divided by the
cores; "x ideal" and "nbcd faster by" are paired round by round (each round's time over the
same round's floor or nbcd), then the median is taken.

$HOME stays as it is; the output says whether matplotlib's and IPython's caches existed there
before the run (after the first command they do, for every later one).
BLAS/OpenMP threads are fixed to 1 for every tool.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAKE_SUITE = REPO / "bench" / "make_suite.py"
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
COLD_TARGET = 0.6  # nbcd test --no-cache over (scripts serial / cores)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds and output of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=env or ENV, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return elapsed, done.stdout + done.stderr


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one command, which must succeed."""
    return run(command, cwd, env)[0]


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


def home_caches() -> list[tuple[str, Path]]:
    """Where matplotlib and IPython keep their caches (as they resolve them, without importing)."""
    home = Path.home()
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    matplotlib = os.environ.get("MPLCONFIGDIR") or str(Path(xdg_cache) / "matplotlib")
    ipython = os.environ.get("IPYTHONDIR") or str(home / ".ipython")
    return [("matplotlib", Path(matplotlib)), ("IPython", Path(ipython))]


def shown(path: Path) -> str:
    """path with $HOME written as ~."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def paired(values: list[float], references: list[float]) -> float:
    """Median over rounds of each round's value over the same round's reference."""
    return statistics.median(v / r for v, r in zip(values, references, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=2, help="worker count of every parallel tool (default 2)"
    )
    parser.add_argument("--suite", type=Path, help="an existing suite folder")
    args = parser.parse_args()
    # before anything runs a kernel: generating the suite would create these caches
    caches = [(name, path, path.is_dir()) for name, path in home_caches()]
    work = Path(tempfile.mkdtemp(prefix="nbcd-bench-"))
    suite = args.suite
    if suite is None:
        suite = work / "suite"
        subprocess.run(
            [sys.executable, str(MAKE_SUITE), str(suite)], env=ENV, check=True, capture_output=True
        )
    suite = suite.resolve()
    notebooks = len(list(suite.glob("*.ipynb")))
    scripts = scripts_from(suite, work)
    cores = os.cpu_count() or 1
    n = str(args.workers)
    nbcd = [str(BIN / "nbcd"), "test", "-j", n, str(suite)]
    # the peers run with nbcd's own pytest plugin switched off, each as its users run it
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbcd"]
    cold = f"nbcd test -j {n} --no-cache"
    cold_plain = f"{cold} --no-warm-imports"
    rerun = f"nbcd test -j {n}"
    loadfile = [*pytest, "--nbval", "-n", n, "--dist", "loadfile", str(suite)]
    commands: dict[str, list[str]] = {
        cold: [*nbcd, "--no-cache"],
        cold_plain: [*nbcd, "--no-cache", "--no-warm-imports"],
        "pytest --nbval": [*pytest, "--nbval", str(suite)],
        f"pytest --nbval -n {n} --dist loadfile": loadfile,
        f"pytest --nbmake -n {n}": [*pytest, "--nbmake", "-n", n, str(suite)],
    }
    cache_state = {cold: "cold", cold_plain: "cold", rerun: "rerun: warm"}
    results: dict[str, list[float]] = {name: [] for name in [*commands, rerun]}
    floors: list[float] = []
    longest: list[float] = []
    rerun_summaries: list[str] = []
    for round_number in range(1, args.rounds + 1):
        for name, command in commands.items():
            results[name].append(timed(command, suite))
        shutil.rmtree(suite / "build", ignore_errors=True)  # where nbcd keeps its cache here
        timed(nbcd, suite)  # fills the cache
        elapsed, output = run(nbcd, suite)
        results[rerun].append(elapsed)
        summary = re.findall(r"^\d+ notebooks?: .*$", output, re.MULTILINE)
        rerun_summaries.append(summary[-1] if summary else "(no summary line)")
        total, single = floor(scripts, suite)
        floors.append(total)
        longest.append(single)
        print(
            f"round {round_number}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items())
            + f", floor {total:.2f}s",
            file=sys.stderr,
        )
    ideals = [f / cores for f in floors]
    floor_s = statistics.median(floors)

    rounds = f"{args.rounds} round{'s' if args.rounds != 1 else ''}"
    print(f"\n{notebooks}-notebook suite ({suite}), {rounds} interleaved, medians")
    print(
        f"Python {platform.python_version()}, {cores} cores, {args.workers} workers for every"
        f" parallel tool (nbcd -j, pytest -n); BLAS/OpenMP threads 1"
    )
    print(
        f"nbcd {version('nbcd')}, nbval {version('nbval')}, nbmake {version('nbmake')},"
        f" pytest {version('pytest')}, pytest-xdist {version('pytest-xdist')}"
    )
    existed = ", ".join(
        f"{name} cache {shown(path)} {'existed' if there else 'did NOT exist'}"
        for name, path, there in caches
    )
    print(f"HOME {Path.home()}: before the run {existed}")
    print(
        "nbcd cache: cold = --no-cache (every notebook runs); rerun = unchanged rerun, cache"
        " warm (filled by a run just before)"
    )
    for number, line in enumerate(rerun_summaries, 1):
        print(f"  rerun, round {number}: {line}")
    print("x ideal: wall / (scripts serial / cores); nbcd faster by: wall / nbcd cold wall")
    print(f"\n{'command':<44} {'cache':<12} {'wall s':>8} {'x ideal':>8} {'nbcd faster by':>15}")
    for name in [cold, cold_plain, rerun, *list(commands)[2:]]:
        values = results[name]
        faster = ""
        if name not in (cold, rerun):
            faster = f"{paired(values, results[cold]):.2f}x"
        print(
            f"{name:<44} {cache_state.get(name, ''):<12} {statistics.median(values):8.2f}"
            f" {paired(values, ideals):8.2f} {faster:>15}"
        )
    print(f"{'floor: scripts, serial':<44} {'':<12} {floor_s:8.2f} {float(cores):8.2f}")
    print(f"{'ideal: scripts serial / cores':<44} {'':<12} {floor_s / cores:8.2f} {1.0:8.2f}")
    print(f"longest single script: {statistics.median(longest):.2f} s")
    ratio = paired(results[cold], ideals)
    verdict = "met" if ratio <= COLD_TARGET else "not met"
    print(
        f"\nnbcd cold / (scripts serial / cores): {ratio:.2f}"
        f" (target <= {COLD_TARGET}: {verdict}); without warm imports:"
        f" {paired(results[cold_plain], ideals):.2f}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
