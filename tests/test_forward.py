"""Forwarding per the SPEC, through an in-process proxy to a real fake API Gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from conftest import MakeProxy
from yarl import URL

from proxy.fakes.apigw import FakeApiGateway

TOKEN = "static-token-0123456789abcdef"


def config(url: str, **endpoint: Any) -> str:
    extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in endpoint.items())
    return f"""
credentials:
  tok: {{type: static, value: {TOKEN}}}
  key: {{type: static, header: x-api-key, value: key-123456}}
endpoints:
  - name: api
    endpoint: {url}/Development
    auth: tok
{extra}"""


async def test_path_and_query_are_forwarded_byte_for_byte(apigw: FakeApiGateway,
                                                          make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    raw = "/api/items/a%2Fb/%7Euser/caf%C3%A9?q=a%20b&q=2&empty=&x=%2F"
    resp = await client.session.get(URL(f"http://127.0.0.1:{client.port}{raw}", encoded=True))
    assert resp.status == 200
    echo = await resp.json()
    assert echo["raw_path"] == "/Development/items/a%2Fb/%7Euser/caf%C3%A9?q=a%20b&q=2&empty=&x=%2F"
    resp = await client.get("/api")
    assert (await resp.json())["raw_path"] == "/Development"
    resp = await client.get("/api/")
    assert (await resp.json())["raw_path"] == "/Development/"


async def test_headers_injected_dropped_and_set(apigw: FakeApiGateway,
                                                make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, set_headers={"X-Stage": "dev"},
                                     remove_headers=["Cookie"]))
    resp = await client.get("/api/x", headers={
        "Authorization": "client-value", "Cookie": "session=1", "Connection": "X-Private, close",
        "X-Private": "hop", "Keep-Alive": "timeout=5", "TE": "trailers", "Upgrade": "h2c",
        "Proxy-Authorization": "Basic eA==", "X-Authproxy-Secret": "s", "X-Custom": "kept",
        "X-Forwarded-For": "10.0.0.1", "X-Request-Id": "req-42"})
    echo = await resp.json()
    seen = apigw.seen[-1]
    assert seen.header("Authorization") == TOKEN
    assert [k for k, _ in seen.headers].count("Authorization") == 1
    for gone in ("Cookie", "X-Private", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization",
                 "X-Authproxy-Secret"):
        assert seen.header(gone) is None, gone
    assert seen.header("X-Custom") == "kept"
    assert seen.header("X-Stage") == "dev"
    assert seen.header("Host") == f"127.0.0.1:{apigw.port}"
    assert seen.header("X-Forwarded-For") == "10.0.0.1, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == f"127.0.0.1:{client.port}"
    assert seen.header("X-Request-Id") == "req-42"
    assert resp.headers["X-Request-Id"] == "req-42"
    assert echo["method"] == "GET"


async def test_request_id_generated_when_absent(apigw: FakeApiGateway,
                                                make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    resp = await client.get("/api/x")
    rid = resp.headers["X-Request-Id"]
    assert len(rid) >= 16 and apigw.seen[-1].header("X-Request-Id") == rid


async def test_client_header_keep(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, client_header="keep"))
    await client.get("/api/x", headers={"Authorization": "Bearer mine"})
    assert apigw.seen[-1].header("Authorization") == "Bearer mine"
    await client.get("/api/x")
    assert apigw.seen[-1].header("Authorization") == TOKEN


async def test_custom_header_name_and_none(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url) + f"""
  - name: keyed
    endpoint: {apigw.url}/Development
    auth: key
  - name: open
    endpoint: {apigw.url}/Development
    auth: none
