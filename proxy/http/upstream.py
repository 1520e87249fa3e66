"""A lean HTTP/1.1 client for the forwarding hot path: keep-alive pools of asyncio Protocols, the
request head sent in one write, answers parsed by llhttp (httptools).

Why not aiohttp's ClientSession here: per request it builds a ClientRequest, a URL, default
headers, a timer context, a response and its StreamReader; in the proxy's profile that was more
than half of all CPU. Here a request is one bytes write and a parser feed. aiohttp still serves
the credentials' own calls (Cognito), where none of this matters.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable

from proxy.http.upstream_conn import Answer, Conn, Endpoint, UpstreamError

__all__ = ["Answer", "Endpoint", "Pool", "UpstreamError"]

DEADLINE_CHECK = 0.05  # seconds: how late a total timeout may fire
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
Body = bytes | AsyncIterable[bytes] | None


class Pool:
    """Idle connections per endpoint, newest reused first (the likeliest still open)."""

    def __init__(self, idle_timeout: float = 30.0) -> None:
        self.idle_timeout = idle_timeout
        self.idle: dict[Endpoint, list[Conn]] = {}
        self.active = 0
        self._sweep: asyncio.TimerHandle | None = None
        self._all: set[Conn] = set()
        # Answers still coming in, checked against their deadlines every DEADLINE_CHECK seconds:
        # a loop timer per request (armed, then cancelled) cost more than this sweep.
        self.watched: set[Answer] = set()
        self._deadlines: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        # Kept, not asked for per request: Python 3.11's get_running_loop() makes a getpid
        # system call each time, and a request asked four times.
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def idle_count(self) -> int:
        return sum(len(v) for v in self.idle.values())

    async def request(self, ep: Endpoint, method: str, head: bytes, body: Body, chunked: bool,
                      deadline: float, upgrade: bool = False) -> Answer:
        """Send one request; returns once the answer's headers are in. The caller must
        `close()` the answer (a no-op once its body was read to the end). `upgrade`: a
        WebSocket handshake; a 101 answer then leaves its connection to `detach`."""
        # A streamed body is gone once sent; bytes (or none) can go again. (No isinstance on
        # the AsyncIterable ABC here: that check showed in the profile.)
        retry = method in IDEMPOTENT and (body is None or isinstance(body, bytes))
        while True:
            conn = await self._acquire(ep)
            reused = conn.used > 0
            answer = conn.start(method, deadline, upgrade)
            try:
                conn.transport.write(head)  # type: ignore[union-attr]
                if body is not None:
                    answer.sending = True
                    try:
                        await _send_body(conn, body, chunked, answer)
                    except (UpstreamError, OSError):
                        if not answer.got_head:
                            raise
                        # It answered (and maybe closed) before taking the whole body, as API
                        # Gateway does with its 413: that answer is the one to pass back.
                        answer.cut = True
                    finally:
                        answer.sending = False
                    if answer.done:
                        answer.release()  # it finished while the body was going out
                await answer.head()
                return answer
            except UpstreamError as e:
                answer.close()
                # A pooled connection the upstream closed while idle: the request never got
                # there, so an idempotent one may go again, once, on a fresh connection.
                if e.stale and reused and retry:
                    retry = False
                    continue
                raise
            except BaseException:
                answer.close()
                raise

    async def _acquire(self, ep: Endpoint) -> Conn:
        idle = self.idle.get(ep)
        loop = self.loop
        while idle:
            conn = idle.pop()
            if not conn.closed and loop.time() - conn.idle_since < self.idle_timeout:
                self.active += 1
                return conn
            conn.abort()
        conn = await self._connect(ep, loop)
        self.active += 1
        self._all.add(conn)
        return conn

    async def _connect(self, ep: Endpoint, loop: asyncio.AbstractEventLoop) -> Conn:
        conn = Conn(self, ep)
        host, port = ep.proxy or (ep.host, ep.port)
        try:
            async with asyncio.timeout(ep.connect_timeout):
                tls = ep.tls if ep.proxy is None else None
                await loop.create_connection(lambda: conn, host, port, ssl=tls,
                                             server_hostname=ep.host if tls else None)
                if ep.proxy is not None and ep.tls is not None:
                    await conn.tunnel(ep, loop)
        except TimeoutError:
            conn.abort()
            raise UpstreamError("connect_timeout", "") from None
        except ssl.SSLCertVerificationError as e:
            conn.abort()
            raise UpstreamError("cert", str(e)) from None
        except ssl.SSLError as e:
            conn.abort()
            raise UpstreamError("tls", str(e) or type(e).__name__) from None
        except OSError as e:
            conn.abort()
            raise UpstreamError("connect", e.strerror or str(e) or type(e).__name__) from None
        except BaseException:
            conn.abort()
            raise
        return conn

    def release(self, conn: Conn, reusable: bool) -> None:
        """Called once per use: back to the idle list, or closed."""
        self.active -= 1
        if not reusable or conn.closed:
            conn.abort()
            return
        if conn.reading_paused:
            # The answer's last bytes came in the read that crossed the high-water mark: the
            # next answer on this connection must find it reading again.
            conn.resume()
        loop = self.loop
        conn.idle_since = loop.time()
        self.idle.setdefault(conn.ep, []).append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(self.idle_timeout, self._expire)

    def detach(self, answer: Answer) -> tuple[asyncio.Transport, bytes]:
        """After a 101: the connection leaves the pool for good (a WebSocket tunnel owns it
        from here, and closes it); its transport and the bytes already read past the head."""
        conn = answer.conn
        assert answer.status == 101 and answer.upgrade and conn.transport is not None
        self.watched.discard(answer)  # `timeout` bounds the handshake only
        answer.done = answer.released = True  # close() and release() are no-ops now
        conn.answer = None
        self.active -= 1
        self._all.discard(conn)
        return conn.transport, answer.tail

    def watch(self, answer: Answer) -> None:
        self.watched.add(answer)
        if self._deadlines is None:
            self._deadlines = self.loop.call_later(DEADLINE_CHECK, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._deadlines = None
        loop = self.loop
        now = loop.time()
        for answer in [a for a in self.watched if a.deadline <= now]:
            answer.timeout()
        if self.watched:
            self._deadlines = loop.call_later(DEADLINE_CHECK, self._check_deadlines)

    def lost(self, conn: Conn) -> None:
        self._all.discard(conn)
        idle = self.idle.get(conn.ep)
        if idle and conn in idle:
            idle.remove(conn)

    def _expire(self) -> None:
        """Closes connections idle for longer than idle_timeout (API Gateway drops them anyway,
        and an open socket per idle connection is a leak when traffic stops)."""
        self._sweep = None
        loop = self.loop
        limit = loop.time() - self.idle_timeout
        for conns in self.idle.values():
            for conn in [c for c in conns if c.idle_since <= limit]:
                conns.remove(conn)
                conn.abort()
        if self.idle_count:
            self._sweep = loop.call_later(self.idle_timeout / 2, self._expire)

    def close(self) -> None:
        for timer in (self._sweep, self._deadlines):
            if timer is not None:
                timer.cancel()
        self._sweep = self._deadlines = None
        for conn in list(self._all):
            conn.abort()
        self.idle.clear()


async def _send_body(conn: Conn, body: bytes | AsyncIterable[bytes], chunked: bool,
                     answer: Answer) -> None:
    transport = conn.transport
    assert transport is not None
    if isinstance(body, bytes):
        if chunked:
            transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
        else:
            transport.write(body)
        return
    async for chunk in body:
        if answer.refused_early():
            # A refusal before the body is all there: sending the rest helps nobody, and the
            # connection, left mid-body, can carry nothing else.
            answer.cut = True
            return
        if conn.closed:
            conn.check()
        if not chunk:
            continue
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if conn.paused:
            await conn.drain(answer)
    if chunked:
        transport.write(b"0\r\n\r\n")
