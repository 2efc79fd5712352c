"""Stored vs fresh outputs: nbval's semantics, then tolerances, tables and images."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image, ImageDraw

from nbcd.errors import UsageError
from nbcd.testing.compare import (
    CompareOptions,
    Mismatch,
    coalesce_streams,
    compare_cell,
    compare_notebook,
    load_sanitizers,
    unexpected_error,
)

DEFAULT = CompareOptions()
LAX = CompareOptions(lax=True)


def stdout(text: str) -> Any:
    return new_output("stream", name="stdout", text=text)


def stderr(text: str) -> Any:
    return new_output("stream", name="stderr", text=text)


def result(data: dict[str, Any], count: int = 1, **metadata: Any) -> Any:
    return new_output("execute_result", data=data, execution_count=count, metadata=metadata)


def display(data: dict[str, Any]) -> Any:
    return new_output("display_data", data=data)


def error(ename: str = "ValueError", evalue: str = "bad", trace: str = "tb") -> Any:
    return new_output("error", ename=ename, evalue=evalue, traceback=[trace])


def cell(outputs: list[Any], source: str = "x", tags: list[str] | None = None) -> Any:
    metadata = {"tags": tags} if tags else {}
    return new_code_cell(source, outputs=outputs, execution_count=1, metadata=metadata)


def check(
    stored: list[Any], fresh: list[Any], options: CompareOptions = DEFAULT, **kw: Any
) -> list[Mismatch]:
    return compare_cell(3, cell(stored, **kw), fresh, options)


def kinds(mismatches: list[Mismatch]) -> list[str]:
    return [m.kind for m in mismatches]


# --- nbval semantics ----------------------------------------------------------------------


def test_when_outputs_equal_then_no_mismatch() -> None:
    outputs = [stdout("hi\n"), result({"text/plain": "1"})]
    assert check(outputs, outputs) == []


def test_when_stream_text_differs_then_value_mismatch_with_diff() -> None:
    [mismatch] = check([stdout("a\nb\n")], [stdout("a\nc\n")])
    assert (mismatch.cell_index, mismatch.kind) == (3, "value")
    assert "stream stdout" in mismatch.message and "line 2" in mismatch.message
    assert "--- stored stream stdout" in mismatch.diff
    assert "-b" in mismatch.diff and "+c" in mismatch.diff


def test_when_streams_split_differently_then_merged_before_comparing() -> None:
    stored = [stdout("a\nb\n"), stderr("warn\n")]
    fresh = [stderr("wa"), stdout("a\n"), stderr("rn\n"), stdout("b\n")]
    assert check(stored, fresh) == []


def test_when_carriage_return_overwrites_line_then_only_last_text_counts() -> None:
    assert check([stdout("100%\n")], [stdout("10%\r50%\r100%\n")]) == []


def test_when_backspace_then_kept_as_nbval_does() -> None:
    # nbval's backspace loop never runs, so "ab\bc" is not "ac" to it.
    assert kinds(check([stdout("ac\n")], [stdout("ab\bc\n")])) == ["value"]


def test_when_only_metadata_or_execution_count_differs_then_equal() -> None:
    stored = [result({"text/plain": "1"}, count=5, width=3)]
    assert check(stored, [result({"text/plain": "1"}, count=1)]) == []


def test_when_display_data_instead_of_execute_result_then_equal() -> None:
    # nbval never compares output_type, only the values under each key.
    assert check([result({"text/plain": "1"})], [display({"text/plain": "1"})]) == []


def test_when_order_differs_across_keys_then_equal() -> None:
    stored = [stdout("a\n"), display({"text/plain": "1"})]
    fresh = [display({"text/plain": "1"}), stdout("a\n")]
    assert check(stored, fresh) == []


def test_when_order_differs_within_a_key_then_mismatch() -> None:
    stored = [display({"text/plain": "1"}), display({"text/plain": "2"})]
    assert kinds(check(stored, stored[::-1])) == ["value"]


def test_when_output_type_missing_then_missing() -> None:
    stored = [result({"text/plain": "1", "text/html": "<b>1</b>"})]
    [mismatch] = check(stored, [result({"text/plain": "1"})])
    assert mismatch.kind == "missing" and "text/html" in mismatch.message


def test_when_output_type_added_then_unexpected() -> None:
    [mismatch] = check([], [stderr("warning\n")])
    assert mismatch.kind == "unexpected" and "stream stderr" in mismatch.message


def test_when_number_of_outputs_of_a_type_differs_then_count() -> None:
    stored = [display({"text/plain": "1"})]
    mismatches = check(stored, stored * 2)
    assert kinds(mismatches) == ["count"]
    assert "1 stored, 2 fresh" in mismatches[0].message


def test_when_images_differ_then_ignored_by_default() -> None:
    stored = [display({"text/plain": "<Figure>", "image/png": png(0)})]
    fresh = [display({"text/plain": "<Figure>", "image/png": png(1)})]
    assert check(stored, fresh) == []
    assert check([display({"text/plain": "<Figure>"})], fresh) == []


def test_when_svg_differs_then_compared_as_text() -> None:
    assert kinds(
        check([display({"image/svg+xml": "<svg/>"})], [display({"image/svg+xml": "<svg>"})])
    )


def test_when_widget_model_id_differs_then_ignored() -> None:
    key = "application/vnd.jupyter.widget-view+json"
    stored = [display({"text/plain": "w", key: {"model_id": "a"}})]
    assert check(stored, [display({"text/plain": "w", key: {"model_id": "b"}})]) == []


def test_when_json_output_differs_then_value_mismatch() -> None:
    stored = [display({"application/json": {"a": 1}})]
    [mismatch] = check(stored, [display({"application/json": {"a": 2}})])
    assert mismatch.kind == "value" and '"a": 2' in mismatch.diff


def test_when_raw_json_lists_then_joined_like_nbformat() -> None:
    stored = [{"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]}]
    assert check(stored, [stdout("a\nb\n")]) == []


def test_coalesce_streams_leaves_input_unchanged() -> None:
    outputs = [stdout("a"), stdout("b")]
    assert coalesce_streams(outputs)[0]["text"] == "ab"
    assert outputs[0]["text"] == "a"


# --- markers and modes --------------------------------------------------------------------


def test_when_lax_then_only_check_output_cells_compared() -> None:
    assert check([stdout("a\n")], [stdout("b\n")], LAX) == []
    marked = check([stdout("a\n")], [stdout("b\n")], LAX, source="# NBVAL_CHECK_OUTPUT")
    assert kinds(marked) == ["value"]


def test_when_ignore_output_then_not_compared() -> None:
    assert check([stdout("a\n")], [stdout("b\n")], tags=["nbval-ignore-output"]) == []


def test_when_skip_then_nothing_checked_even_an_error() -> None:
    assert check([stdout("a\n")], [error()], source="# NBVAL_SKIP") == []
    assert check([stdout("a\n")], [], tags=["skip-execution"]) == []


def test_when_unmarked_cell_raises_then_error_only() -> None:
    fresh = [stdout("b\n"), error("KeyError", "'k'", "\x1b[31mKeyError\x1b[0m: 'k'")]
    [mismatch] = check([stdout("a\n")], fresh, LAX)
    assert mismatch.kind == "error" and mismatch.message == "cell raised KeyError: 'k'"
    assert mismatch.diff == "KeyError: 'k'"
    assert unexpected_error(fresh) == dict(fresh[1])
    assert unexpected_error([stdout("x")]) is None


def test_when_marked_cell_raises_same_error_then_traceback_ignored() -> None:
    fresh = [error(trace="other frames")]
    assert check([error()], fresh, tags=["raises-exception"]) == []


def test_when_marked_cell_raises_other_error_then_value_mismatch() -> None:
    mismatches = check([error()], [error(evalue="worse")], source="# NBVAL_RAISES_EXCEPTION")
    assert kinds(mismatches) == ["value"] and "error value" in mismatches[0].message


def test_when_marked_cell_raises_nothing_then_no_exception() -> None:
    stored = [stdout("a\n"), error()]
    mismatches = check(stored, [stdout("a\n")], tags=["raises-exception"])
    assert kinds(mismatches) == ["no-exception"]
    assert "ValueError: bad" in mismatches[0].message
    # Like nbval, lax mode does not compare the cell, so nothing catches it.
    assert check(stored, [stdout("a\n")], LAX, tags=["raises-exception"]) == []


def test_when_stored_cell_never_ran_but_has_outputs_then_unrun_even_if_lax() -> None:
    unrun = new_code_cell("x", outputs=[stdout("a\n")])
    assert kinds(compare_cell(0, unrun, [stdout("a\n")], LAX)) == ["unrun"]
    assert compare_cell(0, new_code_cell("x"), [stdout("anything\n")], DEFAULT) == []


def test_compare_notebook_indexes_cells_in_notebook_order() -> None:
    stored = new_notebook(
        cells=[new_markdown_cell("# t"), cell([stdout("a\n")]), cell([stdout("b\n")])]
    )
    fresh = nbformat.from_dict(stored)
    fresh.cells[2].outputs = [stdout("c\n")]
    assert [(m.cell_index, m.kind) for m in compare_notebook(stored, fresh, DEFAULT)] == [
        (2, "value")
    ]
    fresh.cells.pop()
    with pytest.raises(ValueError, match="3 cells"):
        compare_notebook(stored, fresh, DEFAULT)


# --- sanitizers ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sanitize.cfg"
    path.write_text(text, encoding="utf-8")
    return path


def test_sanitizers_read_nbval_file_format(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[addresses]\nregex: 0x[0-9a-f]+\nreplace: ADDR\n\n"
        "; a comment\n[dates]\nregex: (\\d+)-\\d+-\\d+\nreplace: YEAR-\\1\n"
        "[again]\nregex: 0x[0-9a-f]+\nreplace: HEX\n",
    )
    sanitizers = load_sanitizers(path)
    assert [s.pattern.pattern for s in sanitizers] == ["0x[0-9a-f]+", r"(\d+)-\d+-\d+"]
    # A repeated pattern keeps its place and takes the later replacement, as in nbval.
    assert sanitizers[0].apply("at 0xff") == "at HEX"
    assert sanitizers[1].apply("2024-01-02") == "YEAR-2024"


def test_when_replacement_empty_then_matches_removed(tmp_path: Path) -> None:
    [sanitizer] = load_sanitizers(write(tmp_path, "regex: \\s+$\nreplace: \n"))
    assert sanitizer.apply("x  ") == "x"


def test_when_sanitized_outputs_equal_then_no_mismatch(tmp_path: Path) -> None:
    options = CompareOptions(
        sanitizers=load_sanitizers(write(tmp_path, "regex: 0x\\w+\nreplace: A\n"))
    )
    stored = [result({"text/plain": "<obj at 0x7f01>"})]
    fresh = [result({"text/plain": "<obj at 0x7fee>"})]
    assert check(stored, fresh, options) == []
    assert kinds(check(stored, fresh)) == ["value"]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("[s]\nregex: (unclosed\nreplace: x\n", 2, "invalid regular expression"),
        ("regex: a\n\nreplace: b\n", 1, "must be followed"),
        ("regex: a\nregex: b\nreplace: c\n", 1, "must be followed"),
        ("[s]\n\nreplace: b\n", 3, "without a 'regex:'"),
        ("regex: a\nreplace: \\1\n", 1, "invalid replacement"),
        ("regex:a\nreplace: b\n", 1, "one space"),
        ("regex: a\nreplace:\n", 1, "one space"),
    ],
)
def test_when_sanitizer_file_bad_then_usage_error_names_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=problem) as info:
        load_sanitizers(path)
    assert f"{path}:{line}:" in str(info.value)


def test_when_sanitizer_file_missing_then_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.cfg"):
        load_sanitizers(tmp_path / "nope.cfg")


# --- numbers within a tolerance -----------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "fresh"),
    [
        ("loss 0.25000 after 3 epochs", "loss 0.25001 after 3 epochs"),
        ("total 1,234,567", "total 1,234,568"),
        ("x = 1.0e-3", "x = 1.0004e-3"),
        ("[nan, inf, -inf]", "[NaN, inf, -inf]"),
        ("a    1.5\nbb  10.0\n", "a   1.5\nbb 10.0001\n"),  # realigned columns
    ],
)
def test_when_numbers_within_tolerance_then_equal(stored: str, fresh: str) -> None:
    options = CompareOptions(rtol=1e-3)
    assert check([stdout(stored)], [stdout(fresh)], options) == []
    assert kinds(check([stdout(stored)], [stdout(fresh)])) == ["value"]


@pytest.mark.parametrize(
    ("stored", "fresh", "detail"),
    [
        ("loss 0.25", "loss 0.26", "0.26 differs from stored 0.25"),
        ("x 1\ny 2.0", "x 1\ny 2.5", "line 2"),
        ("loss 0.25", "gain 0.25", "'gain' differs from stored 'loss'"),
        ("v nan", "v 1.0", "1.0 differs from stored nan"),
        ("v inf", "v -inf", "-inf differs"),
        ("1 2 3", "1 2", "stored text goes on"),
        ("float64 1", "float32 1", "'float32'"),
    ],
)
def test_when_numbers_beyond_tolerance_then_number_mismatch(
    stored: str, fresh: str, detail: str
) -> None:
    [mismatch] = check([stdout(stored)], [stdout(fresh)], CompareOptions(rtol=1e-3))
    assert mismatch.kind == "number" and detail in mismatch.message


def test_when_atol_then_absolute_difference_allowed() -> None:
    assert check([stdout("0.0")], [stdout("0.004")], CompareOptions(atol=0.01)) == []
    assert kinds(check([stdout("0.0")], [stdout("0.02")], CompareOptions(atol=0.01)))


def test_when_cell_sets_tolerance_then_it_overrides_options() -> None:
    options = CompareOptions(rtol=0.5)
    assert check([stdout("1.0")], [stdout("1.2")], tags=["nbcd-rtol=0.3"]) == []
    assert kinds(check([stdout("1.0")], [stdout("1.2")], options, tags=["nbcd-rtol=0.01"]))


# --- DataFrame tables ---------------------------------------------------------------------


def frame_html(x: list[float]) -> str:
    frame = pd.DataFrame(
        {"x": x, "name": ["a", "b", "c"][: len(x)]}, index=["r0", "r1", "r2"][: len(x)]
    )
    return str(frame._repr_html_())


def test_when_dataframe_within_tolerance_then_equal() -> None:
    stored = [result({"text/html": frame_html([1.0, 2.0, 3.0])})]
    fresh = [result({"text/html": frame_html([1.0, 2.0001, 3.0])})]
    assert check(stored, fresh, CompareOptions(rtol=1e-3)) == []


def test_when_dataframe_cell_differs_then_table_mismatch_names_row_and_column() -> None:
    stored = [result({"text/html": frame_html([1.0, 2.0, 3.0])})]
    fresh = [result({"text/html": frame_html([1.0, 2.5, 3.0])})]
    for options in (DEFAULT, CompareOptions(rtol=1e-3)):
        [mismatch] = check(stored, fresh, options)
        assert mismatch.kind == "table"
        assert "row 1 (index 'r1'), column 'x': '2.5', stored '2.0'" in mismatch.message
        assert "text/html" in mismatch.diff


def test_when_dataframe_shape_differs_then_table_mismatch() -> None:
    stored = [result({"text/html": frame_html([1.0, 2.0, 3.0])})]
    fresh = [result({"text/html": frame_html([1.0, 2.0])})]
    [mismatch] = check(stored, fresh, CompareOptions(rtol=1e-3))
    assert mismatch.kind == "table" and "shape (2, 3), stored (3, 3)" in mismatch.message


def test_when_html_is_not_a_dataframe_then_compared_as_text() -> None:
    stored, fresh = (
        [display({"text/html": "<p>1.0</p>"})],
        [display({"text/html": "<p>1.0001</p>"})],
    )
    assert kinds(check(stored, fresh)) == ["value"]
    assert check(stored, fresh, CompareOptions(rtol=1e-3)) == []


# --- images -------------------------------------------------------------------------------


def png(seed: int, size: tuple[int, int] = (120, 90), noise: float = 0.0, fmt: str = "PNG") -> str:
    """A small plot-like picture; ``seed`` moves its shapes, ``noise`` adds jitter."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.line([(0, h - 1), (w // 2, h // (3 + seed)), (w - 1, h // 4)], fill="blue", width=3)
    draw.rectangle([w // 8 + seed * w // 3, h // 2, w // 4 + seed * w // 3, h - 10], fill="red")
    if noise:
        pixels = np.asarray(image, dtype=np.float64)
        jitter = np.random.default_rng(0).normal(0, noise, pixels.shape)
        image = Image.fromarray(np.clip(pixels + jitter, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def resized(encoded: str, size: tuple[int, int]) -> str:
    """The same picture at another size, as a figure saved at another dpi."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded))).resize(size)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


IMAGES = CompareOptions(compare_images=True)


def test_when_images_similar_then_equal() -> None:
    stored = [display({"image/png": png(0)})]
    assert check(stored, [display({"image/png": png(0, noise=2.0)})], IMAGES) == []
    assert check(stored, [display({"image/png": resized(png(0), (240, 180))})], IMAGES) == []
    jpeg = [display({"image/jpeg": png(0, fmt="JPEG")})]
    assert check(jpeg, [display({"image/jpeg": png(0, fmt="JPEG", noise=1.0)})], IMAGES) == []


def test_when_images_differ_then_image_mismatch() -> None:
    [mismatch] = check([display({"image/png": png(0)})], [display({"image/png": png(1)})], IMAGES)
    assert mismatch.kind == "image" and "image/png: similarity" in mismatch.message
    assert mismatch.diff == "stored 120x90 px, fresh 120x90 px"


def test_when_threshold_lower_then_different_images_pass() -> None:
    options = CompareOptions(compare_images=True, image_threshold=0.0)
    assert check([display({"image/png": png(0)})], [display({"image/png": png(1)})], options) == []


def test_when_image_added_and_compared_then_unexpected() -> None:
    stored = [display({"text/plain": "<Figure>"})]
    fresh = [display({"text/plain": "<Figure>", "image/png": png(0)})]
    assert kinds(check(stored, fresh, IMAGES)) == ["unexpected"]


def test_when_image_cannot_be_decoded_then_image_mismatch() -> None:
    stored = [display({"image/png": png(0)})]
    [mismatch] = check(stored, [display({"image/png": "bm90IGFuIGltYWdl"})], IMAGES)
    assert mismatch.kind == "image" and "cannot decode" in mismatch.message


# --- diffs --------------------------------------------------------------------------------


def test_when_long_output_differs_then_diff_is_truncated() -> None:
    stored = "".join(f"line {i}\n" for i in range(100))
    fresh = "".join(f"line {i * 2}\n" for i in range(100))
    [mismatch] = check([stdout(stored)], [stdout(fresh)])
    lines = mismatch.diff.splitlines()
    assert len(lines) == 13 and lines[-1].endswith("more lines)")


def test_when_only_line_ending_differs_then_diff_shows_it() -> None:
    [mismatch] = check([stdout("a\n")], [stdout("a")])
    assert "'a\\n'" in mismatch.diff


def test_when_image_count_differs_then_diff_hides_base64() -> None:
    stored = [display({"image/png": png(0)})]
    [mismatch] = check(stored, stored * 2, IMAGES)
    assert mismatch.kind == "count" and "characters of base64>" in mismatch.diff
