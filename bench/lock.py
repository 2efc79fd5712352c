"""nbcd's lock against pip-compile (pip-tools) and `uv pip compile` on the same requirements.

All three lock ``examples/census/requirements.txt``. nbcd reads the closure from the installed
distributions (no network); pip-compile and uv resolve against the package index, as a fresh
machine would. For each: wall time (cold: an empty cache; warm: the second run on that cache),
the number of pins, how many are hashed, and how many pin a version other than the one
installed here, where the notebooks ran (the versions a lock is for).

pip-tools and uv are installed into a scratch venv under bench/results/ (git-ignored) on the
first run. The peers need the index (PyPI); nbcd does not.

    PYTHONPATH=src .venv/bin/python bench/lock.py [--rounds 3] [--hashes]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nbcd.build.closure import Root, Target, resolve_closure
from nbcd.build.hashes import download_wheels, local_hashes, wheelhouses
from nbcd.build.installed import DistIndex

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "examples" / "census" / "requirements.txt"
TOOLS = REPO / "bench" / "results" / "lock-tools"
TIMEOUT_S = 900.0


@dataclass
class Row:
    """One tool's lock and its timings."""

    tool: str
    cold_s: float = 0.0
    warm_s: list[float] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)  # name -> version
    hashed: int = 0
    note: str = ""


def tools_venv() -> Path:
    """A venv with pip-tools and uv, made once."""
    bin_dir = TOOLS / "bin"
    if not (bin_dir / "pip-compile").exists() or not (bin_dir / "uv").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(TOOLS)], check=True)
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "pip-tools", "uv"]
        subprocess.run(pip, check=True, timeout=TIMEOUT_S)
    return bin_dir


def parse_lock(text: str) -> tuple[dict[str, str], int]:
    """{name: version} of a pip-compile-style lock, and how many pins carry --hash."""
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    last = ""
    for raw in text.splitlines():
        line = raw.strip()
        if "--hash=" in line and last:
            hashed.add(last)
        if not line or line.startswith(("#", "-")):
            continue
        spec = line.split(";")[0].split(" --hash")[0].removesuffix("\\").strip()
        name, separator, version = spec.partition("==")
        last = canonicalize_name(name.split("[")[0].strip()) if separator else ""
        if separator:
            pins[last] = version.strip()
    return pins, len(hashed)


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def run_nbcd(rounds: int, download: bool) -> Row:
    """nbcd's closure of the requirements, read from the installed metadata, then hashed
    from local wheels (``download``: first fetched into an empty wheelhouse, PyPI)."""
    row = Row("nbcd (installed metadata)")
    roots = [
        Root(Requirement(line), "-r requirements.txt")
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    target = Target.image()
    with tempfile.TemporaryDirectory(prefix="bench-lock-nbcd-") as tmp:
        house = Path(tmp) / "pypi"
        folders = [*wheelhouses(Path(tmp)), house]

        def lock() -> None:
            closure = resolve_closure(roots, target, DistIndex())
            row.pins = dict(closure.pins())

        row.cold_s = timed(lock)  # the first in this process: importlib's caches are cold
        row.warm_s = [timed(lock) for _ in range(rounds)]
        pins = sorted((canonicalize_name(name), version) for name, version in row.pins.items())
        if download:
            fetch = timed(lambda: download_wheels(pins, target, house))
            row.note = f"--download-wheels into an empty wheelhouse: {fetch:.1f} s; "
        started = time.perf_counter()
        row.hashed = len(local_hashes(pins, target, folders))
        hashing = time.perf_counter() - started
    row.note += f"hashing the local wheels: {hashing:.2f} s (not in the times)"
    return row


def run_peer(name: str, command: Callable[[Path, Path], list[str]], rounds: int) -> Row:
    """A resolver: one run on an empty cache, then ``rounds`` on that cache."""
    row = Row(name)
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "out.txt"

        def lock() -> None:
            # PYTHONPATH=src would show the resolvers' Python an nbcd .egg-info: keep it out
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            done = subprocess.run(
                command(cache, out), capture_output=True, text=True, timeout=TIMEOUT_S, env=env
            )
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.strip()[-800:]}")

        row.cold_s = timed(lock)
        row.warm_s = [timed(lock) for _ in range(rounds)]
        row.pins, row.hashed = parse_lock(out.read_text())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="warm runs per tool")
    parser.add_argument("--hashes", action="store_true", help="peers also --generate-hashes")
    parser.add_argument("--download", action="store_true", help="nbcd fetches the wheels (PyPI)")
    args = parser.parse_args()

    bin_dir = tools_venv()
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    hashes = ["--generate-hashes"] if args.hashes else []

    def pip_compile(cache: Path, out: Path) -> list[str]:
        return [
            str(bin_dir / "pip-compile"), "--quiet", "--no-header", "--no-annotate",
            "--strip-extras", "--cache-dir", str(cache), "--output-file", str(out),
            *hashes, str(REQUIREMENTS),
        ]  # fmt: skip

    def uv_compile(cache: Path, out: Path) -> list[str]:
        return [
            str(bin_dir / "uv"), "pip", "compile", "--quiet", "--no-header", "--no-annotate",
            "--python-version", python, "--python-platform", "linux",
            "--cache-dir", str(cache), "--output-file", str(out), *hashes, str(REQUIREMENTS),
        ]  # fmt: skip

    rows = [
        run_nbcd(args.rounds, args.download),
        run_peer("pip-compile (pip-tools)", pip_compile, args.rounds),
        run_peer("uv pip compile", uv_compile, args.rounds),
    ]
    installed = DistIndex()
    tool_versions = {
        "pip-compile": subprocess.run([str(bin_dir / "pip-compile"), "--version"],
                                      capture_output=True, text=True).stdout.strip(),
        "uv": subprocess.run([str(bin_dir / "uv"), "--version"],
                             capture_output=True, text=True).stdout.strip(),
    }  # fmt: skip

    print(f"requirements: {REQUIREMENTS.relative_to(REPO)}, Python {python}; {tool_versions}")
    print()
    print("| tool | cold s | warm s (median) | pins | hashed | not the installed version |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        differ = sorted(
            f"{name} {version} (installed {installed.version(name) or 'none'})"
            for name, version in row.pins.items()
            if installed.version(name) != version
        )
        shown = f"{len(differ)}: " + ", ".join(differ) if differ else "0"
        warm = statistics.median(row.warm_s)
        print(f"| {row.tool} | {row.cold_s:.2f} | {warm:.2f} | {len(row.pins)} | "
              f"{row.hashed} | {shown} |")  # fmt: skip
    print()
    base = set(rows[0].pins)
    for row in rows[1:]:
        extra, lacking = sorted(set(row.pins) - base), sorted(base - set(row.pins))
        print(f"{row.tool}: pins nbcd has not: {extra or 'none'}; nbcd pins it has not: "
              f"{lacking or 'none'}")  # fmt: skip
    print(f"nbcd: {rows[0].note}")


if __name__ == "__main__":
    main()
