"""Byte-level test helpers: a scripted raw upstream with its own minimal HTTP/1.1 request parser
(not the proxy's, not aiohttp's), a raw client, and an in-process proxy served exactly as
`authproxy serve` serves it (our accept loop and request handler, not a test server)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from proxy.config import parse_config
from proxy.server import Running, start


@dataclass
class RawRequest:
    head: bytes  # request line and headers, without the blank line
    body: bytes

    @property
    def line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def headers(self, name: str) -> list[str]:
        out = []
        for raw in self.head.split(b"\r\n")[1:]:
            k, _, v = raw.decode("latin-1").partition(":")
            if k.strip().lower() == name.lower():
                out.append(v.strip())
        return out


# script(request, reader, writer) answers one request; it returns False to close the connection.
Script = Callable[[RawRequest, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader, read_body: bool = True) -> RawRequest | None:
    """One request off the wire, framed by Content-Length or chunked (the only framings a proxy
    may send); None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise AssertionError(f"connection ended inside a request head: {e.partial!r}") from e
        return None
    req = RawRequest(head[:-4], b"")
    if not read_body:
        return req
    te = [v.lower() for v in req.headers("Transfer-Encoding")]
    cl = req.headers("Content-Length")
    assert not (te and cl), f"both Content-Length and Transfer-Encoding: {req.head!r}"
    assert len(cl) <= 1, f"several Content-Length headers: {req.head!r}"
    if te:
        assert te == ["chunked"], te
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            data = await reader.readexactly(size + 2)
            assert data.endswith(b"\r\n")
            if size == 0:
                break
            body += data[:-2]
        req.body = body
    elif cl:
        req.body = await reader.readexactly(int(cl[0]))
    return req


async def echo_ok(req: RawRequest, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> bool:
    body = req.line.encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    return True


@dataclass
class RawUpstream:
    """An upstream that records every request it parses and answers with `script`."""

    script: Script = echo_ok
    read_body: bool = True
    requests: list[RawRequest] = field(default_factory=list)
    connections: int = 0
    errors: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                req = await read_request(reader, self.read_body)
                if req is None:
                    break
                self.requests.append(req)
                if not await self.script(req, reader, writer):
                    break
                await writer.drain()
        except AssertionError as e:
            self.errors.append(str(e))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0,
                       until_close: bool = True) -> bytes:
    """Send `data`, return everything the proxy sends back until it closes (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
                if not until_close and b"\r\n\r\n" in out:
                    break
    except TimeoutError:
        pass
    finally:
        writer.close()
    return out


async def answer_while_sending(port: int, data: bytes, *, settle: float = 0.2,
                               timeout: float = 5.0) -> bytes:
    """Hand all of `data` to the socket at once (not waiting for the proxy to read it), wait
    `settle` seconds for the proxy to answer and end its side, then read until it closes: what
    a client still sending when it is answered gets to see."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.sleep(settle)
            while chunk := await reader.read(65536):
                out += chunk
    finally:
        writer.transport.abort()
    return out


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def statuses(data: bytes) -> list[int]:
    return [int(m.group(1)) for m in _STATUS.finditer(data)]


@contextlib.asynccontextmanager
async def served(text: str, env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """The proxy for `text` (YAML), listening on 127.0.0.1 on a free port."""
    config = parse_config(text, "test.yaml", {**os.environ, **(env or {})})
    config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, port=0))
    running = await start(config)
    try:
        yield running
    finally:
        await running.stop()


def port_of(running: Running) -> int:
    return int(running.url.rsplit(":", 1)[1])


@dataclass
class RawResponse:
    head: bytes
    body: bytes
    framing: str  # "length", "chunked", "close" or "none" (HEAD, 204, 304)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def headers(self, name: str) -> list[bytes]:
        out = []
        for raw in self.head.split(b"\r\n")[1:]:
            k, _, v = raw.partition(b":")
            if k.strip().lower() == name.lower().encode():
                out.append(v.strip())
        return out


def parse_responses(data: bytes, head_request: bool = False) -> list[RawResponse]:
    """Split what a client received into answers by their own framing; an answer without a
    length takes everything up to the end (the connection's close delimits it)."""
    out: list[RawResponse] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"unterminated head: {data[:200]!r}"
        resp = RawResponse(head, b"", "none")
        te = [v.lower() for v in resp.headers("Transfer-Encoding")]
        cl = resp.headers("Content-Length")
        if head_request or resp.status in (204, 304) or resp.status < 200:
            data = rest
        elif te:
            assert te == [b"chunked"] and not cl, head
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body, rest = body + rest[:size], rest[size + 2:]
                if size == 0:
                    break
            resp.body, resp.framing, data = body, "chunked", rest
        elif cl:
            assert len(cl) == 1, head
            n = int(cl[0])
            resp.body, resp.framing, data = rest[:n], "length", rest[n:]
        else:
            resp.body, resp.framing, data = rest, "close", b""
        out.append(resp)
    return out
