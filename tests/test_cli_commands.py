"""`nbcd lint, rules, report, build, init, serve, predict` end to end through the real CLI.

Each command gets its good path (exit 0, what the user sees, the files written) and bad input
(the exit code of README's table, one line on stderr and no traceback, inputs left untouched).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nbformat
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from nbcd.model import save_model
from tests.conftest import REPO, build_notebook, run_cli

pytestmark = pytest.mark.e2e

FEATURES = ["a", "b", "c", "d"]


# ----------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (or root itself) by relative path, with its bytes."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *fragments: str
) -> None:
    """The command failed with `code` and said why in one line, without a traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_notebook(path: Path, *cells: str | tuple[str, list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(*cells, markdown_title="Test"), path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ----------------------------------------------------------------------------- nbcd lint

UNUSED_IMPORT = "import os\n\nx = 1"


def test_lint_names_file_cell_and_code(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", UNUSED_IMPORT, "print(x)")
    before = snapshot(tmp_path)

    result = run_cli("lint", "nb.ipynb", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "nb.ipynb:cell 2:1:8: F401 `os` imported but unused" in result.stdout
    assert re.search(r"^Found \d+ problems? in 1 file", result.stdout, re.M), result.stdout
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before, f"lint without --fix must not write {nb.name}"


def test_lint_of_a_clean_notebook_exits_0(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nb.ipynb", "x = 1", "print(x)")

    result = run_cli("lint", "nb.ipynb", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed" in result.stdout


def test_lint_format_json_parses_and_carries_each_finding(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nb.ipynb", UNUSED_IMPORT, "print(x)")

    result = run_cli("lint", "nb.ipynb", "--format", "json", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["files"] == ["nb.ipynb"]
    unused = [f for f in report["findings"] if f["code"] == "F401"]
    assert len(unused) == 1, report["findings"]
    assert unused[0]["path"] == "nb.ipynb"
    assert (unused[0]["cell"], unused[0]["line"]) == (2, 1)
    assert unused[0]["severity"] == "error"


def test_lint_format_github_prints_error_and_warning_annotations(tmp_path: Path) -> None:
    # F401 is an error, an empty code cell (NB102) a warning
    write_notebook(tmp_path / "nb.ipynb", UNUSED_IMPORT, "", "print(x)")

    result = run_cli("lint", "nb.ipynb", "--format", "github", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "::error file=nb.ipynb,title=F401::cell 2, line 1: `os` imported but unused" in lines
    assert any(line.startswith("::warning file=nb.ipynb,title=NB102::") for line in lines), lines
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines), lines


def test_lint_honours_the_project_ignore_list_and_the_cell_noqa_tag(tmp_path: Path) -> None:
    write_notebook(tmp_path / "notebooks" / "nb.ipynb", "x = 1", "", "print(x)")
    write_notebook(
        tmp_path / "notebooks" / "tagged.ipynb", "x = 1", ("", ["nbcd-noqa=NB102"]), "print(x)"
    )

    reported = run_cli(
        "lint", "notebooks", "--format", "json", "--fail-on", "warning", cwd=tmp_path
    )
    (tmp_path / "pyproject.toml").write_text('[tool.nbcd.lint]\nignore = ["NB102"]\n')
    ignored = run_cli("lint", "notebooks", cwd=tmp_path)

    assert reported.returncode == 1, reported.stderr
    flagged = {(f["path"], f["code"]) for f in json.loads(reported.stdout)["findings"]}
    assert flagged == {("notebooks/nb.ipynb", "NB102")}, "the noqa tag silences tagged.ipynb"
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr


def test_lint_of_a_missing_path_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = run_cli("lint", "missing.ipynb", cwd=tmp_path)

    assert_one_line_error(result, 2, "missing.ipynb")


# ----------------------------------------------------------------------------- nbcd rules

RULE_HEADER = re.compile(r"^(?P<code>[A-Z]+\d{3}) (?P<name>[a-z-]+) \((?P<level>error|warning)\)$")


def parse_rules(text: str) -> dict[str, list[str]]:
    """`nbcd rules` output: code -> the indented lines under it (summary, rationale)."""
    rules: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if match := RULE_HEADER.match(line):
            current = rules.setdefault(match["code"], [])
        elif line.startswith("    ") and line.strip() and current is not None:
            current.append(line.strip())
        elif line.strip():
            pytest.fail(f"unexpected line in `nbcd rules`: {line!r}")
    return rules


def test_rules_lists_every_notebook_code_with_summary_and_rationale(tmp_path: Path) -> None:
    result = run_cli("rules", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    rules = parse_rules(result.stdout)
    nb_codes = [code for code in rules if code.startswith("NB")]
    assert nb_codes, result.stdout
    for code, lines in rules.items():
        assert len(lines) >= 2, f"{code} needs a summary and a rationale: {lines}"
    # the notebook rules README names are among them
    readme_codes = set(re.findall(r"\bNB\d{3}\b", (REPO / "README.md").read_text()))
    assert readme_codes <= set(rules), readme_codes - set(rules)


def test_every_code_lint_reports_is_listed_by_rules(tmp_path: Path) -> None:
    (tmp_path / "broken.ipynb").write_text("not json")
    nb = build_notebook("x = 1", "", "print(x)")  # no title (NB103), an empty cell (NB102)
    del nb.metadata["kernelspec"]  # NB003
    nbformat.write(nb, tmp_path / "plain.ipynb")

    linted = run_cli("lint", ".", "--format", "json", cwd=tmp_path)
    listed = parse_rules(run_cli("rules", cwd=tmp_path).stdout)

    found = {f["code"] for f in json.loads(linted.stdout)["findings"] if f["source"] != "ruff"}
    assert {"NB001", "NB003", "NB102", "NB103"} <= found, found
    assert found <= set(listed), found - set(listed)


def test_rules_refuses_an_unknown_option_with_exit_2(tmp_path: Path) -> None:
    result = run_cli("rules", "--bogus", cwd=tmp_path)

    assert result.returncode == 2
    assert "--bogus" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- nbcd ci + report


@dataclass(frozen=True)
class CiRun:
    root: Path
    notebook_bytes: bytes
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> CiRun:
    """`nbcd ci --stages lint,test,report` on a one-notebook project (one kernel start)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\nversion = "0.1.0"\n\n'
        '[tool.nbcd]\nnotebooks = ["notebooks/*.ipynb"]\n'
    )
    nb = write_notebook(root / "notebooks" / "x.ipynb", "print(6 * 7)")
    before = nb.read_bytes()
    result = run_cli("ci", "--stages", "lint,test,report", cwd=root, timeout=180)
    return CiRun(root, before, result)


def test_ci_runs_the_chosen_stages_and_writes_summary_junit_and_site(tiny_project: CiRun) -> None:
    result, build = tiny_project.result, tiny_project.root / "build"

    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((build / "nbcd" / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["stages"]] == [
        ("lint", "passed"),
        ("test", "passed"),
        ("report", "passed"),
    ]
    assert [t["path"] for t in summary["tests"]] == ["notebooks/x.ipynb"]
    assert (build / "nbcd" / "junit.xml").is_file()
    assert (build / "site" / "index.html").is_file()
    assert not (build / "docker").exists(), "build was not among the stages"
    assert (tiny_project.root / "notebooks" / "x.ipynb").read_bytes() == tiny_project.notebook_bytes


def test_report_rebuilds_the_site_from_the_last_summary(
    tiny_project: CiRun, tmp_path: Path
) -> None:
    summary = tiny_project.root / "build" / "nbcd" / "summary.json"
    before = summary.read_bytes()
    site = tmp_path / "site"

    result = run_cli("report", "-o", site, cwd=tiny_project.root)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "index.html" in result.stdout
    index = (site / "index.html").read_text()
    assert "tiny" in index and "x.ipynb" in index
    assert summary.read_bytes() == before


def test_report_writes_build_site_by_default(tiny_project: CiRun, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    (root / "build" / "nbcd").mkdir(parents=True)
    (root / "pyproject.toml").write_bytes((tiny_project.root / "pyproject.toml").read_bytes())
    summary = root / "build" / "nbcd" / "summary.json"
    summary.write_bytes((tiny_project.root / "build" / "nbcd" / "summary.json").read_bytes())

    result = run_cli("report", cwd=root)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "build" / "site" / "index.html").is_file()


def test_report_without_a_summary_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = run_cli("report", cwd=tmp_path)

    assert_one_line_error(result, 2, "summary.json", "nbcd ci")
    assert not (tmp_path / "build" / "site").exists()


def test_report_with_an_unreadable_summary_is_a_one_line_usage_error(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text("{")

    result = run_cli("report", "--summary", summary, cwd=tmp_path)

    assert_one_line_error(result, 2, "summary.json")
    assert summary.read_text() == "{"
    assert not (tmp_path / "build" / "site").exists()


# ----------------------------------------------------------------------------- nbcd init

LAYOUT = (
    ".gitignore",
    "Dockerfile",
    "Makefile",
    "README.md",
    "notebooks/demo.ipynb",
    "pyproject.toml",
    "requirements.txt",
    "src/demo/__init__.py",
    "tests/test_demo.py",
)


def test_init_creates_the_layout_and_says_what_to_do_next(tmp_path: Path) -> None:
    result = run_cli("init", "demo", "--no-execute", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    root = tmp_path / "demo"
    for name in LAYOUT:
        assert (root / name).is_file(), name
    written = len(snapshot(root))
    assert f"created {written} files in demo" in result.stdout
    assert "cd demo" in result.stdout
    assert "[tool.nbcd]" in (root / "pyproject.toml").read_text()
    nb = nbformat.read(root / "notebooks" / "demo.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells), "--no-execute stores no outputs"


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert run_cli("init", "demo", "--no-execute", cwd=tmp_path).returncode == 0
    makefile = tmp_path / "demo" / "Makefile"
    makefile.write_text("mine\n")
    before = snapshot(tmp_path / "demo")

    refused = run_cli("init", "demo", "--no-execute", cwd=tmp_path)

    assert_one_line_error(refused, 2, "Makefile", "--force")
    assert snapshot(tmp_path / "demo") == before

    forced = run_cli("init", "demo", "--no-execute", "--force", cwd=tmp_path)

    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert makefile.read_text() != "mine\n"
    assert "nbcd" in makefile.read_text()


def test_init_refuses_a_name_that_shadows_an_installed_module(tmp_path: Path) -> None:
    result = run_cli("init", "pandas", "--no-execute", cwd=tmp_path)

    assert_one_line_error(result, 2, "pandas")
    assert not (tmp_path / "pandas").exists()


# ----------------------------------------------------------------------------- models


def training_data(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    values = np.random.default_rng(seed).random((rows, len(FEATURES))) * [1, 10, 100, 1000]
    return pd.DataFrame(values, columns=FEATURES)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    steps = [
        ("scale", MinMaxScaler()),
        ("pca", PCA(n_components=2)),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0)),
    ]
    return Pipeline(steps).fit(training_data())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Path:
    directory = tmp_path_factory.mktemp("model") / "model"
    save_model(pipeline, directory, features=FEATURES, metrics={"k": 3, "inertia": 1.5})
    return directory


# ----------------------------------------------------------------------------- nbcd build


def test_build_no_docker_writes_the_context_of_an_init_project(
    tmp_path: Path, model_dir: Path
) -> None:
    assert run_cli("init", "demo", "--no-execute", cwd=tmp_path).returncode == 0
    root = tmp_path / "demo"
    project = snapshot(root)
    model = snapshot(model_dir)

    result = run_cli("build", "--no-docker", "--no-wheel", "--model", model_dir, cwd=root)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "build/docker" in result.stdout
    context = root / "build" / "docker"
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.startswith(("FROM", "#", "ARG")), dockerfile[:200]
    assert (context / "model" / "model.skops").read_bytes() == model["model.skops"]
    assert (context / "requirements.lock").is_file()
    assert snapshot(model_dir) == model
    after = {k: v for k, v in snapshot(root).items() if not k.startswith("build/")}
    assert after == project, "build writes only under build/"


def test_build_without_a_model_says_to_run_first(tmp_path: Path) -> None:
    assert run_cli("init", "demo", "--no-execute", cwd=tmp_path).returncode == 0
    root = tmp_path / "demo"

    result = run_cli("build", "--no-docker", "--no-wheel", cwd=root)

    assert_one_line_error(result, 2, "model", "nbcd run")
    assert not (root / "build" / "docker").exists()


# ----------------------------------------------------------------------------- nbcd predict


def scoring_input(rows: int = 5) -> pd.DataFrame:
    frame = training_data(rows, seed=1)
    frame.insert(0, "id", [f"r{i}" for i in range(rows)])
    return frame


def test_predict_scores_every_row_keeping_ids(
    tmp_path: Path, model_dir: Path, pipeline: Pipeline
) -> None:
    rows = scoring_input()
    source = tmp_path / "in.csv"
    rows.to_csv(source, index=False)
    before = source.read_bytes()

    result = run_cli("predict", model_dir, "in.csv", "-o", "out.csv", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "scored 5 of 5 rows" in result.stdout
    scored = pd.read_csv(tmp_path / "out.csv")
    assert scored["id"].tolist() == rows["id"].tolist()
    assert scored["cluster"].tolist() == pipeline.predict(rows[FEATURES]).tolist()
    assert source.read_bytes() == before


def test_predict_reports_a_bad_row_by_line_and_exits_1(tmp_path: Path, model_dir: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("id,a,b,c,d\nr0,0.1,2,30,400\nr1,0.1,oops,30,400\nr2,0.5,5,50,500\n")
    before = source.read_bytes()

    result = run_cli("predict", model_dir, "bad.csv", "-o", "out.csv", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad.csv:3: column 'b': 'oops' is not a number" in result.stderr
    assert "scored 2 of 3 rows" in result.stdout
    assert "Traceback" not in result.stderr
    assert pd.read_csv(tmp_path / "out.csv")["id"].tolist() == ["r0", "r2"]
    assert source.read_bytes() == before


def test_predict_of_a_missing_input_is_a_one_line_usage_error(
    tmp_path: Path, model_dir: Path
) -> None:
    result = run_cli("predict", model_dir, "nope.csv", "-o", "out.csv", cwd=tmp_path)

    assert_one_line_error(result, 2, "nope.csv")
    assert not (tmp_path / "out.csv").exists()


def test_predict_names_the_missing_feature_columns(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "few.csv").write_text("id,a,b\nr0,1,2\n")

    result = run_cli("predict", model_dir, "few.csv", "-o", "out.csv", cwd=tmp_path)

    assert_one_line_error(result, 2, "few.csv", "c, d")
    assert not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------- nbcd serve

TOKEN = "s3cret-token"


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def serving(model: Path, log: Path, *args: str) -> Iterator[Server]:
    """`nbcd serve MODEL` in a subprocess, once /ping answers; stopped with SIGTERM after."""
    port = free_port()
    command = [sys.executable, "-m", "nbcd", "serve", str(model), "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"nbcd serve exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"nbcd serve did not answer /ping in 30 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(model_dir, log, "--token", TOKEN) as running:
        yield running


AUTH = {"authorization": f"Bearer {TOKEN}"}


def test_serve_answers_csv_invocations_with_the_models_clusters(
    server: Server, pipeline: Pipeline
) -> None:
    rows = training_data(3, seed=2)
    body = rows.to_csv(index=False, header=False)

    answer = httpx.post(
        f"{server.url}/invocations",
        content=body,
        headers={"content-type": "text/csv", **AUTH},
        timeout=30,
    )

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    predictions = answer.json()["predictions"]
    assert [p["closest_cluster"] for p in predictions] == pipeline.predict(rows).tolist()
    assert all({"distance_to_cluster", "projection"} <= set(p) for p in predictions)


def test_serve_answers_bad_input_with_a_4xx_naming_row_and_column(server: Server) -> None:
    answer = httpx.post(
        f"{server.url}/invocations",
        content="0.5,5,50,500\n0.5,oops,50,500\n",
        headers={"content-type": "text/csv", **AUTH},
        timeout=30,
    )

    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()["error"]
    assert "line 2" in error and "(b)" in error and "oops" in error, error


def test_serve_token_guards_all_but_ping(server: Server) -> None:
    ping = httpx.get(f"{server.url}/ping", timeout=10)
    anonymous = httpx.post(
        f"{server.url}/invocations",
        content="0.5,5,50,500",
        headers={"content-type": "text/csv"},
        timeout=10,
    )
    metadata = httpx.get(f"{server.url}/metadata", timeout=10)
    authorised = httpx.get(f"{server.url}/metadata", headers=AUTH, timeout=10)

    assert ping.status_code == 200
    assert anonymous.status_code in (401, 403), anonymous.text
    assert metadata.status_code in (401, 403), metadata.text
    assert authorised.status_code == 200, authorised.text
    assert authorised.json()["features"] == FEATURES


def test_serve_exits_0_on_sigterm(model_dir: Path, tmp_path: Path) -> None:
    with serving(model_dir, tmp_path / "serve.log") as running:
        assert httpx.get(f"{running.url}/ping", timeout=10).status_code == 200
        running.process.send_signal(signal.SIGTERM)
        exit_code = running.process.wait(10)

    assert exit_code == 0, running.log.read_text()
    assert "Traceback" not in running.log.read_text()


def test_serve_without_a_model_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = run_cli("serve", tmp_path / "absent", "--port", str(free_port()), cwd=tmp_path)

    assert_one_line_error(result, 2, "absent")


def test_serve_on_a_taken_port_is_a_one_line_usage_error(model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_cli("serve", model_dir, "--port", str(port), cwd=tmp_path, timeout=60)

    # uvicorn's own log comes first on stderr (the server's log stream); nbcd's verdict is the
    # one `error:` line, last
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr
    assert f"127.0.0.1:{port}" in errors[0]


def test_cli_never_imports_the_slow_iri_grammar_package() -> None:
    # jsonschema (via nbformat) would compile ~40 Lark grammars at import when rfc3987_syntax
    # is installed; the CLI opts out, whether or not the package is present here
    probe = (
        "import sys, nbcd.cli, nbformat, jsonschema\n"
        "print(sys.modules.get('rfc3987_syntax', 'absent'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "None"
