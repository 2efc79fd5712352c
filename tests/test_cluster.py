"""`--cluster`: notebooks as Dask tasks on real `dask scheduler` / `dask worker` processes.

The verdicts, messages and exit codes must be a local run's; the cache is the client's; a
worker killed mid-notebook costs one retry; a cluster that cannot be used is one line.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from nbcd.cluster import connect as connect_module
from nbcd.cluster.connect import ClusterError, check_versions, cluster_address
from nbcd.cluster.transfer import EXCLUDED_NAMES, client_path, project_archive, slot_path
from nbcd.cluster.worker import _clear, rebuild_error
from nbcd.errors import EXIT_EXECUTION, EXIT_USAGE, KernelNotFoundError, UsageError
from nbcd.testing.runner import TestOptions, TestReport, run_tests
from tests.cluster_fixtures import (
    ENV,
    DaskCluster,
    dask_cluster,
    free_port,
    fresh_cluster,
    start_cluster,
)
from tests.conftest import build_notebook, run_cli

__all__ = ["dask_cluster", "fresh_cluster"]  # the fixtures, found by pytest through this module

pytestmark = pytest.mark.e2e

ROWS = "name,value\na,1\nb,2\nc,3\n"
DATA_CELLS = (
    "import csv\nrows = list(csv.DictReader(open('../data/rows.csv')))\nprint(len(rows))",
    "from pathlib import Path\n"
    "out = Path(output_dir)\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'summary.txt').write_text(','.join(r['name'] for r in rows))",
)


def executed(path: Path) -> Path:
    """Execute a notebook in place once here, so that its stored outputs are the reference."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=60, allow_errors=True, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nbformat.write(nb, path)
    return path


