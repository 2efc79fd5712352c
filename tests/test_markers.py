"""Cell markers: nbval's comments and tags, nbclient's skip tag, nbcd's tolerances."""

from __future__ import annotations

from typing import Any

import pytest
from nbformat.v4 import new_code_cell

from nbcd.errors import UsageError
from nbcd.testing.markers import CellMarkers, cell_markers, should_compare


def cell(source: str = "x = 1", tags: Any = None, **metadata: Any) -> Any:
    if tags is not None:
        metadata["tags"] = tags
    return new_code_cell(source, metadata=metadata, execution_count=1)


def test_when_no_markers_then_defaults() -> None:
    assert cell_markers(cell()) == CellMarkers()


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        ("# NBVAL_IGNORE_OUTPUT", CellMarkers(ignore_output=True)),
        ("# PYTEST_VALIDATE_IGNORE_OUTPUT", CellMarkers(ignore_output=True)),
        ("# NBVAL_CHECK_OUTPUT", CellMarkers(check_output=True)),
        ("# NBVAL_RAISES_EXCEPTION", CellMarkers(raises_exception=True)),
        ("# NBVAL_SKIP", CellMarkers(skip=True)),
    ],
)
def test_when_comment_marker_then_option_set(comment: str, expected: CellMarkers) -> None:
    assert cell_markers(cell(f"import os\n{comment}\nos.getcwd()")) == expected


@pytest.mark.parametrize(
    "source", ["#NBVAL_SKIP", "## NBVAL_SKIP", "   #   NBVAL_SKIP   ", "x = 1\n\t# NBVAL_SKIP\n"]
)
def test_when_marker_line_has_hashes_or_spaces_then_it_counts(source: str) -> None:
    assert cell_markers(cell(source)).skip


@pytest.mark.parametrize(
    "source",
    [
        "x = 1  # NBVAL_SKIP",  # nbval reads whole comment lines only
        "# NBVAL_SKIP because slow",
        "# nbval_skip",  # case-sensitive
        "# NBVAL-SKIP",
        '"""\nNBVAL_SKIP\n"""',
    ],
)
def test_when_marker_not_alone_on_comment_line_then_ignored(source: str) -> None:
    assert not cell_markers(cell(source)).skip


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("nbval-ignore-output", CellMarkers(ignore_output=True)),
        ("pytest-validate-ignore-output", CellMarkers(ignore_output=True)),
        ("nbval-check-output", CellMarkers(check_output=True)),
        ("nbval-raises-exception", CellMarkers(raises_exception=True)),
        ("raises-exception", CellMarkers(raises_exception=True)),
        ("nbval-skip", CellMarkers(skip=True)),
        ("skip-execution", CellMarkers(skip_execution=True)),
    ],
)
def test_when_tag_then_option_set(tag: str, expected: CellMarkers) -> None:
    assert cell_markers(cell(tags=["other", tag])) == expected


def test_when_tags_not_a_list_then_ignored() -> None:
    raw = {"cell_type": "code", "metadata": {"tags": "nbval-skip"}, "source": "x = 1"}
    assert cell_markers(raw) == CellMarkers()


def test_when_ignore_and_check_comments_then_later_wins() -> None:
    later_check = cell("# NBVAL_IGNORE_OUTPUT\n# NBVAL_CHECK_OUTPUT")
    later_ignore = cell("# NBVAL_CHECK_OUTPUT\n# NBVAL_IGNORE_OUTPUT")
    assert cell_markers(later_check) == CellMarkers(check_output=True)
    assert cell_markers(later_ignore) == CellMarkers(ignore_output=True)


def test_when_ignore_and_check_tags_then_later_wins() -> None:
    markers = cell_markers(cell(tags=["nbval-check-output", "nbval-ignore-output"]))
    assert markers == CellMarkers(ignore_output=True)


def test_when_comment_and_tag_disagree_then_comment_wins() -> None:
    markers = cell_markers(cell("# NBVAL_CHECK_OUTPUT", tags=["nbval-ignore-output"]))
    assert markers == CellMarkers(check_output=True)


def test_when_comment_and_tag_set_different_options_then_both_apply() -> None:
    markers = cell_markers(cell("# NBVAL_IGNORE_OUTPUT", tags=["raises-exception"]))
    assert markers == CellMarkers(ignore_output=True, raises_exception=True)


def test_when_source_is_list_of_lines_then_read() -> None:
    raw = {"cell_type": "code", "metadata": {}, "source": ["x = 1\n", "# NBVAL_SKIP\n"]}
    assert cell_markers(raw).skip


def test_when_tolerance_tags_then_read() -> None:
    markers = cell_markers(cell(tags=["nbcd-rtol=1e-3", "nbcd-atol=0.01"]))
    assert (markers.rtol, markers.atol) == (1e-3, 0.01)


def test_when_tolerance_metadata_then_read() -> None:
    markers = cell_markers(cell(nbcd={"rtol": 0.5, "atol": 2}))
    assert (markers.rtol, markers.atol) == (0.5, 2.0)


def test_when_tolerance_in_tag_and_metadata_then_tag_wins() -> None:
    markers = cell_markers(cell(tags=["nbcd-rtol=0.1"], nbcd={"rtol": 0.5, "atol": 2}))
    assert (markers.rtol, markers.atol) == (0.1, 2.0)


@pytest.mark.parametrize(
    ("tags", "nbcd"),
    [
        (["nbcd-rtol=abc"], None),
        (["nbcd-atol=-1"], None),
        (["nbcd-rtol=nan"], None),
        ([], {"rtol": True}),
        ([], {"atol": "inf"}),
        ([], {"atol": [1]}),
    ],
)
def test_when_tolerance_invalid_then_usage_error(tags: list[str], nbcd: Any) -> None:
    with pytest.raises(UsageError, match="tolerance"):
        cell_markers(cell(tags=tags, nbcd=nbcd))


@pytest.mark.parametrize(
    ("markers", "lax", "expected"),
    [
        (CellMarkers(), False, True),
        (CellMarkers(), True, False),
        (CellMarkers(ignore_output=True), False, False),
        (CellMarkers(check_output=True), True, True),
        (CellMarkers(check_output=True, skip=True), False, False),
        (CellMarkers(skip_execution=True), False, False),
        (CellMarkers(raises_exception=True), False, True),
        (CellMarkers(raises_exception=True), True, False),
    ],
)
def test_should_compare_follows_nbval_modes(
    markers: CellMarkers, lax: bool, expected: bool
) -> None:
    assert should_compare(cell(), markers, lax) is expected


def test_when_stored_cell_never_executed_then_not_compared() -> None:
    unrun = new_code_cell("x = 1")
    assert not should_compare(unrun, CellMarkers(check_output=True), lax=False)
