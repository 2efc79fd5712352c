"""A SageMaker-compatible HTTP endpoint for a saved model.

The routes follow SageMaker's serving-container contract, so the same image runs locally, on
any container host or as a SageMaker endpoint:

``GET /ping`` (and ``HEAD /ping``)
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

A hostile or broken client meets limits at two layers. The app bounds a body: 6 MiB (413),
and one that stops arriving for ``read_timeout`` seconds is answered 408. uvicorn's httptools
protocol bounds neither the size of a request's head nor the time it takes, so
:class:`GuardedHttpToolsProtocol` adds both (431 past 64 KiB, 408 when it stalls) and, on
SIGTERM, answers the requests already sent before it closes a connection. Requests still
running ``graceful_timeout`` seconds after SIGTERM are cancelled, so the process always ends.
"""

from __future__ import annotations

import asyncio
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
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from nbcd.errors import NbcdError, UsageError
from nbcd.serve.openapi import document, invocations_docs, json_content, metadata_docs
from nbcd.serve.payload import CSV_TYPE, JSON_TYPE, Invocations, RequestError
from nbcd.serve.predict import Scorer
from nbcd.serve.protocol import GuardedHttpToolsProtocol, ServeConfig, Server, Supervisor
from nbcd.serve.settings import (
    GRACEFUL_TIMEOUT_ENV,
    GRACEFUL_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    MODEL_ENV,
    READ_TIMEOUT_ENV,
    READ_TIMEOUT_S,
    STARTUP_FAILURE,
    THREAD_BYTES,
    TOKEN_ENV,
)

__all__ = [
    "GRACEFUL_TIMEOUT_ENV",
    "GRACEFUL_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "MODEL_ENV",
    "READ_TIMEOUT_ENV",
    "READ_TIMEOUT_S",
    "TOKEN_ENV",
    "GuardedHttpToolsProtocol",
    "Invocations",
    "RequestError",
    "ServeConfig",
    "app_from_env",
    "create_app",
    "resolve_token",
    "serve",
]

log = logging.getLogger(__name__)


Number = TypeVar("Number", int, float)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": message}).encode()
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def resolve_token(token: str | None) -> str | None:
    """The bearer token: ``token``, else NBCD_SERVE_TOKEN; None serves without one.

    An empty token is refused rather than read as "no token": a secret that a deployment
    failed to fill in must not silently open the endpoint to everyone.
    """
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    if not token.strip():
        raise UsageError(
            f"the bearer token (--token or {TOKEN_ENV}) is empty, which would turn "
            "authentication off; set a secret, or unset both to serve without a token"
        )
    if token != token.strip():
        raise UsageError(
            f"the bearer token (--token or {TOKEN_ENV}) starts or ends with whitespace, which "
            "no client can send; remove it"
        )
    return token


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


def create_app(
    model_path: Path, *, token: str | None = None, read_timeout: float | None = None
) -> FastAPI:
    """A FastAPI app serving the model at ``model_path``; loads the model now.

    ``token`` (or the NBCD_SERVE_TOKEN environment variable) turns on bearer-token auth; an
    empty one is a UsageError. A body that stalls for ``read_timeout`` seconds (or
    NBCD_SERVE_READ_TIMEOUT, else 10) is answered 408.
    Raises :class:`~nbcd.errors.ModelError` if the model cannot be loaded.
    """
    token = resolve_token(token)
    read_timeout = _read_timeout(read_timeout)
    scorer = Scorer.load(Path(model_path))
    engine = Invocations(scorer)
    metadata = {
        **scorer.artifact.metadata,
        "output": {"content_types": [JSON_TYPE, CSV_TYPE], "kind": scorer.kind},
    }
    metadata_body = json.dumps(metadata, separators=(",", ":")).encode()

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
    document(app, engine, guarded=token is not None)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return _answer_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/ping", **_PING_DOCS)
    async def ping() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON_TYPE)

    # Load balancers and uptime checkers often probe with HEAD.
    @app.head("/ping", **_PING_HEAD_DOCS)
    async def ping_head() -> Response:
        return Response(media_type=JSON_TYPE)

    @app.get("/metadata", **metadata_docs())
    async def get_metadata() -> Response:
        return Response(metadata_body, media_type=JSON_TYPE)

    async def invocations(request: Request) -> Response:
        body = await _read_body(request, read_timeout)
        headers = request.headers
        args = (body, headers.get("content-type"), headers.get("accept"))
        try:
            if len(body) > THREAD_BYTES:
                answer = await run_in_threadpool(engine, *args)
            else:
                answer = engine(*args)
        except RequestError as exc:
            return _answer_error(exc)
        return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

    docs = invocations_docs()
    app.post("/invocations", **docs)(invocations)
    app.post("/predict", **{**docs, "summary": "Alias of /invocations"})(invocations)
    return app