def write(path: Path, *cells: str | tuple[str, list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(*cells), path)
    return path


def make_project(root: Path, extra: str = "") -> dict[str, Path]:
    """A project whose notebooks pass, fail (a cell raises), mismatch, and read and write files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[tool.nbcd]\nnotebooks = ["notebooks/*.ipynb"]\n{extra}', encoding="utf-8"
    )
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "rows.csv").write_text(ROWS)
    nbs = root / "notebooks"
    paths = {
        "pass": executed(write(nbs / "pass.ipynb", "print(sum(range(10)))")),
        "fail": write(nbs / "fail.ipynb", "x = 1", "raise ValueError('boom')"),
        "mismatch": executed(write(nbs / "mismatch.ipynb", "print(6 * 7)")),
        "data": executed(
            write(nbs / "data.ipynb", ("output_dir = '../build/out'", ["parameters"]), *DATA_CELLS)
        ),
    }
    nb = nbformat.read(paths["mismatch"], as_version=4)
    nb.cells[0].outputs[0].text = "41\n"
    nbformat.write(nb, paths["mismatch"])
    (root / "build" / "out" / "summary.txt").unlink()  # written by the reference execution
    return paths


def options(root: Path, cluster: str | None = None, **kwargs: Any) -> TestOptions:
    values: dict[str, Any] = {
        "jobs": 2,
        "timeout": 60,
        "cache_dir": root / "build" / "nbcd" / "cache",
        "project_root": root,
        "build_dir": root / "build",
        "cluster": cluster,
        **kwargs,
    }
    return TestOptions(**values)


def verdicts(report: TestReport) -> list[tuple[str, str, str, int]]:
    return [(o.path.name, o.status, o.message, o.exit_code) for o in report.outcomes]


def workers_of(cluster: DaskCluster) -> set[str]:
    return set(cluster.worker_pids())


def test_same_verdicts_messages_and_files_as_a_local_run(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    paths = make_project(tmp_path)
    artifact = tmp_path / "build" / "out" / "summary.txt"
    notebooks = list(paths.values())

    local = run_tests(notebooks, options(tmp_path, cache=False))
    assert artifact.read_text() == "a,b,c"
    artifact.unlink()
    remote = run_tests(notebooks, options(tmp_path, dask_cluster.address, cache=False))

    assert verdicts(remote) == verdicts(local)
    assert [v[1] for v in verdicts(local)] == ["passed", "failed", "failed", "passed"]
    assert remote.exit_code == local.exit_code == 1
    assert [o.details for o in remote.outcomes][2] == [o.details for o in local.outcomes][2]
    assert {o.worker for o in remote.outcomes} <= workers_of(dask_cluster)
    assert all(o.worker == "" for o in local.outcomes)
    assert artifact.read_text() == "a,b,c"  # written on a worker, brought back here
    assert not (tmp_path / "notebooks" / "rows.csv").exists()  # inputs are not written back


def test_the_cache_is_the_clients(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    paths = make_project(tmp_path)
    notebooks = [paths["pass"], paths["data"]]

    first = run_tests(notebooks, options(tmp_path, dask_cluster.address))
    assert [o.status for o in first.outcomes] == ["passed", "passed"]
    assert any("rows.csv" in item for item in first.outcomes[1].inputs)
    # all cached: the cluster is not even contacted (nothing listens at this address)
    nobody = f"tcp://127.0.0.1:{free_port()}"
    again = run_tests(notebooks, options(tmp_path, nobody))
    assert [o.status for o in again.outcomes] == ["cached", "cached"]
    local = run_tests(notebooks, options(tmp_path))
    assert [o.status for o in local.outcomes] == ["cached", "cached"]

    # a changed input is a miss; the worker gets the recorded files as they are now
    (tmp_path / "data" / "rows.csv").write_text(ROWS + "d,4\n")
    changed = run_tests(notebooks, options(tmp_path, dask_cluster.address))
    assert [o.status for o in changed.outcomes] == ["cached", "failed"]
    assert "rows.csv changed" in changed.outcomes[1].reason
    assert "4" in changed.outcomes[1].details
    assert (tmp_path / "build" / "out" / "summary.txt").read_text() == "a,b,c,d"


def _killable(path: Path, marks: Path, survive_from: int) -> Path:
    """A notebook that notes its process ancestry per attempt, then sleeps until killed."""
    marks.mkdir(parents=True, exist_ok=True)
    return write(
        path,
        "import pathlib, psutil, time\n"
        f"marks = pathlib.Path({str(marks)!r})\n"
        "attempt = len(list(marks.iterdir()))\n"
        "ancestors = [p.pid for p in psutil.Process().parents()]\n"
        "(marks / str(attempt)).write_text(' '.join(map(str, ancestors)))\n"
        f"time.sleep(0 if attempt >= {survive_from} else 120)\n"
        "print('survived')",
    )


def _kill_attempts(cluster: DaskCluster, marks: Path, count: int) -> list[str]:
    """Kill -9 the worker process running each of the first ``count`` attempts."""
    killed = []
    for attempt in range(count):
        mark = marks / str(attempt)
        deadline = time.monotonic() + 90
        while not mark.exists() or not mark.read_text():
            assert time.monotonic() < deadline, f"attempt {attempt} never started\n{cluster.log()}"
            time.sleep(0.05)
        ancestors = {int(pid) for pid in mark.read_text().split()}
        by_pid = {pid: address for address, pid in cluster.worker_pids().items()}
        (pid,) = ancestors & set(by_pid)
        os.kill(pid, signal.SIGKILL)
        killed.append(by_pid[pid])
    return killed


def _run_in_thread(paths: list[Path], opts: TestOptions) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(run_tests(paths, opts)), daemon=True)
    thread.start()
    return thread, box


@pytest.mark.slow
def test_a_worker_killed_mid_notebook_costs_one_retry(
    fresh_cluster: DaskCluster, tmp_path: Path
) -> None:
    notebook = _killable(tmp_path / "nb" / "sleepy.ipynb", tmp_path / "marks", survive_from=1)
    opts = options(tmp_path, fresh_cluster.address, mode="run", cache=False)
    thread, box = _run_in_thread([notebook], opts)
    (killed,) = _kill_attempts(fresh_cluster, tmp_path / "marks", 1)
    thread.join(timeout=120)
    report: TestReport = box[0]
    assert [o.status for o in report.outcomes] == ["passed"], report.outcomes[0].message
    assert report.outcomes[0].worker != killed
    assert any(killed in w and "died" in w for w in report.warnings), report.warnings


@pytest.mark.slow
def test_a_notebook_whose_workers_die_twice_is_an_error_naming_the_worker(
    fresh_cluster: DaskCluster, tmp_path: Path
) -> None:
    notebook = _killable(tmp_path / "nb" / "sleepy.ipynb", tmp_path / "marks", survive_from=9)
    opts = options(tmp_path, fresh_cluster.address, mode="run", cache=False)
    thread, box = _run_in_thread([notebook], opts)
    first, second = _kill_attempts(fresh_cluster, tmp_path / "marks", 2)
    thread.join(timeout=120)
    report: TestReport = box[0]
    (outcome,) = report.outcomes
    assert outcome.status == "error"
    assert f"the worker at {second} died while running it" in outcome.message
    assert first in outcome.message
    assert report.exit_code == EXIT_EXECUTION  # as for a dead kernel
    assert len(list((tmp_path / "marks").iterdir())) == 2  # never a third run


@pytest.mark.slow
def test_a_scheduler_that_gives_up_at_once_still_gets_one_retry(tmp_path: Path) -> None:
    # allowed-failures 0: the scheduler fails the task (KilledWorker) at the first lost worker
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    marks = tmp_path / "marks"
    first = _killable(tmp_path / "nb" / "once.ipynb", marks / "once", survive_from=1)
    second = _killable(tmp_path / "nb" / "twice.ipynb", marks / "twice", survive_from=9)
    with start_cluster(tmp_path / "dask", extra_env=env) as cluster:
        opts = options(tmp_path, cluster.address, mode="run", cache=False, jobs=1)
        thread, box = _run_in_thread([first, second], opts)
        (killed,) = _kill_attempts(cluster, marks / "once", 1)
        dead = _kill_attempts(cluster, marks / "twice", 2)
        thread.join(timeout=120)
    report: TestReport = box[0]
    assert [o.status for o in report.outcomes] == ["passed", "error"]
    assert any(killed in w for w in report.warnings), report.warnings
    assert f"the worker at {dead[1]} died while running it" in report.outcomes[1].message
    assert report.exit_code == EXIT_EXECUTION


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What `nbcd test` printed, without timings and traceback bodies."""
    kept = []
    for line in result.stdout.splitlines():
        line = re.sub(r"\d+\.\d+ s", "T s", line)
        if re.match(r"(PASSED|FAILED|ERROR|CACHED)|\d+ notebooks?:", line) or (
            line.startswith("        cell")
        ):
            kept.append(line.rstrip())
    return kept


@pytest.mark.slow
def test_a_local_cluster_gives_the_cli_output_of_a_local_run(tmp_path: Path) -> None:
    make_project(tmp_path)
    local = run_cli("test", "--no-cache", cwd=tmp_path)
    started = time.monotonic()
    remote = run_cli("test", "--no-cache", "--cluster", "local:2", cwd=tmp_path, timeout=180)
    assert remote.returncode == local.returncode == 1, remote.stderr
    assert sorted(_lines(remote)) == sorted(_lines(local))  # printed as they finish
    assert len(_lines(local)) >= 5
    assert time.monotonic() - started < 120


def test_an_unreachable_cluster_is_one_line_exit_2_at_once(tmp_path: Path) -> None:
    write(tmp_path / "notebooks" / "nb.ipynb", "1")
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli("test", "--cluster", address, "notebooks/nb.ipynb", cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the cluster at {address}: Connection refused "
        "(start one with `dask scheduler` or use --cluster local:2)"
    ]
    assert time.monotonic() - started < 30


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbcd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={**ENV, **env},
        check=False,
    )