""")
    await client.get("/keyed/x", headers={"X-Api-Key": "from-client"})
    assert apigw.seen[-1].header("x-api-key") == "key-123456"
    await client.get("/open/x", headers={"Authorization": "passes-through"})
    assert apigw.seen[-1].header("Authorization") == "passes-through"
    await client.get("/open/x")
    assert apigw.seen[-1].header("Authorization") is None


async def test_no_invented_headers_and_no_decompression(apigw: FakeApiGateway,
                                                       make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    body = gzip.compress(b'{"hello": "world"}' * 100)
    gz = "Content-Encoding: gzip"
    resp = await client.post("/api/x", data=body, headers={"X-Fake-Body": "", "X-Fake-Header": gz},
                             skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent",
                                                "Content-Type"),
                             auto_decompress=False)
    seen = apigw.seen[-1]
    for invented in ("Accept-Encoding", "User-Agent", "Content-Type", "Accept"):
        assert seen.header(invented) is None, invented
    assert seen.body_length == len(body)
    assert seen.body_sha256 == hashlib.sha256(body).hexdigest()
    assert resp.headers["Content-Encoding"] == "gzip"

    # A gzip answer comes back as the same bytes, not decoded.
    upstream = web.Application()

    async def gz_answer(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    upstream.router.add_get("/{tail:.*}", gz_answer)
    runner = web.AppRunner(upstream)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client2 = await make_proxy(config(f"http://127.0.0.1:{port}"))
    resp = await client2.get("/api/x", auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert await resp.read() == body
    await runner.cleanup()


async def test_redirects_passed_back_with_location_rewritten(apigw: FakeApiGateway,
                                                            make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    cases = {
        f"{apigw.url}/Development/login?next=1": f"http://127.0.0.1:{client.port}/api/login?next=1",
        "/Development/other": "/api/other",
        "https://elsewhere.example/x": "https://elsewhere.example/x",
        "/Developmentx": "/Developmentx",
    }
    for location, expected in cases.items():
        resp = await client.get("/api/x", headers={"X-Fake-Location": location},
                                allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == expected
    assert len(apigw.seen) == len(cases)  # not followed


async def test_upstream_access_control_headers_replaced(apigw: FakeApiGateway,
                                                       make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url) + "cors: {allow_origins: [http://app.test:3000]}\n")
    resp = await client.get("/api/x", headers={
        "Origin": "http://app.test:3000",
        "X-Fake-Header": "Access-Control-Allow-Origin: *"})
    assert resp.headers.getall("Access-Control-Allow-Origin") == ["http://app.test:3000"]


async def test_timeout_gives_504(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, timeout=0.3))
    resp = await client.get("/api/x", headers={"X-Fake-Delay": "2"})
    assert resp.status == 504
    assert resp.headers["X-Authproxy-Error"] == "upstream_timeout"
    assert (await resp.json())["error"] == "upstream_timeout"


async def test_refused_connection_gives_502(make_proxy: MakeProxy,
                                            unused_tcp_port: int) -> None:
    client = await make_proxy(config(f"http://127.0.0.1:{unused_tcp_port}"))
    resp = await client.get("/api/x")
    assert resp.status == 502
    body = await resp.json()
    assert body["error"] == "upstream_unreachable"
    assert "cannot connect" in body["message"]


async def test_streaming_both_ways(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    size = 8 * 1024 * 1024

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(size // 65536):
            yield b"y" * 65536

    resp = await client.post("/api/up", data=gen())
    assert (await resp.json())["body_length"] == size
    resp = await client.get("/api/down", headers={"X-Fake-Body-Bytes": str(size)})
    assert resp.headers["Content-Length"] == str(size)
    total = 0
    async for chunk in resp.content.iter_any():
        total += len(chunk)
    assert total == size


async def test_mid_body_failure_truncates_instead_of_lying(apigw: FakeApiGateway,
                                                           make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, timeout=0.5))
    resp = await client.get("/api/x", headers={"X-Fake-Body-Bytes": "300000", "X-Fake-Stall": "1"})
    assert resp.status == 200
    # The client sees a short body, never a silent success.
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


# --- TLS like real API Gateway ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_apigw(ca: trustme.CA) -> AsyncIterator[FakeApiGateway]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    fake = FakeApiGateway()
    await fake.start(ssl_context=ctx)
    yield fake
    await fake.stop()


async def test_tls_unknown_ca_refused_with_clear_502(https_apigw: FakeApiGateway,
                                                     make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(https_apigw.url))
    resp = await client.get("/api/x")
    assert resp.status == 502
    message = (await resp.json())["message"]
    assert "not trusted" in message and "tls_verify" in message
    assert not https_apigw.seen


async def test_tls_ca_bundle_accepted(https_apigw: FakeApiGateway, make_proxy: MakeProxy,
                                      ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    client = await make_proxy(config(https_apigw.url, tls_verify=str(bundle)))
    resp = await client.get("/api/x")
    assert resp.status == 200
    assert https_apigw.seen[-1].header("Authorization") == TOKEN


# --- HTTPS_PROXY / NO_PROXY ------------------------------------------------------------------

class ConnectProxy:
    """A minimal corporate proxy: answers CONNECT and pipes bytes, remembering the targets."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.auth: list[str | None] = []  # the Proxy-Authorization of each CONNECT

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
        assert method == "CONNECT"
        self.targets.append(target)
        lines = head.decode().split("\r\n")[1:]
        self.auth.append(next((line.split(": ", 1)[1] for line in lines
                               if line.lower().startswith("proxy-authorization:")), None))
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)


