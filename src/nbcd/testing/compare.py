"""Compare a cell's stored outputs with the outputs of a fresh run.

By default the verdict is ``pytest --nbval``'s (nbval 0.11, ``IPyNbCell.compare_outputs``):

- streams of one name are merged, and text up to a carriage return that does not end a
  line is dropped, in stored and fresh outputs alike;
- outputs are flattened into one list of values per key: a stream's name (``stdout``),
  every MIME type in ``data``, ``ename`` and ``evalue`` of errors. The order of values is
  compared within a key, never across keys;
- never compared: ``metadata``, ``execution_count``, ``traceback``, widget model ids, and
  ``image/png``/``image/jpeg`` (nbval compares those only with ``--nbdime``);
- both sides must have the same keys and the same number of values per key, and values
  must be equal after the sanitizer substitutions.

Beyond nbval, and only when asked: numbers inside text within a tolerance, pandas DataFrame
HTML tables cell by cell, and images by structural similarity (SSIM).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbcd.errors import UsageError
from nbcd.testing.markers import CellMarkers, cell_markers, should_compare

__all__ = [
    "CompareOptions",
    "Mismatch",
    "Sanitizer",
    "coalesce_streams",
    "compare_cell",
    "compare_notebook",
    "load_sanitizers",
    "unexpected_error",
]

# nbval's ``skip_compare``; "name" is a stream's name, which becomes the key instead.
SKIPPED_KEYS = frozenset(
    {
        "metadata",
        "traceback",
        "prompt_number",
        "output_type",
        "name",
        "execution_count",
        "application/vnd.jupyter.widget-view+json",  # model ids are random
    }
)
IMAGE_KEYS = frozenset({"image/png", "image/jpeg"})
_DIFF_LINES = 12
_WIDTH = 160  # characters of a diff line
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# nbval's pattern: everything on a line up to a carriage return that has text after it.
_CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


@dataclass(frozen=True)
class Sanitizer:
    """One ``regex:``/``replace:`` pair, applied with ``re.sub`` to every text value."""

    pattern: re.Pattern[str]
    replace: str

    def apply(self, text: str) -> str:
        """Return ``text`` with every match of the pattern replaced."""
        return self.pattern.sub(self.replace, text)


@dataclass(frozen=True)
class CompareOptions:
    """How outputs are compared; the defaults give ``pytest --nbval``'s verdict."""

    lax: bool = False  # like --nbval-lax: compare only cells marked NBVAL_CHECK_OUTPUT
    rtol: float = 0.0  # relative tolerance for numbers in text and tables; cells may override
    atol: float = 0.0  # absolute tolerance, added to rtol * |stored|
    sanitizers: tuple[Sanitizer, ...] = ()
    compare_images: bool = False  # nbval ignores PNG and JPEG outputs
    image_threshold: float = 0.95  # minimum SSIM for two images to count as the same


@dataclass(frozen=True)
class Mismatch:
    """One way a cell's fresh outputs differ from its stored ones.

    ``kind`` is one of: ``error`` (an exception the cell is not marked to raise), ``unrun``
    (the stored cell was never executed yet has outputs), ``no-exception`` (a cell marked to
    raise stored an error and now raises none), ``missing``/``unexpected`` (an output type
    only in the stored/fresh outputs), ``count`` (another number of outputs of a type),
    ``value``, ``number``, ``table`` or ``image``.
    """

    cell_index: int
    kind: str
    message: str
    diff: str


