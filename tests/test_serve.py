"""nbcd.serve.app: the SageMaker-style endpoint, in process and as a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from nbcd.errors import ModelError, UsageError
from nbcd.model import save_model
from nbcd.serve.app import MAX_BODY_BYTES, MODEL_ENV, TOKEN_ENV, app_from_env, create_app, serve
from nbcd.serve.predict import Scorer
from tests.conftest import run_cli

with warnings.catch_warnings():
    # Starlette asks for the httpx2 package and warns when it finds plain httpx.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FEATURES = ["a", "b", "c", "d"]
TOKEN = "s3cret-token"
ROW = "0.5,5,50,500"


def _data(rows: int = 80, seed: int = 0) -> pd.DataFrame:
    values = np.random.default_rng(seed).random((rows, len(FEATURES))) * [1, 10, 100, 1000]
    return pd.DataFrame(values, columns=FEATURES)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    steps = [
        ("scale", MinMaxScaler()),
        ("pca", PCA(n_components=2)),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0)),
    ]
    return Pipeline(steps).fit(_data())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Path:
    directory = tmp_path_factory.mktemp("serve") / "model"
    save_model(pipeline, directory, features=FEATURES, metrics={"k": 3, "inertia": 1.5})
    return directory


@pytest.fixture(scope="module")
def client(model_dir: Path) -> TestClient:
    return TestClient(create_app(model_dir))


def _post(
    client: TestClient, body: str | bytes, content_type: str = "text/csv", **headers: str
) -> Any:
    return client.post(
        "/invocations", content=body, headers={"content-type": content_type, **headers}
    )


def _expected(pipeline: Pipeline, rows: list[list[float]]) -> tuple[list[int], list[float]]:
    frame = pd.DataFrame(rows, columns=FEATURES)
    distances = pipeline[-1].transform(pipeline[:-1].transform(frame))
    return pipeline.predict(frame).tolist(), distances.min(axis=1).tolist()


# ----------------------------------------------------------------------------- answers


def test_ping_answers_200(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200


def test_head_ping_answers_200_without_a_body(client: TestClient) -> None:
    response = client.head("/ping")

    assert response.status_code == 200
    assert response.content == b""


def test_csv_row_gets_cluster_distance_and_projection(
    client: TestClient, pipeline: Pipeline
) -> None:
    response = _post(client, ROW + "\n")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    (prediction,) = response.json()["predictions"]
    clusters, distances = _expected(pipeline, [[0.5, 5, 50, 500]])
    assert prediction["closest_cluster"] == clusters[0]
    assert prediction["distance_to_cluster"] == pytest.approx(distances[0], rel=1e-9)
    projection = pipeline[:-1].transform(pd.DataFrame([[0.5, 5, 50, 500]], columns=FEATURES))
    assert prediction["projection"] == pytest.approx(projection[0].tolist(), rel=1e-9)


def test_csv_header_may_come_in_any_order(client: TestClient) -> None:
    plain = _post(client, "0.1,2,30,400\n0.9,8,70,600\n").json()
    headed = _post(client, "\ufeffd,c,b,a\r\n400,30,2,0.1\r\n600,70,8,0.9\r\n\r\n").json()

    assert headed == plain and len(plain["predictions"]) == 2


def test_accept_csv_answers_one_row_per_input(client: TestClient, pipeline: Pipeline) -> None:
    response = _post(client, "0.1,2,30,400\n0.9,8,70,600\n", accept="text/csv")

    assert response.headers["content-type"].startswith("text/csv")
    rows = [line.split(",") for line in response.text.splitlines()]
    clusters, distances = _expected(pipeline, [[0.1, 2, 30, 400], [0.9, 8, 70, 600]])
    assert [int(c) for c, _ in rows] == clusters
    assert [float(d) for _, d in rows] == pytest.approx(distances, rel=1e-9)


@pytest.mark.parametrize(
    ("accept", "answered_as"),
    [
        ("application/json;q=0.1, text/csv;q=0.9", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("text/csv;q=0, */*", "application/json"),
        ("application/json;q=0, */*;q=0.2", "text/csv"),
        ("text/*;q=0.8, application/*;q=0.4", "text/csv"),
        ("text/csv, application/json", "text/csv"),
        ("*/*", "application/json"),
        ("*", "application/json"),
        ("", "application/json"),
        ("TEXT/CSV; charset=utf-8; q=1.0", "text/csv"),
        ("text/csv;q=abc, application/json;q=0.3", "application/json"),
    ],
)
def test_accept_q_values_choose_the_answer(
    client: TestClient, accept: str, answered_as: str
) -> None:
    response = _post(client, ROW, accept=accept)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == answered_as


@pytest.mark.parametrize(
    "accept", ["text/csv;q=0", "application/json;q=0, text/*;q=0", "text/html, image/*"]
)
def test_accept_that_refuses_json_and_csv_is_406(client: TestClient, accept: str) -> None:
    response = _post(client, ROW, accept=accept)

    assert response.status_code == 406
    assert accept in response.json()["error"]


@pytest.mark.parametrize(
    "document",
    [
        {"instances": [[0.1, 2, 30, 400], [0.9, 8, 70, 600]]},
        {
            "instances": [
                {"d": 400, "c": 30, "b": 2, "a": 0.1},
                {"a": 0.9, "b": 8, "c": 70, "d": 600},
            ]
        },
        {"instances": [{"features": [0.1, 2, 30, 400]}, {"features": [0.9, 8, 70, 600]}]},
        [[0.1, 2, 30, 400], [0.9, 8, 70, 600]],
        [{"a": 0.1, "b": 2, "c": 30, "d": 400}, {"a": 0.9, "b": 8, "c": 70, "d": 600}],
        {
            "dataframe_split": {
                "columns": ["d", "c", "b", "a"],
                "data": [[400, 30, 2, 0.1], [600, 70, 8, 0.9]],
            }
        },
        {"dataframe_split": {"data": [[0.1, 2, 30, 400], [0.9, 8, 70, 600]]}},
        {
            "dataframe_records": [
                {"a": 0.1, "b": 2, "c": 30, "d": 400},
                {"a": 0.9, "b": 8, "c": 70, "d": 600},
            ]
        },
        {"inputs": [[0.1, 2, 30, 400], [0.9, 8, 70, 600]]},
        {"inputs": {"a": [0.1, 0.9], "b": [2, 8], "c": [30, 70], "d": [400, 600]}},
    ],
    ids=[
        "instances",
        "dicts",
        "sagemaker",
        "list",
        "records-list",
        "split",
        "split-bare",
        "records",
        "inputs",
        "inputs-columns",
    ],
)
def test_json_layouts_all_give_the_same_answer(client: TestClient, document: Any) -> None:
    expected = _post(client, "0.1,2,30,400\n0.9,8,70,600\n").json()

    response = _post(client, json.dumps(document), "application/json; charset=utf-8")

    assert response.status_code == 200, response.text
    assert response.json() == expected


def test_metadata_lists_features_and_metrics(client: TestClient) -> None:
    body = client.get("/metadata").json()

    assert body["features"] == FEATURES
    assert body["metrics"] == {"k": 3, "inertia": 1.5}
    assert body["output"]["kind"] == "cluster"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    assert {"/ping", "/invocations", "/metadata"} <= set(spec["paths"])
    content = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert set(content) == {"text/csv", "application/json"}
    assert client.get("/docs").status_code == 200
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {"bearerAuth": {"type": "http", "scheme": "bearer", "description": ANY}}
    operations = [op for path in spec["paths"].values() for op in path.values()]
    guarded = [op for op in operations if "security" in op]
    assert len(guarded) == len(operations) - 2  # all but GET and HEAD /ping
    schemas = spec["components"]["schemas"]
    assert {"InvocationsJSON", "InvocationsCSV", "Predictions", "Error"} <= set(schemas)
    responses = spec["paths"]["/invocations"]["post"]["responses"]
    assert responses["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


@pytest.mark.parametrize(
    ("estimator", "key"),
    [(LogisticRegression(), "label"), (LinearRegression(), "score")],
)
def test_other_estimators_answer_labels_or_scores(tmp_path: Path, estimator: Any, key: str) -> None:
    data = _data()
    estimator.fit(data, (data["a"] > 0.5).astype(int))
    save_model(estimator, tmp_path / "m", features=FEATURES)
    client = TestClient(create_app(tmp_path / "m"))

    answer = _post(client, f"{ROW}\n{ROW}\n").json()
    as_csv = _post(client, f"{ROW}\n", accept="text/csv").text

    assert list(answer["predictions"][0]) == [key] and len(answer["predictions"]) == 2
    assert as_csv.strip() == str(answer["predictions"][0][key])


# ----------------------------------------------------------------------------- mistakes

BAD_REQUESTS = [
    # (body, content type, status, words the error must contain)
    ("", "text/csv", 400, "body is empty"),
    ("a,b,c,d\n", "text/csv", 400, "no data rows"),
    ("a,b,c\n1,2,3\n", "text/csv", 400, "the header row lacks d"),
    ("a,b,c,d,e\n1,2,3,4,5\n", "text/csv", 400, "has unknown e"),
    ("a,b,c,c\n1,2,3,4\n", "text/csv", 400, "repeats c"),
    ("x,y,z,w\n1,2,3,4\n", "text/csv", 400, "line 1 looks like a header"),
    (f"{ROW}\n1,2,3\n", "text/csv", 400, "line 2 has 3 values, the model takes 4"),
    (f"{ROW}\n\n1,2,x,4\n", "text/csv", 400, "line 3, column 3 (c): 'x' is not a number"),
    ("d,c,b,a\n1,,3,4\n", "text/csv", 400, "line 2, column 2 (c): an empty value"),
    (f"{ROW}\n1,2,nan,4\n", "text/csv", 400, "line 2, column 3 (c): nan is not a finite"),
    ("b,a,c,d\n1,inf,3,4\n", "text/csv", 400, "line 2, column 2 (a): inf is not a finite"),
    (b"\xff\xfe1,2,3,4", "text/csv", 400, "not UTF-8"),
    ("1e308,1e308,1e308,1e308\n", "text/csv", 400, "out of range"),
    ("{", "application/json", 400, "not valid JSON"),
    ("3", "application/json", 400, "must be an object or a list"),
    ("{}", "application/json", 400, "needs exactly one of instances"),
    ('{"instances": [], "inputs": []}', "application/json", 400, "needs exactly one of"),
    ('{"rows": [[1,2,3,4]]}', "application/json", 400, "found rows"),
    ('{"instances": []}', "application/json", 400, "instances has no rows"),
    ('{"instances": 5}', "application/json", 400, "instances must be a list of rows"),
    ('{"instances": [[1,2,3]]}', "application/json", 400, "instances[0] has 3 values"),
    (
        '{"instances": [[1,2,3,4],[1,"2",3,4]]}',
        "application/json",
        400,
        'instances[1][1] (b): "2" is not a number',
    ),
    ('{"instances": [[1,2,null,4]]}', "application/json", 400, "instances[0][2] (c): null"),
    ('{"instances": [[true,true,true,true]]}', "application/json", 400, "true is not a number"),
    ('{"instances": [[1,2,NaN,4]]}', "application/json", 400, "instances[0][2] (c): nan"),
    ('{"instances": [[1,2,3,Infinity]]}', "application/json", 400, "(d): inf is not a finite"),
    ('{"instances": [[1,2,3,4], 5]}', "application/json", 400, "instances[1] is not a list"),
    ('{"instances": [{"a":1,"b":2,"c":3}]}', "application/json", 400, "instances[0] lacks d"),
    (
        '{"instances": [{"a":1,"b":2,"c":3,"d":4,"e":5}]}',
        "application/json",
        400,
        "instances[0] has unknown e",
    ),
    (
        '{"instances": [{"a":1,"b":2,"c":3,"d":4}, [1,2,3,4]]}',
        "application/json",
        400,
        "instances[1] is not an object",
    ),
    (
        '{"dataframe_split": {"columns": ["a","b","c","d"], "data": [[1,2,3]]}}',
        "application/json",
        400,
        "dataframe_split.data[0] has 3 values",
    ),
    ('{"dataframe_split": [[1,2,3,4]]}', "application/json", 400, "dataframe_split needs"),
    (
        '{"inputs": {"a": [1], "b": [2], "c": [3], "d": [4, 5]}}',
        "application/json",
        400,
        "all as long",
    ),
    (ROW, "text/plain", 415, "Content-Type 'text/plain' is not supported"),
    (ROW, "", 415, "no Content-Type"),
    # never a 500, nor a silent misreading
    ("[" * 100_000 + "]" * 100_000, "application/json", 400, "more than 64 levels deep"),
    ('{"instances": ' + "[" * 65 + "]" * 65 + "}", "application/json", 400, "64 levels"),
    ('{"instances": [[true,2,3,4]]}', "application/json", 400, "[0][0] (a): true is not"),
    ('{"instances": [{"features": [1,2,false,4]}]}', "application/json", 400, "false is not"),
    ('{"instances": [[1,2,3,1' + "0" * 400 + "]]}", "application/json", 400, "too large a"),
    ('{"instances": [[1,2,3,1' + "0" * 5000 + "]]}", "application/json", 400, "not valid JSON"),
    (
        '{"dataframe_split": {"columns": ["d","c","b","a"], "data": [{"a":1,"b":2,"c":3,"d":4}]}}',
        "application/json",
        400,
        "dataframe_split.data[0] is not a list of 4 numbers",
    ),
    ("1," + "9" * 200_000 + ",3,4\n", "text/csv", 400, "line 1 cannot be read as CSV"),
    (f'{ROW}\n"1,2', "text/csv", 400, "line 2"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), BAD_REQUESTS)
def test_client_mistakes_get_a_4xx_that_names_the_problem(
    client: TestClient, body: str | bytes, content_type: str, status: int, words: str
) -> None:
    response = _post(client, body, content_type)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"' + "k" * 100_000 + '": 1}', "application/json"),
        ('{"instances": [["' + "x" * 100_000 + '", 2, 3, 4]]}', "application/json"),
        ("x" * 100_000 + ",b,c,d\n1,2,3,4\n", "text/csv"),
        ("1," + "y" * 100_000 + ",3,4\n", "text/csv"),
    ],
)
def test_errors_quote_a_huge_value_briefly(
    client: TestClient, body: str, content_type: str
) -> None:
    response = _post(client, body, content_type)

    assert response.status_code == 400
    assert len(response.json()["error"]) < 400
    assert "characters)" in response.json()["error"]


def test_a_content_length_that_is_not_ascii_digits_is_a_400(client: TestClient) -> None:
    # "²".isdigit() is true but int("²") fails. httptools refuses such a header, other ASGI
    # servers may not, and httpx re-encodes it, so the app is called directly.
    messages: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "headers": [(b"content-type", b"text/csv"), (b"content-length", b"\xb2")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": ROW.encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(client.app(scope, receive, send))

    assert messages[0]["status"] == 400
    assert "Content-Length" in json.loads(messages[1]["body"])["error"]


def test_unsupported_accept_is_406(client: TestClient) -> None:
    response = _post(client, ROW, accept="application/xml")

    assert response.status_code == 406
    assert "application/xml" in response.json()["error"]


def test_body_over_the_limit_is_413_by_declared_length(client: TestClient) -> None:
    response = _post(client, b"1" * (MAX_BODY_BYTES + 1))

    assert response.status_code == 413
    assert "limit is 6291456 bytes" in response.json()["error"]


def test_body_over_the_limit_is_413_while_streaming(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(7):
            yield b"1" * (1024 * 1024)

    response = client.post("/invocations", content=chunks(), headers={"content-type": "text/csv"})

    assert response.status_code == 413


def test_unknown_route_and_method_answer_json(client: TestClient) -> None:
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/invocations").status_code == 405


def test_a_bug_is_a_500_with_json_not_a_crash(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Scorer, X: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Scorer, "score", broken)
    failing = TestClient(client.app, raise_server_exceptions=False)

    response = _post(failing, ROW)

    assert response.status_code == 500
    assert "internal error (RuntimeError)" in response.json()["error"]
    monkeypatch.undo()
    assert _post(failing, ROW).status_code == 200


# ----------------------------------------------------------------------------- token


def test_token_guards_every_route_but_ping(model_dir: Path) -> None:
    client = TestClient(create_app(model_dir, token=TOKEN))
    good = {"authorization": f"Bearer {TOKEN}"}

    assert client.get("/ping").status_code == 200
    for path in ("/metadata", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=good).status_code == 200
    missing = _post(client, ROW)
    wrong = _post(client, ROW, authorization="Bearer nope")
    basic = _post(client, ROW, authorization=f"Basic {TOKEN}")
    assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "required" in missing.json()["error"] and "wrong" in wrong.json()["error"]
    assert _post(client, ROW, authorization=f"bearer {TOKEN}").status_code == 200


def test_token_comes_from_the_environment(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    client = TestClient(create_app(model_dir))

    assert client.get("/metadata").status_code == 401
    assert client.get("/metadata", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("token", ["", "  ", " s3cret", "s3cret\n"])
def test_an_empty_or_padded_token_is_a_usage_error(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    with pytest.raises(UsageError, match=TOKEN_ENV):
        create_app(model_dir, token=token)
    with pytest.raises(UsageError, match=TOKEN_ENV):
        serve(model_dir, token=token, port=_free_port())
    monkeypatch.setenv(TOKEN_ENV, token)
    with pytest.raises(UsageError, match=TOKEN_ENV):
        create_app(model_dir)


@pytest.mark.e2e
def test_cli_refuses_an_empty_token_in_one_line(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = run_cli("serve", model_dir, "--token", "", "--port", str(_free_port()), cwd=tmp_path)
    monkeypatch.setenv(TOKEN_ENV, "")
    from_env = run_cli("serve", model_dir, "--port", str(_free_port()), cwd=tmp_path)

    for result in (given, from_env):
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert result.stderr.startswith("error: the bearer token") and "empty" in result.stderr


def test_bad_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        create_app(tmp_path / "absent")


def test_worker_app_comes_from_the_environment(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ENV, str(model_dir))
    assert TestClient(app_from_env()).get("/ping").status_code == 200

    # a worker that cannot load the model exits with uvicorn's start-up failure code
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exited:
        app_from_env()
    assert exited.value.code == 3
    monkeypatch.delenv(MODEL_ENV)
    with pytest.raises(SystemExit):
        app_from_env()


# ----------------------------------------------------------------------------- real server


@dataclass
class Server:
    """A `serve()` running in a subprocess, and where it listens and logs."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    model_dir: Path,
    log: Path,
    *,
    workers: int = 1,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start nbcd.serve.app.serve in a fresh interpreter and wait until /ping answers.

    ``env`` adds environment variables, such as the timeouts serve() reads from there.
    """
    port = _free_port()
    code = (
        "from pathlib import Path; from nbcd.serve.app import serve; "
        f"serve(Path({str(model_dir)!r}), port={port}, workers={workers}, token={token!r})"
    )
    settings = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    env = {**os.environ, **settings}
    env.pop(TOKEN_ENV, None)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=out, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /ping:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_real_server_answers_every_route(model_dir: Path, tmp_path: Path) -> None:
    with running_server(model_dir, tmp_path / "server.log", token=TOKEN) as server:
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            csv_answer = http.post(
                "/invocations", content=ROW, headers={"content-type": "text/csv"}
            )
            json_answer = http.post("/invocations", json={"instances": [[0.5, 5, 50, 500]]})
            as_csv = http.post(
                "/predict", content=ROW, headers={"content-type": "text/csv", "accept": "text/csv"}
            )
            metadata = http.get("/metadata")
            spec = http.get("/openapi.json")
            docs = http.get("/docs")
            bad = http.post("/invocations", content="1,2", headers={"content-type": "text/csv"})
            wrong_type = http.post("/invocations", content=ROW, headers={"content-type": "x/y"})
            wrong_accept = http.post(
                "/invocations", content=ROW, headers={"content-type": "text/csv", "accept": "a/b"}
            )
            too_big = http.post(
                "/invocations",
                content=b"1" * (MAX_BODY_BYTES + 1),
                headers={"content-type": "text/csv"},
            )
            streamed = http.post(
                "/invocations",
                content=iter([b"1" * (1024 * 1024)] * 7),
                headers={"content-type": "text/csv"},
            )
            still_fine = http.post("/invocations", json=[[0.5, 5, 50, 500]])
        unauthorised = httpx.post(f"{server.url}/invocations", content=ROW)
        ping = httpx.get(f"{server.url}/ping")

    assert csv_answer.status_code == 200 and json_answer.json() == csv_answer.json()
    assert as_csv.text.count("\n") == 1 and as_csv.text.startswith(
        str(csv_answer.json()["predictions"][0]["closest_cluster"])
    )
    assert metadata.json()["features"] == FEATURES
    assert "/invocations" in spec.json()["paths"] and docs.status_code == 200
    assert bad.status_code == 400 and "line 1 has 2 values" in bad.json()["error"]
    assert (wrong_type.status_code, wrong_accept.status_code) == (415, 406)
    assert (too_big.status_code, streamed.status_code) == (413, 413)
    assert still_fine.json() == csv_answer.json()
    assert unauthorised.status_code == 401 and ping.status_code == 200
    assert server.process.returncode == 0


def test_two_workers_finish_the_request_in_flight_on_sigterm_then_exit_0(
    model_dir: Path, tmp_path: Path
) -> None:
    rows = 20_000
    first, rest = f"{ROW}\n" * 10, f"{ROW}\n" * (rows - 10)
    sent_first, may_finish = threading.Event(), threading.Event()
    result: dict[str, httpx.Response] = {}

    def body() -> Iterator[bytes]:
        yield first.encode()
        sent_first.set()
        may_finish.wait(20)
        yield rest.encode()

    with running_server(model_dir, tmp_path / "server.log", workers=2) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            answers = [
                http.post("/invocations", content=ROW, headers={"content-type": "text/csv"})
                for _ in range(20)
            ]

        def call() -> None:
            result["response"] = httpx.post(
                f"{server.url}/invocations",
                content=body(),
                headers={"content-type": "text/csv"},
                timeout=60,
            )

        caller = threading.Thread(target=call)
        caller.start()
        assert sent_first.wait(20)
        time.sleep(1.0)  # let a worker read the request head: the request is now in flight
        server.process.send_signal(signal.SIGTERM)
        # the body's rest is held back until a worker is shutting down around the request
        deadline = time.monotonic() + 30
        while "Waiting for connections to close" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        may_finish.set()
        caller.join(60)
        exit_code = server.process.wait(30)

    assert [a.status_code for a in answers] == [200] * 20
    response = result["response"]
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == rows
    assert exit_code == 0
    assert "Received SIGTERM" in server.log.read_text()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _raw_request(body: str = ROW, **headers: str) -> bytes:
    fields = {"host": "localhost", "content-type": "text/csv", **headers}
    fields["content-length"] = str(len(body.encode()))
    head = "POST /invocations HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n" + body).encode()


def _read_response(sock: socket.socket) -> http.client.HTTPResponse:
    """The next response on a raw socket; raises if the server closed or reset instead."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response


