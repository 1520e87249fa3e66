"""The client side of a connection: our own HTTP/1.1 server protocol, on llhttp (httptools),
with the limits a proxy that holds credentials needs and the SPEC's answers to what it refuses.

Why our own and not aiohttp's request handler: a request here is one small object and one
callback per parsed piece; aiohttp's handler built a request, a payload stream and a response
writer per request, and they were the largest share of the proxy's CPU that was not the socket.

- One task per connection handles its requests in order (pipelined ones wait in a short queue;
  reading pauses while it is full, or while a body has more than BODY_HIGH_WATER unread).
- A request head must be complete within `header_timeout` of its first byte (or of the
  connection, for the first request): a client that never finishes one gets `408` and is closed,
  so a few thousand such sockets cannot use up the descriptors and lock everyone out. An idle
  keep-alive connection is closed after `keepalive_timeout`.
- What the parser refuses (and a head over the size limits, or a request line of an HTTP
  version other than 1.0 and 1.1) gets the JSON `400 bad_request` in HTTP/1.1, after any answer
  still owed to the requests before it, and the connection closes.
- A client that half-closes after its request still gets the answer, and the connection closes
  after it. A client that leaves mid-body makes its body's reader raise ConnectionResetError.
- After an answer given before the whole body arrived, the rest of the body is read and dropped
  (for at most LINGER seconds, with the usual stall limit) so that the connection stays framed;
  past that, the connection closes.
- A request with `Upgrade` ends the parsing: what follows it is another protocol's. A WebSocket
  tunnel may take the connection over (`take_over`); otherwise it closes after the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import parse_qsl

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from proxy.errors import ERROR_HEADER
from proxy.http.respond import Response

log = logging.getLogger("authproxy")

SUPPORTED_VERSIONS = ((1, 0), (1, 1))
MAX_LINE = 8190  # the request target, as aiohttp and nginx allow
MAX_FIELD = 16384  # one header, name and value
MAX_HEAD = 65536  # all of the head
MAX_PIPELINE = 16  # parsed requests waiting behind the one being answered
BODY_HIGH_WATER = 1 << 16  # unread body bytes held before the socket stops being read
LINGER = 10.0  # seconds to read and drop the rest of a body already answered
CLOSE_LINGER = 2.0  # seconds a refused client's last bytes are read and dropped, at most

Handler = Callable[["Request"], Awaitable[Response]]
_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}


def request_id(request: Request) -> str:
    return request.headers.get("X-Request-Id") or new_request_id()


_random = b""
_taken = 0


def new_request_id() -> str:
    """A random UUID4 in hex, as uuid.uuid4().hex gives, at a fraction of its cost: the
    random bytes come from os.urandom 4 KiB at a time (a getrandom system call per request
    was a tenth of the proxy's system calls)."""
    global _random, _taken
    if _taken >= len(_random):
        _random, _taken = os.urandom(4096), 0
    h = _random[_taken:_taken + 16].hex()
    _taken += 16
    return f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}"


def closing_error(request: Request | None, status: int, code: str, message: str,
                  reason: str) -> Response:
    """One of the SPEC's error answers, in HTTP/1.1 whatever the request line said, after which
    the connection closes (what follows a refused request cannot be trusted to be framed)."""
    body = json.dumps({"error": code, "message": message}).encode()
    rid = (request.headers.get("X-Request-Id")
           if request is not None and request.version in SUPPORTED_VERSIONS else None)
    resp = Response(status, reason=reason, body=body,
                    headers=[("Content-Type", "application/json"), (ERROR_HEADER, code),
                             ("X-Request-Id", rid or new_request_id())])
    resp.force_close()
    return resp


def version_refusal(request: Request) -> Response:
    major, minor = request.version
    return closing_error(request, 400, "bad_request",
                         f"HTTP/{major}.{minor} is not supported: send HTTP/1.1 (or 1.0)",
                         "Bad Request")


