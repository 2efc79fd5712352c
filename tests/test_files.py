"""Safe writes: a file or folder is replaced whole or not at all, with the usual modes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from nbcd.errors import WriteError
from nbcd.files import (
    MAX_JSON_DEPTH,
    JSONFileError,
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    file_sha256,
    load_json,
    not_a_folder,
    replace_folder,
    writing,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_new_file_gets_the_umask_default_and_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "one\r\ntwo\n")
    assert path.read_bytes() == b"one\r\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def test_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    atomic_write_bytes(path, b"old")
    path.chmod(0o600)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_when_the_block_fails_then_the_old_file_stays_and_no_temp_file_is_left(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(path, "w", newline="") as handle:
        handle.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_writer_refuses_other_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_writer(tmp_path / "x", "a"):
        pass
    with pytest.raises(ValueError, match="mode"), atomic_writer(tmp_path / "x", "wb", newline=""):
        pass
    assert list(tmp_path.iterdir()) == []


def test_replace_folder_swaps_in_the_staged_folder_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "site"
    for text in ("first", "second"):
        staged = tmp_path / f".site.{text}"
        staged.mkdir(mode=0o700)
        (staged / "index.html").write_text(text)
        replace_folder(staged, target)
    assert (target / "index.html").read_text() == "second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_when_the_swap_fails_then_the_old_folder_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "site"
    target.mkdir()
    (target / "index.html").write_text("old")
    staged = tmp_path / ".site.new"
    staged.mkdir()
    real_replace = os.replace

    def failing(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(src) == staged:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(WriteError, match=r"site: cannot write \(rename failed\)"):
        replace_folder(staged, target)
    assert (target / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".site.new", "site"]


def test_file_sha256_is_prefixed_hex_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20))
    assert file_sha256(path) == "sha256:" + hashlib.sha256(b"x" * (3 << 20)).hexdigest()


# --- write errors: one WriteError naming the path, nothing replaced, no temporary file ---------


def test_when_a_parent_is_a_file_then_write_error_names_it(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(WriteError) as info:
        atomic_write_text(tmp_path / "blocker" / "sub" / "out.txt", "x")
    assert str(info.value) == (
        f"{tmp_path / 'blocker' / 'sub' / 'out.txt'}: cannot write "
        f"({tmp_path / 'blocker'} is a file, not a folder)"
    )
    assert info.value.exit_code == 2
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_when_the_target_is_a_folder_then_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(WriteError, match=r"out: cannot write \(it is a folder; give a file name\)"):
        atomic_write_bytes(tmp_path / "out", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_when_the_disk_fills_mid_write_then_the_old_file_stays_and_the_temp_file_goes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("old")
    full = r"scores\.csv: cannot write \(No space left on device\)"
    with pytest.raises(WriteError, match=full), atomic_writer(path, "w") as handle:
        handle.write("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_when_the_block_fails_to_read_another_file_then_that_error_passes_through(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "input.csv"
    with pytest.raises(FileNotFoundError), atomic_writer(tmp_path / "out.csv", "w"):
        missing.read_text()
    assert list(tmp_path.iterdir()) == []


def test_when_the_final_rename_fails_then_write_error_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", src, None, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteError, match=r"out\.txt: cannot write \(Permission denied\)"):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_writing_turns_a_failed_mkdir_into_a_write_error(tmp_path: Path) -> None:
    (tmp_path / "site").write_text("a file where the site folder goes")
    site = tmp_path / "site"
    with (
        pytest.raises(WriteError, match=r"site is a file, not a folder"),
        writing(site, folder=True),
    ):
        (site / "assets").mkdir(parents=True)


def test_not_a_folder_finds_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_text("file")
    assert not_a_folder(tmp_path / "a" / "b" / "c" / "d") == tmp_path / "a" / "b"
    assert not_a_folder(tmp_path / "a" / "new") is None


def test_write_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(WriteError(Path("x.csv"), "disk full")))
    assert (str(error), error.path, error.reason) == (
        "x.csv: cannot write (disk full)",
        Path("x.csv"),
        "disk full",
    )


# --- load_json: a depth limit before the recursive parser ------------------------------------


def _nested(depth: int) -> str:
    return '{"a": ' * (depth - 1) + "[]" + "}" * (depth - 1)


def test_load_json_takes_the_limit_and_refuses_one_level_more() -> None:
    assert load_json(_nested(MAX_JSON_DEPTH), "ok.json") is not None
    with pytest.raises(JSONFileError) as info:
        load_json(_nested(MAX_JSON_DEPTH + 1), "deep.json")
    error = info.value
    assert error.too_deep and isinstance(error, ValueError)
    assert str(error) == (
        f"deep.json: JSON nested deeper than {MAX_JSON_DEPTH} levels "
        f"(line 1, column {6 * MAX_JSON_DEPTH + 1})"
    )


def test_load_json_refuses_nesting_far_past_the_recursion_limit() -> None:
    with pytest.raises(JSONFileError, match=r"nested deeper.*\(line 3, column 256\)"):
        load_json("{\n\n" + "[" * 100_000 + "]" * 100_000 + "}", "x")


@pytest.mark.parametrize(
    "text",
    [
        '{"s": "' + "[" * 5000 + '"}',  # brackets inside a string are text
        '{"s": "\\"' + "{" * 5000 + '"}',  # after an escaped quote, still inside the string
        '{"s": "\\\\", "t": ' + "[" * 10 + "]" * 10 + "}",  # an escaped backslash ends it
    ],
)
def test_load_json_counts_only_brackets_outside_strings(text: str) -> None:
    assert load_json(text, "x") == json.loads(text)


def test_load_json_reports_syntax_and_encoding_with_the_place() -> None:
    with pytest.raises(JSONFileError) as info:
        load_json('{\n  "a": }', "bad.json")
    assert (info.value.kind, info.value.lineno, info.value.colno) == ("syntax", 2, 8)
    assert info.value.describe() == "not valid JSON (line 2, column 8: Expecting value)"
    with pytest.raises(JSONFileError, match=r"^latin\.json: not UTF-8 text \(byte 7\)$"):
        load_json(b'{"a": "\xe9"}', "latin.json")
    assert load_json('{"a": "é"}'.encode(), "utf8.json") == {"a": "é"}
    error = pickle.loads(pickle.dumps(info.value))
    assert str(error) == str(info.value)


def test_load_json_treats_brackets_after_an_unterminated_string_as_json_does() -> None:
    # json.loads stops at the open string, so what follows is never nesting
    with pytest.raises(JSONFileError) as info:
        load_json('["' + '\\"' * 100_000 + "[" * 1000, "open.json")
    assert (info.value.kind, info.value.msg) == ("syntax", "Unterminated string starting at")
