"""Safe writes: a file or folder is replaced whole or not at all, with the usual modes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from nbcd.files import (
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    file_sha256,
    replace_folder,
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
    with pytest.raises(OSError, match="rename failed"):
        replace_folder(staged, target)
    assert (target / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".site.new", "site"]


def test_file_sha256_is_prefixed_hex_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20))
    assert file_sha256(path) == "sha256:" + hashlib.sha256(b"x" * (3 << 20)).hexdigest()
