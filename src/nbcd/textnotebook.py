"""Text notebooks: jupytext percent ``.py`` and MyST ``.md`` files, read as notebooks.

Teams keep notebooks as text for clean diffs. nbcd reads them through jupytext
(``jupytext.reads``), so a text notebook is the notebook Jupyter with jupytext would open.

- **Which files.** A ``.py`` is a notebook when it has a jupytext header or ``# %%`` cell
  markers; a ``.md`` when its front matter names a kernelspec or it has ``{code-cell}``
  directives (:func:`is_text_notebook`). Plain modules and documents are neither.
- **Stored outputs.** A text file holds no outputs. When ``x.ipynb`` sits beside ``x.py``,
  its outputs are the stored outputs of the code cells whose code is the same, matched in
  order after trailing blanks are dropped. This is stricter than jupytext's own pairing, which
  matches cells up to reformatting and then by position: comparing an edited cell's fresh
  outputs with the old cell's would be a false verdict. An edited cell gets no stored outputs
  (so compare mode does not compare it), and :attr:`Layout.unpaired` says which cells those are.
- **Lines.** :class:`Layout` maps a cell, and a line within it, to the line of the text file.
  It lives in a registry keyed by the file's real path and checked against the size and mtime
  of the file and its pair, never in cell metadata, which would reach the cache key and the
  executed notebook. Whoever shows a location asks :func:`layout_of` (or :func:`location`)
  by path; a registry miss reads the file again.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import tokenize
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbcd.errors import NbcdError, NotebookError
from nbcd.files import read_text
from nbcd.notebook import display_path, read_notebook_json

__all__ = [
    "TEXT_SUFFIXES",
    "Layout",
    "error_line",
    "finding_location",
    "is_text_notebook",
    "is_text_path",
    "layout_of",
    "location",
    "looks_like_notebook",
    "not_a_notebook",
    "paired_ipynb",
    "read_text_notebook",
]

#: The text formats nbcd reads, by suffix: what jupytext is told when the file does not say.
TEXT_SUFFIXES: Mapping[str, dict[str, str]] = {
    ".py": {"extension": ".py", "format_name": "percent"},
    ".md": {"extension": ".md"},  # jupytext tells MyST ({code-cell}) from its own markdown
}

# How much of a file is read to decide whether it is a notebook: headers sit at the top, and
# a percent notebook's first marker comes after at most its first cell.
_SNIFF_BYTES = 256 * 1024

# jupytext's percent cell marker: "# %%", "#%% [markdown]", "# %% tags=[...]"; not "# %%time"
_PERCENT_MARKER = re.compile(r"^[ \t]*#[ \t]*%%%*(?:[ \t].*)?$", re.MULTILINE)
_CODE_CELL = re.compile(r"^[ \t]*(?:`{3,}|~{3,})[ \t]*\{code-cell\}", re.MULTILINE)
# a line that starts a cell: where an empty cell is
_CELL_START = re.compile(r"^[ \t]*(?:#[ \t]*%%|(?:`{3,}|~{3,})[ \t]*\{(?:code|raw)-cell\}|\+\+\+)")
# where IPython's traceback names the failing line of a cell: "Cell In[3], line 2" (IPython 8.3
# and later), "Input In [3], in <cell line: 2>" (8.0-8.2)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_FRAME = re.compile(
    r"(?:Cell In ?\[[^\]]*\], line |Input In ?\[[^\]]*\], in <cell line: )(\d+)"
)


def is_text_path(path: Path) -> bool:
    """Whether ``path`` has a text-notebook suffix (no I/O: it may still be a plain module)."""
    return path.suffix in TEXT_SUFFIXES


def looks_like_notebook(text: str, suffix: str) -> bool:
    """Whether the text of a ``.py`` or ``.md`` file is a jupytext notebook (see module doc)."""
    if suffix == ".py":
        return _has_header(text, "# ---", re.compile(r"#[ \t]*jupyter:[ \t]*$")) or (
            _has_marker_comment(text)
        )
    if suffix == ".md":
        return _has_header(text, "---", re.compile(r"[ \t]*kernelspec:")) or bool(
            _CODE_CELL.search(text)
        )
    return False


def _has_marker_comment(text: str) -> bool:
    """Whether a ``# %%`` line of the text is a comment, not a line of a string literal.

    A module that holds a percent notebook in a string (a test, a template) is no notebook.
    The tokenizer runs only when the quick search finds a marker; text it cannot tokenize
    (a cell left unfinished) is taken at the search's word.
    """
    if not _PERCENT_MARKER.search(text):
        return False
    try:
        return any(
            token.type == tokenize.COMMENT and _PERCENT_MARKER.match(token.line.rstrip("\r\n"))
            for token in tokenize.generate_tokens(io.StringIO(text).readline)
        )
    except (tokenize.TokenError, SyntaxError):
        return True


def _has_header(text: str, fence: str, key: re.Pattern[str]) -> bool:
    """Whether the text opens with a ``fence``-delimited header holding a line ``key`` matches."""
    lines = iter(text.splitlines())
    for line in lines:
        # a shebang or an encoding line may come before a script's header
        if line.startswith("#!") or re.match(r"#.*coding[:=]", line):
            continue
        if line.rstrip() != fence:
            return False
        break
    for line in lines:
        if line.rstrip() == fence:
            return False
        if key.match(line):
            return True
    return False


def is_text_notebook(path: Path) -> bool:
    """Whether a ``.py`` or ``.md`` file on disk is a text notebook; False if unreadable."""
    if not is_text_path(path):
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    return looks_like_notebook(head.decode("utf-8-sig", "replace"), path.suffix)


def not_a_notebook(path: Path) -> str:
    """The one-line error for a text file that is not a notebook, saying what would make it one."""
    if path.suffix == ".py":
        need = "`# %%` cell markers or a jupytext header (jupytext's percent format)"
    else:
        need = "MyST front matter with a kernelspec or ```{code-cell}``` directives"
    return f"{path}: not a notebook: a {path.suffix} file needs {need}"


def paired_ipynb(path: Path) -> Path | None:
    """The ``.ipynb`` beside a text notebook with the same stem, if there is one."""
    pair = path.with_suffix(".ipynb")
    return pair if pair.is_file() else None


@dataclass(frozen=True)
class Layout:
    """Where a text notebook's cells are in its file, and what its pair gave it.

    ``starts[i]`` is the 1-based file line of cell ``i``'s first source line (of its marker,
    for an empty cell). ``unpaired`` holds the indices of code cells the pair had no stored
    outputs for because their code differs; ``dropped`` counts the pair's code cells the text
    no longer has.
    """

    path: Path
    starts: tuple[int, ...]
    pair: Path | None = None
    unpaired: tuple[int, ...] = ()
    dropped: int = 0

    def line(self, cell_index: int, line_in_cell: int | None = None) -> int | None:
        """The file line of a cell's line (1-based; its first line by default)."""
        if not 0 <= cell_index < len(self.starts):
            return None
        return self.starts[cell_index] + max((line_in_cell or 1) - 1, 0)

    def pair_note(self) -> str | None:
        """One line saying how the pair's code differs, or None when it is the same."""
        if self.pair is None or not (self.unpaired or self.dropped):
            return None
        parts = []
        if self.unpaired:
            cells = ", ".join(str(i + 1) for i in self.unpaired)
            plural = "s" * (len(self.unpaired) != 1)
            parts.append(f"cell{plural} {cells} changed, so their stored outputs are not compared")
        if self.dropped:
            plural = "s" * (self.dropped != 1)
            parts.append(f"{self.dropped} code cell{plural} of the pair no longer exist")
        return (
            f"{display_path(self.path)}: code differs from its pair {self.pair.name} "
            f"({'; '.join(parts)}); re-sync it with `jupytext --sync`"
        )


