"""A fully buffering aiohttp reverse proxy: reads the whole request body and the whole answer into
memory before passing them on. The large-body baseline of issue 7 (authproxy, which streams, must
reach >= 0.9x its throughput on 10 MB answers while keeping RSS low). Otherwise like
naive_proxy.py: one ClientSession, unlimited connector, no decompression, one fixed header.

usage: buffering_proxy.py PORT UPSTREAM_BASE TOKEN_FILE
"""
import sys

import yarl
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict

PORT, UPSTREAM, TOKEN = int(sys.argv[1]), sys.argv[2].rstrip("/"), open(sys.argv[3]).read().strip()
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
       "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "authorization",
       "content-length"}


async def handler(request: web.Request) -> web.Response:
    sess: ClientSession = request.app["sess"]
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
    headers.append(("Authorization", TOKEN))
    url = yarl.URL(UPSTREAM + request.raw_path, encoded=True)
    data = await request.read() if request.body_exists else None
    async with sess.request(request.method, url, headers=headers, data=data,
                            allow_redirects=False) as up:
        body = await up.read()
        out = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
        return web.Response(status=up.status, reason=up.reason, body=body, headers=out)


async def on_startup(app):
    app["sess"] = ClientSession(
        connector=TCPConnector(limit=0, keepalive_timeout=60), auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
        timeout=ClientTimeout(total=None, sock_connect=10, sock_read=60))


async def on_cleanup(app):
    await app["sess"].close()


app = web.Application(client_max_size=2**31)
app.router.add_route("*", "/{tail:.*}", handler)
app.on_startup.append(on_startup)
app.on_cleanup.append(on_cleanup)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None, backlog=4096)
