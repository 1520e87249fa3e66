"""One upstream connection (an asyncio Protocol fed to llhttp) and the answer being read on it.

The answer's body is buffered by the protocol and handed out in whatever pieces arrived; reading
from the socket pauses while more than HIGH_WATER bytes wait, so memory stays bounded however
slow the client is. The pool's deadline sweep enforces the endpoint's total timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools

HIGH_WATER = 256 * 1024
# A body framed by Content-Length with more than this still to come after the first read is
# taken straight from the socket's reads, past llhttp, whose on_body copies every byte once more
# (bench/bigbody.py: 10 MB answers went from about 1.01x to 1.11x a buffering proxy).
DIRECT_BODY = 64 * 1024
MAX_HEAD = 64 * 1024  # an answer head past this is a 502 (API Gateway's are a few hundred bytes)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect; equal endpoints share pooled connections."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    proxy: tuple[str, int] | None = None  # an HTTP proxy: CONNECT for TLS, absolute-form else
    # The Proxy-Authorization value: proxy credentials, kept out of repr() and so out of logs.
    proxy_auth: str | None = field(default=None, repr=False)
    connect_timeout: float | None = None

    def __post_init__(self) -> None:
        # The pool looks its idle list up by endpoint twice a request: a dataclass's own
        # __hash__ builds and hashes a tuple of every field each time.
        object.__setattr__(self, "_hash", hash((self.host, self.port, self.tls, self.proxy,
                                                 self.proxy_auth, self.connect_timeout)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]


class Owner(Protocol):
    """What a connection needs of the pool that holds it (proxy/http/upstream.py's Pool)."""

    watched: set[Answer]

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def release(self, conn: Conn, reusable: bool) -> None: ...

    def lost(self, conn: Conn) -> None: ...

    def watch(self, answer: Answer) -> None: ...


class UpstreamError(Exception):
    """kind: connect, connect_timeout, cert, tls (before a request went out), reset, broken.
    `stale`: the connection ended before a byte of the answer came (a retry is safe)."""

    def __init__(self, kind: str, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.stale = stale


class Answer:
    __slots__ = ("conn", "status", "reason", "headers", "chunks", "size", "done", "error",
                 "waiter", "head_only", "got_head", "interim", "framed", "got_bytes", "deadline",
                 "keep_alive", "released", "cut", "sending", "head_size", "upgrade", "tail")

    def __init__(self, conn: Conn, head_only: bool, upgrade: bool = False) -> None:
        self.conn = conn
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False  # the whole body is in `chunks`
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.head_only = head_only
        self.got_head = False
        self.interim = False  # a 1xx answer, skipped
        self.framed = False  # Content-Length or chunked: else the body ends when the socket does
        self.got_bytes = False
        self.deadline = 0.0  # loop time by which the whole answer must be in
        self.keep_alive = False
        self.released = False
        self.cut = False  # the request's body was not sent whole: never reuse the connection
        # The request body is still going out: even a finished answer keeps the connection
        # until then, or another request could be written into the middle of this body.
        self.sending = False
        self.head_size = 0  # bytes read before the head was complete
        # The request asked to switch to WebSocket: a 101 is its final answer, and the
        # connection then belongs to a tunnel (Pool.detach), never to the pool again.
        self.upgrade = upgrade
        self.tail = b""  # after a 101: the bytes that came behind its head (a server push)

    def refused_early(self) -> bool:
        """A final error answer arrived while the request body was still going out."""
        return self.got_head and self.status >= 400

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.error is None and not self.done:
            self.error = error
        self.wake()

    async def head(self) -> None:
        while not self.got_head:
            if self.error is not None:
                raise self.error
            self.waiter = self.conn.pool.loop.create_future()
            await self.waiter

    async def read(self) -> bytes:
        """The next piece of the body, b"" at its end."""
        chunks = await self.read_pieces()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read_pieces(self) -> list[bytes]:
        """What has arrived of the body since the last read, as it arrived (not joined: a
        long body relayed by writelines is never copied); [] at its end."""
        while True:
            if self.chunks:
                chunks, self.chunks, self.size = self.chunks, [], 0
                if self.conn.reading_paused and not self.done:
                    self.conn.resume()
                return chunks
            if self.error is not None:
                raise self.error
            if self.done:
                return []
            self.waiter = self.conn.pool.loop.create_future()
            await self.waiter

    def timeout(self) -> None:
        self.conn.pool.watched.discard(self)
        if not self.done:
            self.fail(TimeoutError())
            self.conn.abort()

    def finish(self) -> None:
        self.done = True
        self.release()
        self.wake()

    def release(self) -> None:
        if not self.released and not self.sending:
            self.released = True
            conn = self.conn
            if conn.answer is self:
                conn.answer = None
            conn.pool.release(conn, self.done and self.keep_alive and self.error is None
                              and not self.cut)
            conn.pool.watched.discard(self)

    def close(self) -> None:
        """Done with this answer: an unfinished one takes its connection down with it."""
        if not self.done:
            self.conn.abort()
        self.release()


class Conn(asyncio.Protocol):
    def __init__(self, pool: Owner, ep: Endpoint) -> None:
        self.pool = pool
        self.ep = ep
        self.transport: asyncio.Transport | None = None
        self.parser: Any = None
        self.answer: Answer | None = None
        self.closed = False
        self.lost_error: BaseException | None = None
        self.used = 0
        self.idle_since = 0.0
        self.paused = False
        self.reading_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._tunnel: asyncio.Future[bytes] | None = None
        self._tunnel_buf = b""
        self._after_head = False
        # The answer being parsed: its Content-Length (bytes), whether it has Transfer-Encoding,
        # and the body bytes llhttp has handed over so far.
        self._length: bytes | None = None
        self._coded = False
        self._seen = 0
        self._left = 0  # body bytes still to come past the parser (0: the parser has them)

    # --- protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel_data(data)
            return
        a = self.answer
        if a is None:  # nothing was asked: an upstream speaking out of turn is not to be trusted
            self.abort()
            return
        if self._left:
            self._direct(a, data)
            return
        a.got_bytes = True
        if not a.got_head:
            a.head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            if a.upgrade and a.status == 101 and self.answer is a:
                # The switch we asked for: what follows the head is WebSocket bytes, for the
                # tunnel. Reading stops until it takes the connection over (Pool.detach).
                a.tail = data[e.args[0]:] if e.args else b""
                if self.transport is not None:
                    self.transport.pause_reading()
                self.reading_paused = True
                a.wake()
                return
            # A 101 (or an answer with Upgrade) to a request that asked for none: what follows
            # is not HTTP, and nothing here can relay it.
            if self.answer is a:
                a.fail(UpstreamError("broken", f"unexpected {a.status or 101} Switching "
                                     "Protocols: the request asked for no upgrade"))
            self.abort()
        except httptools.HttpParserError as e:
            if self.answer is a:
                a.fail(UpstreamError("broken", str(e) or type(e).__name__))
            self.abort()
        else:
            if not a.got_head:
                if a.head_size > MAX_HEAD:
                    # Checked after every read, so at most one read past the limit is held.
                    a.fail(UpstreamError("broken", f"answer head over {MAX_HEAD // 1024} KiB"))
                    self.abort()
            elif self._length is not None and not a.done and not self._coded \
                    and a.status >= 200 and self.answer is a and a.error is None \
                    and self._length.isdigit():
                left = int(self._length) - self._seen
                if left > DIRECT_BODY:
                    self._left = left

    def _direct(self, a: Answer, data: bytes) -> None:
        """The rest of a long length-framed body, as it comes (see DIRECT_BODY)."""
        left = self._left
        extra = len(data) > left
        chunk = data[:left] if extra else data
        self._left = left - len(chunk)
        self._take(a, chunk)
        if self._left:
            a.wake()
            return
        # llhttp still thinks it is mid-body: the next answer gets a new parser.
        self.parser = None
        if extra:
            # Bytes behind the body that nobody asked for: this connection carries no more.
            a.keep_alive = False
        a.finish()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        a = self.answer
        if a is not None and not a.done:
            if a.got_head and not a.framed and not a.head_only and exc is None:
                a.finish()  # an HTTP/1.0-style body that ends with the connection
            elif isinstance(exc, ConnectionResetError):
                a.fail(UpstreamError("reset", "reset", stale=not a.got_bytes))
            else:
                a.fail(UpstreamError("broken", str(exc) if exc else "Server disconnected",
                                     stale=not a.got_bytes))
        if self._tunnel is not None and not self._tunnel.done():
            self._tunnel.set_exception(ConnectionResetError("proxy closed the connection"))
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    async def drain(self, answer: Answer) -> None:
        while self.paused and not self.closed and not answer.refused_early():
            self._drain = self.pool.loop.create_future()
            await self._drain
        self.check()

    def check(self) -> None:
        if self.closed:
            a = self.answer
            raise (a.error if a is not None and a.error is not None
                   else UpstreamError("reset", "reset", stale=False))

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def resume(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # --- one request ------------------------------------------------------------------------
    def start(self, method: str, deadline: float, upgrade: bool = False) -> Answer:
        self.used += 1
        head_only = method == "HEAD"
        a = self.answer = Answer(self, head_only, upgrade)
        # A connection that carried an upgrade request is never pooled again, whatever the
        # answer: the upstream may have switched in part, and nothing else may ride on it.
        a.cut = upgrade
        # llhttp is ready for the next answer once one is complete, except after a HEAD answer,
        # whose body it would still wait for, and after a body taken past it: then a fresh one.
        if self.parser is None or self._after_head:
            self.parser = httptools.HttpResponseParser(self)
        self._after_head = head_only
        self._length, self._coded, self._seen, self._left = None, False, 0, 0
        a.deadline = deadline
        self.pool.watch(a)
        return a

    # --- parser callbacks -------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        a = self.answer
        if a is not None:
            a.reason += status.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        a = self.answer
        if a is not None:
            low = name.lower()
            if low == b"content-length":
                a.framed = True
                self._length = value
            elif low == b"transfer-encoding":
                a.framed = self._coded = True
            a.headers.append((name.decode("utf-8", "surrogateescape"),
                              value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        a = self.answer
        if a is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101 and a.upgrade:
                self._switching(a)
                return
            a.interim, a.headers, a.reason = True, [], ""
            self._length, self._coded = None, False
            return
        a.status = status
        a.keep_alive = self.parser.should_keep_alive()
        a.got_head = True
        if status in (204, 304):
            a.framed = True
        if a.head_only:
            a.finish()
        else:
            a.wake()
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)  # a sender waiting to write more may not need to

    def _switching(self, a: Answer) -> None:
        """A 101 to our upgrade request: the final answer, if it switches to WebSocket."""
        upgrade = next((v for k, v in a.headers if k.lower() == "upgrade"), "")
        if not self.parser.should_upgrade() or upgrade.strip().lower() != "websocket":
            a.fail(UpstreamError("broken", "a 101 that does not switch to WebSocket "
                                 f"(Upgrade: {upgrade[:40] or 'missing'})"))
            self.abort()
            return
        a.status, a.got_head, a.keep_alive, a.framed = 101, True, False, True
        # llhttp still calls on_message_complete for the 101's empty message: `interim` makes
        # it pass without finishing the answer (that would hand the connection back).
        a.interim = True
        a.wake()

    def on_body(self, body: bytes) -> None:
        a = self.answer
        if a is not None:
            self._seen += len(body)
            self._take(a, body)
            a.wake()

    def _take(self, a: Answer, chunk: bytes) -> None:
        """A piece of the body, held for the reader; the socket pauses past HIGH_WATER."""
        a.chunks.append(chunk)
        a.size += len(chunk)
        if a.size > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        a = self.answer
        if a is None:
            return
        if a.interim:
            a.interim = False
            return
        a.finish()

    # --- CONNECT through an HTTP proxy ------------------------------------------------------
    async def tunnel(self, ep: Endpoint, loop: asyncio.AbstractEventLoop) -> None:
        target = f"{ep.host}:{ep.port}"
        auth = f"Proxy-Authorization: {ep.proxy_auth}\r\n" if ep.proxy_auth else ""
        self._tunnel = loop.create_future()
        assert self.transport is not None and ep.tls is not None
        self.transport.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n"
                             .encode())
        head = await self._tunnel
        self._tunnel = None
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        if not status.startswith(b"2"):
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            raise ConnectionRefusedError(0, f"proxy refused CONNECT {target}: {line}")
        self.transport = await loop.start_tls(self.transport, self, ep.tls,
                                              server_hostname=ep.host)

    def _tunnel_data(self, data: bytes) -> None:
        self._tunnel_buf += data
        end = self._tunnel_buf.find(b"\r\n\r\n")
        if end >= 0 and self._tunnel is not None and not self._tunnel.done():
            self._tunnel.set_result(self._tunnel_buf[:end])
