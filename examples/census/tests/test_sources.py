"""Data sources: named datasets, CSV paths, http(s) downloads and SQL queries."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import sqlalchemy

from census_segmentation import ACS2015, MIDWEST, DataSourceError, load_table
from census_segmentation.sources import ACS2015_FILE, CACHE_ENV, URL_ENV, cache_folder

if TYPE_CHECKING:
    from conftest import FileServer


def test_midwest_is_read_offline_from_plotnine() -> None:
    table = load_table("midwest")

    assert table.shape == (437, 28)
    assert table.schema is MIDWEST
    assert table.source == "midwest"


def test_default_source_is_midwest() -> None:
    assert load_table().schema is MIDWEST


def test_csv_path_is_relative_to_working_directory(
    tmp_path: Path, midwest_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    midwest_frame.head(20).to_csv(tmp_path / "data" / "counties.csv", index=False)
    monkeypatch.chdir(tmp_path)

    table = load_table("data/counties.csv")

    assert table.shape == (20, 28)
    assert table.source == "data/counties.csv"


def test_acs2015_is_downloaded_once_and_checked(
    acs2015_path: Path, file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(acs2015_path, file_server.root / "census.csv")
    monkeypatch.setenv(URL_ENV, f"{file_server.url}/census.csv")
    cache = tmp_path / "cache"

    first = load_table("acs2015", cache_dir=cache)
    second = load_table("acs2015", cache_dir=cache)

    assert first.schema is ACS2015
    assert first.shape == second.shape == (3220, 37)
    assert file_server.requests == {"/census.csv": 1}
    assert sorted(p.name for p in cache.iterdir()) == [ACS2015_FILE]


def test_when_acs2015_download_has_wrong_shape_then_error_and_nothing_cached(
    midwest_frame: pd.DataFrame,
    file_server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    midwest_frame.to_csv(file_server.root / "census.csv", index=False)
    monkeypatch.setenv(URL_ENV, f"{file_server.url}/census.csv")
    cache = tmp_path / "cache"

    with pytest.raises(DataSourceError, match=r"expected the ACS 2015 county table .* 437 x 28"):
        load_table("acs2015", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_when_cached_acs2015_is_damaged_then_error_says_to_delete_it(tmp_path: Path) -> None:
    (tmp_path / ACS2015_FILE).write_text("State,County\nOhio,Adams\n", encoding="utf-8")

    with pytest.raises(DataSourceError, match="delete the cached copy to download it again"):
        load_table("acs2015", cache_dir=tmp_path)


def test_when_acs2015_offline_and_not_cached_then_error_says_how_to_pass_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9/census.csv")  # discard port: refused

    with pytest.raises(DataSourceError) as caught:
        load_table("acs2015", cache_dir=tmp_path)

    message = str(caught.value)
    assert message.startswith("acs2015: no copy in")
    assert 'data="/path/to/acs2015_county_data.csv"' in message
    assert "\n" not in message


def test_url_is_downloaded_once_into_cache_from_environment(
    midwest_frame: pd.DataFrame,
    file_server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    midwest_frame.head(30).to_csv(file_server.root / "mw.csv", index=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    url = f"{file_server.url}/mw.csv"

    assert load_table(url).shape == (30, 28)
    assert load_table(url).shape == (30, 28)
    assert file_server.requests == {"/mw.csv": 1}
    cached = list((tmp_path / "cache" / "downloads").iterdir())
    assert len(cached) == 1
    assert cached[0].suffix == ".csv"


def test_cache_folder_prefers_argument_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))

    assert cache_folder(tmp_path / "arg") == tmp_path / "arg"
    assert cache_folder() == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    assert "census-segmentation" in str(cache_folder())


def test_when_url_is_not_found_then_error(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"/missing\.csv: download failed \(HTTP 404"):
        load_table(f"{file_server.url}/missing.csv", cache_dir=tmp_path)
    assert list((tmp_path / "downloads").iterdir()) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [("http://", "no host given"), ("http://127.0.0.1:9/x.csv", "refused")],
)
def test_when_url_is_bad_then_error(tmp_path: Path, url: str, reason: str) -> None:
    with pytest.raises(DataSourceError, match=f"download failed .*{reason}"):
        load_table(url, cache_dir=tmp_path)


@pytest.fixture(params=["sqlite", "duckdb"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, midwest_frame: pd.DataFrame
) -> str:
    url = f"{request.param}:///{tmp_path / 'census.db'}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            midwest_frame.to_sql("midwest", connection, index=False)
    finally:
        engine.dispose()
    return url


def test_sql_query_reads_from_database_file(database_url: str) -> None:
    table = load_table(f"sql:SELECT * FROM midwest WHERE state = 'IL' @ {database_url}")

    assert table.shape == (102, 28)
    assert table.schema is MIDWEST


def test_when_sql_query_fails_then_error_names_query(database_url: str) -> None:
    with pytest.raises(DataSourceError, match=r"sql:SELECT \* FROM nowhere @ .*query failed"):
        load_table(f"sql:SELECT * FROM nowhere @ {database_url}")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("sql:SELECT 1", r"expected sql:<query> @ <database URL>"),
        ("sql:SELECT 1 @ not a url", r"not a database URL"),
        ("sql:SELECT 1 @ nosuchdialect://x", r"cannot open the database"),
        ("sql:SELECT 1 @ sqlite:///no/such.db", r"database file no/such.db does not exist"),
    ],
)
def test_when_sql_source_is_malformed_then_error(data: str, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        load_table(data)


def test_sql_source_hides_password() -> None:
    with pytest.raises(DataSourceError) as caught:
        load_table("sql:SELECT 1 @ nosuchdialect://user:secret@host/db")

    assert "secret" not in str(caught.value)
    assert "user:***@host" in str(caught.value)


def test_when_file_does_not_exist_then_error_lists_accepted_forms(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"nope\.csv: no such file .*sql:<query>"):
        load_table(str(tmp_path / "nope.csv"))


def test_when_path_is_a_directory_then_error(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="is a directory"):
        load_table(str(tmp_path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "not a CSV file"),
        (b"", "not a CSV file"),
        (b"just one column\nof text\n", "not a comma-separated table"),
    ],
    ids=["binary", "empty", "one-column"],
)
def test_when_file_is_not_csv_then_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(content)

    with pytest.raises(DataSourceError, match=message):
        load_table(str(path))


def test_when_csv_lacks_columns_then_error_names_them(
    tmp_path: Path, midwest_frame: pd.DataFrame
) -> None:
    path = tmp_path / "partial.csv"
    midwest_frame.drop(columns=["percollege", "popdensity"]).to_csv(path, index=False)

    with pytest.raises(DataSourceError) as caught:
        load_table(str(path))

    assert str(caught.value) == (
        f"{path}: not a known county table; closest is midwest, "
        "which needs the missing columns popdensity, percollege"
    )


def test_data_source_error_is_a_value_error() -> None:
    assert issubclass(DataSourceError, ValueError)
