"""The ``sql:`` source on a real PostgreSQL server (psycopg 3 through SQLAlchemy).

Which server:

- ``$NBCD_TEST_POSTGRES_URL`` when set (CI sets it from ``bash .ci/postgres.sh``, which starts
  Debian's PostgreSQL on 127.0.0.1 and prints the URL). The tests then fail, never skip, when
  the server cannot be reached: CI asked for them.
- else a throwaway server of this session, started with ``initdb`` and ``pg_ctl`` in a temporary
  folder when PostgreSQL's programs are installed (on the PATH or in Debian's
  ``/usr/lib/postgresql/<version>/bin``) and the tests do not run as root (``initdb`` refuses);
- else the tests that need a server skip, saying which of the two to provide.

Each session loads the ACS 2015 county table into a schema of its own and drops it at the end,
so runs that share a server do not see each other's tables.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from census_segmentation import ACS2015, DataSourceError, clean, load_table

URL_ENV = "NBCD_TEST_POSTGRES_URL"
NO_SERVER = f"no PostgreSQL server: ${URL_ENV} is unset and "
HOW = f"; `sudo bash .ci/postgres.sh` starts one and prints the URL to put in ${URL_ENV}"
# The throwaway server's login: it listens on 127.0.0.1 only and lives as long as the session.
ROLE = "census"
PASSWORD = "throwaway-test-only"

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed")


@dataclass(frozen=True)
class Counties:
    """The ACS 2015 table loaded into PostgreSQL: the server's URL and the table's name."""

    url: str
    table: str

    def data(self, query: str, *, password: bool = True) -> str:
        """The notebook's ``data`` value running ``query`` on this server.

        Without the password in the URL, libpq takes it from ``$PGPASSWORD`` (or ~/.pgpass).
        """
        url = make_url(self.url)
        if not password:
            # URL.set(password=None) would keep the password: None there means "unchanged".
            url = sqlalchemy.URL.create(
                url.drivername, url.username, None, url.host, url.port, url.database, url.query
            )
        return f"sql:{query} @ {url.render_as_string(hide_password=False)}"

    @property
    def password(self) -> str:
        """The login's password ("" when the URL has none)."""
        return make_url(self.url).password or ""


def _postgres_programs() -> tuple[Path, Path] | None:
    """``initdb`` and ``pg_ctl`` of one installation: the PATH's, else Debian's newest."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb), Path(pg_ctl)
    # Debian keeps the server programs off the PATH, one folder per major version.
    folders = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda folder: [int(part) for part in folder.parent.name.split(".") if part.isdigit()],
    )
    for folder in reversed(folders):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder / "initdb", folder / "pg_ctl"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _throwaway_server(root: Path) -> Iterator[str]:
    """Run a PostgreSQL server in ``root`` for the session; yields its URL."""
    programs = _postgres_programs()
    if programs is None:
        pytest.skip(f"{NO_SERVER}PostgreSQL's initdb and pg_ctl are not installed{HOW}")
    if getattr(os, "geteuid", lambda: -1)() == 0:
        pytest.skip(f"{NO_SERVER}initdb refuses to run as root{HOW}")
    initdb, pg_ctl = programs
    data, password_file = root / "data", root / "password"
    password_file.write_text(PASSWORD, encoding="utf-8")
    init = [initdb, "-D", data, "-U", ROLE, "--pwfile", password_file]
    init += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"]
    _run(init)
    port = _free_port()
    # Settings in the file rather than on pg_ctl's command line, which goes through a shell.
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{root}'\nfsync = off\n"
        )
    _run([pg_ctl, "-D", data, "-l", root / "server.log", "-w", "start"])
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user=ROLE, password=PASSWORD, dbname="postgres"
        ) as connection:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            connection.execute("CREATE DATABASE census")
        yield f"postgresql+psycopg://{ROLE}:{PASSWORD}@127.0.0.1:{port}/census"
    finally:
        subprocess.run(
            [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], check=False, capture_output=True
        )


def _run(command: list[str | Path]) -> None:
    """Run a PostgreSQL program; fail with its own words if it fails (the programs exist)."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-3:]
        pytest.fail(f"{Path(command[0]).name} failed (exit {done.returncode}): {' '.join(said)}")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database URL on a running PostgreSQL server (see the module docstring)."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
    else:
        yield from _throwaway_server(tmp_path_factory.mktemp("postgres"))


@pytest.fixture(scope="session")
def postgres_counties(postgres_url: str, acs2015_path: Path) -> Iterator[Counties]:
    """The reference CSV as read, loaded into a schema of this session's own."""
    schema = f"census_test_{os.getpid()}_{secrets.token_hex(4)}"
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.schema.CreateSchema(schema))
            pd.read_csv(acs2015_path).to_sql("counties", connection, schema=schema, index=False)
        yield Counties(url=postgres_url, table=f"{schema}.counties")
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.schema.DropSchema(schema, cascade=True, if_exists=True))
        engine.dispose()


