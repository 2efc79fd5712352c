"""Read the county table named by the notebook's ``data`` parameter.

``data`` is one of:

``"midwest"``
    the 437-county 2000 census table shipped inside plotnine (offline);
``"acs2015"``
    the ACS 2015 county table (3220 x 37), downloaded once from :data:`ACS2015_URL` (or the
    URL in ``$CENSUS_ACS2015_URL``) into the cache folder and checked by shape and columns;
a CSV path
    read relative to the working directory;
an ``http://`` or ``https://`` URL
    of a CSV, downloaded once into the cache folder (one file per URL);
``"sql:<query> @ <database URL>"``
    a query run with SQLAlchemy, e.g. ``"sql:SELECT * FROM counties @ sqlite:///census.db"``
    or ``"... @ duckdb:///census.duckdb"``; the database URL is whatever follows the last
    ``" @ "`` (spaces around the ``@`` are required). ``postgresql://`` URLs use psycopg 3,
    as ``postgresql+psycopg://`` does; leave the password out of them (the ``data`` value is
    stored in the executed notebook): libpq reads ``$PGPASSWORD`` or ``~/.pgpass``.

The cache folder is the ``cache_dir`` argument, else ``$CENSUS_SEGMENTATION_CACHE``, else the
user cache folder. Every failure is a :class:`DataSourceError` of one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.resources
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import platformdirs
import sqlalchemy
from sqlalchemy.engine import make_url

from census_segmentation.errors import DataSourceError
from census_segmentation.schemas import ACS2015, Schema, match_schema

__all__ = [
    "ACS2015_ROWS",
    "ACS2015_URL",
    "CACHE_ENV",
    "URL_ENV",
    "Table",
    "cache_folder",
    "load_table",
]

ACS2015_URL = (
    "https://aws-ml-blog-sagemaker-census-segmentation.s3.amazonaws.com/"
    "Census_Data_for_SageMaker.csv"
)
ACS2015_ROWS = 3220
ACS2015_FILE = "acs2015_county_data.csv"
URL_ENV = "CENSUS_ACS2015_URL"
CACHE_ENV = "CENSUS_SEGMENTATION_CACHE"
DOWNLOAD_TIMEOUT = 60.0
USAGE = 'pass "midwest", "acs2015", a CSV path, an http(s) URL or "sql:<query> @ <database URL>"'


@dataclass(frozen=True)
class Table:
    """A raw table as read, with the schema it matches and a printable name of its source."""

    frame: pd.DataFrame
    schema: Schema
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns as read."""
        return self.frame.shape


def load_table(data: str = "midwest", *, cache_dir: Path | None = None) -> Table:
    """Read the table ``data`` names and check it matches a known schema."""
    data = data.strip()
    source = data
    if data.lower().startswith("sql:"):
        source, frame = _read_sql(data[4:])
    elif data.lower() == "midwest":
        frame = _read_midwest()
    elif data.lower() == "acs2015":
        frame = _read_acs2015(cache_folder(cache_dir))
    elif data.lower().startswith(("http://", "https://")):
        frame = _read_url(data, cache_folder(cache_dir))
    else:
        frame = _read_path(Path(data).expanduser(), data)
    return Table(frame=frame, schema=match_schema(frame.columns, source), source=source)


