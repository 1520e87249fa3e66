"""Answers, serialized by the proxy itself: `Response` (the proxy's own: errors, preflights,
admin pages) and `Relay` (an upstream answer passed on).

Speed: status line, headers and body leave in one write. Exactness: a proxy passes the answer
on as it came, so the framing here is decided from what the client can read, never copied from
the upstream:

- a complete body, or a streamed one whose length the upstream gave: `Content-Length`;
- a streamed body of unknown length: chunked for HTTP/1.1 clients, for HTTP/1.0 clients the
  connection closes after it;
- HEAD, 1xx, 204 and 304: no body; the upstream's Content-Length (which describes the resource)
  passes unchanged.

The client connection (proxy/http/client_conn.py) calls `prepare` for an answer the handler
did not send itself, then keeps the connection or closes it as `keep_alive` says.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

from multidict import CIMultiDict

if TYPE_CHECKING:
    from proxy.http.client_conn import Request

_date = ("", 0)


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[1] != now:
        _date = (formatdate(now, usegmt=True), now)
    return _date[0]


def bodiless(method: str, status: int) -> bool:
    return method == "HEAD" or status < 200 or status in (204, 304)


def reason_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Response:
    """The proxy's own answer, whole: status, headers and body."""

    def __init__(self, status: int = 200, *, reason: str | None = None, body: bytes = b"",
                 text: str | None = None, content_type: str | None = None,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.reason = reason if reason is not None else reason_of(status)
        self.headers: CIMultiDict[str] = CIMultiDict(headers or ())
        if text is not None:
            body = text.encode()
            if content_type is not None:
                content_type += "; charset=utf-8"
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        self.body = body
        self.keep_alive = True
        self._sent = False

    def force_close(self) -> None:
        self.keep_alive = False

    @property
    def prepared(self) -> bool:
        return self._sent

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def encode(self, method: str, version: tuple[int, int], keep_alive: bool) -> bytes:
        """Status line, headers and body (none for HEAD), as they go to the client."""
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()
                  if k.lower() not in ("content-length", "connection", "transfer-encoding")]
        if not (self.status < 200 or self.status in (204, 304)):
            lines.append(f"Content-Length: {len(self.body)}")
        if "Date" not in self.headers:
            lines.append(f"Date: {_http_date()}")
        if not keep_alive:
            lines.append("Connection: close")
        elif version < (1, 1):
            lines.append("Connection: keep-alive")
        lines.append("\r\n")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return head if bodiless(method, self.status) else head + self.body

    async def prepare(self, request: Request) -> None:
        """Sends the whole answer in one write."""
        if self._sent:
            return
        self._sent = True
        conn = request.writer
        self.keep_alive = self.keep_alive and request.keep_alive and not conn.closing
        conn.write_now(self.encode(request.method, request.version, self.keep_alive))
        if len(self.body) > 65536:
            await request.writer.drain()



class Relay(Response):
    """An upstream answer for one client. Either complete (`body` given: one write at prepare)
    or streamed (`length` from the upstream, or None): the head goes at prepare, then `send`
    each piece and `finish`. Its headers are already in the head it built: `headers` is empty."""

    def __init__(self, request: Request, status: int, reason: str,
                 headers: Iterable[tuple[str, str]], *, body: bytes | None = None,
                 length: int | None = None, close: bool = False) -> None:
        # (Response.__init__ is not called: nothing of it is used here, and this is per request)
        self.status, self.reason, self.headers = status, reason, CIMultiDict()
        none = bodiless(request.method, status)
        if body is not None and not none:
            length = len(body)
        keep_alive = request.keep_alive and not close and not request.writer.closing
        lines = [f"HTTP/1.1 {status} {reason}"]
        have_date = False
        for name, value in headers:
            # (the length first: it spares lowering nearly every name)
            n = len(name)
            if n == 14 and name.lower() == "content-length":
                if none:
                    lines.append(f"{name}: {value}")
                continue  # else ours, below
            if n == 4 and name.lower() == "date":
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
        self.keep_alive = keep_alive
        self._request = request
        self._eof_sent = False
        self.body = b""
        self.bytes_sent = 0  # body bytes

    @property
    def prepared(self) -> bool:
        return self._head is None

    async def prepare(self, request: Request) -> None:
        if self._eof_sent or self._head is None:
            return
        head, self._head = self._head, None
        if self._complete is not None:
            self._eof_sent = True
            request.writer.write_now(head + self._complete)
            self.bytes_sent = len(self._complete)
            if len(self._complete) > 65536:
                await request.writer.drain()
        else:
            request.writer.write_now(head)

    async def send(self, chunk: bytes) -> None:
        """One piece of a streamed body (prepare first), with the client's back-pressure."""
        if not chunk:
            return
        self.bytes_sent += len(chunk)
        if self._chunked_body:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        await self._request.writer.write(chunk)

    async def send_pieces(self, chunks: list[bytes]) -> None:
        """Pieces of a streamed body, written as they are (a length-framed body's pieces are
        never joined into one more copy)."""
        if self._chunked_body:
            for chunk in chunks:
                await self.send(chunk)
            return
        self.bytes_sent += sum(map(len, chunks))
        await self._request.writer.writelines(chunks)

    async def finish(self) -> None:
        if self._eof_sent:
            return
        self._eof_sent = True
        if self._chunked_body:
            await self._request.writer.write(b"0\r\n\r\n")
