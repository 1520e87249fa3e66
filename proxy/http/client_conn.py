"""The client side of a connection: aiohttp's request handler with the limits a proxy that
holds credentials needs, and answers in the SPEC's shape where aiohttp has its own.

- A request head must be complete within `header_timeout` of its first byte (or of the
  connection, for the first request): a client that never finishes one gets `408` and is closed,
  so a few thousand such sockets cannot use up the descriptors and lock everyone out. An idle
  keep-alive connection is closed after `keepalive_timeout` (aiohttp's own timer).
- Requests the parser refuses get the JSON `400 bad_request` in HTTP/1.1 (aiohttp answers them in
  plain text, in whatever version it guessed), and so do request lines of HTTP versions other
  than 1.0 and 1.1, which aiohttp would answer "in kind".
- A client that half-closes after its request still gets the answer (asyncio would close the
  transport at EOF), and the connection closes after it.
- Once a client is gone, aiohttp's lingering read of an unread body stops at once instead of
  waiting out its ten seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from proxy.errors import ERROR_HEADER
from proxy.http.respond import Relay

SUPPORTED_VERSIONS = ((1, 0), (1, 1))


def request_id(request: web.BaseRequest) -> str:
    return request.headers.get("X-Request-Id") or new_request_id()


def new_request_id() -> str:
    """A random UUID4 in hex, as uuid.uuid4().hex gives, at a third of its cost."""
    h = os.urandom(16).hex()
    return f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}"


def closing_error(request: web.BaseRequest, status: int, code: str, message: str,
                  reason: str) -> Relay:
    """One of the SPEC's error answers, in HTTP/1.1 whatever the request line said, after which
    the connection closes (what follows a refused request cannot be trusted to be framed)."""
    body = json.dumps({"error": code, "message": message}).encode()
    rid = request.headers.get("X-Request-Id") if request.version in SUPPORTED_VERSIONS else None
    return Relay(request, status, reason,
                 [("Content-Type", "application/json"), (ERROR_HEADER, code),
                  ("X-Request-Id", rid or new_request_id())], body=body, close=True)


def version_refusal(request: web.BaseRequest) -> Relay:
    major, minor = request.version
    return closing_error(request, 400, "bad_request",
                         f"HTTP/{major}.{minor} is not supported: send HTTP/1.1 (or 1.0)",
                         "Bad Request")


class ClientConnection(RequestHandler):
    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False  # a head has begun arriving
        self._counted = 0  # requests parsed when the head timer was armed
        self._last: web.BaseRequest | None = None
        factory = self._request_factory
        assert factory is not None

        def remember(*args: Any) -> web.BaseRequest:
            self._last = request = factory(*args)
            return request
        self._request_factory = remember

    # --- the head deadline --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._counted = self._request_count
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = False

    def data_received(self, data: bytes) -> None:
        idle = self._waiter is not None and not self._messages
        if idle and data:
            self._head_bytes = True
            self._arm()
        super().data_received(data)
        if self._request_count > self._counted:
            self._disarm()  # a whole head came: from here on, the body has its own deadline

    def _head_late(self) -> None:
        self._head_timer = None
        if self._request_count > self._counted or not (self._waiter is not None
                                                       and not self._messages):
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._head_bytes:
            transport.write(_TIMEOUT_ANSWER % new_request_id().encode())
        self.force_close()

    # --- WebSocket ----------------------------------------------------------------------------

    def can_take_over(self) -> bool:
        """aiohttp holds this connection as upgraded (it switched for this very request, and
        parsed nothing behind it): a tunnel could have the rest of its bytes."""
        return (self._upgraded and not self._messages and self._payload_parser is None
                and self.transport is not None and not self._force_close)

    def take_over(self) -> bytes | None:
        """After a 101: the connection leaves HTTP for a tunnel. Returns the bytes the client
        sent behind its handshake (aiohttp keeps them aside once a request upgrades), or None
        when aiohttp does not hold this connection as upgraded, or it is gone: then nothing
        may be tunnelled, since aiohttp may have parsed those bytes as further requests."""
        if not self.can_take_over():
            return None
        tail, self._message_tail = self._message_tail, b""
        self._disarm()
        return tail

    # --- EOF and loss -------------------------------------------------------------------------

    def eof_received(self) -> bool | None:  # type: ignore[override]
        # Busy (a request queued, or one being handled: the loop is not waiting for the next)
        # with its whole body in: keep the write side open for the answer, then close. A body
        # cut short by the EOF will never be complete: that client is gone.
        busy = self._messages or (self._waiter is None and self._request_count)
        if busy and (self._last is None or self._last.content.is_eof()):
            self.close()
            return True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        last = self._last
        if last is not None and self._current_request is None and not last.content.is_eof():
            last.content.feed_eof()  # only aiohttp's lingering read is left to wake
        self._last = None
        super().connection_lost(exc)

    # --- refusals -----------------------------------------------------------------------------

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) or status == 400:
            # One line, not a stack: a bad client is not our bug.
            self.logger.warning("refused a malformed request from %s: %s", request.remote,
                                _first_line(exc, message))
            if request.writer.output_size > 0:
                raise ConnectionError("answer already started")
            return closing_error(request, 400, "bad_request",
                                 f"malformed request: {_first_line(exc, message)}",
                                 "Bad Request")
        resp = super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            return resp
        return closing_error(request, status, "internal_error",
                             "the proxy failed on this request; see its log", resp.reason)


_TIMEOUT_BODY = json.dumps({
    "error": "request_timeout",
    "message": "the request head did not arrive in time (listen.header_timeout)"}).encode()
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"X-Authproxy-Error: request_timeout\r\nX-Request-Id: %b\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


def _first_line(exc: BaseException | None, message: str | None) -> str:
    text = message or (getattr(exc, "message", None) if exc else None) or (
        type(exc).__name__ if exc else "bad request")
    return str(text).strip().splitlines()[0][:200]


class ProxyServer(web.Server):
    """aiohttp's low-level server, making ClientConnections."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return ClientConnection(self, loop=self._loop, header_timeout=self._header_timeout,
                                **self._kwargs)
