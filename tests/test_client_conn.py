"""The client side of a connection (proxy/http/client_conn.py), over raw sockets: heads that
never finish, idle keep-alive, half-closed clients, parser refusals and request lines of other HTTP
versions answered with the SPEC's JSON in HTTP/1.1, X-Request-Id on every answer."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket

import pytest
from raw_http import parse_responses, port_of, raw_exchange, served

from proxy.fakes.apigw import FakeApiGateway

pytestmark = pytest.mark.timeout(60)


def config(url: str, listen: str = "") -> str:
    return f"""
listen: {{{listen}}}
credentials:
  tok: {{type: static, value: "Bearer tok-0123456789"}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: tok}}
"""


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = b""
    async with asyncio.timeout(limit):
        while chunk := await reader.read(65536):
            out += chunk
    return out, loop.time() - started


async def test_a_head_that_never_finishes_gets_408_and_is_closed(apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url, "header_timeout: 0.5")) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
        writer.write(b"GET /api/x HTTP/1.1\r\nHost: local")
        got, took = await _until_closed(reader, 5)
        writer.close()
    (resp,) = parse_responses(got)
    assert resp.head.startswith(b"HTTP/1.1 408 "), got
    assert json.loads(resp.body)["error"] == "request_timeout"
    assert resp.headers("X-Request-Id") and resp.headers("Connection") == [b"close"]
    assert 0.4 < took < 2.0, took
    assert not apigw.seen


async def test_a_slow_drip_of_head_bytes_does_not_keep_the_socket(apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url, "header_timeout: 0.6")) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def drip() -> None:
            for byte in b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)
        dripping = asyncio.create_task(drip())
        got, _ = await _until_closed(reader, 5)
        took = loop.time() - started
        dripping.cancel()
        writer.close()
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert took < 2.0


async def test_a_silent_connection_and_an_idle_keep_alive_one_are_closed(
        apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url, "header_timeout: 0.5, keepalive_timeout: 0.7")) \
            as running:
        port = port_of(running)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got, took = await _until_closed(reader, 5)
        assert got == b"" and took < 2.0  # nothing was asked: nothing to answer
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got, took = await _until_closed(reader, 5)
        writer.close()
    (resp,) = parse_responses(got)
    assert resp.status == 200
    assert 0.5 < took < 2.5, took  # kept for keepalive_timeout after the answer, no longer


async def test_stalled_sockets_cannot_lock_everyone_out(apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url, "header_timeout: 1")) as running:
        port = port_of(running)
        stalled = []
        for _ in range(300):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /api/x HTTP/1.1\r\n")
            stalled.append((r, w))
        answer = await raw_exchange(port, b"GET /api/ok HTTP/1.1\r\nHost: localhost\r\n"
                                          b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        closed = await asyncio.gather(*(_until_closed(r, 5) for r, _ in stalled))
        assert all(got.startswith(b"HTTP/1.1 408 ") for got, _ in closed)
        for _, w in stalled:
            w.close()


async def test_the_soft_file_descriptor_limit_is_raised_to_the_hard_one(
        apigw: FakeApiGateway) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
    try:
        async with served(config(apigw.url)):
            assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("data", [
    b"GET /api/x HTTP/1.1\r\nHost : localhost\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"G\x00T /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /api/x HTTP/1.2\r\nHost: localhost\r\n\r\n",
    b"GET /api/x HTTP/2.0\r\nHost: localhost\r\n\r\n",
    b"GET /api/x HTTP/0.9\r\nHost: localhost\r\n\r\n",
    b"GET /api/x\r\n\r\n",
], ids=["space-before-colon", "two-lengths", "bad-method", "http-1.2", "http-2.0", "http-0.9",
        "no-version"])
async def test_refused_requests_get_the_json_error_in_http11(
        data: bytes, apigw: FakeApiGateway, caplog: pytest.LogCaptureFixture) -> None:
    async with served(config(apigw.url)) as running:
        got = await raw_exchange(port_of(running), data, timeout=3)
    # A bad client is worth one line, never a traceback.
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    (resp,) = parse_responses(got)
    body = json.loads(resp.body)
    assert body["error"] == "bad_request" and body["message"]
    assert resp.headers("X-Authproxy-Error") == [b"bad_request"]
    assert resp.headers("X-Request-Id")
    assert resp.headers("Connection") == [b"close"]
    assert not apigw.seen


async def test_a_client_that_half_closes_after_its_request_gets_the_answer(
        apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url)) as running:
        sock = socket.create_connection(("127.0.0.1", port_of(running)))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"POST /api/x HTTP/1.1\r\nHost: localhost\r\n"
                                      b"Content-Length: 5\r\n\r\nhello")
        sock.shutdown(socket.SHUT_WR)
        got = b""
        async with asyncio.timeout(5):
            while chunk := await loop.sock_recv(sock, 65536):
                got += chunk
        sock.close()
    (resp,) = parse_responses(got)
    assert resp.status == 200
    assert json.loads(resp.body)["body_length"] == 5


@pytest.mark.parametrize("request_line, status", [
    (b"GET /nowhere HTTP/1.1\r\nHost: localhost", 404),
    (b"GET /api/x HTTP/1.1\r\nHost: evil.example", 403),
    (b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example", 403),
    (b"GET /api/../x HTTP/1.1\r\nHost: localhost", 400),
    (b"GET /_authproxy/healthz HTTP/1.1\r\nHost: localhost", 200),
    (b"OPTIONS /api/x HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\n"
     b"Access-Control-Request-Method: GET", 403),
])
async def test_every_answer_of_the_proxy_carries_a_request_id(
        request_line: bytes, status: int, apigw: FakeApiGateway) -> None:
    async with served(config(apigw.url)) as running:
        got = await raw_exchange(port_of(running), request_line + b"\r\nX-Request-Id: mine-1"
                                 b"\r\nConnection: close\r\n\r\n")
        fresh = await raw_exchange(port_of(running), request_line
                                   + b"\r\nConnection: close\r\n\r\n")
    (resp,) = parse_responses(got)
    assert resp.status == status, got
    assert resp.headers("X-Request-Id") == [b"mine-1"]
    (resp,) = parse_responses(fresh)
    (rid,) = resp.headers("X-Request-Id")
    assert len(rid) == 32


@pytest.mark.parametrize("data", [
    b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer S3CR3T-A\x01zz\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Api-Key S3CR3T-A\r\n\r\n",
    b"GET /api/x?access_token=S3CR3T-A\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /api/x?access_token=S3CR3T-A HTTP/2.0\r\nHost: localhost\r\n\r\n",
], ids=["header-value", "header-line", "query", "version"])
async def test_a_refusal_never_quotes_what_the_client_sent(
        data: bytes, apigw: FakeApiGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(config(apigw.url)) as running:
        got = await raw_exchange(port_of(running), data, timeout=3)
    assert got.startswith(b"HTTP/1.1 400 ")
    assert b"S3CR3T" not in got
    assert "S3CR3T" not in caplog.text
