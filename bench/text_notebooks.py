"""Benchmark text notebooks: `nbcd test` on jupytext percent `.py` files against jupytext's ways.

Writes 12 small percent notebooks (a markdown title and three code cells each, pure Python),
then times, interleaved round by round so drift in the machine's speed hits every tool alike:

- ``nbcd test -j N --no-cache`` on the folder (reads the .py files itself), and its rerun
  with the cache warm;
- ``jupytext --to ipynb`` then ``pytest --nbmake -n N`` on the converted copies;
- ``jupytext --to ipynb --execute`` (jupytext's own executor, one notebook at a time);
- ``nbcd test`` cold and rerun on the same notebooks converted to .ipynb, for what reading
  text costs nbcd itself.

Each peer works in its own copy of the suite, so no converted .ipynb ever sits beside a .py
that nbcd reads (it would be taken as the .py's pair). Then, in this process and after
imports, the time to read one file: ``jupytext.read`` against ``nbcd.notebook.read_notebook``
(which also checks the file is a notebook, validates it and maps its lines), alone and with a
paired .ipynb. Prints medians; asserts nothing.

    python bench/text_notebooks.py [--rounds 3] [--workers 2] [--reads 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# twelve small notebooks: (title, cells); each cell prints something deterministic
_CELLS = [
    "values = [i * i for i in range({n} * 1000)]\nprint(len(values))",
    "total = sum(values) % 9973\nprint(total)",
    "from collections import Counter\nprint(Counter(str(v)[-1] for v in values).most_common(2))",
]


def write_suite(folder: Path, count: int = 12) -> list[Path]:
    """``count`` percent notebooks in folder, written by jupytext as a user's would be."""
    import jupytext
    import nbformat.v4 as v4

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(1, count + 1):
        nb = v4.new_notebook(
            cells=[v4.new_markdown_cell(f"# Notebook {n}\n\nSquares and their digits.")]
            + [v4.new_code_cell(cell.format(n=n)) for cell in _CELLS],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        )
        path = folder / f"nb_{n:02d}.py"
        path.write_text(jupytext.writes(nb, fmt="py:percent"), encoding="utf-8")
        paths.append(path)
    return paths


def timed(command: list[str], cwd: Path, *, tries: int = 2) -> float:
    """Wall seconds of one command, which must succeed (on one of ``tries`` attempts).

    A failed attempt is reported and run again: on a loaded machine a kernel may miss a
    peer's start-up deadline, which says nothing about its speed.
    """
    for attempt in range(1, tries + 1):
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        if done.returncode == 0:
            return elapsed
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        message = f"{' '.join(command)} failed ({done.returncode}), attempt {attempt}:\n{tail}"
        if attempt == tries:
            raise SystemExit(message)
        print(message, file=sys.stderr)
    raise AssertionError("unreachable")


def fresh_copy(suite: Path, work: Path, name: str) -> Path:
    """A copy of the suite for one peer, so its converted files never meet nbcd's."""
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(suite, target, ignore=shutil.ignore_patterns("build"))
    return target


def nbmake(suite: Path, work: Path, workers: str) -> tuple[float, float]:
    """jupytext --to ipynb, then pytest --nbmake -n N on the converted notebooks: both times."""
    copy = fresh_copy(suite, work, "nbmake")
    texts = sorted(p.name for p in copy.glob("*.py"))
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbcd"]
    convert = timed([str(BIN / "jupytext"), "--to", "ipynb", *texts], copy)
    notebooks = sorted(p.name for p in copy.glob("*.ipynb"))
    return convert, timed([*pytest, "--nbmake", "-n", workers, *notebooks], copy)


def as_ipynb(suite: Path, work: Path) -> Path:
    """The suite converted to .ipynb once, the .py files gone."""
    copy = fresh_copy(suite, work, "as_ipynb")
    texts = sorted(p.name for p in copy.glob("*.py"))
    timed([str(BIN / "jupytext"), "--to", "ipynb", *texts], copy)
    for text in texts:
        (copy / text).unlink()
    return copy


def jupytext_execute(suite: Path, work: Path) -> float:
    """jupytext --to ipynb --execute: jupytext converts and runs each notebook in turn."""
    copy = fresh_copy(suite, work, "execute")
    texts = sorted(p.name for p in copy.glob("*.py"))
    return timed([str(BIN / "jupytext"), "--to", "ipynb", "--execute", *texts], copy)