def _wait_for_log(server: Server, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.02)


def test_sigterm_ends_the_server_even_while_a_client_stalls_mid_body(
    model_dir: Path, tmp_path: Path
) -> None:
    # the read timeout would answer the stalled body with a 408 long after the test ends: here
    # only the graceful timeout can stop the server
    env = {"NBCD_SERVE_GRACEFUL_TIMEOUT": "1", "NBCD_SERVE_READ_TIMEOUT": "600"}
    with (
        running_server(model_dir, tmp_path / "server.log", env=env) as server,
        socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock,
    ):
        sock.sendall(_raw_request())
        assert _read_response(sock).status == 200  # the connection is accepted and read
        sock.sendall(_raw_request(ROW * 10)[:-10])  # all but the last 10 bytes, then nothing
        time.sleep(0.5)  # let the server read the head: the request is now in flight
        server.process.send_signal(signal.SIGTERM)
        try:
            exit_code = server.process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail("the server still runs 60 s after SIGTERM, held by a stalled client")

    assert exit_code == 0
    assert "timeout graceful shutdown exceeded" in server.log.read_text()


def test_a_request_whose_head_spans_sigterm_is_answered_then_the_server_stops(
    model_dir: Path, tmp_path: Path
) -> None:
    with running_server(model_dir, tmp_path / "server.log") as server:
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
            sock.sendall(_raw_request())
            assert _read_response(sock).status == 200
            request = _raw_request()
            sock.sendall(request[:20])  # the next request has begun when the signal comes
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            _wait_for_log(server, "Shutting down")
            sock.sendall(request[20:])
            response = _read_response(sock)
        exit_code = server.process.wait(30)

    assert response.status == 200
    assert response.getheader("connection") == "close"
    assert exit_code == 0