def load_sanitizers(path: str | os.PathLike[str]) -> tuple[Sanitizer, ...]:
    """Read nbval's ``--nbval-sanitize-with`` file: each ``regex: X`` line, then ``replace: Y``.

    Other lines (``[section]`` headers, comments, blanks) are ignored as nbval ignores them. A
    pair nbval would silently drop, or a pattern it would crash on, is a UsageError here.
    """
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read sanitizer file {os.fspath(path)}: {exc}") from None
    # nbval keeps its pairs in a dict keyed by pattern: a repeated pattern keeps its first
    # position and takes its last replacement.
    pairs: dict[str, Sanitizer] = {}
    number = 0
    while number < len(lines):
        line, number = lines[number], number + 1
        where = f"{os.fspath(path)}:{number}"
        if line.startswith("replace:"):
            raise UsageError(f"{where}: 'replace:' without a 'regex:' line before it")
        if not line.startswith("regex:"):
            continue
        if not line.startswith("regex: "):
            raise UsageError(f"{where}: write 'regex: PATTERN', with one space after the colon")
        following = lines[number] if number < len(lines) else ""
        if following.startswith("replace:") and not following.startswith("replace: "):
            # An empty "replace: " loses its space to editors that strip lines; nbval then
            # silently drops the pair.
            raise UsageError(f"{where}: write 'replace: TEXT', with one space after the colon")
        if not following.startswith("replace: "):
            raise UsageError(f"{where}: 'regex:' must be followed by a 'replace: TEXT' line")
        regex, replace = line[len("regex: ") :], following[len("replace: ") :]
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise UsageError(f"{where}: invalid regular expression {regex!r}: {exc}") from None
        try:
            pattern.sub(replace, "")  # checks group references such as \2 up front
        except (re.error, IndexError) as exc:
            raise UsageError(f"{where}: invalid replacement {replace!r}: {exc}") from None
        pairs[regex] = Sanitizer(pattern, replace)
        number += 1
    return tuple(pairs.values())