def cache_folder(cache_dir: Path | None = None) -> Path:
    """The folder downloads are kept in (argument, then environment, then user cache)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get(CACHE_ENV)
    if from_env:
        return Path(from_env)
    return Path(platformdirs.user_cache_dir("census-segmentation"))


def _read_midwest() -> pd.DataFrame:
    resource = importlib.resources.files("plotnine").joinpath("data/midwest.csv")
    if not resource.is_file():
        raise DataSourceError(
            "midwest: plotnine/data/midwest.csv is not in the installed plotnine; "
            "reinstall plotnine or pass a CSV path"
        )
    with importlib.resources.as_file(resource) as path:
        return _parse_csv(path, "midwest")


def _read_acs2015(cache: Path) -> pd.DataFrame:
    cached = cache / ACS2015_FILE
    url = os.environ.get(URL_ENV) or ACS2015_URL
    if not cached.is_file():
        try:
            _download(url, cached, lambda path: _check_acs2015(_parse_csv(path, url), url))
        except DataSourceError as exc:
            raise DataSourceError(
                f"acs2015: no copy in {cache} and the download failed ({exc}); pass a local "
                f'copy instead, e.g. data="/path/to/{ACS2015_FILE}"'
            ) from exc
    try:
        frame = _parse_csv(cached, f"acs2015 ({cached})")
        _check_acs2015(frame, f"acs2015 ({cached})")
    except DataSourceError as exc:
        raise DataSourceError(f"{exc}; delete the cached copy to download it again") from exc
    return frame


def _check_acs2015(frame: pd.DataFrame, source: str) -> None:
    """Check by shape and columns, not by hash: copies differ in line endings."""
    expected = ["CensusId", *ACS2015.required]
    if frame.shape[0] != ACS2015_ROWS or sorted(frame.columns) != sorted(expected):
        raise DataSourceError(
            f"{source}: expected the ACS 2015 county table ({ACS2015_ROWS} rows x "
            f"{len(expected)} columns), got {frame.shape[0]} x {frame.shape[1]}"
        )


def _read_url(url: str, cache: Path) -> pd.DataFrame:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    cached = cache / "downloads" / f"{digest}.csv"
    if not cached.is_file():
        _download(url, cached, lambda path: _parse_csv(path, url))
    return _parse_csv(cached, url)


def _read_path(path: Path, source: str) -> pd.DataFrame:
    if not path.exists():
        raise DataSourceError(
            f"{source}: no such file (relative paths start at {Path.cwd()}); {USAGE}"
        )
    if not path.is_file():
        raise DataSourceError(f"{source}: is a directory, not a CSV file; {USAGE}")
    return _parse_csv(path, source)


def _parse_csv(path: Path, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataSourceError(f"{source}: not a CSV file ({reason}); {USAGE}") from exc
    except OSError as exc:
        raise DataSourceError(f"{source}: cannot read the file ({exc.strerror})") from exc
    if frame.shape[1] < 2:
        raise DataSourceError(
            f"{source}: not a comma-separated table (found {frame.shape[1]} column); {USAGE}"
        )
    return frame


def _download(url: str, target: Path, check: Callable[[Path], object]) -> None:
    """Fetch ``url`` to ``target`` atomically; ``check`` must accept the file first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_beside(target) as partial:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                partial.write_bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise DataSourceError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from exc
        except urllib.error.URLError as exc:
            raise DataSourceError(f"{url}: download failed ({exc.reason})") from exc
        except (ValueError, OSError, http.client.HTTPException) as exc:
            raise DataSourceError(f"{url}: download failed ({exc}); check the URL") from exc
        check(partial)
        os.replace(partial, target)


@contextlib.contextmanager
def _temporary_beside(target: Path) -> Iterator[Path]:
    """A temporary path in ``target``'s folder (so os.replace is atomic), removed on failure."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _read_sql(spec: str) -> tuple[str, pd.DataFrame]:
    """Run ``<query> @ <database URL>``; returns a printable source and the result."""
    query, separator, url_text = spec.rpartition(" @ ")
    query, url_text = query.strip(), url_text.strip()
    if not separator or not query or not url_text:
        raise DataSourceError(
            f"sql:{spec}: expected sql:<query> @ <database URL>, "
            'e.g. "sql:SELECT * FROM counties @ sqlite:///census.db"'
        )
    try:
        url = make_url(url_text)
    except sqlalchemy.exc.ArgumentError as exc:
        raise DataSourceError(f"{url_text}: not a database URL ({exc})") from exc
    source = f"sql:{query} @ {url.render_as_string(hide_password=True)}"
    database = url.database
    # SQLite and DuckDB create a missing file on connect; an empty new database would only
    # turn a wrong path into a confusing "no such table".
    if (
        url.get_backend_name() in {"sqlite", "duckdb"}
        and database
        and database != ":memory:"
        and not Path(database).is_file()
    ):
        raise DataSourceError(f"{source}: database file {database} does not exist")
    if url.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; this package ships psycopg 3.
        url = url.set(drivername="postgresql+psycopg")
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise DataSourceError(
            f"{source}: cannot open the database ({exc}); install its driver"
        ) from exc
    try:
        with _connect(engine, source, url.password) as connection:
            frame = pd.read_sql_query(sqlalchemy.text(query), connection)
    except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError, ImportError) as exc:
        reason = _driver_reason(exc, url.password)
        raise DataSourceError(f"{source}: query failed ({reason})") from exc
    finally:
        engine.dispose()
    return source, frame


def _connect(engine: sqlalchemy.Engine, source: str, password: str | None) -> sqlalchemy.Connection:
    """Open a connection; a server that is down or refuses the login is not a failed query."""
    try:
        return engine.connect()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = _driver_reason(exc, password)
        raise DataSourceError(f"{source}: cannot connect to the database ({reason})") from exc


def _driver_reason(exc: BaseException, password: str | None) -> str:
    """The first line of the driver's own message, on one line and without the password."""
    # pandas wraps the SQLAlchemy error, which wraps the driver's: report the driver's.
    cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
    lines = str(getattr(cause, "orig", None) or cause or exc).strip().splitlines()
    # psycopg's "FATAL:  password ..." has two spaces; one line of single spaces reads better.
    reason = " ".join(lines[0].split()) if lines else type(exc).__name__
    # Drivers do not echo passwords today; one that did must not leak it into a report.
    return reason.replace(password, "***") if password else reason
