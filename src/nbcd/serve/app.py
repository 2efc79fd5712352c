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
a 500 means a bug in nbcd. An optional bearer token guards every route but /ping. Parsing and
validating bodies is :mod:`nbcd.serve.payload`'s job; this module is the HTTP edge around it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nbcd.errors import NbcdError, UsageError
from nbcd.serve.payload import CSV_TYPE, JSON_TYPE, Invocations, RequestError
from nbcd.serve.predict import Scorer

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
# uvicorn's exit code for a worker that could not start; its supervisor then stops.
_STARTUP_FAILURE = 3

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


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
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


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
        "output": {"content_types": [JSON_TYPE, CSV_TYPE], "kind": scorer.kind},
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
        return Response(b'{"status":"ok"}', media_type=JSON_TYPE)

    @app.get("/metadata", summary="The model's features, metrics and provenance")
    async def get_metadata() -> Response:
        return Response(metadata_body, media_type=JSON_TYPE)

    docs: dict[str, Any] = {
        "summary": "Predict for rows of features (SageMaker /invocations)",
        "response_model": None,
        "responses": {
            200: {
                "model": Predictions,
                "content": {CSV_TYPE: {"schema": {"type": "string"}, "example": "3,0.41\n"}},
            },
            **{status: {"model": ErrorBody} for status in (400, 401, 406, 413, 415, 500)},
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    CSV_TYPE: {"schema": {"type": "string"}, "example": example_csv},
                    JSON_TYPE: {
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
    config = uvicorn.Config("nbcd.serve.app:app_from_env", factory=True, workers=workers, **options)
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
