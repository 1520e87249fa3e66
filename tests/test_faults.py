"""Faults: an upstream that refuses, resets, stalls, speaks broken HTTP or drops pooled
connections, and clients that hang up mid-upload or mid-download. Each ends in the SPEC's error
or a cut connection, the server stays up, and no upstream connection or task is leaked."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from conftest import MakeProxy
from prometheus_client.parser import text_string_to_metric_families

from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class EvilUpstream:
    """A raw TCP server whose every connection runs `behaviour(reader, writer, n)`, n counting
    connections from 1."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.requests = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.behaviour(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


@pytest.fixture
async def evil() -> AsyncIterator[Callable[[Behaviour], Awaitable[EvilUpstream]]]:
    started: list[EvilUpstream] = []

    async def make(behaviour: Behaviour) -> EvilUpstream:
        up = EvilUpstream(behaviour)
        up.url = await up.start()  # type: ignore[attr-defined]
        started.append(up)
        return up

    yield make
    for up in started:
        up.server.close()


def config(url: str, timeout: float = 2) -> str:
    return f"""
credentials:
  tok: {{type: static, value: tok-0123456789}}
endpoints:
  - {{name: api, endpoint: "{url}", auth: tok, timeout: {timeout}, connect_timeout: 1}}
"""


async def connections(client: object) -> dict[str, float]:
    resp = await client.get("/_authproxy/metrics")  # type: ignore[attr-defined]
    text = await resp.text()
    return {s.labels["state"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "authproxy_upstream_connections"}


async def assert_alive_and_no_leak(client: object) -> None:
    for _ in range(40):
        if (await connections(client)).get("active") == 0:
            break
        await asyncio.sleep(0.05)
    assert (await connections(client))["active"] == 0
    resp = await client.get("/_authproxy/healthz")  # type: ignore[attr-defined]
    assert resp.status == 200


async def test_reset_before_headers_is_502(evil: object, make_proxy: MakeProxy) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    up = await evil(reset)  # type: ignore[operator]
    client = await make_proxy(config(up.url))
    resp = await client.post("/api/x", data=b"{}")  # not idempotent: never retried
    assert resp.status == 502
    assert (await resp.json())["error"] == "upstream_unreachable"
    await assert_alive_and_no_leak(client)


async def test_reset_mid_response_cuts_the_client_connection(evil: object,
                                                            make_proxy: MakeProxy) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()

    up = await evil(half)  # type: ignore[operator]
    client = await make_proxy(config(up.url))
    resp = await client.get("/api/x")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await assert_alive_and_no_leak(client)


async def test_stall_before_headers_is_504(evil: object, make_proxy: MakeProxy) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    up = await evil(stall)  # type: ignore[operator]
    client = await make_proxy(config(up.url, timeout=0.5))
    resp = await client.get("/api/x")
    assert resp.status == 504
    assert resp.headers["X-Authproxy-Error"] == "upstream_timeout"
    await assert_alive_and_no_leak(client)


async def test_stall_mid_body_is_cut_at_the_timeout(evil: object, make_proxy: MakeProxy) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        await asyncio.sleep(5)

    up = await evil(stall)  # type: ignore[operator]
    client = await make_proxy(config(up.url, timeout=0.5))
    resp = await client.get("/api/x")
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await assert_alive_and_no_leak(client)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 99999 Weird\r\n\r\n",
])
async def test_malformed_upstream_http_is_502(answer: bytes, evil: object,
                                             make_proxy: MakeProxy) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.2)

    up = await evil(broken)  # type: ignore[operator]
    client = await make_proxy(config(up.url))
    resp = await client.get("/api/x")
    if resp.status == 200:  # the chunked case: headers were fine, the body is not
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    else:
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unreachable"
    await assert_alive_and_no_leak(client)


async def test_stale_pooled_connection_is_retried_once_for_idempotent_requests(
        evil: object, make_proxy: MakeProxy) -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             n: int) -> None:
        # Answers one request with keep-alive, then silently closes: the pooled connection
        # is stale when the proxy next uses it (as API Gateway does after its idle timeout).
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)

    up = await evil(one_then_close)  # type: ignore[operator]
    client = await make_proxy(config(up.url))
    assert (await client.get("/api/1")).status == 200
    await asyncio.sleep(0.2)
    resp = await client.get("/api/2")
    assert resp.status == 200 and await resp.read() == b"ok"
    assert up.connections == 2
    await assert_alive_and_no_leak(client)


