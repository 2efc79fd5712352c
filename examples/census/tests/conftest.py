"""Shared fixtures: fixed BLAS threads, the ACS 2015 reference file, a loopback HTTP server."""

# ruff: noqa: E402  (the thread variables must be set before NumPy is imported)

from __future__ import annotations

import os

# Before NumPy loads: k-means timings on 2 cores swing widely with free thread counts.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "2")

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from census_segmentation import CleanTable, clean, load_table

ACS2015_NAME = "acs2015_county_data.csv"


@pytest.fixture(autouse=True, scope="session")
def _fixed_threads() -> Iterator[None]:
    """Also cap pools already loaded (in case NumPy came in before this file)."""
    with threadpool_limits(limits=2):
        yield


def find_acs2015() -> Path | None:
    """The reference file in ``shared/data/`` beside the repository, found walking up."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / ACS2015_NAME
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def acs2015_path() -> Path:
    path = find_acs2015()
    if path is None:
        pytest.skip(f"reference data shared/data/{ACS2015_NAME} not found beside the repository")
    return path


@pytest.fixture(scope="session")
def acs2015_table(acs2015_path: Path) -> CleanTable:
    table = load_table(str(acs2015_path))
    return clean(table.frame, table.schema, table.source)


@pytest.fixture(scope="session")
def midwest_table() -> CleanTable:
    table = load_table("midwest")
    return clean(table.frame, table.schema, table.source)


@pytest.fixture(scope="session")
def midwest_frame() -> pd.DataFrame:
    return load_table("midwest").frame


@dataclass
class FileServer:
    """A real HTTP server on 127.0.0.1 serving one folder; counts GET requests per path."""

    root: Path
    url: str
    requests: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    counts: dict[str, int] = {}

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            counts[self.path] = counts.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(root=root, url=f"http://127.0.0.1:{server.server_port}", requests=counts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
