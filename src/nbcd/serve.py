"""A SageMaker-compatible HTTP endpoint for a saved model.

The routes follow SageMaker's serving-container contract, so the same image runs locally, on
any container host or as a SageMaker endpoint:

``GET /ping``
    200 once the model is loaded (the app is only built around a loaded model).
``POST /invocations`` (alias ``/predict``)
    ``text/csv`` rows of features, with or without a header row, or ``application/json``:
    ``{"instances": [...]}``, a bare list, or MLflow's ``dataframe_split``,
    ``dataframe_records`` and ``inputs``. Answers as SageMaker's k-means does,
    ``{"predictions": [{"closest_cluster", "distance_to_cluster", "projection"}]}``, or one
    CSV row per input with ``Accept: text/csv``.
``GET /metadata``
    the model's features, metrics and the rest of its model.json.

Every client mistake is a 4xx answer ``{"error": "..."}`` naming the row and column at fault;
a 500 means a bug in nbcd. An optional bearer token guards every route but /ping.
"""

from __future__ import annotations

import contextlib
import csv
import hmac
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nbcd.errors import NbcdError, UsageError
from nbcd.predict import Array, Scorer, Scores, finite_rows

__all__ = [
    "MAX_BODY_BYTES",
    "MODEL_ENV",
    "TOKEN_ENV",
    "Invocations",
    "RequestError",
    "app_from_env",
    "create_app",
    "serve",
]

log = logging.getLogger(__name__)

# SageMaker's limit on an invocation's payload.
MAX_BODY_BYTES = 6 * 1024 * 1024
TOKEN_ENV = "NBCD_SERVE_TOKEN"
# Where app_from_env finds the model: uvicorn workers import the app by name, so the
# settings travel through the environment.
MODEL_ENV = "NBCD_SERVE_MODEL"
# Bodies above this are parsed and scored on a worker thread, so /ping keeps answering.
_THREAD_BYTES = 64 * 1024
_CSV, _JSON = "text/csv", "application/json"
_JSON_KEYS = ("instances", "inputs", "dataframe_split", "dataframe_records")
# uvicorn's exit code for a worker that could not start; its supervisor then stops.
_STARTUP_FAILURE = 3

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Answer:
    """A response body ready to send."""

    status: int
    media_type: str
    body: bytes


