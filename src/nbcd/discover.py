"""Which notebooks a command works on: one rule for `nbcd test`, `lint`, `ci` and the plugin.

With no paths, a project's notebooks are those its ``[tool.nbcd] notebooks`` globs match.
A file given is taken as it is. A folder given is searched for ``*.ipynb``, never descending
into hidden folders (checkpoints, environments, VCS data), generated or vendored trees
(``build``, ``dist``, ``__pycache__``, ``node_modules``, ``site-packages``) or the project's
build folder, where executed copies of the notebooks live.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from nbcd.config import Config
from nbcd.errors import UsageError

__all__ = ["SKIPPED_DIRS", "find_notebooks", "is_notebook", "walk"]

SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})


def is_notebook(path: Path, config: Config) -> bool:
    """Whether a file met on a search is a notebook to work on (not a checkpoint or a copy).

    Folders are judged below the project root only, so a project may itself live in a
    hidden folder.
    """
    if path.suffix != ".ipynb":
        return False
    resolved = path.resolve()
    if resolved.is_relative_to(config.build_dir.resolve()):
        return False
    below = (
        resolved.parent.relative_to(config.root) if resolved.is_relative_to(config.root) else None
    )
    parts = below.parts if below is not None else (resolved.parent.name,)
    return not any(part.startswith(".") or part in SKIPPED_DIRS for part in parts)


def walk(folder: Path, accept: Callable[[Path], bool], build_dir: Path) -> Iterator[Path]:
    """Files under folder that accept takes, sorted, skipping the folders named above."""
    skip_build = build_dir.resolve()
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            hidden = entry.name.startswith(".")
            if not hidden and entry.name not in SKIPPED_DIRS and entry.resolve() != skip_build:
                yield from walk(entry, accept, build_dir)
        elif accept(entry):
            yield entry


def find_notebooks(config: Config, paths: Sequence[Path] = ()) -> list[Path]:
    """The notebooks to work on, resolved and without duplicates; UsageError when none."""
    found: dict[Path, None] = {}
    if not paths:
        for pattern in config.notebooks:
            for name in sorted(glob.glob(str(config.root / pattern), recursive=True)):
                path = Path(name)
                if path.is_file() and is_notebook(path, config):
                    found[path.resolve()] = None
        if not found:
            raise UsageError(
                f"no notebooks match {list(config.notebooks)} under {config.root}; "
                "pass paths or set [tool.nbcd] notebooks"
            )
        return list(found)
    for path in paths:
        if path.is_dir():
            accept = lambda p: p.suffix == ".ipynb"  # noqa: E731
            # realpath, not resolve(): a symlink loop inside a folder is that file's problem
            # (reported by the command that reads it), not the whole batch's
            walked = walk(path, accept, config.build_dir)
            found.update(dict.fromkeys(Path(os.path.realpath(p)) for p in walked))
        elif path.is_file():
            found[path.resolve()] = None
        else:
            raise UsageError(f"{path}: no such notebook or folder")
    if not found:
        raise UsageError(f"no notebooks found in {', '.join(map(str, paths))}")
    return list(found)
