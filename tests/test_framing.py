"""Message framing is the proxy's alone: raw-socket tests of what reaches the upstream and the
client, byte for byte (smuggling through Connection, hop-by-hop headers both ways, HTTP/1.0
framing, early answers, stalled clients)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest
from raw_http import (
    RawRequest,
    RawUpstream,
    parse_responses,
    port_of,
    raw_exchange,
    served,
    statuses,
)

from proxy.config import ConfigError, parse_config
from proxy.fakes.apigw import FakeApiGateway

pytestmark = pytest.mark.timeout(60)
TOKEN = "Bearer injected-secret-token-0123456789"


def config(url: str, extra: str = "", listen: str = "") -> str:
    return f"""
listen: {{{listen}}}
credentials:
  tok: {{type: static, value: "{TOKEN}"}}
endpoints:
  - name: api
    endpoint: {url}/Development
    auth: tok
{extra}"""


# --- smuggling through Connection ----------------------------------------------------------

SMUGGLED = (b"GET /Development/smuggled HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 300\r\n\r\n")


@pytest.mark.parametrize("connection", [b"Content-Length", b"keep-alive, content-length",
                                        b"Transfer-Encoding", b"host", b"close, Host"])
async def test_connection_naming_a_framing_header_is_refused_and_nothing_is_smuggled(
        connection: bytes, apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url)) as running:
        port = port_of(running)
        attack = (b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: " + connection
                  + b"\r\nContent-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED))
        answer = await raw_exchange(port, attack, timeout=2)
        # The next client, whose injected token the smuggled request would swallow as its body.
        victim = await raw_exchange(port, b"GET /api/victim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          b"Connection: close\r\n\r\n")
    assert statuses(answer)[:1] == [400], answer[:300]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["error"] == "bad_request" and "Connection" in body["message"]
    assert statuses(victim) == [200]
    paths = [s.raw_path for s in apigw.seen]
    assert paths == ["/Development/victim"], paths
    assert TOKEN.encode() not in answer


async def test_every_request_reaches_the_upstream_framed_once(apigw: FakeApiGateway) -> None:
    """The same pooled upstream connection carries many clients' requests; none may run into
    another, whatever hop-by-hop headers the clients send."""
    upstream = RawUpstream()
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            port = port_of(running)
            shapes = [
                b"POST /api/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                b"Connection: keep-alive\r\n\r\nhello",
                b"POST /api/b HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                b"Trailer: X-T\r\nTE: trailers\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
                b"POST /api/c HTTP/1.0\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nxyz",
                b"PUT /api/d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
                b"DELETE /api/e HTTP/1.1\r\nHost: localhost\r\n\r\n",
            ]
            for shape in shapes:
                answer = await raw_exchange(port, shape + b"", timeout=2, until_close=False)
                assert statuses(answer) == [200], (shape, answer)
    finally:
        await upstream.stop()
    assert not upstream.errors, upstream.errors
    got = [(r.line, r.body) for r in upstream.requests]
    assert got == [("POST /Development/a HTTP/1.1", b"hello"),
                   ("POST /Development/b HTTP/1.1", b"abc"),
                   ("POST /Development/c HTTP/1.1", b"xyz"),
                   ("PUT /Development/d HTTP/1.1", b""),
                   ("DELETE /Development/e HTTP/1.1", b"")], got
    for r in upstream.requests:
        assert r.headers("Authorization") == [TOKEN]
        assert len(r.headers("Host")) == 1


@pytest.mark.parametrize("where, header", [
    ("remove_headers", "Content-Length"), ("remove_headers", "transfer-encoding"),
    ("remove_headers", "Host"), ("set_headers", "Content-Length"),
    ("set_headers", "Transfer-Encoding"), ("set_headers", "HOST"),
    ("set_headers", "Connection")])
def test_config_cannot_touch_framing_headers(where: str, header: str) -> None:
    value = f"[{header}]" if where == "remove_headers" else f'{{{header}: "1"}}'
    text = config("https://x.execute-api.us-east-1.amazonaws.com",
                  f"    {where}: {value}\n")
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    (problem,) = e.value.problems
    assert problem.path.startswith(f"endpoints[0].{where}"), problem
    assert problem.line == 9
    assert "framing" in problem.message or "hop-by-hop" in problem.message


# --- hop-by-hop both ways ----------------------------------------------------------------

async def test_proxy_and_trailer_request_headers_do_not_reach_the_upstream() -> None:
    upstream = RawUpstream()
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            await raw_exchange(port_of(running), (
                b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nProxy-Authorization: Basic eDp5\r\n"
                b"Proxy-Connection: keep-alive\r\nProxy-Foo: 1\r\nTrailer: X-Checksum\r\n"
                b"TE: trailers\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n"
                b"Connection: close\r\n\r\n"))
    finally:
        await upstream.stop()
    (req,) = upstream.requests
    names = {line.split(b":")[0].lower() for line in req.head.split(b"\r\n")[1:]}
    for gone in (b"proxy-authorization", b"proxy-connection", b"proxy-foo", b"trailer", b"te",
                 b"keep-alive", b"connection"):
        assert gone not in names, req.head
    assert req.headers("X-Kept") == ["yes"]


async def test_headers_the_upstream_names_in_connection_do_not_reach_the_client() -> None:
    async def answer(req: RawRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: X-Secret-Hop, keep-alive\r\n"
                     b"X-Secret-Hop: internal\r\nKeep-Alive: timeout=5, max=100\r\n"
                     b"Proxy-Authenticate: Basic\r\nX-Kept: yes\r\n"
                     b"Content-Length: 2\r\n\r\nok")
        return True
    upstream = RawUpstream(answer)
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            for close in (b"", b"Connection: close\r\n"):
                got = await raw_exchange(port_of(running), b"GET /api/x HTTP/1.1\r\n"
                                         b"Host: localhost\r\n" + close + b"\r\n",
                                         timeout=2, until_close=bool(close))
                head = got.partition(b"\r\n\r\n")[0].lower()
                assert head.startswith(b"http/1.1 200"), got
                assert b"x-secret-hop" not in head and b"keep-alive:" not in head, got
                assert b"proxy-authenticate" not in head
                assert b"x-kept: yes" in head
    finally:
        await upstream.stop()


# --- answers passed back exactly, and framed for the client -------------------------------

def _answer_with(head: bytes, body: bytes, *, pause: float = 0.0, close: bool = False):  # type: ignore[no-untyped-def]
    async def answer(req: RawRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        writer.write(head)
        if pause:
            await writer.drain()
            await asyncio.sleep(pause)
        if not req.line.startswith("HEAD"):
            writer.write(body)
        return not close
    return answer


GET_CLOSE = b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


async def through(upstream: RawUpstream, data: bytes = GET_CLOSE, base: str = "/Development",
                  **exchange: Any) -> bytes:
    """`data` sent through a proxy in front of `upstream`; what the client got back."""
    url = await upstream.start()
    try:
        async with served(config(url).replace("/Development", base)) as running:
            return await raw_exchange(port_of(running), data, **exchange)
    finally:
        await upstream.stop()


CLIENTS = {
    "1.1": (b"GET", b"HTTP/1.1", b""),
    "1.1-close": (b"GET", b"HTTP/1.1", b"Connection: close\r\n"),
    "1.0": (b"GET", b"HTTP/1.0", b""),
    "1.0-keep-alive": (b"GET", b"HTTP/1.0", b"Connection: keep-alive\r\n"),
    "head": (b"HEAD", b"HTTP/1.1", b"Connection: close\r\n"),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "streamed"])
async def test_answer_headers_pass_byte_for_byte_and_nothing_is_invented(
        client: str, streamed: bool) -> None:
    body = b"I'm a teapot"
    head = (b"HTTP/1.1 418 I'm a teapot\r\nX-Latin: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    upstream = RawUpstream(_answer_with(head, body, pause=0.2 if streamed else 0))
    url = await upstream.start()
    method, version, extra = CLIENTS[client]
    try:
        async with served(config(url)) as running:
            got = await raw_exchange(port_of(running), method + b" /api/x " + version
                                     + b"\r\nHost: localhost\r\n" + extra + b"\r\n",
                                     timeout=1.5)
    finally:
        await upstream.stop()
    (resp,) = parse_responses(got, head_request=method == b"HEAD")
    assert resp.status == 418
    assert resp.headers("X-Latin") == [b"caf\xe9"], resp.head
    assert resp.headers("X-Utf8") == [b"caf\xc3\xa9"], resp.head
    assert resp.headers("Content-Type") == [], resp.head  # the upstream sent none
    if method == b"HEAD":
        assert resp.headers("Content-Length") == [b"%d" % len(body)]
    else:
        assert resp.body == body and resp.framing == "length"


async def test_http10_keep_alive_with_a_close_delimited_answer_is_framed_or_closed() -> None:
    body = b"x" * 5000 + b"END"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"  # no length: ends at close
    upstream = RawUpstream(_answer_with(head, body, pause=0.2, close=True))
    url = await upstream.start()
    one = b"GET /api/one HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
    two = b"GET /api/two HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
    try:
        async with served(config(url)) as running:
            got = await raw_exchange(port_of(running), one + two, timeout=3)
    finally:
        await upstream.stop()
    answers = parse_responses(got)
    assert answers[0].status == 200 and answers[0].body == body, got[-200:]
    if answers[0].framing == "close":
        assert len(answers) == 1  # and the proxy closed the connection after it
    else:
        assert answers[0].framing == "length"
        assert [a.status for a in answers[1:]] == [200]


@pytest.mark.parametrize("location", ["//other.example/elsewhere", "//127.0.0.1/Development/x",
                                      "https://other.example/x", "/elsewhere"])
async def test_a_location_outside_the_upstream_base_passes_unchanged(location: str) -> None:
    head = (b"HTTP/1.1 302 Found\r\nLocation: " + location.encode()
            + b"\r\nContent-Length: 0\r\n\r\n")
    got = await through(RawUpstream(_answer_with(head, b"")), base="")
    (resp,) = parse_responses(got)
    want = location if location != "/elsewhere" else "/api/elsewhere"
    assert resp.headers("Location") == [want.encode()], resp.head


# --- early answers and stalled clients ------------------------------------------------------

async def test_an_upstream_answer_before_the_whole_body_reaches_the_client() -> None:
    """API Gateway answers 413 to a payload over 10 MB before reading it, then closes (as
    servers do, with a lingering close: it reads and drops what still comes for a moment, so
    that its answer is not lost to a reset)."""
    message = b'{"message":"Request Too Long"}'

    async def too_long(req: RawRequest, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json"
                     b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(message), message))
        await writer.drain()
        writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(3):
                while await reader.read(65536):
                    pass
        return False
    upstream = RawUpstream(too_long, read_body=False)
    url = await upstream.start()
    size = 12 * 1024 * 1024
    try:
        async with served(config(url)) as running:
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
            writer.write(b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: %d\r\n\r\n" % size)

            async def send_body() -> None:
                chunk = b"z" * 65536
                try:
                    for _ in range(size // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()
                except ConnectionError:
                    pass  # the proxy may stop reading once the answer is back
            sender = asyncio.create_task(send_body())
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                resp = parse_responses(head + await reader.read(400))[0]
            sender.cancel()
            writer.transport.abort()
    finally:
        await upstream.stop()
    assert resp.status == 413, resp.head
    assert resp.body == message
    assert resp.headers("X-Authproxy-Error") == []


async def test_a_body_that_stops_moving_gets_408_and_the_upstream_exchange_is_cancelled() -> None:
    upstream = RawUpstream()
    url = await upstream.start()
    loop = asyncio.get_running_loop()
    try:
        async with served(config(url, listen="header_timeout: 0.5")) as running:
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
            writer.write(b"POST /api/slow HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"a" * 10)
            started = loop.time()
            async with asyncio.timeout(5):
                got = await reader.read()  # until the proxy closes
            took = loop.time() - started
            writer.close()
            await asyncio.sleep(0.1)
    finally:
        await upstream.stop()
    (resp,) = parse_responses(got)
    assert resp.status == 408, got
    assert json.loads(resp.body)["error"] == "request_timeout"
    assert resp.headers("X-Request-Id")
    assert 0.4 < took < 2.5, took
    # The upstream saw the head, then its connection end without the rest of the body.
    assert upstream.connections == 1 and not upstream.requests


# --- hostile upstream heads -----------------------------------------------------------------

async def test_an_unasked_for_101_is_a_502_not_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    got = await through(RawUpstream(_answer_with(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"\x81\x05hello")))
    (resp,) = parse_responses(got)
    assert resp.status == 502, got
    assert b"101" in resp.body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_an_answer_head_over_64_kib_is_a_502() -> None:
    big = (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (4 * 1024 * 1024)
           + b"\r\nContent-Length: 0\r\n\r\n")
    fine = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 60_000 + b"\r\nContent-Length: 0\r\n\r\n"
    for head, status in ((big, 502), (fine, 200)):
        got = await through(RawUpstream(_answer_with(head, b"")))
        (resp,) = parse_responses(got)
        assert resp.status == status, got[:300]
        if status == 502:
            assert b"64 KiB" in resp.body


async def test_a_small_head_with_a_big_first_read_of_body_is_fine() -> None:
    body = b"b" * 500_000
    got = await through(RawUpstream(_answer_with(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, b"")))
    (resp,) = parse_responses(got)
    assert resp.status == 200 and resp.body == body


# --- upgrades: WebSocket handshakes, h2c, and what rides behind them -------------------------

WS_HEAD = (b"GET /api/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n")
BEHIND = b"GET /api/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"  # pipelined after the upgrade


def _switch_101(upgrade: bytes = b"websocket", tail: bytes = b""):  # type: ignore[no-untyped-def]
    async def answer(req: RawRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        if not req.headers("Upgrade"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + upgrade +
                     b"\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
                     b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" + tail)
        await writer.drain()
        # An echo of whatever comes after the switch, raw.
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        return False
    return answer


async def test_an_upgrade_to_a_non_websocket_upstream_is_answered_and_nothing_rides_behind(
        ) -> None:
    """A REST upstream answers the handshake with a plain 200: it goes back, the connection
    closes, and the request pipelined behind the handshake reaches no one; the upstream
    connection that carried the upgrade is not reused."""
    upstream = RawUpstream()
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            port = port_of(running)
            got = await raw_exchange(port, WS_HEAD + b"\r\n" + BEHIND)
            after = await raw_exchange(port, GET_CLOSE)
    finally:
        await upstream.stop()
    (resp,) = parse_responses(got)
    assert resp.status == 200 and resp.headers("Connection") == [b"close"], got
    assert [r.line for r in upstream.requests] == ["GET /Development/ws HTTP/1.1",
                                                   "GET /Development/x HTTP/1.1"]
    assert upstream.requests[0].headers("Upgrade") == ["websocket"]
    assert upstream.requests[0].headers("Authorization") == [TOKEN]
    assert upstream.connections == 2  # never reused after an upgrade request
    assert statuses(after) == [200]


@pytest.mark.parametrize("shape", [
    b"POST /api/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BEHIND) + BEHIND,
    WS_HEAD + b"Content-Length: %d\r\n\r\n" % len(BEHIND) + BEHIND,
    WS_HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(BEHIND), BEHIND),
    WS_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n" + BEHIND,
], ids=["post-with-body", "get-with-length", "get-chunked", "http-1.0"])
async def test_an_upgrade_that_cannot_be_a_handshake_is_refused_and_its_body_never_parsed(
        shape: bytes) -> None:
    upstream = RawUpstream(_switch_101())
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            got = await raw_exchange(port_of(running), shape)
    finally:
        await upstream.stop()
    assert statuses(got) == [400], got
    assert b"WebSocket" in got
    assert upstream.requests == []  # neither the upgrade nor the body's "request"


async def test_h2c_upgrade_goes_as_a_plain_request_and_a_101_answer_is_a_502() -> None:
    h2c = (b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    plain = RawUpstream()
    url = await plain.start()
    try:
        async with served(config(url)) as running:
            got = await raw_exchange(port_of(running), h2c.replace(
                b"HTTP2-Settings\r\n", b"HTTP2-Settings, close\r\n"))
    finally:
        await plain.stop()
    assert statuses(got) == [200], got
    first = plain.requests[0]
    assert not first.headers("Upgrade") and not first.headers("HTTP2-Settings")
    assert first.headers("Connection") == []
    # An upstream that switches anyway is not followed.
    got = await through(RawUpstream(_answer_with(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), h2c)
    assert statuses(got)[:1] == [502], got


async def test_a_101_that_does_not_switch_to_websocket_opens_no_tunnel() -> None:
    upstream = RawUpstream(_switch_101(upgrade=b"h2c"))
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            got = await raw_exchange(port_of(running), WS_HEAD + b"\r\n", timeout=3)
            assert not running.proxy.tunnels.open
    finally:
        await upstream.stop()
    assert statuses(got) == [502] and b"does not switch to WebSocket" in got, got


@pytest.mark.parametrize("listen,headers", [
    ("", b"Origin: http://evil.example\r\n"),
    ("", b"Host: rebound.example\r\n"),
    ("shared_secret: s3cret-value-123", b""),
])
async def test_a_handshake_the_guard_refuses_closes_and_nothing_behind_it_is_read(
        listen: str, headers: bytes) -> None:
    upstream = RawUpstream(_switch_101())
    url = await upstream.start()
    head = WS_HEAD if b"Host" not in headers else WS_HEAD.replace(b"Host: localhost\r\n", b"")
    try:
        async with served(config(url, listen=listen)) as running:
            got = await raw_exchange(port_of(running), head + headers + b"\r\n" + BEHIND)
    finally:
        await upstream.stop()
    (resp,) = parse_responses(got)
    assert resp.status in (401, 403) and resp.headers("Connection") == [b"close"], got
    assert upstream.requests == []


async def test_bytes_on_either_side_of_the_switch_pass_in_order_and_nothing_else() -> None:
    """What the client sent behind its handshake (before the 101) and what the upstream sent
    behind its 101 are the tunnel's first bytes; an upgrade without `Connection: upgrade`
    is a plain request."""
    key = b"\x01\x02\x03\x04"
    frame1 = b"\x81\x85" + key + bytes(b ^ key[i % 4] for i, b in enumerate(b"hello"))
    upstream = RawUpstream(_switch_101(tail=b"\x81\x04push"))
    url = await upstream.start()
    try:
        async with served(config(url)) as running:
            port = port_of(running)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(WS_HEAD + b"\r\n" + frame1)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
            got = await asyncio.wait_for(reader.readexactly(6 + len(frame1)), 5)
            assert got == b"\x81\x04push" + frame1  # its push, then our frame echoed back
            writer.write(b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n")  # just bytes now
            echoed = await asyncio.wait_for(reader.readexactly(39), 5)
            assert echoed.startswith(b"GET /api/x")
            writer.close()
            no_connection = await raw_exchange(
                port, WS_HEAD.replace(b"Connection: Upgrade\r\n", b"") + b"Connection: close"
                b"\r\n\r\n")
    finally:
        await upstream.stop()
    assert [r.line for r in upstream.requests] == ["GET /Development/ws HTTP/1.1"] * 2
    assert upstream.requests[0].headers("Upgrade") == ["websocket"]
    assert not upstream.requests[1].headers("Upgrade")  # not asked for properly: plain
    assert statuses(no_connection) == [200]
