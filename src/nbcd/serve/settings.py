"""The server's limits, timeouts and environment variables, in one place."""

from __future__ import annotations

__all__ = [
    "ACCEPT_S",
    "BEARER",
    "DRAIN_S",
    "GRACEFUL_TIMEOUT_ENV",
    "GRACEFUL_TIMEOUT_S",
    "LINGER_S",
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "MODEL_ENV",
    "READ_TIMEOUT_ENV",
    "READ_TIMEOUT_S",
    "STARTUP_FAILURE",
    "THREAD_BYTES",
    "TOKEN_ENV",
]


# SageMaker's limit on an invocation's payload.
MAX_BODY_BYTES = 6 * 1024 * 1024


# A request's line and headers; browsers send a few KiB, nginx's default limit is 32 KiB.
MAX_HEAD_BYTES = 64 * 1024


# How long a request's head may take to arrive, and how long its body may stall between reads.
READ_TIMEOUT_S = 10.0


# How long requests in flight may still run after SIGTERM; below Docker's 10 s before SIGKILL.
GRACEFUL_TIMEOUT_S = 5


TOKEN_ENV = "NBCD_SERVE_TOKEN"


READ_TIMEOUT_ENV = "NBCD_SERVE_READ_TIMEOUT"


GRACEFUL_TIMEOUT_ENV = "NBCD_SERVE_GRACEFUL_TIMEOUT"


# Where app_from_env finds the model: uvicorn workers import the app by name, so the
# settings travel through the environment.
MODEL_ENV = "NBCD_SERVE_MODEL"


# Bodies above this are parsed and scored on a worker thread, so /ping keeps answering.
THREAD_BYTES = 64 * 1024


# uvicorn's exit code for a worker that could not start; its supervisor then stops.
STARTUP_FAILURE = 3


# After SIGTERM, how long an idle connection may still bring a request its client sent before.
DRAIN_S = 0.5


# How long a connection answered by the protocol itself (408, 431) is drained before closing.
LINGER_S = 1.0


# After SIGTERM, how long the server keeps accepting before it closes its listening socket.
ACCEPT_S = 0.05


# The name of the bearer scheme in the OpenAPI document.
BEARER = "bearerAuth"