def _release(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Body:
    """A request body as it arrives: what the parser fed, taken by `read_nowait` or awaited
    with `readany`; b"" once it is all read."""

    __slots__ = ("_chunks", "_size", "_eof", "_exc", "_waiter", "_conn")

    def __init__(self, conn: ClientConnection | None, complete: bool = False) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = complete
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._conn = conn

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > BODY_HIGH_WATER and self._conn is not None:
            self._conn.pause_for_body()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if not self._eof:
            self._exc = exc
            self._wake()

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        _release(w)

    def is_eof(self) -> bool:
        """The whole body has arrived (some of it may be unread)."""
        return self._eof

    def at_eof(self) -> bool:
        """The whole body has arrived and been read."""
        return self._eof and not self._chunks

    @property
    def buffered(self) -> int:
        return self._size

    def read_nowait(self, n: int = -1) -> bytes:
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        self._size = 0
        if self._conn is not None:
            self._conn.body_read()
        return data

    async def readany(self) -> bytes:
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.read_nowait()

    async def read(self) -> bytes:
        """All of it."""
        out = []
        while chunk := await self.readany():
            out.append(chunk)
        return b"".join(out)


class MalformedBody(ConnectionResetError):
    """The parser refused what came as a request's body (bad chunk framing): that request
    can only be answered with a 400, and its connection closed."""


class Request:
    """One parsed request: what the handler reads. Headers are decoded with surrogateescape,
    so that encoding them back gives the client's exact bytes."""

    __slots__ = ("method", "raw_path", "version", "headers", "keep_alive", "body_exists",
                 "content_length", "content", "protocol", "transport", "remote")

    scheme = "http"

    def __init__(self, method: str, raw_path: str, version: tuple[int, int],
                 headers: CIMultiDictProxy[str], keep_alive: bool, content_length: int | None,
                 chunked: bool, content: Body, protocol: ClientConnection | None) -> None:
        self.method, self.raw_path, self.version, self.headers = (method, raw_path, version,
                                                                  headers)
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.body_exists = chunked or bool(content_length)
        self.content = content
        self.protocol = protocol
        self.transport = protocol.transport if protocol is not None else None
        self.remote = protocol.remote if protocol is not None else ""

    @classmethod
    def made(cls, method: str, target: str,
             headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> Request:
        """A request that came from no connection: what `explain` and tests judge."""
        h = CIMultiDictProxy(CIMultiDict(headers or {}))
        cl = h.get("Content-Length")
        return cls(method, target, (1, 1), h, True, int(cl) if cl else None,
                   "Transfer-Encoding" in h, _EMPTY_BODY, None)

    @property
    def writer(self) -> ClientConnection:
        """`await writer.write(data)` and `await writer.drain()`, with the client's
        back-pressure."""
        if self.protocol is None:
            raise ConnectionResetError("no client connection")
        return self.protocol

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def query(self) -> MultiDictProxy[str]:
        return MultiDictProxy(MultiDict(parse_qsl(self.raw_path.partition("?")[2],
                                                  keep_blank_values=True)))


class _Refusal(Exception):
    """Raised in a parser callback (llhttp then stops); the message is kept for the 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_EMPTY_BODY = Body(None, complete=True)


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: ProxyServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()  # once per connection, made on the loop
        self._handler = server.handler
        self._header_timeout = server.header_timeout
        self._keepalive_timeout = server.keepalive_timeout
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request | Response] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a request is being answered
        # Loop time by which the head must be complete (or, idle, the next request begin);
        # 0: none. The server's sweep enforces it (no loop timer per request).
        self._deadline = 0.0
        self._head_started = False
        # the head being parsed
        self._url: list[bytes] = []
        self._url_size = 0
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body: Body = _EMPTY_BODY  # of the last request parsed
        self._refusal: str | None = None
        self._dead = False  # no more parsing: an upgrade, a refusal, a close
        self._close_after = False  # the connection closes once the queue is answered
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._lost = False
        self._upgraded = False
        self._tail = b""  # bytes behind an upgrade request
        self._taken = False  # a tunnel has the connection
        self._began = False  # the answer to the request being handled has begun
        self._for_head = True  # self._deadline is a head deadline (else the idle one)
        self._lingering = False  # half-closed after a refusal (_close_gently)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but behave as one)
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) and peer else ""
        self._deadline = self._loop.time() + self._header_timeout
        self._server.add(self, self._loop)

    def data_received(self, data: bytes) -> None:
        if self._dead:
            if self._upgraded and not self._taken and not self._lingering:
                self._tail += data  # (only until reading pauses; a tunnel may want them)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgraded = self._dead = True
            self._tail = data[e.args[0]:]
            self._pause()
        except httptools.HttpParserError as e:
            message = self._refusal or _parser_message(e)
            body = self._body
            if body.is_eof():
                self._refuse(message)
                return
            # In the middle of a body already on its way: its reader fails, the handler
            # answers (a 400), and the connection closes after it.
            log.warning("refused a malformed request body from %s: %s", self.remote or "?",
                        message)
            self._dead = self._close_after = True
            self._pause()
            body.set_exception(MalformedBody(message))

    def eof_received(self) -> bool | None:
        # Busy with the last request's whole body in: keep the write side open for the answer,
        # then close. A body cut short by the EOF will never be complete: that client is gone.
        if (self._busy or self._queue) and self._body.is_eof():
            self._close_after = True
            self._dead = True
            return True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = self._dead = True
        self._clear_deadline()
        self._server.connections.discard(self)
        self._body.set_exception(ConnectionResetError("client disconnected"))
        for req in self._queue:
            if isinstance(req, Request):
                req.content.set_exception(ConnectionResetError("client disconnected"))
        self._queue.clear()
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("client disconnected"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- writing, for the handler (request.writer) --------------------------------------------

    def write_now(self, data: bytes) -> None:
        """Without waiting for the client to read (an answer's head, a whole small answer)."""
        self._writing().write(data)

    async def write(self, data: bytes) -> None:
        self.write_now(data)
        if self._write_paused:
            await self.drain()

    async def writelines(self, pieces: list[bytes]) -> None:
        self._writing().writelines(pieces)
        if self._write_paused:
            await self.drain()

    def _writing(self) -> asyncio.Transport:
        """The transport, for an answer being written to it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client disconnected")
        self._began = True
        return transport

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("client disconnected")
        if self._write_paused:
            if self._drain is None:
                self._drain = self._loop.create_future()
            await asyncio.shield(self._drain)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._head_started:
            self._head_started = True
            # From the first byte of the head; for the first request, from the connection.
            if not self._deadline or not self._for_head:
                self._for_head = True
                self._deadline = self._loop.time() + self._header_timeout
        self._url = []
        self._url_size = 0
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_size += len(url)
        if self._url_size > MAX_LINE:
            raise self._bad(f"the request target is over {MAX_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_size += size + 4
        if size > MAX_FIELD:
            raise self._bad(f"a header is over {MAX_FIELD} bytes")
        if self._head_size > MAX_HEAD:
            raise self._bad(f"the request head is over {MAX_HEAD} bytes")
        self._headers.append((name.decode("utf-8", "surrogateescape"),
                              value.decode("utf-8", "surrogateescape")))

    def _bad(self, message: str) -> _Refusal:
        self._refusal = message
        return _Refusal(message)

    def on_headers_complete(self) -> None:
        p = self._parser
        self._head_started = False
        self._clear_deadline()
        version = _VERSIONS.get(p.get_http_version())
        if version is None:
            major, _, minor = p.get_http_version().partition(".")
            version = (int(major or 0), int(minor or 0))
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        length: int | None = None
        chunked = False
        cl = headers.get("Content-Length")
        if cl is not None:
            length = int(cl)  # llhttp has checked it is one number
        if "Transfer-Encoding" in headers:
            # Refused here, before the request is queued (llhttp would only refuse some of
            # these after this callback): chunked must be the last coding, and alone.
            if cl is not None:
                raise self._bad("Transfer-Encoding can't be present with Content-Length")
            te = ",".join(headers.getall("Transfer-Encoding"))
            if te.rsplit(",", 1)[-1].strip(" \t").lower() != "chunked":
                raise self._bad("Request has invalid `Transfer-Encoding`")
            chunked = True
        body = Body(self) if chunked or length else _EMPTY_BODY
        self._body = body
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        req = Request(p.get_method().decode("ascii", "replace"),
                      url.decode("utf-8", "surrogateescape"), version, headers,
                      p.should_keep_alive() and version in SUPPORTED_VERSIONS, length, chunked,
                      body, self)
        self._queue.append(req)
        if len(self._queue) > MAX_PIPELINE:
            self._pause()
        if self._task is None:
            self._task = self._loop.create_task(self._run())
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._body is not _EMPTY_BODY:
            self._body.feed_eof()

    # --- flow control ---------------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._read_paused and self.transport is not None and not self._lost:
            self._read_paused = True
            self.transport.pause_reading()

    def pause_for_body(self) -> None:
        self._pause()

    def body_read(self) -> None:
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if (self._read_paused and not self._dead and len(self._queue) <= MAX_PIPELINE
                and self._body.buffered <= BODY_HIGH_WATER and self.transport is not None):
            self._read_paused = False
            self.transport.resume_reading()

    # --- deadlines ----------------------------------------------------------------------------

    def _clear_deadline(self) -> None:
        self._deadline = 0.0

    def expire(self, now: float) -> None:
        """The server's sweep: acts on a deadline that has passed."""
        if self._deadline and self._deadline <= now:
            self._deadline = 0.0
            if self._for_head:
                self._head_late()
            else:
                self._idle()

    def _head_late(self) -> None:
        if self._dead:
            return
        if self._head_started:
            self._refuse_with(_timeout_answer())
        elif not self._busy and not self._queue:
            self._close()  # a connection that never sent a byte

    def _idle(self) -> None:
        if not self._busy and not self._queue and not self._head_started:
            self._close()

    # --- refusals -----------------------------------------------------------------------------

    def _refuse(self, message: str) -> None:
        log.warning("refused a malformed request from %s: %s", self.remote or "?",
                    message[:200])
        self._refuse_with(closing_error(None, 400, "bad_request",
                                        f"malformed request: {message[:200]}", "Bad Request"))

    def _refuse_with(self, answer: Response) -> None:
        """Answered after what is owed to the requests before it; then the connection closes."""
        self._dead = True
        self._clear_deadline()
        self._pause()
        self._queue.append(answer)
        if self._task is None:
            self._task = self._loop.create_task(self._run())
        else:
            self._wake()

    # --- answering ----------------------------------------------------------------------------

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        _release(w)

    async def _run(self) -> None:
        try:
            while not self._lost:
                if not self._queue:
                    if self._close_after or self._dead and not self._upgraded:
                        break
                    self._waiter = self._loop.create_future()
                    await self._waiter
                    continue
                item = self._queue.popleft()
                self._maybe_resume()
                if not isinstance(item, Request):
                    if await self._send(item, None):
                        self._close_gently()
                    break
                self._busy = True
                self._began = False
                if not await self._answer(item):
                    break
                self._busy = False
                if not self._queue and not self._head_started and not self._lost:
                    self._for_head = False
                    self._deadline = self._loop.time() + self._keepalive_timeout
        except asyncio.CancelledError:
            pass
        finally:
            self._busy = False
            self._task = None
            if self._taken:  # the tunnel is over (connection_lost went to it)
                self._server.connections.discard(self)
            elif not self._lost and not self._body.is_eof():
                self._close_gently()  # answered (a 413, a 408) while its body still comes
            else:
                self._close()

    async def _answer(self, req: Request) -> bool:
        """Handles one request; whether the connection goes on."""
        try:
            resp = await self._handler(req)
        except (ConnectionError, asyncio.CancelledError):
            return False
        except Exception:
            log.exception("error handling %s %s", req.method, req.path)
            resp = closing_error(req, 500, "internal_error",
                                 "the proxy failed on this request; see its log",
                                 "Internal Server Error")
            if self._began:
                return False  # an answer had begun: cutting the connection says "broken"
        if not await self._send(resp, req):
            return False
        if self._taken or not resp.keep_alive or not req.keep_alive or self._close_after \
                or self._upgraded:
            return False
        body = req.content
        if not body.is_eof():
            return await self._linger(body)
        return True

    async def _send(self, resp: Response, req: Request | None) -> bool:
        if resp.prepared:
            return True
        try:
            if req is None:  # an answer to no parsed request (a malformed or late head)
                self.write_now(resp.encode("GET", (1, 1), False))
            else:
                await resp.prepare(req)
        except ConnectionError:
            return False
        return True

    async def _linger(self, body: Body) -> bool:
        """Reads and drops the rest of a body already answered, so the next request starts
        where it should; False when it takes too long or stalls (then the connection closes)."""
        try:
            async with asyncio.timeout(LINGER):
                while not body.at_eof():
                    async with asyncio.timeout(self._header_timeout):
                        if not await body.readany() and not body.is_eof():
                            return False
        except (TimeoutError, ConnectionError):
            return False
        return True

    def _close(self) -> None:
        self._dead = True
        self._clear_deadline()
        if self._lingering:
            return  # closing already, after a refusal: _close_now ends it
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _close_gently(self) -> None:
        """After a refusal, or an answer given before its body came, the client may still be
        sending (the rest of a head, a body):
        closing a socket with unread bytes makes the kernel send a reset, which can throw
        away the refusal before the client reads it. So: our side ends (FIN), what still
        comes is read and dropped, and the socket closes when the client closes its side,
        or after CLOSE_LINGER seconds."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        self._dead = self._lingering = True
        self._clear_deadline()
        try:
            if not transport.can_write_eof():
                transport.close()
                return
            transport.write_eof()
        except OSError:
            transport.close()
            return
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        self._loop.call_later(CLOSE_LINGER, self._close_now)

    def _close_now(self) -> None:
        self._lingering = False
        self._close()

    @property
    def closing(self) -> bool:
        """The connection closes after the answer being given."""
        return self._close_after

    def force_close(self) -> None:
        """Close once the answer being given is out."""
        self._close_after = True
        self._dead = True

    def shutdown(self) -> None:
        """For a drain: an idle connection closes now, a busy one after its answer."""
        if self._taken:
            return  # a tunnel's: it has its own drain (proxy/server.py)
        self.force_close()
        if not self._busy and not self._queue:
            self._close()

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.abort()

    # --- WebSocket ----------------------------------------------------------------------------

    def can_take_over(self) -> bool:
        """This connection stopped parsing at this very request's upgrade, and parsed nothing
        behind it: a tunnel could have the rest of its bytes."""
        return (self._upgraded and not self._queue and not self._lost and not self._taken
                and self.transport is not None and not self.transport.is_closing())

    def take_over(self) -> bytes | None:
        """After a 101: the connection leaves HTTP for a tunnel. Returns the bytes the client
        sent behind its handshake, or None when this connection cannot be switched (then
        nothing may be tunnelled)."""
        if not self.can_take_over():
            return None
        self._taken = True
        self._clear_deadline()
        tail, self._tail = self._tail, b""
        return tail


def _parser_message(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text.strip().splitlines()[0][:200]


_TIMEOUT_BODY = json.dumps({
    "error": "request_timeout",
    "message": "the request head did not arrive in time (listen.header_timeout)"}).encode()


def _timeout_answer() -> Response:
    return Response(408, reason="Request Timeout", body=_TIMEOUT_BODY, headers=[
        ("Content-Type", "application/json"), (ERROR_HEADER, "request_timeout"),
        ("X-Request-Id", new_request_id())])


class ProxyServer:
    """Makes a ClientConnection per accepted socket, and knows them for a drain and for the
    sweep of their deadlines."""

    def __init__(self, handler: Handler, *, header_timeout: float,
                 keepalive_timeout: float) -> None:
        self.handler = handler
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[ClientConnection] = set()
        # How late a head or idle deadline may be acted on: a tenth of the shorter timeout,
        # within [10 ms, 1 s]. One sweep over the connections replaces two loop timers armed
        # and cancelled per request, on the proxy's only core.
        self.tick = min(1.0, max(0.01, min(header_timeout, keepalive_timeout) / 10))
        self._sweep: asyncio.TimerHandle | None = None

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    def add(self, conn: ClientConnection, loop: asyncio.AbstractEventLoop) -> None:
        self.connections.add(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(self.tick, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        for conn in list(self.connections):
            conn.expire(now)
        if self.connections:
            self._sweep = loop.call_later(self.tick, self._expire, loop)

    async def shutdown(self, timeout: float) -> None:
        """Idle connections close now, busy ones after their answer; what is left after
        `timeout` is cut."""
        for conn in list(self.connections):
            conn.shutdown()
        try:
            async with asyncio.timeout(timeout):
                while self.connections:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        for conn in list(self.connections):
            conn.abort()
