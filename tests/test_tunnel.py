"""proxy/http/tunnel.py on its own: two loopback socket pairs joined by a Tunnel. Frame headers
are followed across arbitrary read splits (who closed, the close code, going-away frames only
between frames), EOFs pass on as half-closes, and the tunnel ends when both sockets are gone."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from ws_raw import close_frame, frame, read_frame

from proxy.http.tunnel import Tunnel, Tunnels

pytestmark = pytest.mark.timeout(30)


class _Plain(asyncio.Protocol):
    """What a transport speaks before the tunnel takes it over (aiohttp's or the pool's)."""

    def __init__(self) -> None:
        self.lost: list[BaseException | None] = []

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


@dataclass
class Joined:
    tunnel: Tunnel
    tunnels: Tunnels
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter]  # the far end of each side
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    handed_back: _Plain  # the client side's previous protocol


async def _pair() -> tuple[asyncio.Transport, _Plain,
                           tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    plain = _Plain()
    transport, _ = await loop.connect_accepted_socket(lambda: plain, ours)
    far = await asyncio.open_connection(sock=theirs)
    return transport, plain, far


@pytest.fixture
async def joined() -> AsyncIterator[Joined]:
    c, plain, client = await _pair()
    u, _, upstream = await _pair()
    tunnels = Tunnels()
    tunnel = Tunnel(c, plain, u, idle_timeout=5, registry=tunnels)
    tunnel.start()
    yield Joined(tunnel, tunnels, client, upstream, plain)
    tunnel.abort("proxy")
    for _, w in (client, upstream):
        w.close()


async def test_bytes_both_ways_and_a_close_code_split_across_reads(joined: Joined) -> None:
    (cr, cw), (ur, uw) = joined.client, joined.upstream
    message = frame(b"x" * 70_000)  # a 64-bit length header
    for i in range(0, len(message), 333):  # in pieces that split headers and payloads
        cw.write(message[i:i + 333])
        await cw.drain()
    assert await read_frame(ur) == (2, b"x" * 70_000)
    uw.write(frame(b"down", opcode=1, mask=False))
    assert await read_frame(cr) == (1, b"down")
    closing = close_frame(4321)
    cw.write(closing[:3])
    await cw.drain()
    await asyncio.sleep(0.05)
    cw.write(closing[3:])
    assert (await read_frame(ur))[0] == 8
    assert (joined.tunnel.closed_by, joined.tunnel.close_code) == ("client", 4321)
    assert joined.tunnel.bytes_up == len(message) + len(closing)
    assert joined.tunnel.bytes_down == 6


async def test_eof_passes_on_as_a_half_close_and_both_gone_ends_it(joined: Joined) -> None:
    (cr, cw), (ur, uw) = joined.client, joined.upstream
    uw.write(close_frame(1000, mask=False))
    uw.write_eof()
    assert (await read_frame(cr))[0] == 8
    assert await cr.read() == b""  # the client saw the upstream's FIN
    cw.write(close_frame(1000))  # its answer still reaches the upstream
    assert (await read_frame(ur))[0] == 8
    cw.close()
    await asyncio.wait_for(joined.tunnel.done, 5)
    assert joined.tunnel.closed_by == "upstream" and joined.tunnels.open == set()
    assert joined.handed_back.lost == [None]  # aiohttp's protocol hears of the loss
    assert joined.tunnels.bytes() == (joined.tunnel.bytes_up, joined.tunnel.bytes_down)


async def test_going_away_only_where_a_direction_is_between_frames(joined: Joined) -> None:
    (cr, cw), (ur, uw) = joined.client, joined.upstream
    whole = frame(b"done", opcode=1, mask=False)
    uw.write(whole)  # upstream -> client: between frames after this
    partial = frame(b"y" * 1000)[:500]
    cw.write(partial)  # client -> upstream: in the middle of a frame
    assert await read_frame(cr) == (1, b"done")
    assert await ur.readexactly(500) == partial
    joined.tunnel.close("drain")
    opcode, payload = await read_frame(cr)
    assert (opcode, int.from_bytes(payload, "big")) == (8, 1001)
    assert await ur.read() == b""  # no frame into the middle of the client's frame
    await asyncio.wait_for(joined.tunnel.done, 5)
    assert (joined.tunnel.closed_by, joined.tunnel.close_code) == ("drain", 1001)


async def test_idle_timeout_counts_silence_both_ways() -> None:
    c, plain, (cr, cw) = await _pair()
    u, _, (ur, uw) = await _pair()
    tunnel = Tunnel(c, plain, u, idle_timeout=0.6)
    tunnel.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(4):  # traffic one way only keeps it open
        await asyncio.sleep(0.3)
        uw.write(frame(b"tick", opcode=1, mask=False))
        assert await read_frame(cr) == (1, b"tick")
    await asyncio.wait_for(tunnel.done, 5)
    assert tunnel.closed_by == "idle_timeout"
    assert loop.time() - started > 1.5
    cw.close()
    uw.close()