async def test_https_proxy_and_no_proxy_honoured(https_apigw: FakeApiGateway,
                                                 make_proxy: MakeProxy, ca: trustme.CA,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    corp = ConnectProxy()
    port = await corp.start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = await make_proxy(config(https_apigw.url, tls_verify=str(bundle)))
    resp = await client.get("/api/x")
    assert resp.status == 200
    assert corp.targets == [f"127.0.0.1:{https_apigw.port}"]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = await make_proxy(config(https_apigw.url, tls_verify=str(bundle)))
    resp = await client.get("/api/x")
    assert resp.status == 200
    assert len(corp.targets) == 1  # went direct
    assert corp.auth == [None]

    # Credentials in the proxy URL become Proxy-Authorization on the CONNECT, and only there.
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTPS_PROXY", f"http://corp%40user:s%3Acret@127.0.0.1:{port}")
    client = await make_proxy(config(https_apigw.url, tls_verify=str(bundle)))
    resp = await client.get("/api/x")
    assert resp.status == 200
    assert corp.auth[-1] == "Basic " + base64.b64encode(b"corp@user:s:cret").decode()
    assert https_apigw.seen[-1].header("Proxy-Authorization") is None
    corp.server.close()


async def test_expect_100_continue_answered_once_route_and_credential_are_known(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    await writer.drain()
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"{}")
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert apigw.seen[-1].body_length == 2
    writer2 = (await asyncio.open_connection("127.0.0.1", client.port))
    writer2[1].write(b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
    assert (await writer2[0].readline()).startswith(b"HTTP/1.1 404 ")  # no 100 first
    writer2[1].close()


async def test_small_answers_carry_what_aiohttp_would_add(apigw: FakeApiGateway,
                                                          make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    resp = await client.get("/api/x")
    assert resp.status == 200
    body = await resp.read()
    assert resp.headers["Content-Length"] == str(len(body))
    assert "Date" in resp.headers and "Server" in resp.headers
    assert "Transfer-Encoding" not in resp.headers


async def test_bodiless_post_gets_content_length_zero(apigw: FakeApiGateway,
                                                      make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert apigw.seen[-1].header("Content-Length") == "0"
    await client.get("/api/x")
    assert apigw.seen[-1].header("Content-Length") is None


async def test_tls_verify_false_accepts_any_certificate(https_apigw: FakeApiGateway,
                                                        make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(https_apigw.url, tls_verify=False))
    resp = await client.get("/api/x")
    assert resp.status == 200


async def test_http_proxy_gets_absolute_form_with_its_credentials(
        make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[bytes] = []

    async def plain_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = await make_proxy(config("http://api.internal.example:8080"))
    resp = await client.get("/api/x?q=1")
    assert resp.status == 200 and await resp.read() == b"ok"
    line, *rest = heads[0].decode().split("\r\n")
    assert line == "GET http://api.internal.example:8080/Development/x?q=1 HTTP/1.1"
    assert "Proxy-Authorization: Basic dXNlcjpwdw==" in rest
    assert "Host: api.internal.example:8080" in rest
    server.close()



async def test_client_header_keep_sends_exactly_one_authorization(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    # `keep`: the client's own Authorization goes upstream, alone; never a second one beside it
    # (API Gateway would read whichever it likes).
    client = await make_proxy(config(apigw.url, client_header="keep"))
    await client.get("/api/x", headers={"Authorization": "Bearer mine"})
    sent = [v for k, v in apigw.seen[-1].headers if k.lower() == "authorization"]
    assert sent == ["Bearer mine"]
    await client.get("/api/x")
    sent = [v for k, v in apigw.seen[-1].headers if k.lower() == "authorization"]
    assert sent == [TOKEN]


async def test_a_body_over_the_replay_limit_is_not_replayed_though_a_refresh_could_help(
        apigw: FakeApiGateway, make_proxy: MakeProxy, tmp_path: Path) -> None:
    # The only reason not to replay here is the body's size: the credential has not been forced
    # to refresh yet (that happens at most every FORCED_REFRESH_INTERVAL), and the small request
    # after it shows the refresh and replay would have worked.
    import io

    from proxy.fakes.cognito import FakeCognito
    limit = 1024 * 1024  # the SPEC's replay limit, written out: a test of the constant itself

    fake = FakeCognito()
    await fake.start()
    try:
        pool = fake.add_pool()
        app_client = fake.add_client(pool)
        fake.add_user(pool, "alice", "Passw0rd!")
        client = await make_proxy(f"""
credentials:
  user:
    type: cognito
    flow: password
    user_pool_id: {pool}
    client_id: {app_client}
    username: alice
    password: Passw0rd!
    endpoint: {fake.url}
endpoints:
  - {{name: api, endpoint: "{apigw.url}/Development", auth: user}}
""", env={"XDG_CACHE_HOME": str(tmp_path)})
        assert (await client.get("/api/first")).status == 200
        first = apigw.seen[-1].header("Authorization")
        assert first is not None
        apigw.reject.add(first)  # as if API Gateway now found it revoked
        sign_ins = fake.count("InitiateAuth")

        resp = await client.post("/api/big", data=io.BytesIO(b"x" * (limit + 1)))
        assert resp.status == 401
        assert len([s for s in apigw.seen if s.raw_path == "/Development/big"]) == 1
        assert fake.count("InitiateAuth") == sign_ins  # no refresh spent on it

        resp = await client.post("/api/small", data=io.BytesIO(b"y" * limit))
        assert resp.status == 200
        tries = [s for s in apigw.seen if s.raw_path == "/Development/small"]
        assert [t.header("Authorization") == first for t in tries] == [True, False]
        assert (await resp.json())["body_length"] == limit
    finally:
        await fake.stop()