class Invocations:
    """The endpoint's engine: request bytes in, response bytes out, no HTTP framework."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.features = scorer.features
        self._feature_set = frozenset(self.features)

    def __call__(self, body: bytes, content_type: str | None, accept: str | None) -> Answer:
        """Validate, score and format one request; raises RequestError for client mistakes."""
        answer_as = response_type(accept)
        given = request_type(content_type)
        if not body:
            raise RequestError(400, f"the request body is empty; {self._expected()}")
        X = self.parse_csv(body) if given == _CSV else self.parse_json(body)
        scores = self.scorer.score(X)
        _check_output(scores)
        if answer_as == _CSV:
            return Answer(200, _CSV, _csv_body(scores))
        return Answer(200, _JSON, _json_body(scores))

    # ------------------------------------------------------------------ CSV

    def parse_csv(self, body: bytes) -> Array:
        """Rows of feature values, the first row optionally a header naming the features."""
        text = _decode(body)
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        header: list[str] | None = None
        if rows and any(cell.strip() in self._feature_set for cell in rows[0]):
            header = [cell.strip() for cell in rows.pop(0)]
            self._check_names(header, "the header row")
        elif rows and any(c.strip() for c in rows[0]) and not any(map(_is_number, rows[0])):
            raise RequestError(
                400,
                f"line 1 looks like a header but names none of the model's features "
                f"({_names(rows[0])}); {self._expected()}",
            )
        if not rows:
            raise RequestError(400, f"the CSV body has no data rows; {self._expected()}")
        width = len(self.features)
        try:
            if any(len(row) != width for row in rows):
                raise ValueError
            X = np.array(rows, dtype=np.float64)
        except ValueError:
            raise self._csv_problem(text, header) from None
        if header is not None:
            X = X[:, [header.index(name) for name in self.features]]
        self._check_finite(X, lambda i, j: self._csv_cell(text, header, i, j))
        return X

    def _csv_problem(self, text: str, header: list[str] | None) -> RequestError:
        """The first ragged row or non-number, found slowly once the fast parse failed."""
        names = header or self.features
        for line, row in _csv_lines(text, skip_header=header is not None):
            if len(row) != len(self.features):
                return RequestError(
                    400,
                    f"line {line} has {len(row)} values, the model takes {len(self.features)} "
                    f"({_names(self.features)})",
                )
            for column, cell in enumerate(row, start=1):
                if not _is_number(cell):
                    what = "an empty value" if not cell.strip() else f"{cell!r} is not a number"
                    return RequestError(
                        400, f"line {line}, column {column} ({names[column - 1]}): {what}"
                    )
        return RequestError(400, "the CSV body could not be read as numbers")

    def _csv_cell(self, text: str, header: list[str] | None, row: int, feature: int) -> str:
        """Where a cell of the parsed matrix sits in the CSV text."""
        line = [n for n, _ in _csv_lines(text, skip_header=header is not None)][row]
        column = header.index(self.features[feature]) if header else feature
        return f"line {line}, column {column + 1} ({self.features[feature]})"

    # ------------------------------------------------------------------ JSON

    def parse_json(self, body: bytes) -> Array:
        """Rows from one of the JSON layouts SageMaker and MLflow clients send."""
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None
        if isinstance(document, list):
            return self._rows(document, "body")
        if not isinstance(document, dict):
            raise RequestError(
                400, f"the JSON body must be an object or a list; {self._expected()}"
            )
        keys = [key for key in _JSON_KEYS if key in document]
        if len(keys) != 1:
            found = f"found {_names(list(document))}" if document else "found an empty object"
            raise RequestError(
                400, f"the JSON body needs exactly one of {', '.join(_JSON_KEYS)}; {found}"
            )
        key = keys[0]
        value = document[key]
        if key == "dataframe_split":
            return self._split(value)
        if key in ("instances", "inputs") and isinstance(value, dict):
            return self._columns(value, key)
        return self._rows(value, key)

    def _split(self, value: Any) -> Array:
        """MLflow's pandas ``split`` orientation: {"columns": [...], "data": [[...]]}."""
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise RequestError(400, 'dataframe_split needs {"columns": [...], "data": [[...]]}')
        columns = value.get("columns")
        if columns is None:
            return self._rows(value["data"], "dataframe_split.data")
        if not isinstance(columns, list):
            raise RequestError(400, "dataframe_split.columns must be a list of feature names")
        self._check_names([str(c) for c in columns], "dataframe_split.columns")
        X = self._rows(value["data"], "dataframe_split.data", order=[str(c) for c in columns])
        return X

    def _columns(self, value: dict[str, Any], where: str) -> Array:
        """Column-oriented input: {"feature": [values...], ...}."""
        self._check_names(list(value), where)
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if -1 in lengths or len(lengths) != 1:
            raise RequestError(400, f"{where}: every feature needs a list of values, all as long")
        rows = [list(row) for row in zip(*(value[name] for name in self.features), strict=True)]
        return self._rows(rows, where)

    def _rows(self, rows: Any, where: str, order: list[str] | None = None) -> Array:
        """A list of rows (lists in feature order, or objects keyed by feature) as a matrix."""
        if not isinstance(rows, list):
            raise RequestError(400, f"{where} must be a list of rows; {self._expected()}")
        if not rows:
            raise RequestError(400, f"{where} has no rows; {self._expected()}")
        if isinstance(rows[0], dict):
            rows = self._keyed_rows(rows, where)
        names = order or self.features
        X = _number_matrix(rows)
        if X is None or X.shape[1] != len(names):
            raise self._json_problem(rows, where, names)
        if order is not None:
            X = X[:, [order.index(name) for name in self.features]]
        self._check_finite(
            X, lambda i, j: f"{where}[{i}][{names.index(self.features[j])}] ({self.features[j]})"
        )
        return X

    def _keyed_rows(self, rows: list[Any], where: str) -> list[Any]:
        """Objects to lists in feature order; SageMaker's {"features": [...]} is a list."""
        out: list[Any] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(400, f"{where}[{i}] is not an object like the rows before it")
            if "features" in row and len(row) == 1 and "features" not in self._feature_set:
                out.append(row["features"])
                continue
            self._check_names(list(row), f"{where}[{i}]")
            out.append([row[name] for name in self.features])
        return out

    def _json_problem(self, rows: list[Any], where: str, names: list[str]) -> RequestError:
        """The first malformed row or value, found slowly once the fast conversion failed."""
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                return RequestError(400, f"{where}[{i}] is not a list of {len(names)} numbers")
            if len(row) != len(names):
                return RequestError(
                    400,
                    f"{where}[{i}] has {len(row)} values, the model takes {len(names)} "
                    f"({_names(names)})",
                )
            for j, value in enumerate(row):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    return RequestError(
                        400, f"{where}[{i}][{j}] ({names[j]}): {json.dumps(value)} is not a number"
                    )
        return RequestError(400, f"{where} could not be read as numbers")

    # ------------------------------------------------------------------ shared

    def _check_names(self, names: list[str], where: str) -> None:
        """Names must be the model's features, each once, nothing else."""
        missing = [name for name in self.features if name not in names]
        unknown = [name for name in names if name not in self._feature_set]
        repeated = sorted({name for name in names if names.count(name) > 1})
        problems = []
        if missing:
            problems.append(f"lacks {_names(missing)}")
        if unknown:
            problems.append(f"has unknown {_names(unknown)}")
        if repeated:
            problems.append(f"repeats {_names(repeated)}")
        if problems:
            raise RequestError(
                400, f"{where} {' and '.join(problems)}; the model takes {_names(self.features)}"
            )

    def _check_finite(self, X: Array, where: Callable[[int, int], str]) -> None:
        """NaN and infinity are refused: the model would answer nonsense for them."""
        if not np.isfinite(X).all():
            i, j = (int(k) for k in np.argwhere(~np.isfinite(X))[0])
            raise RequestError(400, f"{where(i, j)}: {X[i, j]} is not a finite number")

    def _expected(self) -> str:
        return (
            f"send rows of the model's {len(self.features)} features ({_names(self.features)}) "
            "as text/csv or application/json"
        )


