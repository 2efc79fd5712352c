"""Tolerant comparisons beyond nbval: numbers in text, DataFrame tables, images (SSIM).

Kept apart from compare.py because only a mismatch needs them, and images need numpy and
Pillow, which an all-cached `nbcd test` should not pay to import.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DATAFRAME_MARKER", "compare_images", "compare_numbers", "compare_tables"]


# --- numbers within a tolerance -----------------------------------------------------------

# A number is not glued to a word or a decimal point on either side, so ``float64``, ``x2``,
# ``v1.2.3``'s tail and ``0x1f`` stay text. ``1,234,567`` is one number (thousands groups of
# exactly three digits); ``nan``, ``inf`` and ``infinity`` in any case are numbers too.
_NUMBER = re.compile(
    r"""(?<![\w.])[-+]?
        (?: (?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?
          | \.\d+(?:[eE][-+]?\d+)?
          | (?i:nan|inf(?:inity)?) )
        (?![\w])""",
    re.VERBOSE,
)
_WORD_OR_NEWLINE = re.compile(r"\n|[^\s]+")


def _tokens(text: str) -> list[tuple[str, float | int | None]]:
    """Split text into numbers ``(text, value)`` and words ``(text, None)``.

    Spaces and tabs are dropped: table reprs realign their columns when a number's width
    changes, which a tolerance should forgive. Newlines are kept as tokens.
    """
    tokens: list[tuple[str, float | int | None]] = []
    position = 0
    for match in _NUMBER.finditer(text):
        words = _WORD_OR_NEWLINE.findall(text, position, match.start())
        tokens.extend((word, None) for word in words)
        raw = match.group()
        plain = raw.replace(",", "")
        is_int = plain.lstrip("+-").isdigit()
        tokens.append((raw, int(plain) if is_int else float(plain)))
        position = match.end()
    tokens.extend((word, None) for word in _WORD_OR_NEWLINE.findall(text, position))
    return tokens


def _close(fresh: float, stored: float, rtol: float, atol: float) -> bool:
    if math.isnan(fresh) or math.isnan(stored):
        return math.isnan(fresh) and math.isnan(stored)
    if math.isinf(fresh) or math.isinf(stored):
        return fresh == stored
    try:
        return abs(fresh - stored) <= atol + rtol * abs(stored)
    except OverflowError:  # an integer too large for a float: only equality is meaningful
        return fresh == stored


def compare_numbers(stored: str, fresh: str, rtol: float, atol: float) -> str | None:
    """Describe the first difference beyond tolerance, or return None when the texts match."""
    old_tokens, new_tokens = _tokens(stored), _tokens(fresh)
    line = 1
    for (old, old_value), (new, new_value) in zip(old_tokens, new_tokens, strict=False):
        if old_value is not None and new_value is not None:
            if not _close(new_value, old_value, rtol, atol):
                return (
                    f"line {line}: {new} differs from stored {old} by more than "
                    f"atol={atol:g} + rtol={rtol:g} * |stored|"
                )
        elif old != new:
            return f"line {line}: text {new!r} differs from stored {old!r}"
        line += old == "\n"
    if len(old_tokens) != len(new_tokens):
        longer = "stored" if len(old_tokens) > len(new_tokens) else "fresh"
        return f"line {line}: the {longer} text goes on"
    return None


# --- pandas DataFrame tables --------------------------------------------------------------

DATAFRAME_MARKER = 'class="dataframe'  # pandas may add more classes after it


@dataclass
class _Table:
    rows: list[list[str]]
    header_rows: int


class _TableReader(HTMLParser):
    """Collect the cells of DataFrame tables, and the text outside them, from HTML.

    The standard library parser is enough for pandas' regular markup, and avoids needing
    lxml or html5lib, which ``pandas.read_html`` requires.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[_Table] = []
        self.outside: list[str] = []
        self._depth = 0  # nesting of <table> inside the DataFrame table being read
        self._in_head = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and self._depth == 0:
            if "dataframe" in (dict(attrs).get("class") or "").split():
                self._depth = 1
                self.tables.append(_Table([], 0))
        elif tag == "table" and self._depth:
            self._depth += 1
        elif self._depth == 1 and tag == "thead":
            self._in_head = True
        elif self._depth == 1 and tag == "tr":
            self.tables[-1].rows.append([])
            self.tables[-1].header_rows += self._in_head
        elif self._depth == 1 and tag in ("td", "th") and self.tables[-1].rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._depth:
            self._depth -= 1
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1].rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif not self._depth:
            self.outside.append(data)


