"""WebSocket faults (proxy/http/tunnel.py under stress): the upstream dropping mid-stream, the
client vanishing, a handshake that never answers, a slow reader on either side. After each: no
task, socket or descriptor left behind, and plain HTTP still served alongside. The proxy runs in
this process (served as `authproxy serve` serves it) so its tasks and buffers can be looked at.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from raw_http import RawRequest, RawUpstream, port_of, served
from ws_raw import accept_for, connect, frame, read_frame

from proxy.fakes.apigw import FakeApiGateway
from proxy.http.tunnel import HIGH_WATER
from proxy.server import Running

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]
READ = 256 * 1024  # the most one socket read brings in (asyncio's and uvloop's)


def config(url: str, extra: str = "", http: str | None = None) -> str:
    return f"""
endpoints:
  - name: ws
    endpoint: {url}/Development
    auth: none
{extra}
  - name: api
    endpoint: {http or url}/Development
    auth: none
"""


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Baseline:
    """Taken with the proxy (and the fakes) up and idle."""

    def __init__(self) -> None:
        self.fds = fds()
        self.tasks = {t for t in asyncio.all_tasks() if not t.done()}

    def new_tasks(self) -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if not t.done() and t not in self.tasks
                and t is not asyncio.current_task()]


async def settled(running: Running, base: Baseline, fake: FakeApiGateway | None = None,
                  timeout: float = 10) -> None:
    """Everything a tunnel held is gone: tunnels, upstream connections, tasks, descriptors."""
    proxy = running.proxy
    # Idle pooled connections from the HTTP checks are no tunnel's: let them go (both their
    # ends are in this process, with the fake's task waiting on one).
    for conns in proxy.pool.idle.values():
        for conn in conns:
            conn.abort()
    proxy.pool.idle.clear()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = {"tunnels": len(proxy.tunnels.open), "pool_active": proxy.pool.active,
                 "tasks": len(base.new_tasks()), "fds": fds() - base.fds,
                 "fake_open": fake.ws_open if fake else 0}
        idle = proxy.pool.idle_count
        if state == {"tunnels": 0, "pool_active": 0, "tasks": 0, "fds": 0, "fake_open": 0}:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"left behind: {state} (idle upstream connections: {idle}); "
                                 f"tasks: {base.new_tasks()}")
        await asyncio.sleep(0.05)


async def http_works(port: int) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/api/x") as r:
        assert r.status == 200


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiGateway]:
    f = FakeApiGateway()
    await f.start()
    yield f
    await f.stop()


async def test_upstream_dropping_mid_stream_closes_the_client(fake: FakeApiGateway) -> None:
    async with served(config(fake.url)) as running:
        port = port_of(running)
        base = Baseline()
        async with aiohttp.ClientSession() as s, s.ws_connect(
                f"ws://127.0.0.1:{port}/ws/") as ws:
            await ws.send_str("push 2")
            assert [(await ws.receive()).data for _ in range(2)] == ["push 1", "push 2"]
            await http_works(port)  # alongside an open tunnel
            await ws.send_str("drop")
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                aiohttp.WSMsgType.CLOSE)
        await settled(running, base, fake)
        await http_works(port)


@pytest.mark.parametrize("how", ["abort", "close", "half_close"])
async def test_a_vanishing_client_closes_the_upstream(fake: FakeApiGateway, how: str) -> None:
    async with served(config(fake.url)) as running:
        port = port_of(running)
        base = Baseline()
        reader, writer, head = await connect(port, "/ws/")
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(frame(b"hi", opcode=1))
        assert await read_frame(reader) == (1, b"hi")
        assert fake.ws_open == 1
        if how == "abort":
            writer.transport.abort()
        elif how == "close":
            writer.close()
        else:
            writer.write_eof()  # FIN without a close frame: the tunnel must not hang on it
        writer.close()
        await settled(running, base, fake)
        await http_works(port)


async def test_a_handshake_that_never_answers_is_bounded_by_timeout() -> None:
    async def never(req: RawRequest, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> bool:
        await reader.read()  # until the proxy gives up and closes its side
        return False

    upstream = RawUpstream(script=never)
    url = await upstream.start()
    try:
        async with served(config(url, "    timeout: 1")) as running:
            port = port_of(running)
            base = Baseline()
            loop = asyncio.get_running_loop()
            started = loop.time()
            reader, writer, head = await connect(port, "/ws/")
            assert head.startswith(b"HTTP/1.1 504 "), head
            assert 0.9 < loop.time() - started < 3
            assert await asyncio.wait_for(reader.read(), 5) is not None  # closed after it
            writer.close()
            await writer.wait_closed()
            await settled(running, base)
    finally:
        await upstream.stop()


async def _switching_upstream(on_open: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                Any]) -> RawUpstream:
    async def switch(req: RawRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        key = req.headers("Sec-WebSocket-Key")[0].encode()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_for(key)
                     + b"\r\n\r\n")
        await writer.drain()
        await on_open(reader, writer)
        return False

    upstream = RawUpstream(script=switch)
    await upstream.start()
    return upstream


async def test_an_upstream_that_stops_reading_stops_the_proxy_reading_the_client(
        fake: FakeApiGateway) -> None:
    """Memory stays bounded: the proxy holds at most its buffer limit, and the client's own
    writes back up instead."""
    release = asyncio.Event()
    got = bytearray()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        while len(got) < 20 * 1024 * 1024:
            got.extend(await reader.read(1 << 20) or b"")

    upstream = await _switching_upstream(slow)
    url = f"http://127.0.0.1:{upstream._server.sockets[0].getsockname()[1]}"  # type: ignore
    try:
        async with served(config(url, http=fake.url)) as running:
            port = port_of(running)
            base = Baseline()
            reader, writer, head = await connect(port, "/ws/")
            assert head.startswith(b"HTTP/1.1 101 ")
            block = frame(b"u" * (1 << 20))
            sent = 0

            async def push() -> None:
                nonlocal sent
                for _ in range(20):
                    writer.write(block)
                    await writer.drain()
                    sent += 1

            pusher = asyncio.create_task(push())
            await asyncio.sleep(1.5)
            tunnel = next(iter(running.proxy.tunnels.open))
            held = tunnel.upstream.transport.get_write_buffer_size()
            assert held <= HIGH_WATER + READ, held
            assert not tunnel.client.transport.is_reading()
            assert sent < 20 and not pusher.done()  # the client is the one that waits
            await http_works(port)
            release.set()
            await asyncio.wait_for(pusher, 20)
            await asyncio.wait_for(_until(lambda: len(got) >= 20 * len(block)), 20)
            writer.close()
            await settled(running, base)
    finally:
        await upstream.stop()


async def test_a_client_that_stops_reading_stops_the_proxy_reading_the_upstream(
        fake: FakeApiGateway) -> None:
    async with served(config(fake.url)) as running:
        port = port_of(running)
        base = Baseline()
        reader, writer, head = await connect(port, "/ws/")
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(frame(b"flood 32", opcode=1))  # 32 MiB from the upstream
        await asyncio.sleep(1.5)  # and nobody reads them
        tunnel = next(iter(running.proxy.tunnels.open))
        held = tunnel.client.transport.get_write_buffer_size()
        assert held <= HIGH_WATER + READ, held
        assert not tunnel.upstream.transport.is_reading()
        assert tunnel.bytes_down < 16 * 1024 * 1024  # the fake is held back, not the proxy
        await http_works(port)
        total = 0
        while total < 32 * 1024 * 1024:  # every byte arrives once the client reads
            opcode, data = await asyncio.wait_for(read_frame(reader), 10)
            assert opcode == 2 and set(data) == {ord("f")}
            total += len(data)
        assert total == 32 * 1024 * 1024
        writer.close()
        await settled(running, base, fake)


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.05)
