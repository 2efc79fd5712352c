"""The record of notebooks that passed, so `nbcd test` skips one while nothing it used changed.

A notebook is looked up in two steps.

1. **Its key**, a hash of what is known before it runs:
   - its folder (the kernel's working folder); not its file name, so a rename is no change;
   - its code cells in order: source, tags, and cell metadata ``nbcd`` (per-cell tolerance);
     in compare mode also their stored outputs, without execution counts;
   - the notebook metadata that can change a verdict: the kernelspec's name and metadata
     ``nbcd`` (declared inputs, noqa);
   - every check option that can change a verdict (``verdict=True`` fields of TestOptions,
     derived by nbcd.options.verdict_of, so a new option cannot be forgotten; a sanitizer
     file counts by its content);
   - the content of the files it declares in metadata ``{"nbcd": {"inputs": [globs]}}``;
   - the kernel's interpreter and every distribution installed for it (name and version);
   - nbcd's version and the hash of its own source.

   Markdown and raw cells, execution counts and all other metadata are left out: editing
   them cannot change a verdict.
2. **What it used when it passed**, recorded in the kernel (nbcd.execute.recorder): files it
   read, folders it listed, modules it imported from outside the standard library and
   site-packages (local packages, editable installs). Each is stored with size, mtime and
   sha256; a lookup compares size and mtime first and hashes only when those differ, so an
   unchanged rerun reads no file in full.

A hit needs both. A miss says why (``new``, ``code changed``, ``src/pkg/mod.py changed``, ...),
which `nbcd test` prints. Records are small JSON files; a garbled one is a miss, and a record
that cannot be written is a warning, never a failed verdict.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbcd.files import atomic_write_text
from nbcd.notebook import display_path

__all__ = [
    "CacheEntry",
    "Lookup",
    "PassCache",
    "declared_inputs",
    "environment_fingerprint",
    "nbcd_fingerprint",
    "notebook_parts",
]

# The environment listing: the interpreter, its prefix and every distribution's metadata folder
# on its path (`name-version.dist-info`) with the folder's mtime, which a reinstall moves.
# Folder names, not parsed METADATA files: reading 180 of those took 0.12 s of a cached rerun.
# Run in process for nbcd's own interpreter, in the kernel's interpreter otherwise.
_LISTING = """
import os, sys
seen, names = set(), []
for entry in sys.path:
    folder = os.path.realpath(entry or os.curdir)
    if folder in seen:
        continue
    seen.add(folder)
    try:
        items = list(os.scandir(folder))
    except OSError:
        continue
    for item in items:
        if item.name.endswith((".dist-info", ".egg-info", ".pth")):
            try:
                names.append(f"{item.name} {item.stat().st_mtime_ns}")
            except OSError:
                names.append(item.name)