def request_type(content_type: str | None) -> str:
    """``text/csv`` or ``application/json`` from a Content-Type header, else a 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in (_CSV, _JSON):
        return media
    said = f"Content-Type {media!r}" if media else "no Content-Type"
    raise RequestError(415, f"{said} is not supported; send text/csv or application/json")


def response_type(accept: str | None) -> str:
    """The first of JSON or CSV an Accept header allows (JSON when it allows anything), else 406."""
    if not accept:
        return _JSON
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in (_JSON, "application/*", "*/*"):
            return _JSON
        if media in (_CSV, "text/*"):
            return _CSV
    raise RequestError(
        406, f"cannot answer as {accept!r}; accept application/json (the default) or text/csv"
    )


def _number_matrix(rows: list[Any]) -> Array | None:
    """A float64 matrix if every row is a list of JSON numbers of one length, else None."""
    try:
        X = np.array(rows)
    except (ValueError, TypeError):  # ragged rows
        return None
    # Strings, nulls and booleans give another dtype; they are reported by _json_problem.
    if X.ndim != 2 or X.dtype.kind not in "iuf":
        return None
    return X.astype(np.float64, copy=False)


def _check_output(scores: Scores) -> None:
    """Huge inputs can overflow to infinity inside the model; JSON has no way to say that."""
    finite = finite_rows(scores)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise RequestError(
            400, f"row {row + 1}: values out of range (the model's output is not finite)"
        )


def _json_body(scores: Scores) -> bytes:
    """SageMaker k-means' JSON answer, or labels/scores for other estimators."""
    labels = scores.labels.tolist()
    if scores.kind == "cluster":
        assert scores.distances is not None
        distances = scores.distances.tolist()
        if scores.projection is not None:
            predictions: list[dict[str, Any]] = [
                {"closest_cluster": c, "distance_to_cluster": d, "projection": p}
                for c, d, p in zip(labels, distances, scores.projection.tolist(), strict=True)
            ]
        else:
            predictions = [
                {"closest_cluster": c, "distance_to_cluster": d}
                for c, d in zip(labels, distances, strict=True)
            ]
    else:
        predictions = [{scores.kind: value} for value in labels]
    return json.dumps({"predictions": predictions}, separators=(",", ":")).encode()