def _read_tables(html: str) -> _TableReader:
    reader = _TableReader()
    reader.feed(html)
    reader.close()
    return reader


def compare_tables(stored: str, fresh: str, rtol: float, atol: float) -> str | None:
    """Describe the first DataFrame cell that differs beyond tolerance, or return None."""
    old, new = _read_tables(stored), _read_tables(fresh)
    if len(old.tables) != len(new.tables):
        return f"{len(new.tables)} DataFrame tables, {len(old.tables)} stored"
    for number, (old_table, new_table) in enumerate(
        zip(old.tables, new.tables, strict=True), start=1
    ):
        shape_old, shape_new = _shape(old_table), _shape(new_table)
        if shape_old != shape_new or old_table.header_rows != new_table.header_rows:
            return f"DataFrame {number} has shape {shape_new}, stored {shape_old}"
        for r, (old_row, new_row) in enumerate(zip(old_table.rows, new_table.rows, strict=True)):
            if len(old_row) != len(new_row):
                return f"DataFrame {number} row {r} has {len(new_row)} cells, stored {len(old_row)}"
            for c, (old_cell, new_cell) in enumerate(zip(old_row, new_row, strict=True)):
                if compare_numbers(old_cell, new_cell, rtol, atol) is not None:
                    where = _cell_name(old_table, r, c)
                    return f"DataFrame {number} {where}: {new_cell!r}, stored {old_cell!r}"
    outside = compare_numbers("".join(old.outside), "".join(new.outside), rtol, atol)
    return None if outside is None else f"text around the tables: {outside}"


def _shape(table: _Table) -> tuple[int, int]:
    body = table.rows[table.header_rows :]
    return len(body), max((len(row) for row in table.rows), default=0)


def _cell_name(table: _Table, r: int, c: int) -> str:
    if r < table.header_rows:
        return f"header row {r}, column {c}"
    row = table.rows[r]
    column = next(
        (h[c] for h in reversed(table.rows[: table.header_rows]) if c < len(h) and h[c]), str(c)
    )
    return f"row {r - table.header_rows} (index {row[0]!r}), column {column!r}"


# --- images -------------------------------------------------------------------------------

_IMAGE_SIDE = 128  # compare at most this many pixels per side: cheap, forgives antialiasing


def compare_images(
    label: str, stored: str, fresh: str, threshold: float
) -> tuple[str, str, str] | None:
    try:
        old, new = _decode_image(stored), _decode_image(fresh)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        return "image", f"{label}: cannot decode image ({exc})", ""
    sizes = f"stored {old.width}x{old.height} px, fresh {new.width}x{new.height} px"
    scale = min(1.0, _IMAGE_SIDE / max(old.size))
    size = (max(1, round(old.width * scale)), max(1, round(old.height * scale)))
    # A changed figure size still compares: both are resampled to the stored aspect ratio.
    similarity = _ssim(
        np.asarray(old.resize(size, Image.Resampling.LANCZOS), dtype=np.float64),
        np.asarray(new.resize(size, Image.Resampling.LANCZOS), dtype=np.float64),
    )
    if similarity >= threshold:
        return None
    return "image", f"{label}: similarity {similarity:.3f} is below {threshold:g}", sizes


def _decode_image(encoded: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    # Transparent pixels are shown on white in a notebook, so compare them as white.
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")


def _ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two grayscale images over square windows."""
    window = max(1, min(window, *a.shape))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_a, mean_b = _window_mean(a, window), _window_mean(b, window)
    var_a = _window_mean(a * a, window) - mean_a**2
    var_b = _window_mean(b * b, window) - mean_b**2
    cov = _window_mean(a * b, window) - mean_a * mean_b
    ssim = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim.mean())


def _window_mean(x: np.ndarray, window: int) -> np.ndarray:
    # Summed-area table: every window's mean in O(pixels), with no scipy dependency.
    total = np.pad(x, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    w = window
    sums = total[w:, w:] - total[:-w, w:] - total[w:, :-w] + total[:-w, :-w]
    return np.asarray(sums / (w * w))


# --- messages -----------------------------------------------------------------------------