print(sys.version)
print(sys.prefix)
print("\\n".join(sorted(names)))
"""


@functools.cache
def environment_fingerprint(interpreter: str | None = None) -> str:
    """An interpreter's version, prefix and installed distributions (by folder), hashed.

    nbcd's own interpreter is read in process; another one runs the listing once.
    """
    if interpreter is None or _same_interpreter(interpreter):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(_LISTING, {})  # the same listing a foreign interpreter runs
        listing = output.getvalue()
    else:
        try:
            done = subprocess.run(
                [interpreter, "-c", _LISTING], capture_output=True, text=True, timeout=60
            )
            listing = done.stdout if done.returncode == 0 else f"<broken {interpreter}>"
        except (OSError, subprocess.SubprocessError):
            listing = f"<missing {interpreter}>"
    return hashlib.sha256(listing.encode()).hexdigest()


def _same_interpreter(interpreter: str) -> bool:
    # a venv's python is a symlink to the base one: the path, not its target, names the venv
    return os.path.abspath(interpreter) == os.path.abspath(sys.executable)


@functools.cache
def nbcd_fingerprint() -> str:
    """nbcd's version and the hash of its source: a new nbcd may judge differently."""
    import nbcd

    digest = hashlib.sha256(nbcd.__version__.encode())
    package = Path(nbcd.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def kernel_interpreter(kernel: str) -> str:
    """The Python a kernel runs, from its kernelspec (nbcd's own for the native kernel)."""
    from jupyter_core.paths import jupyter_path

    for folder in jupyter_path("kernels"):
        spec = Path(folder, kernel, "kernel.json")
        try:
            argv = json.loads(spec.read_text(encoding="utf-8")).get("argv") or []
        except (OSError, ValueError, AttributeError):
            continue
        program = str(argv[0]) if argv else ""
        # jupyter_client starts "python" and "python3" specs with its own interpreter
        if program in ("python", "python3", "{sys.executable}"):
            return sys.executable
        return program
    return sys.executable


def declared_inputs(notebook: Path, nb_metadata: Mapping[str, Any]) -> list[Path]:
    """Input files a notebook declares (metadata nbcd.inputs, globs relative to its folder)."""
    section = nb_metadata.get("nbcd")
    declared = section.get("inputs", []) if isinstance(section, dict) else []
    patterns = [p for p in declared if isinstance(p, str)] if isinstance(declared, list) else []
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(notebook.parent / pattern), recursive=True))
        # a declared input that is missing still counts: its absence is part of the key
        found += [Path(m) for m in matches] or [notebook.parent / pattern]
    return found


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _content(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "<missing>"


def notebook_parts(
    path: Path,
    data: Mapping[str, Any],
    *,
    compare_outputs: bool,
    options: Mapping[str, Any],
    kernel: str,
) -> dict[str, str]:
    """The digests the key is made of, by name, so a miss can say which one changed."""
    cells = data.get("cells")
    code = []
    outputs = []
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        metadata = _mapping(cell.get("metadata"))
        source = cell.get("source", "")
        code.append(
            [
                "".join(source) if isinstance(source, list) else source,
                metadata.get("tags", []),
                metadata.get("nbcd"),
            ]
        )
        if compare_outputs:
            outputs.append(
                [
                    {k: v for k, v in o.items() if k != "execution_count"}
                    for o in cell.get("outputs", [])
                    if isinstance(o, dict)
                ]
            )
    metadata = _mapping(data.get("metadata"))
    kernelspec = _mapping(metadata.get("kernelspec"))
    declared = declared_inputs(path, metadata)
    return {
        "folder": _digest(str(path.parent.resolve())),
        "code": _digest([code, kernelspec.get("name"), metadata.get("nbcd")]),
        # options first: changing the mode also changes which outputs count
        "options": _digest(options),
        "stored outputs": _digest(outputs),
        "declared inputs": _digest([[str(p), _content(p)] for p in declared]),
        "kernel environment": environment_fingerprint(kernel_interpreter(kernel)),
        "nbcd": nbcd_fingerprint(),
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class InputState:
    """One input as it was when the notebook passed."""

    path: str
    kind: str  # "file", "dir" or "module"
    size: int = -1  # -1: the file did not exist
    mtime_ns: int = 0
    sha256: str = ""

    @classmethod
    def now(cls, path: str, kind: str) -> InputState:
        """The input's state on disk now."""
        try:
            stat = os.stat(path)
        except OSError:
            return cls(path, kind)
        return cls(path, kind, stat.st_size, stat.st_mtime_ns, _state_hash(path, kind))

    def changed(self) -> bool:
        """Whether the input differs from this state (hashing only when size or mtime moved)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return self.size != -1
        if self.size == -1:
            return True
        if stat.st_size == self.size and stat.st_mtime_ns == self.mtime_ns:
            return False
        return _state_hash(self.path, self.kind) != self.sha256


_NOISE = frozenset({"__pycache__"})


def _state_hash(path: str, kind: str) -> str:
    try:
        if kind == "dir":
            # what tools leave behind (bytecode caches, checkpoints, dot-files) is no input
            names = sorted(n for n in os.listdir(path) if not n.startswith(".") and n not in _NOISE)
            return hashlib.sha256("\n".join(names).encode()).hexdigest()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return "<unreadable>"


@dataclass(frozen=True)
class CacheEntry:
    """The record of a passed run: its notebook, how long it took, and what it used."""

    notebook: str
    duration_s: float
    inputs: tuple[InputState, ...]


@dataclass(frozen=True)
class Lookup:
    """The answer of the cache: a hit, or a miss with the reason a user is told."""

    key: str
    entry: CacheEntry | None
    reason: str  # "" on a hit

    @property
    def hit(self) -> bool:
        """True when the notebook can be skipped."""
        return self.entry is not None and not self.reason


@dataclass(frozen=True)
class PassCache:
    """Records of passed runs under ``folder``: entries by key, and each notebook's last key."""

    folder: Path

    def lookup(self, notebook: Path, parts: Mapping[str, str]) -> Lookup:
        """Find the notebook's record; on a miss, say which part of the key or input changed."""
        key = _digest(dict(parts))
        entry = self._read_entry(key)
        if entry is None:
            return Lookup(key, None, self._why_new(notebook, parts))
        for state in entry.inputs:
            if state.changed():
                return Lookup(key, entry, f"{display_path(Path(state.path))} changed")
        return Lookup(key, entry, "")

    def record(
        self,
        lookup: Lookup,
        notebook: Path,
        parts: Mapping[str, str],
        duration_s: float,
        inputs: Iterable[InputState],
    ) -> str | None:
        """Remember a passed run; returns a warning instead of raising when it cannot."""
        entry = {
            "notebook": str(notebook),
            "duration_s": duration_s,
            "inputs": [vars(state) for state in inputs],
        }
        try:
            atomic_write_text(self.folder / "entries" / f"{lookup.key}.json", json.dumps(entry))
            index = {"notebook": str(notebook), "parts": dict(parts)}
            atomic_write_text(self._index_path(notebook), json.dumps(index))
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return f"{self.folder}: cannot write the test cache ({reason}); verdicts are kept"
        return None

    def _read_entry(self, key: str) -> CacheEntry | None:
        try:
            data = json.loads((self.folder / "entries" / f"{key}.json").read_text("utf-8"))
            return CacheEntry(
                str(data["notebook"]),
                float(data["duration_s"]),
                tuple(InputState(**state) for state in data["inputs"]),
            )
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None  # missing or garbled: run the notebook again

    def _why_new(self, notebook: Path, parts: Mapping[str, str]) -> str:
        try:
            before = json.loads(self._index_path(notebook).read_text("utf-8"))["parts"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return "new"
        changed = [name for name, digest in parts.items() if before.get(name) != digest]
        return f"{changed[0]} changed" if changed else "new"

    def _index_path(self, notebook: Path) -> Path:
        name = hashlib.sha256(str(notebook.resolve()).encode()).hexdigest()
        return self.folder / "notebooks" / f"{name}.json"
