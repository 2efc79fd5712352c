"""A content-addressed record of notebooks that passed, so unchanged ones are skipped.

The key covers everything that can change a verdict: the notebook file's bytes (code, stored
outputs, metadata), the parameters, the kernel, the options of the check, the contents of the
notebook's declared input files, and the environment (Python and every installed package's
version). Any edit to one of them gives a new key, so the cache never hides a change.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from nbcd.files import atomic_write_text

__all__ = ["PassCache", "environment_fingerprint", "notebook_key"]


@lru_cache(maxsize=1)
def environment_fingerprint() -> str:
    """Python version and every installed distribution with its version, hashed."""
    packages = sorted(
        f"{(dist.metadata['Name'] or '').lower()}=={dist.version}"
        for dist in metadata.distributions()
    )
    blob = "\n".join([sys.version, sys.executable, *packages])
    return hashlib.sha256(blob.encode()).hexdigest()


def declared_inputs(notebook: Path, nb_metadata: dict[str, Any]) -> list[Path]:
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


def notebook_key(
    notebook: Path,
    raw: bytes,
    *,
    options: dict[str, Any],
    inputs: list[Path],
) -> str:
    """The cache key of one notebook run under given options."""
    digest = hashlib.sha256()
    digest.update(raw)
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(str(path).encode())
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"<missing>")
    digest.update(environment_fingerprint().encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class PassCache:
    """Records of passed runs, one small JSON file per key, under folder."""

    folder: Path

    def hit(self, key: str) -> dict[str, Any] | None:
        """The record of a passed run with this key, or None."""
        try:
            record = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def record(self, key: str, notebook: Path, duration_s: float) -> None:
        """Remember that a run with this key passed."""
        entry = {"notebook": str(notebook), "duration_s": duration_s, "passed_at": time.time()}
        atomic_write_text(self.folder / f"{key}.json", json.dumps(entry))