def test_query_returns_the_acs2015_table_as_the_csv_reads(
    postgres_counties: Counties, acs2015_path: Path
) -> None:
    table = load_table(postgres_counties.data(f"SELECT * FROM {postgres_counties.table}"))

    assert table.schema is ACS2015
    assert table.shape == (3220, 37)
    # Same columns, dtypes and values as the CSV: the database changes nothing on the way.
    # A table has no row order of its own, hence the sort.
    expected = pd.read_csv(acs2015_path).sort_values("CensusId", ignore_index=True)
    pd.testing.assert_frame_equal(table.frame.sort_values("CensusId", ignore_index=True), expected)


def test_table_from_postgres_cleans_to_the_reference_shape(postgres_counties: Counties) -> None:
    table = load_table(postgres_counties.data(f"SELECT * FROM {postgres_counties.table}"))

    counties = clean(table.frame, table.schema, table.source)

    assert counties.features.shape == (3218, 34)
    assert sorted(counties.dropped) == ["Hawaii-Kalawao", "Texas-Loving"]


def test_query_runs_on_the_server(postgres_counties: Counties) -> None:
    query = f"SELECT * FROM {postgres_counties.table} WHERE \"State\" = 'California'"

    table = load_table(postgres_counties.data(query))

    assert table.shape == (58, 37)
    assert set(table.frame["State"]) == {"California"}


def test_source_names_the_server_without_the_password(postgres_counties: Counties) -> None:
    table = load_table(postgres_counties.data(f"SELECT * FROM {postgres_counties.table}"))

    assert table.source.startswith(f"sql:SELECT * FROM {postgres_counties.table} @ postgresql")
    assert "***@127.0.0.1" in table.source
    assert postgres_counties.password not in table.source


def test_password_can_come_from_pgpassword_instead_of_the_url(
    postgres_counties: Counties, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a notebook should do: its parameters are stored in the executed notebook.
    monkeypatch.setenv("PGPASSWORD", postgres_counties.password)
    query = f"SELECT * FROM {postgres_counties.table}"

    table = load_table(postgres_counties.data(query, password=False))

    assert table.shape == (3220, 37)


def test_when_password_is_wrong_then_one_line_error_without_it(postgres_url: str) -> None:
    wrong = make_url(postgres_url).set(password="not-the-password-42")
    data = f"sql:SELECT 1 @ {wrong.render_as_string(hide_password=False)}"

    with pytest.raises(DataSourceError) as caught:
        load_table(data)

    message = str(caught.value)
    assert "cannot connect to the database" in message
    assert "password authentication failed" in message
    assert "not-the-password-42" not in message
    assert "\n" not in message


def test_when_table_is_missing_then_the_query_failed_not_the_connection(
    postgres_url: str,
) -> None:
    with pytest.raises(DataSourceError, match=r"query failed \(.*nowhere.* does not exist"):
        load_table(f"sql:SELECT * FROM nowhere @ {postgres_url}")


def test_plain_postgresql_url_uses_the_psycopg_driver(postgres_counties: Counties) -> None:
    # SQLAlchemy would pick psycopg2 for postgresql://, which this package does not ship.
    data = postgres_counties.data(f"SELECT * FROM {postgres_counties.table}")
    plain = data.replace("postgresql+psycopg://", "postgresql://")

    table = load_table(plain)

    assert table.shape == (3220, 37)
    assert " @ postgresql://census:***@127.0.0.1:" in table.source


def test_when_server_is_unreachable_then_one_line_error_without_password() -> None:
    # Port 9 (discard) on loopback refuses at once: no server and no wait needed.
    data = "sql:SELECT 1 @ postgresql+psycopg://census:s3cret-pw@127.0.0.1:9/census"

    with pytest.raises(DataSourceError) as caught:
        load_table(data)

    message = str(caught.value)
    assert message.startswith(
        "sql:SELECT 1 @ postgresql+psycopg://census:***@127.0.0.1:9/census: "
        "cannot connect to the database ("
    )
    assert "refused" in message.lower()
    assert "s3cret-pw" not in message
    assert "\n" not in message


def test_notebook_runs_on_the_table_from_postgres(
    postgres_counties: Counties, tmp_path: Path
) -> None:
    """The whole analysis, its data parameter a query on the server (k fixed: no k search).

    The password travels in $PGPASSWORD, so the executed notebook, which stores its parameters,
    never holds it.
    """
    notebook = Path(__file__).parents[1] / "notebooks" / "census_segmentation.ipynb"
    nbcd = Path(sys.executable).with_name("nbcd")
    output = tmp_path / "executed.ipynb"
    data = postgres_counties.data(f"SELECT * FROM {postgres_counties.table}", password=False)
    command = [nbcd, "run", notebook, "-o", output, "--no-html"]
    command += ["-p", "data", data, "-p", "k", "7", "-p", "output_dir", str(tmp_path / "build")]
    env = {**os.environ, "PGPASSWORD": postgres_counties.password}

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)

    assert result.returncode == 0, result.stderr[-2000:]
    written = output.read_text(encoding="utf-8")
    assert postgres_counties.password not in written
    outputs = "\n".join(
        _output_text(cell)
        for cell in nbformat.reads(written, as_version=4).cells
        if cell.cell_type == "code"
    )
    assert "layout: acs2015, 3220 rows x 37 columns" in outputs
    assert "3218 counties x 34 features" in outputs
    assert (tmp_path / "build" / "model" / "model.skops").is_file()


def _output_text(cell: nbformat.NotebookNode) -> str:
    """A code cell's printed text and plain-text results, joined."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        else:
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)