def _answer_error(exc: RequestError) -> Response:
    # After a 408 the rest of the body may still come; closing keeps it from being read as the
    # next request.
    headers = {"connection": "close"} if exc.status == 408 else None
    return _error(exc.status, exc.message, headers)


async def _read_body(request: Request, read_timeout: float) -> bytes:
    """The body; a 413 beyond MAX_BODY_BYTES, a 408 if it stalls for ``read_timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        # isdigit alone would take "²", which int() refuses
        if not (declared.isascii() and declared.isdigit()):
            raise RequestError(400, f"Content-Length {declared[:40]!r} is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, _too_large(int(declared)))
    chunks: list[bytes] = []
    size = 0
    stall = _StallTimer(read_timeout)
    try:
        # chunked uploads declare no length, so the limit is also enforced as bytes arrive
        async for chunk in request.stream():
            stall.progress()
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RequestError(413, _too_large(size, streamed=True))
            chunks.append(chunk)
    except asyncio.CancelledError:
        if not stall.expired:
            raise
        stall.uncancel()
        of = f" of {declared}" if declared is not None else ""
        raise RequestError(
            408,
            f"the body stopped arriving: nothing for {read_timeout:g} s after {size}{of} bytes; "
            "send the whole body without pausing",
        ) from None
    except ClientDisconnect:
        # nobody reads this answer, but it keeps a hang-up out of the error log
        raise RequestError(400, "the client closed the connection during the body") from None
    finally:
        stall.close()
    return b"".join(chunks)


class _StallTimer:
    """Cancels the current task once ``seconds`` pass without progress.

    One timer per request that re-arms itself only when it fires, so a chunk costs a clock
    read; asyncio.wait_for around each read would cost a task per chunk (~12 µs each).
    """

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.seconds = seconds
        self.expired = False
        self.last = self.loop.time()
        self.timer = self.loop.call_at(self.last + seconds, self._check)

    def progress(self) -> None:
        self.last = self.loop.time()

    def close(self) -> None:
        self.timer.cancel()

    def uncancel(self) -> None:
        """Take back the cancellation once it is handled (Python 3.11+ counts them)."""
        uncancel = getattr(self.task, "uncancel", None)
        if uncancel is not None:
            uncancel()

    def _check(self) -> None:
        deadline = self.last + self.seconds
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._check)
        elif self.task is not None:
            self.expired = True
            self.task.cancel()


def _too_large(size: int, *, streamed: bool = False) -> str:
    amount = f"more than {MAX_BODY_BYTES}" if streamed else str(size)
    return (
        f"the body is {amount} bytes; the limit is {MAX_BODY_BYTES} bytes (6 MiB): "
        "split the rows over several requests, or score a file with `nbcd predict`"
    )


# ----------------------------------------------------------------------------- OpenAPI


_PING_DOCS: dict[str, Any] = {
    "summary": "Health check: 200 once the model is loaded",
    "response_model": None,
    "responses": {
        200: {
            "description": "The model is loaded",
            **json_content(
                {
                    "type": "object",
                    "properties": {"status": {"type": "string", "enum": ["ok"]}},
                    "required": ["status"],
                }
            ),
        }
    },
}
_PING_HEAD_DOCS: dict[str, Any] = {
    "summary": "Health check without a body",
    "response_model": None,
    "response_class": Response,  # no body, so no content type to document
    "responses": {200: {"description": "The model is loaded (no body)"}},
}


# ----------------------------------------------------------------------------- protocol


# ----------------------------------------------------------------------------- running


def app_from_env() -> FastAPI:
    """The app for uvicorn workers, which import it by name: settings come from the environment.

    A worker that cannot load the model exits with uvicorn's start-up failure code (3), which
    stops the whole server instead of having the supervisor restart the worker forever.
    """
    model = os.environ.get(MODEL_ENV)
    try:
        if not model:
            raise UsageError(f"{MODEL_ENV} is not set: it names the model directory to serve")
        return create_app(Path(model), read_timeout=_read_timeout(None))
    except NbcdError as exc:
        logging.getLogger("uvicorn.error").error("%s: %s", type(exc).__name__, exc)
        sys.exit(STARTUP_FAILURE)


def _read_timeout(seconds: float | None) -> float:
    """``seconds``, else NBCD_SERVE_READ_TIMEOUT, else READ_TIMEOUT_S; UsageError unless > 0."""
    if seconds is None:
        seconds = _from_env(READ_TIMEOUT_ENV, float) or READ_TIMEOUT_S
    if not 0 < seconds < float("inf"):  # NaN fails too
        raise UsageError(f"the read timeout must be a positive number of seconds, not {seconds}")
    return seconds


def _graceful_timeout(seconds: int | None) -> int:
    """``seconds``, else NBCD_SERVE_GRACEFUL_TIMEOUT, else GRACEFUL_TIMEOUT_S; at least 1."""
    if seconds is None:
        seconds = _from_env(GRACEFUL_TIMEOUT_ENV, int) or GRACEFUL_TIMEOUT_S
    if seconds < 1:
        raise UsageError(f"the graceful timeout must be at least 1 second, not {seconds}")
    return seconds


def _from_env(name: str, kind: Callable[[str], Number]) -> Number | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise UsageError(f"{name}={text!r} is not a {what} of seconds") from None


def serve(
    model_path: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    token: str | None = None,
    *,
    access_log: bool = True,
    read_timeout: float | None = None,
    graceful_timeout: int | None = None,
) -> None:
    """Serve the model with uvicorn until SIGTERM or SIGINT, then finish requests in flight.

    Requests already sent are answered; those still running ``graceful_timeout`` seconds
    after the signal are cancelled. A head or body that stalls for ``read_timeout`` seconds
    is answered 408. Both default to their environment variables (NBCD_SERVE_READ_TIMEOUT,
    NBCD_SERVE_GRACEFUL_TIMEOUT), else 10 s and 5 s. Returns normally after a stop.

    Raises ModelError for a model that cannot be loaded and UsageError for a bad setting (an
    empty token, for one) or if the server cannot start (for example, the port is taken).
    """
    if workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers}")
    token = resolve_token(token)
    read_timeout = _read_timeout(read_timeout)
    graceful_timeout = _graceful_timeout(graceful_timeout)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "server_header": False,
        "log_level": "info",
        "read_timeout": read_timeout,
        "timeout_graceful_shutdown": graceful_timeout,
    }
    failed = UsageError(f"the server could not start on {host}:{port}; see the log above")
    if workers == 1:
        app = create_app(Path(model_path), token=token, read_timeout=read_timeout)
        config = ServeConfig(app, **options)
        server = Server(config)
        with _stop_quietly():
            try:
                server.run()
            except SystemExit:  # uvicorn exits when it cannot start, having logged why
                raise failed from None
        if not server.started:
            raise failed
        return
    # Load once here so a bad model fails now with one line, not once per worker.
    Scorer.load(Path(model_path))
    os.environ[MODEL_ENV] = str(Path(model_path).resolve())
    os.environ[READ_TIMEOUT_ENV] = repr(read_timeout)
    if token:
        os.environ[TOKEN_ENV] = token
    # What uvicorn.run does for workers > 1, keeping the supervisor to ask how it ended.
    config = ServeConfig("nbcd.serve.app:app_from_env", factory=True, workers=workers, **options)
    with _stop_quietly():  # the supervisor replaces the signal handlers; put them back after
        try:
            supervisor = Supervisor(config, sockets=[config.bind_socket()])
        except SystemExit:
            raise failed from None
        supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
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