def test_requests_queued_before_sigterm_are_all_answered(model_dir: Path, tmp_path: Path) -> None:
    """Requests that reach the machine before SIGTERM are answered, not reset.

    The server is frozen (SIGSTOP) while the requests are sent, so they all wait in the
    kernel: on connections the server keeps alive, and on new connections it has not yet
    accepted. It then gets SIGTERM and resumes.
    """
    with running_server(model_dir, tmp_path / "server.log") as server:
        port = _port(server)
        kept = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
        for sock in kept:
            sock.sendall(_raw_request())
            assert _read_response(sock).status == 200
        server.process.send_signal(signal.SIGSTOP)
        try:
            for sock in kept:
                sock.sendall(_raw_request())
            fresh = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
            for sock in fresh:
                sock.sendall(_raw_request())
            server.process.send_signal(signal.SIGTERM)
        finally:
            server.process.send_signal(signal.SIGCONT)
        outcomes = []
        for sock in kept + fresh:
            with sock:
                try:
                    outcomes.append(_read_response(sock).status)
                except (OSError, http.client.HTTPException) as exc:
                    outcomes.append(type(exc).__name__)
        exit_code = server.process.wait(30)

    assert outcomes == [200] * 16
    assert exit_code == 0


def test_serve_reports_a_taken_port_as_a_usage_error(model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"could not start on 127.0.0.1:{port}"):
            serve(model_dir, port=port)


def test_serve_refuses_bad_arguments_before_starting(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelError):
        serve(tmp_path / "absent", port=_free_port())
    with pytest.raises(ModelError):
        serve(tmp_path / "absent", port=_free_port(), workers=2)
    with pytest.raises(UsageError, match="workers must be at least 1"):
        serve(model_dir, workers=0)
