"""Forwarded answers, serialized by the proxy itself instead of aiohttp's response machinery.

Two reasons. Speed: when the upstream's whole answer is already in memory (nearly every API
call), aiohttp's prepare/_prepare_headers/write_headers/write_eof path cost about a sixth of the
proxy's CPU per request; here status line, headers and body leave in one write. Exactness: a
proxy passes the answer on as it came, and aiohttp's path does not (it adds a Content-Type the
upstream never sent, drops a header byte that is not UTF-8, and keeps an HTTP/1.0 connection
open after a body that has no length). So the framing here is decided from what the client can
read, never copied from the upstream:

- a complete body, or a streamed one whose length the upstream gave: `Content-Length`;
- a streamed body of unknown length: chunked for HTTP/1.1 clients, for HTTP/1.0 clients the
  connection closes after it;
- HEAD, 1xx, 204 and 304: no body; the upstream's Content-Length (which describes the resource)
  passes unchanged.

aiohttp's request handler sees an ordinary, already finished StreamResponse, and closes the
connection when `keep_alive` is false.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

_date = ("", 0)


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[1] != now:
        _date = (formatdate(now, usegmt=True), now)
    return _date[0]


def bodiless(method: str, status: int) -> bool:
    return method == "HEAD" or status < 200 or status in (204, 304)


class Relay(web.StreamResponse):
    """An upstream answer for one client. Either complete (`body` given: one write at prepare)
    or streamed (`length` from the upstream, or None): the head goes at prepare, then `send`
    each piece and `finish`."""

    def __init__(self, request: web.BaseRequest, status: int, reason: str,
                 headers: Iterable[tuple[str, str]], *, body: bytes | None = None,
                 length: int | None = None, close: bool = False) -> None:
        super().__init__(status=status, reason=reason)
        none = bodiless(request.method, status)
        if body is not None and not none:
            length = len(body)
        keep_alive = request.keep_alive and not close
        lines = [f"HTTP/1.1 {status} {reason}"]
        have_date = False
        for name, value in headers:
            low = name.lower()
            if low == "content-length":
                if none:
                    lines.append(f"{name}: {value}")
                continue  # else ours, below
            if low == "date":
                have_date = True
            lines.append(f"{name}: {value}")
        self._chunked_body = False
        if not none:
            if length is not None:
                lines.append(f"Content-Length: {length}")
            elif request.version >= (1, 1):
                lines.append("Transfer-Encoding: chunked")
                self._chunked_body = True
            else:
                keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        if not have_date:
            lines.append(f"Date: {_http_date()}")
        if not keep_alive:
            lines.append("Connection: close")
        elif request.version < (1, 1):
            lines.append("Connection: keep-alive")
        lines.append("\r\n")
        # The upstream's bytes were decoded with surrogateescape: this gives them back exactly.
        self._head: bytes | None = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        self._complete = b"" if none else body
        self._keep_alive = keep_alive
        self._request = request
        self.bytes_sent = 0  # body bytes

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent or self._head is None:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client disconnected")
        head, self._head = self._head, None
        if self._complete is not None:
            self._eof_sent = True
            transport.write(head + self._complete)
            self.bytes_sent = len(self._complete)
            if len(self._complete) > 65536:
                await request.writer.drain()
        else:
            transport.write(head)
        return None

    async def send(self, chunk: bytes) -> None:
        """One piece of a streamed body (prepare first), with the client's back-pressure."""
        if not chunk:
            return
        self.bytes_sent += len(chunk)
        if self._chunked_body:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        await self._request.writer.write(chunk)

    async def finish(self) -> None:
        if self._eof_sent:
            return
        self._eof_sent = True
        if self._chunked_body:
            await self._request.writer.write(b"0\r\n\r\n")

    @property
    def prepared(self) -> bool:
        return self._head is None

    async def write_eof(self, data: bytes = b"") -> None:
        return None
