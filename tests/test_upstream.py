"""The lean upstream client (proxy/http/upstream.py) against raw sockets: pooling, framing both
ways, HEAD, 1xx, HTTP/1.0 and Connection: close upstreams, a plain HTTP proxy, idle expiry,
timeouts, and no leaked connection when an answer is dropped half read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.http.upstream import Endpoint, Pool, UpstreamError

pytestmark = pytest.mark.timeout(20)

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Raw:
    """A TCP server running `serve` per connection; counts connections, keeps request heads."""

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.connections = 0
        self.heads: list[bytes] = []
        self.closed = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Serve], Awaitable[tuple[Raw, Endpoint]]]]:
    servers: list[Raw] = []

    async def make(serve: Serve) -> tuple[Raw, Endpoint]:
        r = Raw(serve)
        port = await r.start()
        servers.append(r)
        return r, Endpoint("127.0.0.1", port, None, connect_timeout=2)

    yield make
    for r in servers:
        r.server.close()


def head(method: str = "GET", path: str = "/", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def body_of(pool: Pool, ep: Endpoint, method: str = "GET", data: bytes | None = None,
                  extra: str = "") -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    answer = await pool.request(ep, method, head(method, extra=extra), data, False,
                                loop.time() + 5)
    out = b""
    try:
        while chunk := await answer.read():
            out += chunk
    finally:
        answer.close()
    return answer.status, out


async def keep_alive_ok(r: Raw, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    while True:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def test_keep_alive_connection_is_reused(raw: object) -> None:
    r, ep = await raw(lambda rd, wr: keep_alive_ok(r, rd, wr))  # type: ignore[operator]
    pool = Pool()
    for _ in range(3):
        assert await body_of(pool, ep) == (200, b"ok")
    assert r.connections == 1
    assert (pool.active, pool.idle_count) == (0, 1)
    pool.close()


async def test_chunked_answer_and_chunked_upload(raw: object) -> None:
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = await r.head(reader)
        assert b"transfer-encoding: chunked" in h.lower()
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
        got.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    r, ep = await raw(serve)  # type: ignore[operator]

    async def upload() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"", b"world"):
            yield part

    pool = Pool()
    loop = asyncio.get_running_loop()
    answer = await pool.request(ep, "POST", head("POST", extra="Transfer-Encoding: chunked\r\n"),
                                upload(), True, loop.time() + 5)
    assert (answer.status, await answer.read()) == (200, b"abcdefg")
    assert await answer.read() == b""
    answer.close()
    assert got == [b"hello world"]
    assert pool.idle_count == 1
    pool.close()


async def test_head_answer_has_no_body_and_the_connection_stays_usable(raw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    assert await body_of(pool, ep, "HEAD") == (200, b"")
    assert await body_of(pool, ep) == (200, b"ok")
    assert r.connections == 1
    pool.close()


async def test_interim_1xx_answers_are_skipped(raw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\nX-A: b\r\n\r\n!")
        await reader.read()

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    loop = asyncio.get_running_loop()
    answer = await pool.request(ep, "POST", head("POST", extra="Content-Length: 2\r\n"), b"{}",
                                False, loop.time() + 5)
    assert (answer.status, answer.reason, answer.headers) == (
        201, "Created", [("Content-Length", "1"), ("X-A", "b")])
    assert await answer.read() == b"!"
    answer.close()
    pool.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.0 200 OK\r\n\r\nuntil the end",  # no length: the body ends with the connection
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nuntil the end",
])
async def test_closing_upstreams_are_not_pooled(answer: bytes, raw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(answer)
        await writer.drain()

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    assert await body_of(pool, ep) == (200, b"until the end")
    assert await body_of(pool, ep) == (200, b"until the end")
    assert r.connections == 2
    assert (pool.active, pool.idle_count) == (0, 0)
    pool.close()


async def test_idle_connections_expire(raw: object) -> None:
    r, ep = await raw(lambda rd, wr: keep_alive_ok(r, rd, wr))  # type: ignore[operator]
    pool = Pool(idle_timeout=0.1)
    await body_of(pool, ep)
    assert pool.idle_count == 1
    await asyncio.wait_for(r.closed.wait(), 2)  # the pool hung up on the upstream
    assert pool.idle_count == 0
    pool.close()


async def test_dropping_a_half_read_answer_closes_its_connection(raw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        while True:
            writer.write(b"z" * 65536)
            await writer.drain()

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    loop = asyncio.get_running_loop()
    answer = await pool.request(ep, "GET", head(), None, False, loop.time() + 5)
    assert await answer.read()
    assert pool.active == 1
    answer.close()
    assert (pool.active, pool.idle_count) == (0, 0)
    await asyncio.wait_for(r.closed.wait(), 2)
    pool.close()


async def test_total_timeout_and_connect_errors(raw: object, unused_tcp_port: int) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        await asyncio.sleep(5)

    r, ep = await raw(stall)  # type: ignore[operator]
    pool = Pool()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await pool.request(ep, "GET", head(), None, False, loop.time() + 0.2)
    assert (pool.active, pool.idle_count) == (0, 0)
    with pytest.raises(UpstreamError) as e:
        await pool.request(Endpoint("127.0.0.1", unused_tcp_port, None), "GET", head(), None,
                           False, loop.time() + 5)
    assert e.value.kind == "connect"
    assert pool.active == 0
    pool.close()


async def test_plain_http_proxy_gets_absolute_form(raw: object) -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    r, ep = await raw(proxy)  # type: ignore[operator]
    via = Endpoint("api.example", 80, None, proxy=(ep.host, ep.port),
                   proxy_auth="Basic dTpw")
    pool = Pool()
    loop = asyncio.get_running_loop()
    data = b"GET http://api.example/x HTTP/1.1\r\nHost: api.example\r\n\r\n"
    answer = await pool.request(via, "GET", data, None, False, loop.time() + 5)
    assert answer.status == 200
    answer.close()
    assert r.heads[0].startswith(b"GET http://api.example/x ")
    pool.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
])
async def test_ambiguous_answers_are_refused_not_guessed(answer: bytes, raw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamError) as e:
        await pool.request(ep, "GET", head(), None, False, loop.time() + 5)
    assert e.value.kind == "broken"
    assert (pool.active, pool.idle_count) == (0, 0)
    pool.close()


async def test_connection_paused_by_a_big_answer_is_pooled_readable(raw: object) -> None:
    # The last bytes of an answer can arrive in the same read that pushes the buffered body
    # past the high-water mark, pausing reading; such a connection must go back to the pool
    # reading again, or the next request on it waits for its deadline.
    size = 256 * 1024 + 1000

    async def big_then_small(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"b" * size)
        await writer.drain()
        await keep_alive_ok(r, reader, writer)

    r, ep = await raw(big_then_small)  # type: ignore[operator]
    pool = Pool()
    loop = asyncio.get_running_loop()
    answer = await pool.request(ep, "GET", head(), None, False, loop.time() + 5)
    await asyncio.sleep(0.3)  # a slow client: nothing is read while the answer arrives
    out = b""
    while chunk := await answer.read():
        out += chunk
    answer.close()
    assert len(out) == size
    status, body = await asyncio.wait_for(body_of(pool, ep), 3)
    assert (status, body, r.connections) == (200, b"ok", 1)
    pool.close()


async def test_a_long_body_taken_past_the_parser_is_exact_and_the_connection_goes_on(
        raw: object) -> None:
    # Bodies with more than DIRECT_BODY still to come are read straight from the socket: the
    # bytes must be the same, in pieces of any size, and the next answer on the connection
    # (a new parser's) must parse.
    from proxy.http.upstream_conn import DIRECT_BODY

    body = bytes(range(256)) * (4 * DIRECT_BODY // 256) + b"tail"

    async def big_in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:100])
        await writer.drain()
        for i in range(100, len(body), 7919):  # odd-sized writes, with pauses
            writer.write(body[i:i + 7919])
            await writer.drain()
            if i % 13 == 0:
                await asyncio.sleep(0.001)
        await keep_alive_ok(r, reader, writer)

    r, ep = await raw(big_in_pieces)  # type: ignore[operator]
    pool = Pool()
    status, got = await body_of(pool, ep)
    assert (status, len(got), got == body) == (200, len(body), True)
    for _ in range(3):
        assert await asyncio.wait_for(body_of(pool, ep), 3) == (200, b"ok")
    assert r.connections == 1
    pool.close()


async def test_bytes_behind_a_long_body_end_the_connection(raw: object) -> None:
    # What follows a length-framed body on the same connection was not asked for (a second,
    # smuggled answer): the body is passed on exactly, the rest never is, and the connection
    # is not used again.
    body = b"x" * (200 * 1024)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if r.connections > 1:
            await keep_alive_ok(r, reader, writer)
            return
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(body[1000:] + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        await writer.drain()
        await keep_alive_ok(r, reader, writer)

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    status, got = await body_of(pool, ep)
    assert (status, got == body) == (200, True)
    assert await asyncio.wait_for(body_of(pool, ep), 3) == (200, b"ok")
    assert r.connections == 2  # a new connection for the second request
    pool.close()


async def test_an_upstream_that_stops_mid_way_through_a_long_body_is_a_broken_answer(
        raw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await r.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"y" * 10)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"y" * 300_000)
        await writer.drain()

    r, ep = await raw(serve)  # type: ignore[operator]
    pool = Pool()
    with pytest.raises(UpstreamError) as e:
        await body_of(pool, ep)
    assert e.value.kind in ("broken", "reset")
    assert (pool.active, pool.idle_count) == (0, 0)
    pool.close()
