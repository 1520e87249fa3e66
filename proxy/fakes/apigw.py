"""A fake API Gateway on 127.0.0.1: a real HTTP(S) server that answers like API Gateway does and
echoes what it received, so the demo and the tests can see exactly which headers arrived.

Requests are steered with `X-Fake-*` request headers (they pass through the proxy like any other):
  X-Fake-Status: 418          answer with this status
  X-Fake-Delay: 1.5           wait this long before the headers
  X-Fake-Body-Bytes: 1048576  stream this many bytes instead of the echo (X-Fake-Chunk sets size)
  X-Fake-Body: text           answer with this body (e.g. {"message":"Unauthorized"})
  X-Fake-Header: Name: value  add a response header (repeatable)
  X-Fake-Location: URL        answer 302 with this Location
  X-Fake-Stall: 2             send headers and part of the body, then stall this long

Requests outside the stage get API Gateway's 403 `{"message":"Missing Authentication Token"}`;
`require` makes it act like an authorizer (401 `{"message":"Unauthorized"}` on a mismatch).
`iam` makes it act like `AWS_IAM` authorization: every request under the stage must carry a SigV4
signature, which the fake recomputes from what it received (`sigv4_check`) and refuses with API
Gateway's 403s; `Seen.sigv4` says how it went.
`GET /_fake/requests` lists what it saw (not under the stage, so never proxied by accident).

A WebSocket handshake under the stage is a `$connect`: authorized like any request (`require`
headers, `require_query` parameters as a Lambda REQUEST authorizer reads them, or `iam`: a
signed Authorization header or a presigned URL, checked with `sigv4_check`'s own math), then
answered with 101 (subprotocols `chat` and `json` are accepted when offered; permessage-deflate
when asked). Each message is echoed, except these (text) commands:
  push N             send N messages "push 1".."push N"
  flood N            send N MiB of binary as fast as the connection takes it
  close CODE [why]   close with that code
  silence            stop answering (and reading) from here on
  drop               cut the connection (no close frame)
`ws_seen` keeps each connection's close code as the fake saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import WSMsgType, web

from proxy.fakes import sigv4_check


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body_length: int
    body_sha256: str
    sigv4: str | None = None  # iam mode: "verified", or the x-amzn-ErrorType it was refused with

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def as_json(self) -> dict[str, Any]:
        seen = {"method": self.method, "raw_path": self.raw_path, "headers": self.headers,
                "body_length": self.body_length, "body_sha256": self.body_sha256}
        return seen if self.sigv4 is None else seen | {"sigv4": self.sigv4}


@dataclass
class FakeApiGateway:
    stage: str = "/Development"
    require: dict[str, str] = field(default_factory=dict)  # header -> value an authorizer wants
    reject: set[str] = field(default_factory=set)  # Authorization values answered with 401
    # AWS_IAM authorization: access key id -> secret key; empty: no signature checked
    iam: Mapping[str, str] = field(default_factory=dict)  # key id -> secret key
    iam_tokens: Mapping[str, str] = field(default_factory=dict)  # key id -> its session token
    iam_region: str | None = None  # the region signatures must be scoped to; None: any
    # WebSocket $connect: query parameter -> value a REQUEST authorizer wants
    require_query: dict[str, str] = field(default_factory=dict)
    ws_open: int = 0  # WebSocket connections open now
    ws_seen: list[dict[str, Any]] = field(default_factory=list)  # closed ones: path, close code
    clock: Callable[[], float] = time.time  # the fake's clock: signature expiry and `Date`
    seen: deque[Seen] = field(default_factory=lambda: deque(maxlen=10_000))
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application(client_max_size=1024**4)
        app.router.add_get("/_fake/requests", self._list)
        app.router.add_delete("/_fake/requests", self._clear)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, backlog=1024)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([s.as_json() for s in self.seen])

    async def _clear(self, request: web.Request) -> web.Response:
        self.seen.clear()
        return web.Response(status=204)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        digest, length = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            length += len(chunk)
        seen = Seen(request.method, request.raw_path, list(request.headers.items()), length,
                    digest.hexdigest())
        self.seen.append(seen)
        h = request.headers
        amzn = {"x-amzn-RequestId": str(uuid.uuid4()), "Content-Type": "application/json"}
        if self.stage and not (request.path == self.stage
                               or request.path.startswith(self.stage + "/")):
            return web.Response(status=403, headers=amzn | {"x-amzn-ErrorType":
                                "MissingAuthenticationTokenException"},
                                text='{"message":"Missing Authentication Token"}')
        websocket = h.get("Upgrade", "").lower() == "websocket"
        if self.iam:
            signed = sigv4_check.Request(request.method, request.raw_path, seen.headers,
                                         seen.body_sha256)
            # A $connect may be signed in its headers (SDKs) or its URL (browsers).
            presigned = websocket and "Authorization" not in h
            refusal = (sigv4_check.check_presigned if presigned else sigv4_check.check)(
                signed, self.iam, self.iam_tokens, self.clock(), self.iam_region)
            seen.sigv4 = refusal.error_type if refusal else "verified"
            amzn["Date"] = formatdate(self.clock(), usegmt=True)
            if refusal:
                return web.Response(status=refusal.status,
                                    headers=amzn | {"x-amzn-ErrorType": refusal.error_type},
                                    text=json.dumps({"message": refusal.message},
                                                    separators=(",", ":")))
        refused = any(h.get(name) != want for name, want in self.require.items())
        if websocket:
            refused = refused or any(request.query.get(name) != want
                                     for name, want in self.require_query.items())
        if refused or h.get("Authorization") in self.reject:
            return web.Response(status=401, headers=amzn | {"x-amzn-ErrorType":
                                "UnauthorizedException"}, text='{"message":"Unauthorized"}')
        if "X-Fake-Delay" in h:
            await asyncio.sleep(float(h["X-Fake-Delay"]))
        status = int(h.get("X-Fake-Status", "200"))
        if websocket and "X-Fake-Status" not in h:
            return await self._websocket(request)
        headers = dict(amzn)
        for extra in h.getall("X-Fake-Header", []):
            name, _, value = extra.partition(":")
            headers[name.strip()] = value.strip()
        if "X-Fake-Location" in h:
            headers["Location"] = h["X-Fake-Location"]
            status = int(h.get("X-Fake-Status", "302"))
        if "X-Fake-Body-Bytes" in h or "X-Fake-Stall" in h:
            return await self._stream(request, status, headers)
        if "X-Fake-Body" in h:
            return web.Response(status=status, headers=headers, text=h["X-Fake-Body"])
        echo = seen.as_json() | {"path": request.path, "query": request.query_string}
        return web.Response(status=status, headers=headers, text=json.dumps(echo))

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("chat", "json"), heartbeat=None,
                                   max_msg_size=0)
        await ws.prepare(request)
        self.ws_open += 1
        record: dict[str, Any] = {"path": request.raw_path, "close_code": None}
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                    continue
                if msg.type != WSMsgType.TEXT:
                    break
                word, _, arg = msg.data.partition(" ")
                if word == "push":
                    for i in range(1, int(arg or "1") + 1):
                        await ws.send_str(f"push {i}")
                elif word == "flood":
                    block = b"f" * 65536
                    for _ in range(int(arg or "1") * 16):
                        await ws.send_bytes(block)
                elif word == "close":
                    code, _, why = arg.partition(" ")
                    await ws.close(code=int(code or "1000"), message=why.encode())
                    break
                elif word == "silence":
                    await asyncio.sleep(3600)
                elif word == "drop":
                    if request.transport is not None:
                        request.transport.abort()
                    break
                else:
                    await ws.send_str(msg.data)
        except ConnectionError:
            pass
        finally:
            self.ws_open -= 1
            record["close_code"] = ws.close_code
            self.ws_seen.append(record)
        return ws

    async def _stream(self, request: web.Request, status: int,
                      headers: dict[str, str]) -> web.StreamResponse:
        h = request.headers
        total = int(h.get("X-Fake-Body-Bytes", "65536"))
        chunk = b"x" * int(h.get("X-Fake-Chunk", "65536"))
        headers["Content-Type"] = "application/octet-stream"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = total
        await resp.prepare(request)
        sent = 0
        try:
            while sent < total:
                part = chunk[: total - sent]
                await resp.write(part)
                sent += len(part)
                if "X-Fake-Stall" in h:
                    await asyncio.sleep(float(h["X-Fake-Stall"]))
            await resp.write_eof()
        except ConnectionError:
            pass  # the proxy hung up: that is what some tests are about
        return resp


def main() -> None:
    parser = argparse.ArgumentParser(description="a fake API Gateway that echoes what it got")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--stage", default="/Development")
    parser.add_argument("--require", action="append", default=[], metavar="'Header: value'",
                        help="answer 401 like an authorizer unless this header has this value")
    parser.add_argument("--require-query", action="append", default=[], metavar="NAME=VALUE",
                        help="WebSocket $connect: answer 401 unless this query parameter has "
                             "this value")
    args = parser.parse_args()
    require = {name.strip(): value.strip()
               for name, _, value in (r.partition(":") for r in args.require)}

    async def run() -> None:
        fake = FakeApiGateway(stage=args.stage.rstrip("/"), require=require,
                              require_query=dict(q.partition("=")[::2]
                                                 for q in args.require_query))
        url = await fake.start(args.host, args.port)
        print(f"fake API Gateway on {url}{fake.stage}", flush=True)
        stop = asyncio.Event()
        # As PID 1 in a container a process gets no default SIGTERM handling.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await fake.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
