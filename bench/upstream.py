"""A minimal, fast HTTP/1.1 upstream for the benchmarks (raw asyncio protocol, no framework).

    GET  /bytes/N        N bytes of a fixed pseudo-random pattern, streamed with flow control
                         (Content-Length: N); `pattern_sha256(N)` gives the expected digest
    POST|PUT /upload     reads the whole body (Content-Length or chunked), answers
                         {"bytes": n, "sha256": "..."} and logs the count to stderr
    GET  /echo           the request head as received (to check what a proxy sent)
    anything else        200 with a 200-byte JSON body (headers like API Gateway's by default)

usage: upstream.py [--port P] [--loop uvloop|asyncio] [--headers apigw|minimal]
Prints "READY <port>" on stdout once listening. Keep-alive and pipelining are supported.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys

BLOCK = random.Random(20240601).randbytes(256 * 1024)
SMALL_BODY = (b'{"ok":true,"items":[' + b",".join(b'"item-%03d"' % i for i in range(15))
              + b'],"pad":"')
SMALL_BODY += b"x" * (198 - len(SMALL_BODY)) + b'"}'
assert len(SMALL_BODY) == 200

APIGW_HEADERS = (b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
                 b"Content-Type: application/json\r\n"
                 b"x-amzn-RequestId: 5f1d3c2e-8a4b-4c6d-9e0f-1a2b3c4d5e6f\r\n"
                 b"x-amz-apigw-id: AbCdEfGhIjKlMnO=\r\n"
                 b"X-Amzn-Trace-Id: Root=1-65920000-0123456789abcdef01234567;Sampled=0\r\n")
MINIMAL_HEADERS = b"Content-Type: application/json\r\n"


def pattern_chunks(n: int, size: int = len(BLOCK)):
    """The /bytes/N body, as memoryviews of at most `size` bytes."""
    view, pos = memoryview(BLOCK), 0
    while n > 0:
        take = min(n, size, len(BLOCK) - pos)
        yield view[pos:pos + take]
        pos = (pos + take) % len(BLOCK)
        n -= take


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for chunk in pattern_chunks(n):
        h.update(chunk)
    return h.hexdigest()


class Stats:
    uploads: list[int] = []


class HttpServer(asyncio.Protocol):
    extra_headers = APIGW_HEADERS
    small_response = b""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.state = "head"
        self.left = 0  # bytes of body (or of the current chunk) still to come
        self.close_after = False
        self.upload: hashlib._Hash | None = None
        self.upload_n = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.busy = False  # a streamed answer is being written: hold further requests

    @classmethod
    def configure(cls, headers: bytes) -> None:
        cls.extra_headers = headers
        cls.small_response = (b"HTTP/1.1 200 OK\r\n" + headers
                              + b"Content-Length: %d\r\n\r\n" % len(SMALL_BODY) + SMALL_BODY)

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc):  # type: ignore[no-untyped-def]
        self.transport = None
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.state == "body" and not self.buf:
            # Fast path for big uploads: no copy into the buffer.
            take = min(self.left, len(data))
            self._body(memoryview(data)[:take])
            self.left -= take
            if self.left:
                return
            data = data[take:]
            self._request_done()
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        buf = self.buf
        while buf and not self.busy and self.transport is not None:
            if self.state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        self._reply(431, b"header too large", close=True)
                    return
                head = bytes(buf[:end]).decode("latin-1")
                del buf[:end + 4]
                self._head(head)
            elif self.state == "body":
                take = min(self.left, len(buf))
                self._body(memoryview(buf)[:take])
                del buf[:take]
                self.left -= take
                if self.left:
                    return
                self._request_done()
            elif self.state == "chunk_size":
                eol = buf.find(b"\r\n")
                if eol < 0:
                    return
                size = int(bytes(buf[:eol]).split(b";")[0], 16)
                del buf[:eol + 2]
                if size == 0:
                    self.state = "trailer"
                else:
                    self.left, self.state = size, "chunk_data"
            elif self.state == "chunk_data":
                take = min(self.left, len(buf))
                self._body(memoryview(buf)[:take])
                del buf[:take]
                self.left -= take
                if self.left:
                    return
                self.state = "chunk_crlf"
            elif self.state == "chunk_crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = "chunk_size"
            elif self.state == "trailer":
                eol = buf.find(b"\r\n")
                if eol < 0:
                    return
                del buf[:eol + 2]
                if eol == 0:
                    self._request_done()

    def _head(self, head: str) -> None:
        self.head = head
        line, _, rest = head.partition("\r\n")
        try:
            self.method, self.target, version = line.split(" ")
        except ValueError:
            self._reply(400, b"bad request line", close=True)
            return
        length, chunked = 0, False
        self.close_after = version == "HTTP/1.0"
        if rest:
            for h in rest.split("\r\n"):
                name, _, value = h.partition(":")
                name = name.lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding":
                    chunked = "chunked" in value.lower()
                elif name == "connection":
                    v = value.strip().lower()
                    self.close_after = v == "close" or (self.close_after and v != "keep-alive")
        self.is_upload = self.target.startswith("/upload")
        if self.is_upload:
            self.upload, self.upload_n = hashlib.sha256(), 0
        if chunked:
            self.state = "chunk_size"
        elif length:
            self.state, self.left = "body", length
        else:
            self._request_done()

    def _body(self, chunk: memoryview) -> None:
        if self.upload is not None:
            self.upload.update(chunk)
            self.upload_n += len(chunk)

    def _request_done(self) -> None:
        self.state = "head"
        target = self.target
        if self.upload is not None:
            n, digest = self.upload_n, self.upload.hexdigest()
            self.upload = None
            Stats.uploads.append(n)
            print(f"upload: {n} bytes sha256={digest}", file=sys.stderr, flush=True)
            self._reply(200, json.dumps({"bytes": n, "sha256": digest}).encode())
        elif target.startswith("/echo"):
            self._reply(200, self.head.encode("latin-1"))
        elif target.startswith("/bytes/"):
            try:
                n = int(target[7:].partition("?")[0])
            except ValueError:
                self._reply(400, b"bad size")
                return
            self.busy = True
            asyncio.get_running_loop().create_task(self._stream(n))
        else:
            assert self.transport is not None
            self.transport.write(self.small_response)
            if self.close_after:
                self.transport.close()

    def _reply(self, status: int, body: bytes, close: bool = False) -> None:
        assert self.transport is not None
        close = close or self.close_after
        self.transport.write(
            b"HTTP/1.1 %d X\r\n" % status + self.extra_headers
            + b"Content-Length: %d\r\n" % len(body)
            + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body)
        if close:
            self.transport.close()

    async def _stream(self, n: int) -> None:
        t = self.transport
        assert t is not None
        t.write(b"HTTP/1.1 200 OK\r\n" + self.extra_headers.replace(
            b"application/json", b"application/octet-stream")
            + b"Content-Length: %d\r\n\r\n" % n)
        for chunk in pattern_chunks(n, 64 * 1024):
            if not self.writable.is_set():
                await self.writable.wait()
            if self.transport is None:
                return
            t.write(chunk)
        self.busy = False
        if self.close_after:
            t.close()
        elif self.buf:
            self._parse()


async def serve(port: int, host: str = "127.0.0.1") -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(HttpServer, host, port, backlog=4096, reuse_address=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--headers", choices=("apigw", "minimal"), default="apigw")
    args = ap.parse_args()
    HttpServer.configure(APIGW_HEADERS if args.headers == "apigw" else MINIMAL_HEADERS)
    if args.loop == "uvloop":
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            print("upstream: uvloop not installed, using asyncio", file=sys.stderr)

    async def run() -> None:
        server = await serve(args.port, args.host)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