async def test_client_disconnect_mid_upload_leaks_nothing(evil: object,
                                                          make_proxy: MakeProxy) -> None:
    got = asyncio.Event()

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        while await reader.read(65536):
            got.set()
        await asyncio.sleep(0.1)

    up = await evil(slow_reader)  # type: ignore[operator]
    client = await make_proxy(config(up.url))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /api/up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n")
    writer.write(b"x" * 200_000)
    await writer.drain()
    await asyncio.wait_for(got.wait(), 5)
    writer.transport.abort()
    await assert_alive_and_no_leak(client)
    before = len(asyncio.all_tasks())
    assert before < 10, [t.get_coro() for t in asyncio.all_tasks()]


async def test_client_disconnect_mid_download_leaks_nothing(evil: object,
                                                            make_proxy: MakeProxy) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        while True:
            writer.write(b"y" * 65536)
            await writer.drain()

    up = await evil(endless)  # type: ignore[operator]
    client = await make_proxy(config(up.url, timeout=30))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /api/down HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await reader.readexactly(500_000)
    writer.transport.abort()
    await assert_alive_and_no_leak(client)
    resp = await client.get("/_authproxy/readyz")
    assert json.loads(await resp.text())["status"] == "ready"


# --- Cognito faults, through the proxy --------------------------------------------------------

def cognito_config(upstream: str, cognito_url: str, pool: str, client: str) -> str:
    return f"""
credentials:
  user:
    type: cognito
    flow: password
    user_pool_id: {pool}
    client_id: {client}
    username: alice
    password: Alice-Passw0rd-1
    endpoint: {cognito_url}/
endpoints:
  - {{name: api, endpoint: "{upstream}/Development", auth: user}}
"""


async def test_cognito_down_at_start_gives_503_then_recovers(
        apigw: FakeApiGateway, make_proxy: MakeProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fake = FakeCognito()
    await fake.start()
    pool = fake.add_pool()
    client_id = fake.add_client(pool)
    fake.add_user(pool, "alice", "Alice-Passw0rd-1")
    fake.set_fault("error")  # 500 on every call
    client = await make_proxy(cognito_config(apigw.url, fake.url, pool, client_id))
    resp = await client.get("/api/x")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"] == "credentials_unavailable" and "Alice-Passw0rd-1" not in body["message"]
    ready = await client.get("/_authproxy/readyz")
    assert ready.status == 503 and "reason" in await ready.json()
    assert not apigw.seen
    fake.set_fault(None)
    for _ in range(100):  # transient errors are retried with backoff; no request needed
        ready = await client.get("/_authproxy/readyz")
        if ready.status == 200:
            break
        await asyncio.sleep(0.1)
    assert ready.status == 200
    assert (await client.get("/api/x")).status == 200
    await fake.stop()


@pytest.mark.parametrize("fault", ["slow", "throttle", "error", "down"])
async def test_cognito_trouble_with_a_cached_token_fails_no_request(
        fault: str, apigw: FakeApiGateway, make_proxy: MakeProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fake = FakeCognito()
    await fake.start()
    pool = fake.add_pool()
    client_id = fake.add_client(pool)
    fake.add_user(pool, "alice", "Alice-Passw0rd-1")
    client = await make_proxy(cognito_config(apigw.url, fake.url, pool, client_id))
    assert (await client.get("/api/x")).status == 200
    first = apigw.seen[-1].header("Authorization")
    if fault == "slow":
        fake.delay = 3
    elif fault == "down":
        await fake.stop()
    else:
        fake.set_fault(fault)
    apigw.reject.add(first or "")  # API Gateway now refuses the cached token: a refresh is due
    started = time.monotonic()
    statuses = [(await client.get(f"/api/{i}")).status for i in range(5)]
    # The token is refused upstream and no new one can be had quickly: the 401 comes back
    # (never a crash or a hang longer than the Cognito call), and the server stays up.
    assert set(statuses) <= {200, 401}
    assert time.monotonic() - started < 10
    apigw.reject.clear()
    assert (await client.get("/api/ok")).status == 200  # the cached token still serves
    assert (await client.get("/_authproxy/healthz")).status == 200
    if fault == "down":
        await fake.start()
    fake.set_fault(None)
    fake.delay = 0
    await fake.stop()
