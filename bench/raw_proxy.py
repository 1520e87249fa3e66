"""A ceiling, not a product: the least a Python reverse proxy can do per request on this machine.

Raw asyncio protocols on both sides, no framework: parses the request head, drops hop-by-hop
headers, sets Host and one fixed Authorization header, sends it on a pooled keep-alive upstream
connection, and copies the answer back, framed by Content-Length (chunked answers are relayed
as they are, ended by their 0-size chunk). No flow control, no timeouts, no error answers beyond
502: it exists to show how far a lean hot path could take authproxy, measured by bench/load.py
(`--cmd raw='{python} {bench}/raw_proxy.py {port} {upstream} {token_file}'`).

usage: raw_proxy.py PORT UPSTREAM_BASE TOKEN_FILE
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
       b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host",
       b"authorization"}


class Upstream(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.left = -1  # body bytes still to relay; -1: reading the head; -2: chunked
        self.close_after = False

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc):  # type: ignore[no-untyped-def]
        self.transport = None
        if self.client is not None:
            self.client.upstream_failed()
        self.pool.forget(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or client.transport is None:
            return
        if self.left > 0:
            self._body(data)
            return
        if self.left == -2:
            self._chunked(data)
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self.buf[:end], self.buf[end + 4:]
        self.buf = b""
        lines = head.split(b"\r\n")
        out = [lines[0]]
        length, chunked = 0, False
        self.close_after = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            low = name.strip().lower()
            if low == b"content-length":
                length = int(value)
            elif low == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif low == b"connection":
                self.close_after = b"close" in value.lower()
            if low in HOP and low != b"transfer-encoding":
                continue
            out.append(line)
        client.transport.write(b"\r\n".join(out) + b"\r\n\r\n")
        if chunked:
            self.left, self.tail = -2, b""
            self._chunked(rest)
        elif length:
            self.left = length
            if rest:
                self._body(rest)
        else:
            self._done()

    def _body(self, data: bytes) -> None:
        assert self.client is not None and self.client.transport is not None
        take = data[:self.left]
        self.client.transport.write(take)
        self.left -= len(take)
        if self.left == 0:
            self._done()

    def _chunked(self, data: bytes) -> None:
        assert self.client is not None and self.client.transport is not None
        self.client.transport.write(data)
        self.tail = (self.tail + data)[-5:]
        if self.tail == b"0\r\n\r\n":
            self._done()

    def _done(self) -> None:
        client, self.client, self.left = self.client, None, -1
        if self.close_after and self.transport is not None:
            self.transport.close()
        else:
            self.pool.release(self)
        if client is not None:
            client.answered()


class Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Upstream] = []

    async def acquire(self) -> Upstream:
        while self.idle:
            up = self.idle.pop()
            if up.transport is not None and not up.transport.is_closing():
                return up
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        return up

    def release(self, up: Upstream) -> None:
        self.idle.append(up)

    def forget(self, up: Upstream) -> None:
        if up in self.idle:
            self.idle.remove(up)


class Client(asyncio.Protocol):
    pool: Pool
    host_header: bytes
    auth_header: bytes

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.upstream: Upstream | None = None
        self.body_left = 0

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc):  # type: ignore[no-untyped-def]
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.body_left and self.upstream is not None and self.upstream.transport is not None:
            take = data[:self.body_left]
            self.upstream.transport.write(take)
            self.body_left -= len(take)
            data = data[len(take):]
            if not data:
                return
        self.buf += data
        self._next()

    def _next(self) -> None:
        if self.busy or self.transport is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        lines = head.split(b"\r\n")
        out = [lines[0], self.host_header]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            low = name.strip().lower()
            if low == b"content-length":
                length = int(value)
            if low not in HOP:
                out.append(line)
        out.append(self.auth_header)
        self.busy = True
        asyncio.get_running_loop().create_task(
            self._send(b"\r\n".join(out) + b"\r\n\r\n", length))

    async def _send(self, head: bytes, length: int) -> None:
        try:
            up = await self.pool.acquire()
        except OSError:
            self._fail()
            return
        up.client, self.upstream = self, up
        assert up.transport is not None
        body = self.buf[:length]
        self.buf = self.buf[length:]
        up.transport.write(head + body)
        self.body_left = length - len(body)

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        self.answered()

    def upstream_failed(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def answered(self) -> None:
        self.busy, self.upstream = False, None
        if self.buf:
            self._next()


def main() -> None:
    port, base, token_file = int(sys.argv[1]), urlsplit(sys.argv[2]), sys.argv[3]
    token = open(token_file).read().strip()
    assert base.hostname and base.port
    Client.pool = Pool(base.hostname, base.port)
    Client.host_header = f"Host: {base.netloc}".encode()
    Client.auth_header = f"Authorization: {token}".encode()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Client, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
