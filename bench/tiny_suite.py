"""Per-notebook overhead of `nbcd test`: many tiny notebooks, where kernel handling is all the work.

Writes N (default 96) tiny notebooks, 2 or 3 code cells of trivial pure Python each, with their
stored outputs, then times `nbcd test --no-cache -j W` (cold), the unchanged rerun of
`nbcd test -j W` (cache warm) and `pytest --nbval -n W --dist loadfile` on that folder,
interleaved round by round. Prints medians; asserts nothing.

    python bench/tiny_suite.py [--count 96] [--rounds 3] [--workers 2] [--folder DIR]

The stored outputs are computed here, not by a kernel: each cell runs with exec() as a kernel
would run it (stdout to a stream output; a last expression to an execute_result, formatted by
IPython's pretty printer with the kernel's settings). The notebooks only use ints, short lists,
short strings and tuples, for which that is exact; `pytest --nbval` checks it every round.
BLAS/OpenMP threads are fixed to 1 for every tool.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from IPython.lib.pretty import pretty
from nbformat.v4 import new_code_cell, new_notebook, new_output

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
TARGET_MS = 40.0  # nbcd test --no-cache, per notebook, on 2 cores


def cells_of(i: int) -> list[str]:
    """The code cells of tiny notebook i: trivial, deterministic, a little different each."""
    cells = [
        f"n = {i}\nsquares = [k * k for k in range({i % 7 + 3})]\nsquares",
        "total = sum(squares) + n\n"
        'print("total:", total)\n'
        'print("even" if total % 2 == 0 else "odd")',
    ]
    if i % 2 == 0:
        cells.append(f'word = "nb{i:03d}"\nword.upper(), len(word), n // 3')
    return cells


def run_cell(source: str, namespace: dict[str, Any], count: int) -> list[Any]:
    """The outputs a kernel stores for source: its stdout, then its last expression's value."""
    body = ast.parse(source).body
    last = body.pop() if body and isinstance(body[-1], ast.Expr) else None
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(ast.Module(body=body, type_ignores=[]), "<cell>", "exec"), namespace)
        value = None
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
    outputs = []
    if stdout.getvalue():
        outputs.append(new_output("stream", name="stdout", text=stdout.getvalue()))
    if value is not None:
        # what IPython's PlainTextFormatter gives with its defaults
        text = pretty(value, max_width=79, max_seq_length=1000)
        outputs.append(
            new_output("execute_result", data={"text/plain": text}, execution_count=count)
        )
    return outputs


def write_suite(folder: Path, count: int) -> None:
    """count tiny notebooks with stored outputs under folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        notebook = new_notebook()
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.metadata["language_info"] = {"name": "python"}
        namespace: dict[str, Any] = {"__name__": "__main__"}
        for number, source in enumerate(cells_of(i), 1):
            cell = new_code_cell(source, execution_count=number)
            cell.outputs = run_cell(source, namespace, number)
            notebook.cells.append(cell)
        nbformat.validate(notebook)
        nbformat.write(notebook, folder / f"tiny_{i:03d}.ipynb")


def run(command: list[str], cwd: Path, flakes: list[str] | None = None) -> tuple[float, str]:
    """Wall seconds and output of one command, which must succeed.

    With ``flakes``, a failed run is noted there and run once more (nbval now and then loses
    a kernel at start, "Kernel died before replying to kernel_info", and passes when rerun).
    """
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        if flakes is not None:
            flakes.append(f"{' '.join(command[:6])} ... failed and was run again: {tail[-1]}")
            print(flakes[-1], file=sys.stderr)
            return run(command, cwd)
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return elapsed, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=96, help="notebooks (default 96)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="nbcd -j, pytest -n (default 2)")
    parser.add_argument("--folder", type=Path, help="write the notebooks here and keep them")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbcd-tiny-"))
    folder = (args.folder or work / "tiny").resolve()
    shutil.rmtree(folder / "build", ignore_errors=True)
    write_suite(folder, args.count)
    n = str(args.workers)
    nbcd = [str(BIN / "nbcd"), "test", "-j", n, str(folder)]
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbcd"]
    cold = f"nbcd test -j {n} --no-cache"
    rerun = f"nbcd test -j {n}"
    nbval = f"pytest --nbval -n {n} --dist loadfile"
    commands = {
        cold: [*nbcd, "--no-cache"],
        nbval: [*pytest, "--nbval", "-n", n, "--dist", "loadfile", str(folder)],
    }
    results: dict[str, list[float]] = {cold: [], rerun: [], nbval: []}
    summaries: list[str] = []
    flakes: list[str] = []  # peers' failed runs, run again
    for round_number in range(1, args.rounds + 1):
        for name, command in commands.items():
            results[name].append(run(command, folder, None if name == cold else flakes)[0])
        shutil.rmtree(folder / "build", ignore_errors=True)  # where nbcd keeps its cache here
        run(nbcd, folder)  # fills the cache
        elapsed, output = run(nbcd, folder)
        results[rerun].append(elapsed)
        summary = re.findall(r"^\d+ notebooks?: .*$", output, re.MULTILINE)
        summaries.append(summary[-1] if summary else "(no summary line)")
        print(
            f"round {round_number}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()),
            file=sys.stderr,
        )
    cores = os.cpu_count() or 1
    rounds = f"{args.rounds} round{'s' if args.rounds != 1 else ''}"
    print(f"\n{args.count} tiny notebooks ({folder}), {rounds} interleaved, medians")
    print(
        f"Python {platform.python_version()}, {cores} cores, {args.workers} workers"
        f" (nbcd -j, pytest -n); HOME {Path.home()}"
    )
    print("nbcd cache: cold = --no-cache; rerun = unchanged rerun, cache warm")
    for number, line in enumerate(summaries, 1):
        print(f"  rerun, round {number}: {line}")
    print(f"\n{'command':<36} {'cache':<12} {'wall s':>8} {'ms / notebook':>14}")
    states = {cold: "cold", rerun: "rerun: warm"}
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"{name:<36} {states.get(name, ''):<12} {median:8.2f}"
            f" {median / args.count * 1000:14.1f}"
        )
    per_notebook = statistics.median(results[cold]) / args.count * 1000
    verdict = "met" if per_notebook < TARGET_MS else "not met"
    print(
        f"\nnbcd cold per notebook: {per_notebook:.1f} ms"
        f" (target < {TARGET_MS:.0f} ms on 2 cores: {verdict});"
        f" nbval -n {n} / nbcd cold:"
        f" {statistics.median(results[nbval]) / statistics.median(results[cold]):.2f}x"
    )
    for flake in flakes:
        print(f"note: {flake}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
