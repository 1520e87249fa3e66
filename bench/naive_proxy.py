# ruff: noqa  (a verbatim copy of ../shared/bench/naive_proxy.py, the reference baseline)
"""A naive aiohttp reverse proxy: the baseline that authproxy must beat (streaming, shared
ClientSession, unlimited connector, no decompression, fixed Authorization header).

usage: naive_proxy.py PORT UPSTREAM_BASE TOKEN_FILE
"""
import asyncio
import sys

import yarl
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

PORT, UPSTREAM, TOKEN = int(sys.argv[1]), sys.argv[2].rstrip("/"), open(sys.argv[3]).read().strip()
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
       "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "authorization"}


async def handler(request: web.Request) -> web.StreamResponse:
    sess: ClientSession = request.app["sess"]
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
    headers.append(("Authorization", TOKEN))
    url = yarl.URL(UPSTREAM + request.raw_path, encoded=True)
    data = request.content if request.body_exists else None
    async with sess.request(request.method, url, headers=headers, data=data, allow_redirects=False) as up:
        resp = web.StreamResponse(status=up.status, reason=up.reason)
        resp.headers.extend((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def on_startup(app):
    app["sess"] = ClientSession(
        connector=TCPConnector(limit=0, keepalive_timeout=60), auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
        timeout=ClientTimeout(total=None, sock_connect=10, sock_read=60))


async def on_cleanup(app):
    await app["sess"].close()


app = web.Application()
app.router.add_route("*", "/{tail:.*}", handler)
app.on_startup.append(on_startup)
app.on_cleanup.append(on_cleanup)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None, backlog=4096)
