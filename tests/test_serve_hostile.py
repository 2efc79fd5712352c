"""Hostile and broken requests against a real `nbcd serve` process, over raw sockets.

Each case sends bytes no well-behaved client would, and checks three things: the status, a
one-line JSON error ``{"error": "..."}`` naming the line, column or field at fault where
there is one, and that the server still answers /ping afterwards. Raw sockets, because
httpx refuses to send most of these (bad lengths, giant or non-ASCII headers, stalls).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from nbcd.model import save_model
from tests.test_serve import FEATURES, ROW, TOKEN, Server, _data, running_server

AUTH = f"Bearer {TOKEN}"
# Short, so the stall cases end quickly; nothing here takes a second to send.
READ_TIMEOUT_S = 1
# How long a reply may take before the case counts as hung (it is no timing assert: a
# healthy server answers in milliseconds, or after READ_TIMEOUT_S for the stall cases).
HUNG_S = 30
# A server holds a few hundred MB (scikit-learn, the model); a 100 MB header must not add to it.
MAX_GROWTH_MB = 40


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    steps = [
        ("scale", MinMaxScaler()),
        ("pca", PCA(n_components=2)),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0)),
    ]
    directory = tmp_path_factory.mktemp("hostile") / "model"
    save_model(Pipeline(steps).fit(_data()), directory, features=FEATURES)
    return directory


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("hostile-log") / "server.log"
    env = {"NBCD_SERVE_READ_TIMEOUT": str(READ_TIMEOUT_S)}
    with running_server(model_dir, log, token=TOKEN, env=env) as running:
        yield running


@dataclass
class Reply:
    """What came back on a connection: a response, or how the connection ended without one."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    ended: str = ""  # "closed" or an exception's name when there was no response

    @property
    def error(self) -> str:
        """The message of a one-line JSON error, after checking that it is one."""
        assert self.headers.get("content-type") == "application/json", self
        document = json.loads(self.body)
        assert list(document) == ["error"], document
        message = document["error"]
        assert isinstance(message, str) and "\n" not in message and len(message) < 400, message
        return str(message)


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _read_reply(sock: socket.socket, method: str = "POST") -> Reply:
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        body = response.read()
    except http.client.RemoteDisconnected:
        return Reply(None, {}, b"", "closed")
    except (OSError, http.client.HTTPException) as exc:
        return Reply(None, {}, b"", type(exc).__name__)
    headers = {name.lower(): value for name, value in response.getheaders()}
    return Reply(response.status, headers, body)


def exchange(server: Server, *parts: bytes, method: str = "POST") -> Reply:
    """Send ``parts`` on a new connection (stopping if the server hangs up), read one reply."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=HUNG_S) as sock:
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:  # refused midway: the answer may already be there
                break
        return _read_reply(sock, method)


def request(
    body: bytes | str = b"",
    *,
    method: str = "POST",
    path: str = "/invocations",
    content_type: str | None = "text/csv",
    length: int | str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request, with the token unless ``headers`` says otherwise."""
    data = body.encode() if isinstance(body, str) else body
    fields = {"Host": "localhost", "Authorization": AUTH, "Connection": "close"}
    if content_type is not None:
        fields["Content-Type"] = content_type
    fields["Content-Length"] = str(len(data) if length is None else length)
    fields.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + data


