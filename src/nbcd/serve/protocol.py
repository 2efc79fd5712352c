"""The HTTP layer under the app: limits uvicorn's httptools protocol does not have.

A request head is refused past MAX_HEAD_BYTES (431) and after READ_TIMEOUT_S without progress
(408); malformed HTTP gets a JSON 400; at shutdown, connections part-way through a request are
given a moment to finish. ServeConfig, the server and the worker supervisor use it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from nbcd.serve.payload import JSON_TYPE
from nbcd.serve.settings import ACCEPT_S, DRAIN_S, LINGER_S, MAX_HEAD_BYTES, READ_TIMEOUT_S

__all__ = [
    "GuardedHttpToolsProtocol",
    "ServeConfig",
    "Server",
    "Supervisor",
]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks on a request's head, and a drain.

    - A head (request line and headers) over ``max_head_bytes`` is answered 431 and the
      connection closed. httptools buffers a header whole, so without a limit one request can
      make the server hold any amount of memory; uvicorn's ``h11_max_incomplete_event_size``
      only applies to the h11 protocol.
    - A head that has not arrived whole ``read_timeout`` seconds after its first byte (or
      after the connection opened) is answered 408: a client trickling a head must not hold
      a connection forever.
    - On shutdown uvicorn closes idle connections at once, resetting a request that is in the
      socket buffer or on its way. Here an idle connection gets a moment (``DRAIN_S``) to
      bring it; it is answered with ``Connection: close``.

    The settings come from :class:`ServeConfig`; a plain uvicorn Config gets the defaults.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes: int = getattr(config, "max_head_bytes", MAX_HEAD_BYTES)
        self.read_timeout: float = getattr(config, "read_timeout", READ_TIMEOUT_S)
        self._in_head = True  # waiting for, or reading, a request's head (not a body)
        self._head_bytes = 0  # received since the head began; a read may run on into the body
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered by this protocol; what the client still sends is dropped
        self._draining = False  # the server is stopping

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._start_head_timer()
        super().data_received(data)
        # still in the head after this read: reads are at most a few hundred KiB, so the
        # buffered head stays within the limit plus one read
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._refuse(431, _head_too_large(self.max_head_bytes))

    def on_headers_complete(self) -> None:
        if self._refused:  # a request pipelined behind a refused one is not served
            return
        self._in_head = False
        self._stop_head_timer()
        # one read can hold a whole oversized head, so measure what was parsed
        if self._head_bytes > self.max_head_bytes and self._parsed_head() > self.max_head_bytes:
            self._refuse(431, _head_too_large(self.max_head_bytes))
            return
        self._head_bytes = 0
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to what httptools cannot parse is text/plain; every error here is JSON
        self._refuse(
            400,
            "the request is not valid HTTP/1.1 (its request line, a header or a chunk is "
            "malformed)",
            log=False,  # uvicorn has logged it
        )

    def shutdown(self) -> None:
        """Stop after answering what was sent: a response in progress ends the connection."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        self.loop.call_later(DRAIN_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        # a request being answered closes the connection after it (keep_alive is off); a head
        # still arriving is bounded by its timer
        if busy or self.transport.is_closing() or (self._in_head and self._head_bytes):
            return
        self.transport.close()

    def _parsed_head(self) -> int:
        """Bytes of the request line and headers httptools parsed (separators included)."""
        return len(self.url) + 12 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.read_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy or self.transport.is_closing():
            return  # the next head waits behind a response; keep-alive's timeout covers it
        if self._head_bytes:
            self._refuse(408, f"the request head did not arrive within {self.read_timeout:g} s")
        else:
            self.transport.close()  # a connection that never sent anything: nothing to answer

    def _refuse(self, status: int, message: str, *, log: bool = True) -> None:
        """Answer ``status`` with a JSON error, then close, reading no further request."""
        if self.transport.is_closing():
            return
        self._refused = True
        self._stop_head_timer()
        if log:
            client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.warning("%s%d %s", client, status, message)
        self.transport.write(_raw_response(status, message))
        # Closing with unread input makes the kernel send a reset, which can destroy the answer
        # before the client reads it: half-close, drop what still comes, close a moment later.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def _head_too_large(limit: int) -> str:
    return (
        f"the request line and headers are over {limit} bytes ({limit // 1024} KiB); send "
        "less in headers, and put data in the body"
    )


def _raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error, for answers made below the app."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: {JSON_TYPE}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ServeConfig(uvicorn.Config):
    """uvicorn's settings, the guarded protocol and the limits it reads.

    A class of its own (not attributes set on a Config) so that worker processes, which get
    the config pickled, import it by name and keep the limits.
    """

    def __init__(
        self,
        app: Any,
        *,
        read_timeout: float = READ_TIMEOUT_S,
        max_head_bytes: int = MAX_HEAD_BYTES,
        **options: Any,
    ) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **options)
        self.read_timeout = read_timeout
        self.max_head_bytes = max_head_bytes


class Server(uvicorn.Server):
    """uvicorn's server, accepting the connections already queued before it stops listening.

    The kernel completes connections on its own and queues them for accept(); their clients
    may already have sent a request. Closing the listening socket resets every queued
    connection, so the loop is given a few turns to accept them first; the protocol's drain
    then answers their requests.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await asyncio.sleep(ACCEPT_S)
        await super().shutdown(sockets)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, refusing new connections once it stops them.

    The supervisor holds the listening socket too, so without this a connection made while
    the workers finish would wait in the kernel's queue, unanswered, and be reset at exit.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()