# real path -> (the stat stamp of the file and its pair, the layout)
_LAYOUTS: dict[str, tuple[tuple[Any, ...], Layout]] = {}


def _stamp(path: Path) -> tuple[Any, ...]:
    """What says a file and its pair are unchanged since a layout was made."""
    stamp: list[Any] = []
    for file in (path, path.with_suffix(".ipynb")):
        try:
            info = os.stat(file)
        except OSError:
            stamp.append(None)
        else:
            stamp.append((info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def layout_of(path: Path) -> Layout | None:
    """The layout of a text notebook (read again if it changed), or None for anything else."""
    if not is_text_path(path):
        return None
    key = os.path.realpath(path)
    known = _LAYOUTS.get(key)
    if known is not None and known[0] == _stamp(path):
        return known[1]
    try:
        read_text_notebook(path)
    except NbcdError:
        return None
    return _LAYOUTS.get(key, (None, None))[1]


def location(path: Path, cell_index: int, line_in_cell: int | None = None) -> str | None:
    """``analysis.py:14``, the file line of a text notebook's cell; None for an ``.ipynb``.

    A line of an ``.ipynb`` is a line of JSON, which means nothing to a user: those are
    located by cell alone.
    """
    layout = layout_of(path)
    line = layout.line(cell_index, line_in_cell) if layout is not None else None
    return f"{display_path(path)}:{line}" if line is not None else None


def finding_location(finding: Any, root: str = "") -> str:
    """Where a lint finding is, as ``nbcd lint`` prints it.

    ``path:cell 3:2:5`` (cell, line in the cell, column) in an ``.ipynb``; in a text notebook
    ``path:15:5: cell 3``, the line and column of the text file first, as compilers print them,
    so editors and terminals open the right line. ``finding.path`` is relative to ``root``.
    """
    cell, line, column = finding.cell, finding.line, finding.column
    if cell is not None and is_text_path(Path(finding.path)):
        layout = layout_of(Path(root, finding.path))
        file_line = layout.line(cell - 1, line) if layout is not None else None
        if file_line is not None:
            col = f":{column}" if column is not None and line is not None else ""
            return f"{finding.path}:{file_line}{col}: cell {cell}"
    parts = [finding.path, *([f"cell {cell}"] if cell is not None else [])]
    return ":".join(parts + [str(n) for n in (line, column) if n is not None])


def error_line(traceback: Iterable[str]) -> int | None:
    """The line within the failing cell that IPython's traceback names, if it names one.

    The first frame of a cell's traceback is the cell itself; later frames may be other cells
    (a function defined there), so the first is the one.
    """
    match = _CELL_FRAME.search(_ANSI.sub("", "\n".join(traceback)))
    return int(match.group(1)) if match else None


def read_text_notebook(path: Path) -> dict[str, Any]:
    """A text notebook as nbformat 4 data, with its pair's stored outputs; registers its layout.

    Raises NotebookError, one line naming the file, when it cannot be read, is not a notebook,
    jupytext cannot parse it or its pair is unreadable.
    """
    stamp = _stamp(path)
    text = read_text(
        path,
        NotebookError,
        missing="no such notebook; check the path",
        folder="is a folder, not a notebook file",
    )
    text = text.removeprefix("\ufeff")  # the BOM some Windows editors write
    if not looks_like_notebook(text, path.suffix):
        raise NotebookError(not_a_notebook(path))
    nb = _jupytext_reads(text, path)
    pair = paired_ipynb(path)
    unpaired: tuple[int, ...] = ()
    dropped = 0
    if pair is not None:
        try:
            stored = read_notebook_json(pair)
        except NotebookError as exc:
            raise NotebookError(f"{path}: its paired {pair.name} cannot be used: {exc}") from None
        unpaired, dropped = _take_outputs(nb, stored)
        # the text file's metadata wins; the pair fills what a bare text file lacks (kernelspec)
        stored_metadata = stored.get("metadata")
        if isinstance(stored_metadata, dict):
            nb["metadata"] = {**stored_metadata, **nb["metadata"]}
    starts = _cell_starts(text.splitlines(), [_source(c) for c in nb["cells"]])
    layout = Layout(path, starts, pair, unpaired, dropped)
    _LAYOUTS[os.path.realpath(path)] = (stamp, layout)
    return nb


def _jupytext_reads(text: str, path: Path) -> dict[str, Any]:
    try:
        import jupytext
    except ImportError:
        raise NotebookError(
            f"{path}: reading a text notebook needs jupytext (pip install 'jupytext>=1.16')"
        ) from None
    try:
        with warnings.catch_warnings():
            # jupytext warns about front-matter keys it keeps as they are: not the user's problem
            warnings.simplefilter("ignore")
            nb = jupytext.reads(text, fmt=dict(TEXT_SUFFIXES[path.suffix]))
    except Exception as exc:  # jupytext raises many unrelated types (YAML, its own, ValueError)
        raise NotebookError(f"{path}: jupytext cannot read it ({_why(exc, text)})") from None
    return dict(nb)


def _why(exc: Exception, text: str) -> str:
    """jupytext's error in one line; a YAML header's with the line of the file it is on."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        # the header's YAML starts on the line after its opening fence ("# ---" or "---")
        lines = text.splitlines()
        fence = next((n for n, line in enumerate(lines) if line.rstrip() in ("---", "# ---")), 0)
        return f"bad YAML in the header, line {fence + 2 + int(mark.line)}: {problem}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _code_key(source: str) -> str:
    # jupytext may change blank lines at the ends of a cell and trailing spaces; nothing else
    return "\n".join(line.rstrip() for line in source.splitlines()).strip("\n")


def _take_outputs(nb: dict[str, Any], stored: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    """Give nb's code cells the stored outputs of the pair's cells with the same code.

    Cells are matched in order (the longest common subsequence of their code), so an edited,
    inserted or deleted cell leaves the others matched. Returns the indices of nb's code cells
    left without a match, and how many of the pair's code cells were not used.
    """
    mine = [(i, c) for i, c in enumerate(nb["cells"]) if c.get("cell_type") == "code"]
    cells = stored.get("cells")
    theirs = [
        c
        for c in (cells if isinstance(cells, list) else [])
        if isinstance(c, dict) and c.get("cell_type") == "code"
    ]
    matcher = difflib.SequenceMatcher(
        None,
        [_code_key(_source(c)) for _, c in mine],
        [_code_key(_source(c)) for c in theirs],
        autojunk=False,  # notebooks repeat lines like `df.head()`; every cell counts
    )
    matched: dict[int, int] = {}
    for a, b, size in matcher.get_matching_blocks():
        matched.update((a + k, b + k) for k in range(size))
    for n, (_, cell) in enumerate(mine):
        if n in matched:
            source_cell = theirs[matched[n]]
            outputs = source_cell.get("outputs")
            cell["outputs"] = outputs if isinstance(outputs, list) else []
            cell["execution_count"] = source_cell.get("execution_count")
    unpaired = tuple(i for n, (i, _) in enumerate(mine) if n not in matched)
    return unpaired, len(theirs) - len(matched)


def _matches(file_line: str, cell_line: str) -> bool:
    """Whether a line of the file holds a line of a cell, as jupytext writes it.

    Percent format comments out markdown and magics (``# text``, ``# %time``); MyST and code
    keep lines as they are.
    """
    file_line, cell_line = file_line.rstrip(), cell_line.rstrip()
    return file_line in (cell_line, f"# {cell_line}".rstrip(), f"#{cell_line}")


def _cell_starts(lines: Sequence[str], sources: Sequence[str]) -> tuple[int, ...]:
    """Each cell's first file line (1-based), by finding the cells' lines in order.

    jupytext does not report positions, so they are found again: a cell starts where all of
    its lines are, in order, after the previous cell. An empty cell is at its marker line. A
    cell not found (jupytext rewrote it beyond the rules of :func:`_matches`) is placed after
    the previous one.
    """
    starts: list[int] = []
    cursor = 0
    for source in sources:
        cell = source.splitlines()
        first = next((k for k, line in enumerate(cell) if line.strip()), None)
        if first is None:
            marker = next(
                (n for n in range(cursor, len(lines)) if _CELL_START.match(lines[n])), None
            )
            at = marker if marker is not None else cursor
            starts.append(min(at, max(len(lines) - 1, 0)) + 1)
            cursor = at + 1 if marker is not None else cursor
            continue
        found = _find_cell(lines, cell, first, cursor)
        if found is None:
            starts.append(min(cursor, max(len(lines) - 1, 0)) + 1)
            continue
        starts.append(found + 1)
        cursor = found + len(cell)
    return tuple(starts)


def _find_cell(lines: Sequence[str], cell: Sequence[str], first: int, cursor: int) -> int | None:
    """The index of the file line where ``cell`` starts, at or after ``cursor``."""
    for n in range(cursor + first, len(lines)):
        if not _matches(lines[n], cell[first]):
            continue
        start = n - first
        end = start + len(cell)
        if end <= len(lines) and all(
            _matches(lines[start + k], cell[k]) or not cell[k].strip()
            for k in range(first, len(cell))
        ):
            return start
    return None