def assert_alive(server: Server) -> None:
    ping = exchange(server, b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert ping.status == 200, ping
    assert server.process.poll() is None


def rss_mb(server: Server) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


# ----------------------------------------------------------------------------- bodies

BAD_BODIES = [
    # (id, body, content type, status, words the error must contain)
    ("csv-ragged", f"{ROW}\n1,2,3\n", "text/csv", 400, "line 2 has 3 values"),
    ("csv-letters", f"{ROW}\n1,2,x,4\n", "text/csv", 400, "line 2, column 3 (c): 'x'"),
    ("csv-empty-cell", "d,c,b,a\n1,,3,4\n", "text/csv", 400, "line 2, column 2 (c): an empty"),
    ("csv-nan", f"{ROW}\nnan,1,2,3\n", "text/csv", 400, "line 2, column 1 (a): nan is not"),
    ("csv-inf", "b,a,c,d\n1,-inf,3,4\n", "text/csv", 400, "line 2, column 2 (a): -inf"),
    ("csv-giant-cell", "1," + "9" * 200_000 + ",3,4\n", "text/csv", 400, "line 1 cannot be"),
    ("csv-open-quote", f'{ROW}\n"1,2,3,4\n', "text/csv", 400, "line 2"),
    ("csv-emoji", f"{ROW}\n1,\U0001f600,3,4\n", "text/csv", 400, "line 2, column 2 (b)"),
    ("csv-nul", f"{ROW}\n1,2,\x00,4\n", "text/csv", 400, "line 2, column 3 (c)"),
    ("csv-not-utf8", b"\xff\xfe1,2,3,4\n", "text/csv", 400, "not UTF-8 text (byte 0)"),
    ("csv-only-header", "a,b,c,d\n", "text/csv", 400, "no data rows"),
    ("json-nan", '{"instances": [[1, NaN, 3, 4]]}', "application/json", 400, "[0][1] (b): nan"),
    ("json-1e400", '{"inputs": [[1, 2, 1e400, 4]]}', "application/json", 400, "[0][2] (c): inf"),
    ("json-string", '{"instances": [[1, "2", 3, 4]]}', "application/json", 400, '(b): "2" is'),
    ("json-bool", '{"instances": [[1, 2, 3, true]]}', "application/json", 400, "(d): true is"),
    ("json-null", '[{"a": 1, "b": null, "c": 3, "d": 4}]', "application/json", 400, "(b): null"),
    ("json-deep", "[" * 100_000, "application/json", 400, "more than 64 levels deep"),
    ("json-deep-strings", '["[",' * 70 + "1" + "]" * 70, "application/json", 400, "64 levels"),
    ("json-huge-int", "[[1, 2, 3, 1" + "0" * 400 + "]]", "application/json", 400, "too large"),
    ("json-5000-digits", "[[1, 2, 3, 1" + "0" * 5000 + "]]", "application/json", 400, "not valid"),
    ("json-truncated", '{"instances": [[1, 2', "application/json", 400, "not valid JSON"),
    ("json-not-utf8", b'{"instances": [[1, 2, 3, \xff]]}', "application/json", 400, "not valid"),
    ("json-scalar", '"hello"', "application/json", 400, "must be an object or a list"),
    ("json-two-layouts", '{"instances": [], "inputs": []}', "application/json", 400, "exactly"),
    ("json-long-key", '{"' + "k" * 100_000 + '": 1}', "application/json", 400, "characters)"),
    (
        "json-wrong-shape",
        '{"instances": [[[1, 2, 3, 4]]]}',
        "application/json",
        400,
        "instances[0] has 1 values",
    ),
    (
        "json-split-dicts",
        '{"dataframe_split": {"data": [{"a": 1, "b": 2, "c": 3, "d": 4}]}}',
        "application/json",
        400,
        "dataframe_split.data[0] is not a list",
    ),
    ("empty", "", "text/csv", 400, "the request body is empty"),
    ("content-type-xml", "<rows/>", "application/xml", 415, "'application/xml' is not"),
    ("content-type-form", "a=1", "application/x-www-form-urlencoded", 415, "is not supported"),
    ("content-type-none", ROW, None, 415, "no Content-Type"),
    ("content-type-garbage", ROW, "\u00ff\u00fe/\u00e9", 415, "is not supported"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_body_is_a_4xx_naming_the_problem(
    server: Server, body: str | bytes, content_type: str | None, status: int, words: str
) -> None:
    reply = exchange(server, request(body, content_type=content_type))

    assert reply.status == status, reply
    assert words in reply.error
    assert_alive(server)


def test_true_and_false_among_numbers_are_not_read_as_1_and_0(server: Server) -> None:
    # NumPy would take [true, 2, 3, 4] as [1, 2, 3, 4]; the SageMaker layout too
    body = '{"instances": [{"features": [0.5, 5, false, 500]}]}'

    reply = exchange(server, request(body, content_type="application/json"))

    assert reply.status == 400
    assert "instances[0][2] (c): false is not a number" in reply.error
    assert_alive(server)


# ----------------------------------------------------------------------------- lengths


def test_a_huge_declared_length_is_413_before_any_body_is_sent(server: Server) -> None:
    reply = exchange(server, request(length=10**12))

    assert reply.status == 413
    assert "1000000000000 bytes" in reply.error
    assert_alive(server)


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "12, 12"])
def test_a_malformed_length_is_a_json_400(server: Server, length: str) -> None:
    reply = exchange(server, request(ROW, length=length))

    assert reply.status == 400
    assert "not valid HTTP/1.1" in reply.error
    assert_alive(server)


def test_a_malformed_chunked_body_is_a_json_400(server: Server) -> None:
    head = request(content_type="text/csv", headers={"Transfer-Encoding": "chunked"})
    head = head.replace(b"Content-Length: 0\r\n", b"")

    reply = exchange(server, head + b"zz\r\n0.5,5,50,500\r\n0\r\n\r\n")

    assert reply.status == 400
    assert "not valid HTTP/1.1" in reply.error
    assert_alive(server)


def test_a_garbage_request_line_is_a_json_400(server: Server) -> None:
    reply = exchange(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n")

    assert reply.status == 400
    assert "not valid HTTP/1.1" in reply.error
    assert_alive(server)


# ----------------------------------------------------------------------------- stalls


def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes(server: Server) -> None:
    body = f"{ROW}\n" * 10

    reply = exchange(server, request(body)[:-20])  # the last 20 bytes never come

    assert reply.status == 408
    assert reply.headers["connection"] == "close"
    assert f"nothing for {READ_TIMEOUT_S} s after" in reply.error
    assert f"of {len(body)} bytes" in reply.error
    assert_alive(server)


def test_a_head_that_stops_arriving_is_a_408(server: Server) -> None:
    reply = exchange(server, b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Ty")

    assert reply.status == 408
    assert "request head did not arrive" in reply.error
    assert_alive(server)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    reply = exchange(server)

    assert (reply.status, reply.ended) == (None, "closed")
    assert_alive(server)


# ----------------------------------------------------------------------------- heads


@pytest.mark.parametrize(
    "head",
    [
        request(ROW, headers={"X-Big": "a" * 70_000}),
        request(ROW, path="/invocations?" + "q" * 70_000),
        request(ROW, headers={f"X-{i}": "v" for i in range(12_000)}),
    ],
    ids=["one-big-header", "long-url", "many-headers"],
)
def test_a_head_over_64_kib_is_a_431(server: Server, head: bytes) -> None:
    reply = exchange(server, head)

    assert reply.status == 431
    assert "over 65536 bytes" in reply.error
    assert_alive(server)


def test_a_100_mb_header_is_refused_without_holding_the_memory(server: Server) -> None:
    before = rss_mb(server)
    chunk = b"a" * (1024 * 1024)
    start = b"GET /metadata HTTP/1.1\r\nHost: localhost\r\nX-Big: "

    reply = exchange(server, start, *([chunk] * 100))
    after = rss_mb(server)

    # the server answers 431 at 64 KiB and stops reading; a client still sending may see the
    # connection close before it reads the answer
    assert reply.status == 431 or reply.ended, reply
    if reply.status is not None:
        assert "over 65536 bytes" in reply.error
    assert after - before < MAX_GROWTH_MB, (before, after)
    assert_alive(server)


def test_non_ascii_bytes_in_a_header_name_are_a_json_400(server: Server) -> None:
    reply = exchange(server, request(ROW, headers={"X-\u00e9t\u00e9": "1"}))

    assert reply.status == 400
    assert "not valid HTTP/1.1" in reply.error
    assert_alive(server)


# ----------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    ("authorization", "words"),
    [
        (None, "a bearer token is required"),
        ("Bearer nope", "the bearer token is wrong"),
        (f"Bearer {TOKEN}x", "the bearer token is wrong"),
        (f"Basic {TOKEN}", "a bearer token is required"),
        ("Bearer \u00ff\u00fe\u00e9", "the bearer token is wrong"),
        ("Bearer " + "t" * 60_000, "the bearer token is wrong"),
    ],
    ids=["none", "wrong", "longer", "basic", "latin-1", "huge"],
)
def test_a_missing_or_bad_token_is_a_401(
    server: Server, authorization: str | None, words: str
) -> None:
    data = request(ROW, headers={} if authorization is None else {"Authorization": authorization})
    if authorization is None:
        data = data.replace(f"Authorization: {AUTH}\r\n".encode(), b"")

    reply = exchange(server, data)

    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert words in reply.error
    assert_alive(server)


# ----------------------------------------------------------------------------- methods


def test_head_ping_is_200_without_a_body(server: Server) -> None:
    reply = exchange(server, request(method="HEAD", path="/ping", content_type=None), method="HEAD")

    assert (reply.status, reply.body) == (200, b"")
    assert_alive(server)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT", "DELETE", "GET"])
def test_other_methods_on_invocations_are_a_json_405(server: Server, method: str) -> None:
    reply = exchange(server, request(ROW, method=method), method=method)

    assert reply.status == 405
    assert "POST" in reply.headers["allow"]
    if method != "HEAD":
        assert reply.error == "Method Not Allowed"
    assert_alive(server)


@pytest.mark.parametrize("path", ["/nowhere", "/../../etc/passwd", "/%00", "/ping/../metadata/x"])
def test_unknown_paths_are_a_json_404(server: Server, path: str) -> None:
    reply = exchange(server, request(method="GET", path=path, content_type=None), method="GET")

    assert reply.status == 404
    assert reply.error == "Not Found"
    assert_alive(server)


@pytest.mark.parametrize(
    "accept", ["text/csv;q=0", "application/json;q=0, text/*;q=0", "image/png"]
)
def test_an_accept_that_allows_neither_json_nor_csv_is_406(server: Server, accept: str) -> None:
    reply = exchange(server, request(ROW, headers={"Accept": accept}))

    assert reply.status == 406
    assert accept in reply.error
    assert_alive(server)


def test_keep_alive_after_a_client_error_still_serves(server: Server) -> None:
    """A 4xx does not poison the connection: the next request on it is answered."""
    keep = {"Connection": "keep-alive"}
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=HUNG_S) as sock:
        sock.sendall(request("1,2\n", headers=keep))
        first = _read_reply(sock)
        sock.sendall(request(ROW, headers=keep))
        second = _read_reply(sock)

    assert first.status == 400 and "line 1 has 2 values" in first.error
    assert second.status == 200
    assert json.loads(second.body)["predictions"][0]["closest_cluster"] in (0, 1, 2)
    assert_alive(server)


def test_the_server_survived_every_case(server: Server) -> None:
    with contextlib.suppress(FileNotFoundError):
        log = server.log.read_text()
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert_alive(server)
