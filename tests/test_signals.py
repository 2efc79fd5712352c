"""Ctrl-C and SIGTERM stop run, test and ci at once: every kernel gone, nothing half-written,
one line `interrupted`, exit 130 (INT) or 143 (TERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.conftest import build_notebook

pytestmark = pytest.mark.e2e

SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(60)"


def processes_in(folder: Path) -> list[int]:
    """Processes whose working folder is inside ``folder`` (kernels run in the notebook's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd == folder or folder in cwd.parents:
                found.append(int(entry.name))
    return found


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.nbcd]\nnotebooks = ["nb/*.ipynb"]\n[[tool.nbcd.runs]]\nnotebook = "nb/a.ipynb"\n'
    )
    (tmp_path / "nb").mkdir()
    for name in ("a", "b"):
        nbformat.write(
            build_notebook(SLEEPER, markdown_title=name), tmp_path / "nb" / f"{name}.ipynb"
        )
    return tmp_path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize(
    "command",
    [
        ["run", "nb/a.ipynb"],
        ["test", "-j", "2", "--no-cache"],
        ["ci", "--no-cache", "--stages", "test,run,report"],
    ],
    ids=["run", "test", "ci"],
)
def test_a_signal_stops_everything_cleanly(
    project: Path, command: list[str], signum: signal.Signals
) -> None:
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbcd", *command],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the kernels have started once a process works in the notebooks' folder
    assert wait_until(lambda: processes_in(project / "nb"), 30), "no kernel started"
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, out + err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err
    assert "PASSED" not in out and "ERROR" not in out, "a cut-short notebook got a verdict"
    assert wait_until(lambda: not processes_in(project / "nb"), 10), "a kernel outlived nbcd"
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} changed"
    assert not (project / "build" / "nbcd" / "summary.json").exists()
    assert not list(project.rglob("*.tmp")), "a half-written file was left"