def _csv_body(scores: Scores) -> bytes:
    """One row per input: ``cluster,distance``, or the label or score(s)."""
    if scores.kind == "cluster":
        assert scores.distances is not None
        pairs = zip(scores.labels.tolist(), scores.distances.tolist(), strict=True)
        return "".join(f"{c},{d!r}\n" for c, d in pairs).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for value in scores.labels.tolist():
        writer.writerow(value if isinstance(value, list) else [value])
    return out.getvalue().encode()


def _decode(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the CSV body is not UTF-8 text (byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def _csv_lines(text: str, *, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """Non-empty CSV rows with the line number each starts on."""
    reader = csv.reader(io.StringIO(text))
    line = 1
    first = True
    for row in reader:
        start, line = line, reader.line_num + 1
        if not row:
            continue
        if first and skip_header:
            first = False
            continue
        first = False
        yield start, row


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _names(names: list[Any], limit: int = 6) -> str:
    """A short, readable list of names for an error message."""
    shown = ", ".join(str(name) for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# ---------------------------------------------------------------------------- HTTP edge


class ErrorBody(BaseModel):
    """What every 4xx and 5xx answer carries."""

    error: str


class Prediction(BaseModel):
    """One prediction of a k-means model (other estimators answer ``label`` or ``score``)."""

    closest_cluster: int
    distance_to_cluster: float
    projection: list[float] | None = None


class Predictions(BaseModel):
    """The JSON answer of /invocations."""

    predictions: list[Prediction]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": message}).encode()
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


class BearerAuth:
    """Refuse every request but /ping without ``Authorization: Bearer <token>``.

    A plain ASGI middleware: cheaper per request than a dependency or BaseHTTPMiddleware.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope["path"] == "/ping":
            await self.app(scope, receive, send)
            return
        supplied = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, supplied = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    supplied = b""
                break
        # constant-time, so response timing does not reveal how much of a guess was right
        if hmac.compare_digest(supplied.strip(), self.token):
            await self.app(scope, receive, send)
            return
        reason = "a bearer token is required" if not supplied else "the bearer token is wrong"
        response = _error(401, reason, {"WWW-Authenticate": 'Bearer realm="nbcd"'})
        await response(scope, receive, send)


def create_app(model_path: Path, *, token: str | None = None) -> FastAPI:
    """A FastAPI app serving the model at ``model_path``; loads the model now.

    ``token`` (or the NBCD_SERVE_TOKEN environment variable) turns on bearer-token auth.
    Raises :class:`~nbcd.errors.ModelError` if the model cannot be loaded.
    """
    scorer = Scorer.load(Path(model_path))
    engine = Invocations(scorer)
    token = token or os.environ.get(TOKEN_ENV) or None
    metadata = {
        **scorer.artifact.metadata,
        "output": {"content_types": [_JSON, _CSV], "kind": scorer.kind},
    }
    metadata_body = json.dumps(metadata, separators=(",", ":")).encode()
    example_csv = ",".join(engine.features) + "\n" + ",".join("0" for _ in engine.features)

    estimator = scorer.artifact.metadata.get("estimator", {}).get("class", "a model")
    app = FastAPI(
        title="nbcd model server",
        description=(
            f"Predictions from {estimator} on {len(engine.features)} features: "
            f"{', '.join(engine.features)}."
        ),
        version=str(scorer.artifact.metadata.get("nbcd_model_format", "")),
    )
    if token:
        app.add_middleware(BearerAuth, token=token)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/ping", summary="Health check: 200 once the model is loaded")
    async def ping() -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    @app.get("/metadata", summary="The model's features, metrics and provenance")
    async def get_metadata() -> Response:
        return Response(metadata_body, media_type=_JSON)

    docs: dict[str, Any] = {
        "summary": "Predict for rows of features (SageMaker /invocations)",
        "response_model": None,
        "responses": {
            200: {
                "model": Predictions,
                "content": {_CSV: {"schema": {"type": "string"}, "example": "3,0.41\n"}},
            },
            **{status: {"model": ErrorBody} for status in (400, 401, 406, 413, 415, 500)},
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    _CSV: {"schema": {"type": "string"}, "example": example_csv},
                    _JSON: {
                        "schema": {"type": "object"},
                        "example": {"instances": [[0 for _ in engine.features]]},
                    },
                },
            }
        },
    }

    async def invocations(request: Request) -> Response:
        body = await _read_body(request)
        headers = request.headers
        args = (body, headers.get("content-type"), headers.get("accept"))
        try:
            if len(body) > _THREAD_BYTES:
                answer = await run_in_threadpool(engine, *args)
            else:
                answer = engine(*args)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

    app.post("/invocations", **docs)(invocations)
    app.post("/predict", **{**docs, "summary": "Alias of /invocations"})(invocations)
    return app


async def _read_body(request: Request) -> bytes:
    """The body, refused with a 413 beyond MAX_BODY_BYTES by its declared or streamed size."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, _too_large(int(declared)))
    chunks: list[bytes] = []
    size = 0
    # chunked uploads declare no length, so the limit is also enforced as bytes arrive
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, _too_large(size, streamed=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, *, streamed: bool = False) -> str:
    amount = f"more than {MAX_BODY_BYTES}" if streamed else str(size)
    return (
        f"the body is {amount} bytes; the limit is {MAX_BODY_BYTES} bytes (6 MiB): "
        "split the rows over several requests, or score a file with `nbcd predict`"
    )


def app_from_env() -> FastAPI:
    """The app for uvicorn workers, which import it by name: settings come from the environment.

    A worker that cannot load the model exits with uvicorn's start-up failure code (3), which
    stops the whole server instead of having the supervisor restart the worker forever.
    """
    model = os.environ.get(MODEL_ENV)
    try:
        if not model:
            raise UsageError(f"{MODEL_ENV} is not set: it names the model directory to serve")
        return create_app(Path(model), token=os.environ.get(TOKEN_ENV) or None)
    except NbcdError as exc:
        logging.getLogger("uvicorn.error").error("%s: %s", type(exc).__name__, exc)
        sys.exit(_STARTUP_FAILURE)


def serve(
    model_path: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    token: str | None = None,
    *,
    access_log: bool = True,
) -> None:
    """Serve the model with uvicorn until SIGTERM or SIGINT, then finish requests in flight.

    Returns normally after a graceful stop. Raises ModelError for a model that cannot be
    loaded and UsageError if the server cannot start (for example, the port is taken).
    """
    import uvicorn  # deferred: only the server needs it
    from uvicorn.supervisors import Multiprocess

    if workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers}")
    token = token or os.environ.get(TOKEN_ENV) or None
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "server_header": False,
        "log_level": "info",
    }
    failed = UsageError(f"the server could not start on {host}:{port}; see the log above")
    if workers == 1:
        with _stop_quietly():
            try:
                uvicorn.run(create_app(Path(model_path), token=token), **options)
            except SystemExit:  # uvicorn exits when it cannot start, having logged why
                raise failed from None
        return
    # Load once here so a bad model fails now with one line, not once per worker.
    Scorer.load(Path(model_path))
    os.environ[MODEL_ENV] = str(Path(model_path).resolve())
    if token:
        os.environ[TOKEN_ENV] = token
    # What uvicorn.run does for workers > 1, keeping the supervisor to ask how it ended.
    config = uvicorn.Config("nbcd.serve:app_from_env", factory=True, workers=workers, **options)
    with _stop_quietly():  # the supervisor replaces the signal handlers; put them back after
        try:
            supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        except SystemExit:
            raise failed from None
        supervisor.run()
    if any(process.exitcode == _STARTUP_FAILURE for process in supervisor.processes):
        raise failed


@contextlib.contextmanager
def _stop_quietly() -> Iterator[None]:
    """Let uvicorn's graceful stop end in a normal return, and restore the signal handlers.

    uvicorn re-raises the signal that stopped it once requests are done; with the default
    handlers that kills the process (SIGTERM) or raises KeyboardInterrupt (SIGINT). A
    container stopped on purpose should exit 0, so those re-raised signals are absorbed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda number, frame: None) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
