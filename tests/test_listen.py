"""The accept loop (proxy/http/listen.py): every pending connection is taken, binding errors
surface."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from proxy.http.listen import Listener

pytestmark = pytest.mark.timeout(20)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def test_accepts_a_burst_of_connections_and_closes() -> None:
    listener = Listener(Echo)
    listener.bind("127.0.0.1", 0)
    listener.start()
    port = listener.sockets[0].getsockname()[1]

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"%d\n" % i)
        line = await reader.readline()
        writer.close()
        return line

    assert await asyncio.gather(*(one(i) for i in range(300))) == [
        b"%d\n" % i for i in range(300)]
    listener.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_address_in_use_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listener = Listener(Echo)
        with pytest.raises(OSError) as e:
            listener.bind("127.0.0.1", taken.getsockname()[1])
        assert e.value.errno == errno.EADDRINUSE
        assert listener.sockets == []