def unexpected_error(fresh_outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Return the first error output of a run (``ename``, ``evalue``, ``traceback``), if any."""
    for output in fresh_outputs:
        if output.get("output_type") == "error":
            return dict(output)
    return None


def coalesce_streams(outputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Merge streams of one name into the first of them, as nbval does before comparing.

    nbval also means to cancel backspaces, but its loop never runs, so they stay.
    """
    merged: list[dict[str, Any]] = []
    streams: dict[str, dict[str, Any]] = {}
    for output in outputs:
        copy = dict(output)  # never modify the caller's notebook
        if copy.get("output_type") == "stream":
            copy["text"] = _joined(copy.get("text", ""))
            first = streams.get(copy.get("name", ""))
            if first is not None:
                first["text"] += copy["text"]
                continue
            streams[copy.get("name", "")] = copy
        merged.append(copy)
    for stream in streams.values():
        stream["text"] = _CARRIAGE_RETURN.sub("", stream["text"])
    return merged


def compare_cell(
    cell_index: int,
    stored_cell: Mapping[str, Any],
    fresh_outputs: Sequence[Mapping[str, Any]],
    options: CompareOptions,
    markers: CellMarkers | None = None,
) -> list[Mismatch]:
    """Compare one code cell's stored outputs with its fresh outputs; empty means it passes.

    The order of checks is nbval's: a skipped cell passes; an exception the cell is not marked
    to raise fails it; a stored cell never executed fails if it has outputs and is otherwise
    not compared; then outputs are compared unless the markers or lax mode say not to.
    """
    markers = markers if markers is not None else cell_markers(stored_cell)
    if markers.skip or markers.skip_execution:
        return []  # not run; under skip-execution the "fresh" outputs are the stored ones
    error = None if markers.raises_exception else unexpected_error(fresh_outputs)
    if error is not None:
        trace = "\n".join(_ANSI.sub("", line) for line in error.get("traceback", []))
        message = f"cell raised {error.get('ename')}: {error.get('evalue')}"
        return [Mismatch(cell_index, "error", message, _truncate(trace.splitlines(), tail=True))]
    stored_outputs = stored_cell.get("outputs") or []
    if stored_cell.get("execution_count") is None:
        if not stored_outputs:
            return []
        message = "stored cell was never executed but has outputs"
        return [Mismatch(cell_index, "unrun", message, "")]
    if not should_compare(stored_cell, markers, options.lax):
        return []
    rtol = markers.rtol if markers.rtol is not None else options.rtol
    atol = markers.atol if markers.atol is not None else options.atol
    return _compare_outputs(cell_index, stored_outputs, fresh_outputs, options, markers, rtol, atol)


def compare_notebook(
    stored_nb: Mapping[str, Any], fresh_nb: Mapping[str, Any], options: CompareOptions
) -> list[Mismatch]:
    """Compare every code cell of a stored notebook with the same cell of its fresh run.

    ``cell_index`` is the position in ``cells``, counting markdown cells too.
    """
    stored_cells, fresh_cells = stored_nb["cells"], fresh_nb["cells"]
    if len(stored_cells) != len(fresh_cells):
        raise ValueError(f"stored notebook has {len(stored_cells)} cells, fresh {len(fresh_cells)}")
    mismatches: list[Mismatch] = []
    for index, (stored, fresh) in enumerate(zip(stored_cells, fresh_cells, strict=True)):
        if stored.get("cell_type") == "code":
            outputs = fresh.get("outputs") or []
            mismatches.extend(compare_cell(index, stored, outputs, options, cell_markers(stored)))
    return mismatches


def _compare_outputs(
    cell_index: int,
    stored_outputs: Sequence[Mapping[str, Any]],
    fresh_outputs: Sequence[Mapping[str, Any]],
    options: CompareOptions,
    markers: CellMarkers,
    rtol: float,
    atol: float,
) -> list[Mismatch]:
    # nbval stops at the first difference; reporting every differing key costs nothing and
    # leaves the verdict unchanged.
    skipped = SKIPPED_KEYS if options.compare_images else SKIPPED_KEYS | IMAGE_KEYS
    stored = _flatten(coalesce_streams(stored_outputs), skipped, options.sanitizers)
    fresh = _flatten(coalesce_streams(fresh_outputs), skipped, options.sanitizers)
    found: list[Mismatch] = []
    missing = [key for key in stored if key not in fresh]
    if missing and markers.raises_exception and {"ename", "evalue"} <= set(missing):
        stored_error = f"{stored['ename'][0]}: {stored['evalue'][0]}"
        message = f"cell is marked to raise an exception but raised none (stored {stored_error})"
        found.append(Mismatch(cell_index, "no-exception", message, ""))
        missing = [key for key in missing if key not in ("ename", "evalue")]
    if missing:
        message = f"fresh run lacks stored output {', '.join(map(_label, missing))}"
        diff = _diff(missing[0], stored[missing[0]], [])
        found.append(Mismatch(cell_index, "missing", message, diff))
    unexpected = [key for key in fresh if key not in stored]
    if unexpected:
        message = f"fresh run has output {', '.join(map(_label, unexpected))} not stored"
        diff = _diff(unexpected[0], [], fresh[unexpected[0]])
        found.append(Mismatch(cell_index, "unexpected", message, diff))
    for key, stored_values in stored.items():
        fresh_values = fresh.get(key)
        if fresh_values is None:
            continue
        if len(stored_values) != len(fresh_values):
            counts = f"{len(stored_values)} stored, {len(fresh_values)} fresh"
            message = f"{_label(key)}: {counts} outputs"
            diff = _diff(key, stored_values, fresh_values)
            found.append(Mismatch(cell_index, "count", message, diff))
            continue
        for old, new in zip(stored_values, fresh_values, strict=True):
            result = _compare_value(key, old, new, options, rtol, atol)
            if result is not None:
                found.append(Mismatch(cell_index, *result))
                break
    return found


def _flatten(
    outputs: Sequence[Mapping[str, Any]], skipped: frozenset[str], sanitizers: Sequence[Sanitizer]
) -> dict[str, list[Any]]:
    """nbval's shape: one list of values per stream name, MIME type or other output key."""
    values: dict[str, list[Any]] = {}
    for output in outputs:
        items = list(output.items())
        if output.get("output_type") == "stream":
            items = [(str(output.get("name", "")), output.get("text", ""))]
        for key, value in items:
            if key == "data" and isinstance(value, Mapping):
                for mime, data in value.items():
                    if mime not in skipped:
                        values.setdefault(mime, []).append(_sanitized(mime, data, sanitizers))
            elif key not in skipped:
                values.setdefault(key, []).append(_sanitized(key, value, sanitizers))
    return values


def _sanitized(key: str, value: Any, sanitizers: Sequence[Sanitizer]) -> Any:
    if isinstance(value, list) and "json" not in key:
        value = _joined(value)  # raw nbformat JSON may split text into lines
    if isinstance(value, str):
        for sanitizer in sanitizers:
            value = sanitizer.apply(value)
    return value


def _compare_value(
    key: str, stored: Any, fresh: Any, options: CompareOptions, rtol: float, atol: float
) -> tuple[str, str, str] | None:
    """Return ``(kind, message, diff)`` when two values of one key differ."""
    if stored == fresh:
        return None
    from nbcd.testing import similarity  # only a difference needs it (numpy, Pillow)

    label = _label(key)
    if key in IMAGE_KEYS and isinstance(stored, str) and isinstance(fresh, str):
        return similarity.compare_images(label, stored, fresh, options.image_threshold)
    diff = _diff(key, [stored], [fresh])
    if not (isinstance(stored, str) and isinstance(fresh, str)):
        return "value", f"{label} differs", diff
    tolerant = rtol > 0 or atol > 0
    if (
        key == "text/html"
        and similarity.DATAFRAME_MARKER in stored
        and similarity.DATAFRAME_MARKER in fresh
    ):
        problem = similarity.compare_tables(stored, fresh, rtol, atol)
        if problem is not None:
            return "table", f"{label}: {problem}", diff
        if tolerant:
            return None
    elif tolerant:
        problem = similarity.compare_numbers(stored, fresh, rtol, atol)
        return None if problem is None else ("number", f"{label}: {problem}", diff)
    line = _first_differing_line(stored, fresh)
    return "value", f"{label} differs from the stored output at line {line}", diff


def _label(key: str) -> str:
    if key in ("stdout", "stderr"):
        return f"stream {key}"
    return {"ename": "error name", "evalue": "error value"}.get(key, key)


def _joined(value: Any) -> Any:
    is_lines = isinstance(value, list) and all(isinstance(item, str) for item in value)
    return "".join(value) if is_lines else value


def _shown(key: str, value: Any) -> str:
    if key in IMAGE_KEYS and isinstance(value, str):
        return f"<{key}, {len(value)} characters of base64>"
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def _first_differing_line(stored: str, fresh: str) -> int:
    old, new = stored.splitlines(), fresh.splitlines()
    for number, (a, b) in enumerate(zip(old, new, strict=False), start=1):
        if a != b:
            return number
    return min(len(old), len(new)) + 1


def _diff(key: str, stored_values: Sequence[Any], fresh_values: Sequence[Any]) -> str:
    """A short unified diff of the values of one key, headed by the output type."""
    label = _label(key)
    stored = "\n".join(_shown(key, value) for value in stored_values)
    fresh = "\n".join(_shown(key, value) for value in fresh_values)
    old, new = stored.splitlines(), fresh.splitlines()
    if old == new:  # only line endings differ: show them
        old, new = [repr(stored)], [repr(fresh)]
    lines = difflib.unified_diff(old, new, f"stored {label}", f"fresh {label}", n=1, lineterm="")
    return _truncate(list(lines))


def _truncate(lines: list[str], tail: bool = False) -> str:
    lines = [line if len(line) <= _WIDTH else line[: _WIDTH - 3] + "..." for line in lines]
    if len(lines) > _DIFF_LINES:
        more = f"... ({len(lines) - _DIFF_LINES} more lines)"
        lines = [more, *lines[-_DIFF_LINES:]] if tail else [*lines[:_DIFF_LINES], more]
    return "\n".join(lines)
