"""Which notebooks a command works on: one rule for `nbcd test`, `lint`, `ci` and the plugin.

With no paths, a project's notebooks are those its ``[tool.nbcd] notebooks`` globs match.
A file given is taken as it is, except that a ``.py`` or ``.md`` file that is no notebook is
an error. A folder given is searched for ``*.ipynb`` and text notebooks (jupytext percent
``.py``, MyST ``.md``: :func:`nbcd.textnotebook.is_text_notebook`, so plain modules and
documents are left alone), never descending into hidden folders (checkpoints, environments,
VCS data), generated or vendored trees (``build``, ``dist``, ``__pycache__``,
``node_modules``, ``site-packages``) or the project's build folder, where executed copies of
the notebooks live.

A text notebook and the ``.ipynb`` beside it with the same stem are one notebook, paired the
way jupytext pairs them: the text file is the one worked on and reported, since its code is
what is reviewed and runs and its lines are the ones findings name; the ``.ipynb`` only lends
its stored outputs (:func:`one_per_pair`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from nbcd.config import Config
from nbcd.errors import UsageError
from nbcd.textnotebook import TEXT_SUFFIXES, is_text_notebook, is_text_path, not_a_notebook

__all__ = [
    "SKIPPED_DIRS",
    "find_notebooks",
    "is_notebook",
    "is_notebook_file",
    "one_per_pair",
    "walk",
]

SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})


def is_notebook(path: Path, config: Config) -> bool:
    """Whether a file met on a search is a notebook to work on (not a checkpoint or a copy).

    Folders are judged below the project root only, so a project may itself live in a
    hidden folder.
    """
    if path.suffix != ".ipynb" and not is_text_path(path):
        return False
    resolved = path.resolve()
    if resolved.is_relative_to(config.build_dir.resolve()):
        return False
    below = (
        resolved.parent.relative_to(config.root) if resolved.is_relative_to(config.root) else None
    )
    parts = below.parts if below is not None else (resolved.parent.name,)
    if any(part.startswith(".") or part in SKIPPED_DIRS for part in parts):
        return False
    return is_notebook_file(path)


def is_notebook_file(path: Path) -> bool:
    """Whether a file is a notebook by its name and content: an ``.ipynb`` or a text notebook.

    A ``.py`` or ``.md`` file is read (its head) to tell a notebook from a module or document.
    """
    return path.suffix == ".ipynb" or is_text_notebook(path)


# which of a text notebook's representations is worked on: the first here (jupytext pairs
# like ipynb,py:percent,md:myst hold one notebook three times)
_PREFERENCE = (*TEXT_SUFFIXES, ".ipynb")


def one_per_pair(paths: Iterable[Path]) -> list[Path]:
    """The paths, in order, with one file per notebook of a folder: the text one of a pair.

    Files with the same folder and stem are one notebook when at least one is a text
    notebook; the ``.py`` is kept over the ``.md``, and either over the ``.ipynb``. A file of
    another kind (given by name) is never merged.
    """
    paths = list(paths)

    def key(path: Path) -> tuple[Path, str]:
        return (path.parent, path.stem) if path.suffix in _PREFERENCE else (path, "")

    def rank(path: Path) -> int:
        return _PREFERENCE.index(path.suffix) if path.suffix in _PREFERENCE else 0

    chosen: dict[tuple[Path, str], Path] = {}
    for path in paths:
        held = chosen.get(key(path))
        if held is None or rank(path) < rank(held):
            chosen[key(path)] = path
    return [p for p in paths if chosen[key(p)] == p]


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
    return one_per_pair(_found(config, paths))


def _found(config: Config, paths: Sequence[Path]) -> list[Path]:
    """Every notebook the globs or paths name, resolved, before pairs are merged."""
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
            # realpath, not resolve(): a symlink loop inside a folder is that file's problem
            # (reported by the command that reads it), not the whole batch's
            walked = walk(path, is_notebook_file, config.build_dir)
            found.update(dict.fromkeys(Path(os.path.realpath(p)) for p in walked))
        elif path.is_file():
            if is_text_path(path) and not is_text_notebook(path):
                raise UsageError(not_a_notebook(path))
            found[path.resolve()] = None
        else:
            raise UsageError(f"{path}: no such notebook or folder")
    if not found:
        raise UsageError(f"no notebooks found in {', '.join(map(str, paths))}")
    return list(found)