def test_flag_beats_env_var_beats_config_key(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    configured, exported = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    where = tmp_path / "cwd.txt"
    (tmp_path / "pyproject.toml").write_text(f'[tool.nbcd]\ncluster = "{configured}"\n')
    write(
        tmp_path / "notebooks" / "nb.ipynb",
        f"import os\nopen({str(where)!r}, 'w').write(os.getcwd())",
    )
    args = ["test", "--no-cache", "--mode", "run"]

    by_config = _cli(args, tmp_path)
    assert by_config.returncode == EXIT_USAGE
    assert f"cannot reach the cluster at {configured}" in by_config.stderr
    by_env = _cli(args, tmp_path, NBCD_CLUSTER=exported)
    assert f"cannot reach the cluster at {exported}" in by_env.stderr
    by_flag = _cli([*args, "--cluster", dask_cluster.address], tmp_path, NBCD_CLUSTER=exported)
    assert by_flag.returncode == 0, by_flag.stdout + by_flag.stderr
    assert "/slot-" in where.read_text()  # its kernel worked in a worker's slot
    on_env = _cli(args, tmp_path, NBCD_CLUSTER=dask_cluster.address)
    assert on_env.returncode == 0, on_env.stdout + on_env.stderr


def test_run_and_ci_on_the_cluster(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    run_spec = (
        '[[tool.nbcd.runs]]\nnotebook = "notebooks/data.ipynb"\n'
        'parameters = { output_dir = "../build/run-out" }\n'
        'artifacts = ["build/run-out/summary.txt"]\n'
    )
    paths = make_project(tmp_path, extra=run_spec)
    for name in ("fail", "mismatch"):
        paths[name].unlink()

    out = tmp_path / "build" / "run-out" / "summary.txt"  # the configured run's parameter
    ran = run_cli("run", "--cluster", dask_cluster.address, "notebooks/data.ipynb", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert out.read_text() == "a,b,c"
    assert "artifact  build/run-out/summary.txt" in ran.stdout
    executed_nb = nbformat.read(tmp_path / "build" / "notebooks" / "data.ipynb", as_version=4)
    texts = [o.get("text") for c in executed_nb.cells for o in c.get("outputs", [])]
    assert "3\n" in texts
    out.unlink()

    failing = write(tmp_path / "elsewhere" / "bad.ipynb", "raise KeyError('k')")
    local = run_cli("run", str(failing), cwd=tmp_path)
    remote = run_cli("run", "--cluster", dask_cluster.address, str(failing), cwd=tmp_path)
    assert remote.returncode == local.returncode == 1
    assert remote.stderr == local.stderr

    result = run_cli(
        "ci", "--stages", "test,run", "--cluster", dask_cluster.address, cwd=tmp_path, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text() == "a,b,c"  # the run stage ran on a worker (it has parameters)


# --- the parts, without a cluster -----------------------------------------------------------


def test_cluster_address_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    class Config:
        cluster = "tcp://config:1"

    monkeypatch.delenv("NBCD_CLUSTER", raising=False)
    assert cluster_address(None, None) is None
    assert cluster_address(None, Config()) == "tcp://config:1"
    monkeypatch.setenv("NBCD_CLUSTER", "tcp://env:2")
    assert cluster_address(None, Config()) == "tcp://env:2"
    assert cluster_address("local:2", Config()) == "local:2"
    monkeypatch.setenv("NBCD_CLUSTER", "")
    assert cluster_address("", Config()) == "tcp://config:1"


def test_a_worker_with_another_environment_is_refused() -> None:
    class Client:
        def run(self, function: Any) -> dict[str, tuple[str, str]]:
            return {"tcp://10.0.0.7:4000": ("3.9", "0.0.1")}

    with pytest.raises(ClusterError) as caught:
        check_versions(Client(), "tcp://s:8786")  # type: ignore[arg-type]
    mine = connect_module._environment()
    assert str(caught.value) == (
        f"the worker at tcp://10.0.0.7:4000 runs Python 3.9 and nbcd 0.0.1, this client "
        f"Python {mine[0]} and nbcd {mine[1]}; workers need the same environment"
    )


@pytest.mark.parametrize("address", ["local:0", "local:x", "local:"])
def test_bad_local_cluster_sizes_are_refused(address: str) -> None:
    with pytest.raises(ClusterError, match="give local:N"), connect_module.connect(address):
        pass


def test_the_archive_leaves_out_history_environments_caches_and_the_build(tmp_path: Path) -> None:
    for name in [
        "notebooks/a.ipynb",
        "data/x.csv",
        "build/big.bin",
        *[f"{n}/f" for n in EXCLUDED_NAMES],
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    data = project_archive(tmp_path, [tmp_path / "build"], 10**6)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    assert sorted(names) == ["data/x.csv", "notebooks/a.ipynb"]


def test_an_archive_over_the_limit_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"x" * 5000)
    with pytest.raises(ClusterError) as caught:
        project_archive(tmp_path, [], 1000)
    message = str(caught.value)
    assert "\n" not in message
    assert f"the project folder {tmp_path} is 0.0 MB" in message
    assert "NBCD_CLUSTER_MAX_MB" in message


def test_slot_paths_mirror_the_client(tmp_path: Path) -> None:
    slot = tmp_path / "slot-0"
    assert slot_path(slot, "/home/u/p/data.csv") == slot / "home/u/p/data.csv"
    assert client_path(slot, str(slot / "home/u/p/data.csv")) == "/home/u/p/data.csv"
    assert client_path(slot, "/usr/lib/x.py") == "/usr/lib/x.py"


def test_clearing_a_slot_keeps_the_kernels_folder(tmp_path: Path) -> None:
    keep = tmp_path / "a" / "notebooks"
    keep.mkdir(parents=True)
    inode = keep.stat().st_ino
    for name in ["a/notebooks/out.txt", "a/data/x.csv", "b/y", "top.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    _clear(tmp_path, keep)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a",
        "a/notebooks",
    ]
    assert keep.stat().st_ino == inode


def test_a_workers_error_comes_back_as_its_own_class() -> None:
    error = rebuild_error("nbcd.errors:KernelNotFoundError", "no kernel named 'x' is installed")
    assert isinstance(error, KernelNotFoundError)
    assert str(error) == "no kernel named 'x' is installed"
    assert error.exit_code == EXIT_USAGE
    assert type(rebuild_error("os:path", "m")).__name__ == "ExecutionError"


def _archive_job(root: Path, tag: str) -> tuple[Any, bytes]:
    from nbcd.cluster.worker import Job

    archive = project_archive(root, [], 10**6)
    job = Job(
        run="r",
        job="1",
        notebook=build_notebook("1"),
        cwd=str(root / "notebooks"),
        kernel="python3",
        timeout=10,
        allow_errors=True,
        record_inputs=False,
        archive_root=str(root),
        archive_id=tag,
    )
    return job, archive


def test_a_slot_keeps_the_unpacked_project_while_notebooks_leave_it_alone(tmp_path: Path) -> None:
    from nbcd.cluster.worker import _Slot

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "data.csv").write_text("a\n1\n")
    slot = _Slot(tmp_path / "slot")
    job, archive = _archive_job(project, "archive-1")
    cwd = slot_path(slot.root, job.cwd)
    data = slot_path(slot.root, project / "data.csv")

    before = slot.prepare(job, cwd, {}, archive)
    assert data.read_text() == "a\n1\n"
    (cwd / "out").mkdir()
    (cwd / "out" / "result.txt").write_text("new")  # what a notebook writes goes after it
    slot.tidy(before, cwd)
    assert not (cwd / "out").exists()
    assert data.exists() and slot.archive == "archive-1"  # kept for the next notebook

    before = slot.prepare(job, cwd, {}, archive)  # nothing unpacked again
    data.write_text("changed")  # an archived file changed: the next task unpacks afresh
    slot.tidy(before, cwd)
    assert not data.exists() and slot.archive == ""
    slot.prepare(job, cwd, {}, archive)
    assert data.read_text() == "a\n1\n"


def test_a_scheduler_without_workers_is_one_line_after_the_timeout(tmp_path: Path) -> None:
    with start_cluster(tmp_path / "dask", workers=0) as cluster:
        started = time.monotonic()
        with (
            pytest.raises(ClusterError) as caught,
            connect_module.connect(cluster.address, timeout=1.0),
        ):
            pass
    assert str(caught.value) == (
        f"the cluster at {cluster.address} has no workers after 1 s "
        f"(start some with `dask worker {cluster.address}`)"
    )
    assert time.monotonic() - started < 15


def test_without_distributed_a_cluster_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(UsageError) as caught:
        connect_module.connect("local:1").__enter__()
    assert str(caught.value) == (
        "--cluster needs Dask's distributed package: pip install 'distributed>=2026.8.0'"
    )
    assert caught.value.exit_code == EXIT_USAGE