def read_times(suite: Path, work: Path, reads: int) -> dict[str, tuple[float, float]]:
    """Per-file read time (median, minimum), jupytext against nbcd, alone and with a pair.

    The readers take turns, one read each per round, so a busy moment hits them alike.
    """
    import jupytext
    import nbformat

    from nbcd.notebook import read_notebook

    alone = sorted(suite.glob("*.py"))[0]
    pair_folder = fresh_copy(suite, work, "paired")
    with_pair = pair_folder / alone.name
    nb = jupytext.read(with_pair)
    for cell in nb.cells:  # stored outputs, as Jupyter with jupytext's pairing would keep them
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nbformat.write(nb, with_pair.with_suffix(".ipynb"))
    readers: dict[str, Callable[[], object]] = {
        "jupytext.read (.py)": lambda: jupytext.read(alone),
        "jupytext.read + nbformat.validate": lambda: nbformat.validate(jupytext.read(alone)),
        "nbcd read_notebook (.py)": lambda: read_notebook(alone),
        "nbcd read_notebook (.py + paired .ipynb)": lambda: read_notebook(with_pair),
    }
    times: dict[str, list[float]] = {name: [] for name in readers}
    for read in readers.values():
        read()  # imports and first-call caches are not the read
    for _ in range(reads):
        for name, read in readers.items():
            started = time.perf_counter()
            read()
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="nbcd -j and pytest -n")
    parser.add_argument("--reads", type=int, default=50, help="reads per file timing")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbcd-bench-text-"))
    suite = work / "suite"
    count = len(write_suite(suite))
    n = str(args.workers)
    nbcd = [str(BIN / "nbcd"), "test", "-j", n, "."]
    cold, rerun = f"nbcd test -j {n} --no-cache", f"nbcd test -j {n} (rerun, cache warm)"
    ipynb_suite = as_ipynb(suite, work)
    ipynb_cold = f"{cold} on .ipynb copies"
    ipynb_rerun = f"nbcd test -j {n} (rerun) on .ipynb copies"
    convert, make = "  of which jupytext --to ipynb", "  of which pytest --nbmake"
    both = f"jupytext --to ipynb + pytest --nbmake -n {n}"
    execute = "jupytext --to ipynb --execute"
    results: dict[str, list[float]] = {
        name: [] for name in (cold, rerun, ipynb_cold, ipynb_rerun, both, convert, make, execute)
    }
    for round_number in range(1, args.rounds + 1):
        results[cold].append(timed([*nbcd, "--no-cache"], suite))
        shutil.rmtree(suite / "build", ignore_errors=True)
        timed(nbcd, suite)  # fills the cache
        results[rerun].append(timed(nbcd, suite))
        results[ipynb_cold].append(timed([*nbcd, "--no-cache"], ipynb_suite))
        shutil.rmtree(ipynb_suite / "build", ignore_errors=True)
        timed(nbcd, ipynb_suite)
        results[ipynb_rerun].append(timed(nbcd, ipynb_suite))
        converting, making = nbmake(suite, work, n)
        results[convert].append(converting)
        results[make].append(making)
        results[both].append(converting + making)
        results[execute].append(jupytext_execute(suite, work))
        last = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items())
        print(f"round {round_number}: {last}", file=sys.stderr)
    reads = read_times(suite, work, args.reads)
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n{count} percent notebooks (4 cells each), {args.rounds} rounds interleaved, medians")
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} cores; nbcd {version('nbcd')}, "
        f"jupytext {version('jupytext')}, nbmake {version('nbmake')}, pytest {version('pytest')}"
    )
    reference = statistics.median(results[cold])
    print(f"\n{'command':<52} {'median s':>9} {'x nbcd cold':>12}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<52} {median:>9.2f} {median / reference:>12.2f}")
    print(f"\n{'read one file (in process, warm)':<52} {'median ms':>9} {'min ms':>12}")
    for name, (median, least) in reads.items():
        print(f"{name:<52} {median * 1000:>9.2f} {least * 1000:>12.2f}")


if __name__ == "__main__":
    main()
