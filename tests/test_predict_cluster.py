"""`nbcd predict` on folders, globs, Parquet and partitions, here and on a real Dask cluster.

The contract: whatever the partitions and wherever they run, the output is the bytes the
local command writes, and bad rows are reported by file and line as the local command
reports them. The cluster tests use real `dask scheduler` and `dask worker` processes
(``tests.cluster_fixtures``), whose working folder is not the client's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from nbcd.cluster import scoring
from nbcd.cluster.scoring import default_output, parse_size, predict_partitions
from nbcd.errors import ExecutionError, UsageError
from nbcd.model import save_model
from nbcd.serve.partitions import Partition, input_files, plan_partitions
from nbcd.serve.predict import Scorer, predict_file
from tests.cluster_fixtures import DaskCluster, dask_cluster, free_port

__all__ = ["dask_cluster"]  # the fixture, found by pytest through this module

FEATURES = ["a", "b", "c", "d"]
# three files of the same columns: ids with leading zeros, a quoted note (some spanning two
# lines, some with doubled quotes), and in the second file every kind of bad row
BAD_ROWS = {
    3: "{id},x,1,2,3,n",  # text in a feature
    40: "",  # a blank line, skipped silently
    41: "{id},0.5,,2,3,n",  # a missing value
    90: "{id},0.5,1,inf,3,n",  # infinite
    91: "{id},0.5,1,2,NA,n",  # missing
    150: "{id},1e308,1e308,1e308,1e308,n",  # overflows inside the model
}


def _csv(seed: int, rows: int, bad: dict[int, str] | None = None) -> str:
    values = np.random.default_rng(seed).random((rows, 4)) * [1, 10, 100, 1000]
    lines = ["id,a,b,c,d,note"]
    for i, row in enumerate(values):
        ident = f"{seed:02d}{i:05d}"
        if bad and i in bad:
            lines.append(bad[i].format(id=ident))
            continue
        note = {7: '"two\nlines, quoted"', 9: '"says ""hi"""'}.get(i % 25, "plain")
        lines.append(f"{ident}," + ",".join(repr(float(v)) for v in row) + f",{note}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MinMax -> PCA -> KMeans pipeline on four features, saved."""
    frame = pd.DataFrame(
        np.random.default_rng(0).random((200, 4)) * [1, 10, 100, 1000], columns=FEATURES
    )
    pipeline = Pipeline(
        [
            ("scale", MinMaxScaler()),
            ("pca", PCA(3)),
            ("kmeans", KMeans(3, n_init=2, random_state=0)),
        ]
    ).fit(frame)
    folder = tmp_path_factory.mktemp("model") / "model"
    save_model(pipeline, folder, features=FEATURES)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three CSV files (about 40 kB each), the second with bad rows."""
    folder = tmp_path_factory.mktemp("inputs") / "in"
    folder.mkdir()
    (folder / "2015-a.csv").write_text(_csv(1, 400))
    (folder / "2015-b.csv").write_text(_csv(2, 400, BAD_ROWS))
    (folder / "2016-a.csv").write_text(_csv(3, 300))
    (folder / "notes.txt").write_text("not an input\n")
    return folder


def _local_reference(model: Path, files: list[Path], work: Path) -> tuple[bytes, list[str]]:
    """predict_file on each file, outputs concatenated: what one output file must hold."""
    output, failures = b"", []
    for i, path in enumerate(files):
        result = predict_file(model, path, work / f"ref-{i}.csv", chunk_rows=64)
        text = (work / f"ref-{i}.csv").read_bytes()
        output += text if i == 0 else text.split(b"\n", 1)[1]
        failures += [f"{where}: {reason}" for where, reason in result.located_failures()]
    return output, failures


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, local unless told otherwise: a developer's NBCD_CLUSTER does not count."""
    env = {k: v for k, v in os.environ.items() if k != "NBCD_CLUSTER"}
    return subprocess.run(
        [sys.executable, "-m", "nbcd", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def _skipped(stderr: str) -> list[str]:
    return [line.removeprefix("skipped ") for line in stderr.splitlines() if "skipped" in line]


# ------------------------------------------------------------------------- in this process


@pytest.mark.parametrize(("size", "chunk_rows"), [(1, 7), (3_000, 64), (10**9, 50_000)])
def test_partitions_give_predict_files_bytes_and_lines(
    model: Path, inputs: Path, tmp_path: Path, size: int, chunk_rows: int
) -> None:
    files = sorted(inputs.glob("*.csv"))
    expected, expected_failures = _local_reference(model, files, tmp_path)

    result = predict_partitions(
        model, inputs, tmp_path / "out.csv", partition_size=size, chunk_rows=chunk_rows
    )

    assert (tmp_path / "out.csv").read_bytes() == expected
    found = [f"{where}: {reason}" for where, reason in result.located_failures()]
    assert found == expected_failures
    assert f"{files[1]}:152: values out of range (the model's output is not finite)" in found
    assert (result.rows_in, result.rows_failed) == (1099, 5)
    assert result.workers == {} and result.outputs == [tmp_path / "out.csv"]
    if size == 1:  # a partition per record: no cut falls inside a quoted line break
        assert result.partitions == 1100


def test_a_cut_never_falls_inside_a_quoted_value(model: Path, tmp_path: Path) -> None:
    source = tmp_path / "q.csv"
    source.write_text(
        'id,a,b,c,d,note\n1,1,2,3,4,"a\nb"\n2,1,2,3,4,"""\n\n"""\n\n3,1,2,3,4,x\n', newline=""
    )

    plan = plan_partitions([source], Scorer.load(model), partition_size=1)

    data = source.read_bytes()
    pieces = [data[p.start : p.end] for p in plan.partitions]
    assert pieces == [b'1,1,2,3,4,"a\nb"\n', b'2,1,2,3,4,"""\n\n"""\n', b"\n", b"3,1,2,3,4,x\n"]
    assert plan.partitions[0].header == b"id,a,b,c,d,note\n"


def test_a_malformed_row_in_a_later_partition_is_named_by_its_line_in_the_file(
    model: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(_csv(5, 300).replace("0500250,", "0500250,1,", 1))

    with pytest.raises(UsageError) as local:
        predict_file(model, source, tmp_path / "a.csv")
    with pytest.raises(UsageError) as partitioned:
        predict_partitions(model, source, tmp_path / "b.csv", parts=True, partition_size=2_000)

    # pandas counts records: the header and 250 rows before it, not the quoted line breaks
    assert "line 252," in str(local.value)
    assert str(partitioned.value) == str(local.value)


def test_parquet_is_scored_by_row_groups_and_reported_by_row(
    model: Path, inputs: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    csv_files = sorted(inputs.glob("*.csv"))
    for path in csv_files:
        frame = pd.read_csv(path, dtype={"id": str, "note": str}, keep_default_na=False)
        frame[FEATURES] = frame[FEATURES].apply(pd.to_numeric, errors="coerce")
        frame.to_parquet(folder / f"{path.stem}.parquet", row_group_size=50, index=False)

    result = predict_partitions(model, folder, tmp_path / "out.csv", partition_size=1)

    assert result.partitions == 8 + 8 + 6  # one row group each
    out = pd.read_csv(tmp_path / "out.csv", dtype={"id": str})
    for i, path in enumerate(csv_files):
        predict_file(model, path, tmp_path / f"ref-{i}.csv")
    reference = pd.concat(
        pd.read_csv(tmp_path / f"ref-{i}.csv", dtype={"id": str}) for i in range(len(csv_files))
    )
    assert out["id"].tolist() == reference["id"].tolist()
    assert out["cluster"].tolist() == reference["cluster"].tolist()
    assert out["distance"].tolist() == reference["distance"].tolist()
    where = [w for w, _ in result.located_failures()]
    assert f"{folder / '2015-b.parquet'} row 4" in where  # the 4th data row, line 5 of the CSV


def test_a_glob_takes_its_matches_in_name_order(model: Path, inputs: Path, tmp_path: Path) -> None:
    expected, _ = _local_reference(model, [inputs / "2015-a.csv", inputs / "2015-b.csv"], tmp_path)

    result = predict_partitions(model, f"{inputs}/2015-*.csv", tmp_path / "out.csv")

    assert (tmp_path / "out.csv").read_bytes() == expected
    assert result.rows_in == 799


def test_inputs_that_cannot_be_scored_together_are_one_line_errors(
    model: Path, inputs: Path, tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.csv").write_text("id,a,b,c,d\n1,1,2,3,4\n")
    pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0], "d": [4.0]}).to_parquet(mixed / "b.parquet")
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.csv").write_text("id,a,b,c,d\n1,1,2,3,4\n")
    (other / "b.csv").write_text("key,a,b,c,d\n1,1,2,3,4\n")

    with pytest.raises(UsageError, match=r"mixes Parquet \(.*b\.parquet\) and CSV \(.*a\.csv\)"):
        input_files(mixed)
    with pytest.raises(UsageError, match=r"the folder has no \.csv or \.parquet files"):
        input_files(tmp_path / "empty")
    with pytest.raises(UsageError, match="the pattern matches no files"):
        input_files(f"{inputs}/*.tsv")
    with pytest.raises(UsageError, match=r"b\.csv: its columns besides the features \(key\)"):
        predict_partitions(model, other, tmp_path / "out.csv")
    # a folder of parts has a header per part: the columns may differ
    result = predict_partitions(model, other, tmp_path / "parts", parts=True)
    assert [p.name for p in result.outputs] == ["part-00000.csv", "part-00001.csv"]
    assert (tmp_path / "parts" / "part-00001.csv").read_text().startswith("key,cluster,")


def test_the_output_never_replaces_an_input(model: Path, inputs: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked.csv"
    os.link(inputs / "2016-a.csv", linked)
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}

    with pytest.raises(UsageError, match=r"the output is the input file .*2016-a\.csv"):
        predict_partitions(model, inputs, linked)
    with pytest.raises(UsageError, match="the output folder holds the input file"):
        predict_partitions(model, inputs, inputs, parts=True)
    with pytest.raises(UsageError, match="the output folder holds the input file"):
        predict_partitions(model, inputs / "2015-a.csv", inputs.parent, parts=True)
    with pytest.raises(UsageError, match=r"holds 2015-a\.csv, not a part file"):
        predict_partitions(model, tmp_path / "linked.csv", inputs, parts=True)

    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before


def test_an_output_folder_is_replaced_whole(model: Path, inputs: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"

    many = predict_partitions(model, inputs, parts, parts=True, partition_size=10_000)
    few = predict_partitions(model, inputs, parts, parts=True)

    assert many.partitions > 3 and few.partitions == 3
    assert sorted(p.name for p in parts.iterdir()) == [p.name for p in few.outputs]
    assert [p.name for p in tmp_path.iterdir()] == ["parts"]  # no staging folder left


def test_a_header_only_input_gives_a_header_only_output(model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.csv").write_text("id,a,b,c,d\n")
    (tmp_path / "in" / "unended.csv").write_text("id,a,b,c,d")  # two files: not predict_file

    alone = predict_file(model, tmp_path / "in" / "empty.csv", tmp_path / "alone.csv")
    folder = predict_partitions(model, tmp_path / "in", tmp_path / "folder.csv")

    assert (tmp_path / "alone.csv").read_text() == "id,cluster,distance\n"
    assert (tmp_path / "folder.csv").read_text() == "id,cluster,distance\n"
    assert alone.rows_in == folder.rows_in == folder.partitions == 0


def test_the_default_output_is_named_after_the_input(tmp_path: Path) -> None:
    (tmp_path / "scores").mkdir()

    assert default_output(tmp_path / "in.csv") == Path("in.predictions.csv")
    assert default_output(tmp_path / "scores") == Path("scores.predictions.csv")
    assert default_output(f"{tmp_path}/*.csv") == Path("predictions.csv")


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MB", 64_000_000), ("1GiB", 2**30), ("500 kb", 500_000), ("1000", 1000), ("1.5k", 1500)],
)
def test_partition_sizes_read_like_dasks(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "1 parsec", "0.1"])
def test_a_bad_partition_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


# ----------------------------------------------------------------------------- on a cluster


@pytest.mark.e2e
def test_the_cluster_gives_the_local_commands_output_and_bad_rows(
    model: Path, inputs: Path, tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    (tmp_path / "in").symlink_to(inputs)  # a relative input: the workers' folder is another

    local = _run("predict", model, "in", "-o", "local.csv", cwd=tmp_path)
    remote = _run(
        "predict", model, "in", "-o", "remote.csv", "--cluster", dask_cluster.address,
        "--partition-size", "4kB", cwd=tmp_path,
    )  # fmt: skip

    assert local.returncode == remote.returncode == 1, local.stderr + remote.stderr
    assert "Traceback" not in remote.stderr
    assert (tmp_path / "remote.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert _skipped(remote.stderr) == _skipped(local.stderr)
    assert _skipped(remote.stderr) == [
        "in/2015-b.csv:5: column 'a': 'x' is not a number",
        "in/2015-b.csv:43: column 'b': missing value",
        "in/2015-b.csv:92: column 'c': inf is not a finite number",
        "in/2015-b.csv:93: column 'd': missing value",
        "in/2015-b.csv:152: values out of range (the model's output is not finite)",
    ]  # row N (from 0) is line N + 2, the blank line counting as a row, as predict_file says
    assert f"on {dask_cluster.address} (" in remote.stdout and "2 workers)" in remote.stdout


@pytest.mark.e2e
def test_both_workers_score_and_each_loads_the_model_once(
    model: Path, inputs: Path, tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    from distributed import Client

    expected, _ = _local_reference(model, sorted(inputs.glob("*.csv")), tmp_path)
    with Client(dask_cluster.address, set_as_default=False) as client:
        first = predict_partitions(
            model, inputs, tmp_path / "a.csv", client=client, partition_size=2_000
        )
        second = predict_partitions(
            model, inputs, tmp_path / "b.csv", client=client, partition_size=2_000
        )
        loads = client.run(lambda: dict(scoring._LOADS))

    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes() == expected
    assert first.partitions > 10
    assert set(first.workers) == set(dask_cluster.worker_pids())  # both got tasks
    assert sum(first.workers.values()) == sum(second.workers.values()) == first.partitions
    digests = {digest for counts in loads.values() for digest in counts}
    assert all(counts == dict.fromkeys(digests, 1) for counts in loads.values()), loads


@pytest.mark.e2e
def test_parquet_and_globs_and_part_folders_on_the_cluster(
    model: Path, inputs: Path, tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    for path in sorted(inputs.glob("2015-*.csv")):
        frame = pd.read_csv(path, dtype={"id": str, "note": str}, keep_default_na=False)
        frame[FEATURES] = frame[FEATURES].apply(pd.to_numeric, errors="coerce")
        frame.to_parquet(folder / f"{path.stem}.parquet", row_group_size=64)
    address = dask_cluster.address

    for source, kind in [(folder, "pq"), (f"{inputs}/2015-*.csv", "glob")]:
        local = predict_partitions(model, source, tmp_path / f"{kind}-local", parts=True)
        remote = predict_partitions(
            model, source, tmp_path / f"{kind}-remote", parts=True, cluster=address
        )
        assert [p.name for p in remote.outputs] == [p.name for p in local.outputs]
        for mine, theirs in zip(local.outputs, remote.outputs, strict=True):
            assert mine.read_bytes() == theirs.read_bytes()
        assert remote.located_failures() == local.located_failures()
        assert len(remote.workers) >= 1


@pytest.mark.e2e
def test_a_malformed_file_on_the_cluster_is_one_line_naming_its_line(
    model: Path, tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    (tmp_path / "in.csv").write_text(_csv(5, 300).replace("0500250,", "0500250,1,", 1))

    result = _run(
        "predict", model, "in.csv", "--cluster", dask_cluster.address,
        "--partition-size", "2kB", "-o", "out.csv", cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: in.csv: cannot be read as CSV (Error tokenizing data. C error: Expected 6 "
        "fields in line 252, saw 7)"
    ]
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.e2e
def test_an_unreachable_cluster_is_one_line_and_exit_2(
    model: Path, inputs: Path, tmp_path: Path
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"

    result = _run("predict", model, inputs, "--cluster", address, cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach the cluster at {address}")
    assert list(tmp_path.iterdir()) == []


def test_a_task_the_cluster_lost_is_one_line_naming_its_partition(tmp_path: Path) -> None:
    class Lost:
        def result(self) -> None:
            raise RuntimeError("Attempted to run task on 3 different workers,\nall died")

    partition = Partition(7, Path("in/b.csv"), 0, 1, 1, (), tmp_path / "b.csv")

    with pytest.raises(ExecutionError) as caught:
        scoring._task_result(Lost(), partition)  # type: ignore[arg-type]

    assert str(caught.value) == (
        "the cluster failed scoring partition 7 (in/b.csv): RuntimeError: Attempted to run "
        "task on 3 different workers, all died; if a worker ran out of memory, give a "
        "smaller --partition-size"
    )
