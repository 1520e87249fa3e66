"""WebSocket endpoints (SPEC "WebSocket endpoints", proxy/websocket.py), each point through the
real `authproxy serve` process, against the fake API Gateway's WebSocket stage on 127.0.0.1.
The browser-facing ones (Origin, cross-site hijacking) are in tests/test_browser.py; the byte-
level smuggling ones in tests/test_framing.py; faults in tests/test_websocket_faults.py."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
from conftest import BackgroundLoop, ServeProcess
from test_cognito_e2e import PASSWORD, make_pool
from yarl import URL

from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
TOKEN = "Bearer ws-static-token-0123456789"
KEY_ID, SECRET, SESSION = "AKIDWEBSOCKET01", "ws/secret+key=0123456789abcdefABCDEF", "sess/tok+=="

Serve = Callable[..., ServeProcess]


@pytest.fixture
def fake(background: BackgroundLoop) -> Iterator[Callable[..., FakeApiGateway]]:
    started: list[FakeApiGateway] = []

    def make(ssl_context: ssl.SSLContext | None = None, **kw: Any) -> FakeApiGateway:
        f = FakeApiGateway(**kw)
        background.run(f.start(ssl_context=ssl_context))
        started.append(f)
        return f

    yield make
    for f in started:
        background.run(f.stop())


def config(url: str, auth: str = "tok", extra: str = "", listen: str = "",
           creds: str = "") -> str:
    return f"""
listen: {{{listen}}}
credentials:
  tok: {{type: static, value: "{TOKEN}"}}
{creds}
endpoints:
  - name: ws
    endpoint: {url}
    auth: {auth}
{extra}"""


def ws_url(sp: ServeProcess, path: str) -> str:
    return sp.url.replace("http://", "ws://") + path


def records(sp: ServeProcess) -> list[dict[str, Any]]:
    out = []
    for line in sp.log().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def access_line(sp: ServeProcess, path: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in records(sp) if r.get("logger") == "authproxy.access"
                 and r.get("path") == path]
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for {path}:\n{sp.log()}")


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def admin(sp: ServeProcess, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(sp.url + "/_authproxy" + path) as r:
        return await (r.json() if path.startswith("/api") else r.text())


# --- the handshake goes with the credential, then bytes flow both ways ----------------------

async def test_echo_push_and_close_code_through_the_tunnel_with_the_header_injected(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake(require={"Authorization": TOKEN})
    sp = serve(config(f"{up.url}/Development"), "--log-format", "json")
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, "/ws/chat?room=1")) as ws:
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        await ws.send_bytes(bytes(range(256)) * 1000)
        assert (await ws.receive()).data == bytes(range(256)) * 1000
        await ws.send_str("push 3")
        assert [(await ws.receive()).data for _ in range(3)] == ["push 1", "push 2", "push 3"]
        await ws.send_str("close 4001 bye")
        msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4001, "bye")
    seen = up.seen[-1]
    assert seen.raw_path == "/Development/chat?room=1"
    assert seen.header("Authorization") == TOKEN
    assert seen.header("Upgrade") == "websocket" and seen.header("X-Request-Id")


async def test_sec_websocket_negotiation_passes_unchanged(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake()
    sp = serve(config(f"{up.url}/Development", auth="none"))
    async with aiohttp.ClientSession() as s, s.ws_connect(
            ws_url(sp, "/ws/"), protocols=("chat",), compress=15) as ws:
        # aiohttp checked Sec-WebSocket-Accept against the key it made: the upstream computed
        # it from the key it received, so the key passed unchanged.
        assert ws.protocol == "chat"  # the upstream's choice came back
        assert ws.compress == 15  # permessage-deflate negotiated end to end
        await ws.send_str("x" * 10000)  # compressed frames pass through, never re-encoded
        assert (await ws.receive()).data == "x" * 10000
    seen = up.seen[-1]
    assert len(seen.header("Sec-WebSocket-Key") or "") == 24
    assert seen.header("Sec-WebSocket-Protocol") == "chat"
    assert seen.header("Sec-WebSocket-Version") == "13"
    assert "permessage-deflate" in (seen.header("Sec-WebSocket-Extensions") or "")


async def test_token_query_puts_the_bare_cognito_token_in_the_query(
        fake: Callable[..., FakeApiGateway], serve: Serve, background: BackgroundLoop) -> None:
    cognito = FakeCognito()
    background.run(cognito.start())
    try:
        pool = make_pool(cognito)
        up = fake()
        creds = pool.config("http://127.0.0.1:9").split("endpoints:")[0].replace(
            "credentials:", "")
        sp = serve(config(f"{up.url}/Development", auth="user", creds=creds,
                          extra="    token_query: token"), "--log-format", "json")
        target = "/ws/?a=1&token=client-sent&b=two%20words&%74oken=again&c="
        async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, target)) as ws:
            await ws.send_str("ping")
            assert (await ws.receive()).data == "ping"
        path, _, query = up.seen[-1].raw_path.partition("?")
        params = query.split("&")
        assert path == "/Development/"
        assert [p.partition("=")[0] for p in params] == ["a", "token", "b", "c"]
        assert params[0] == "a=1" and params[2] == "b=two%20words" and params[3] == "c="
        token = urllib.parse.unquote(params[1].partition("=")[2])
        assert token.startswith("eyJ") and not token.startswith("Bearer")  # no prefix
        assert jwt.decode(token, options={"verify_signature": False})["token_use"] == "id"
        assert up.seen[-1].header("Authorization") is None  # instead of the header
        # The token is redacted wherever the URL is shown.
        ws_records = (await admin(sp, "/api/websockets"))["recent"]
        assert token not in json.dumps(ws_records) and token not in sp.log()
        assert re.search(r"[?&]token=eyJhbGci…\(\d+ chars\)&", ws_records[0]["upstream_url"])
        assert PASSWORD not in sp.log()
    finally:
        background.run(cognito.stop())


async def test_token_query_value_is_percent_encoded_and_a_custom_name_is_redacted(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake(require_query={"auth_value": "Bearer a+b/c=d&e"})
    sp = serve(config(f"{up.url}/Development", creds='  odd: {type: static, value: '
                      '"Bearer a+b/c=d&e"}', auth="odd", extra="    token_query: auth_value"))
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, "/ws/x")) as ws:
        await ws.send_str("ok")
        assert (await ws.receive()).data == "ok"
    assert up.seen[-1].raw_path == "/Development/x?auth_value=Bearer%20a%2Bb%2Fc%3Dd%26e"


async def test_iam_presigns_the_handshake_url_and_the_fake_verifies_it(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake(iam={KEY_ID: SECRET}, iam_tokens={KEY_ID: SESSION}, iam_region="us-east-1")
    creds = (f"  keys: {{type: iam, source: keys, access_key_id: {KEY_ID}, secret_access_key: "
             f"'{SECRET}', session_token: '{SESSION}', region: us-east-1}}")
    sp = serve(config(f"{up.url}/Development", auth="keys", creds=creds), "--log-format", "json")
    async with aiohttp.ClientSession() as s, s.ws_connect(
            URL(ws_url(sp, "/ws/?room=a%2Fb"), encoded=True)) as ws:
        await ws.send_str("signed")
        assert (await ws.receive()).data == "signed"
    seen = up.seen[-1]
    assert seen.sigv4 == "verified"
    assert seen.header("Authorization") is None
    query = seen.raw_path.partition("?")[2]
    assert query.startswith("room=a%2Fb&X-Amz-Algorithm=AWS4-HMAC-SHA256&")
    assert "X-Amz-SignedHeaders=host" in query and "X-Amz-Security-Token=" in query
    # The signature and token never show: not in the log, not in the inspector.
    signature = urllib.parse.parse_qs(query)["X-Amz-Signature"][0]
    shown = json.dumps(await admin(sp, "/api/websockets"))
    for secret in (signature, SECRET, urllib.parse.quote(SESSION, safe="")):
        assert secret not in shown and secret not in sp.log()

    # A wrong secret: API Gateway's 403 comes back as it was sent.
    bad = serve(config(f"{up.url}/Development", auth="keys",
                       creds=creds.replace(SECRET, SECRET[:-1] + "X")))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(ws_url(bad, "/ws/"))
    assert e.value.status == 403
    assert up.seen[-1].sigv4 == "InvalidSignatureException"


async def test_a_refused_handshake_comes_back_as_the_upstream_sent_it(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake(require={"Authorization": "Bearer something-else"})
    sp = serve(config(f"{up.url}/Development"))
    reader, writer = await asyncio.open_connection("127.0.0.1", int(sp.url.rsplit(":", 1)[1]))
    writer.write(b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\nX-Request-Id: ws-refused-1\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # the connection closes after it
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 401 Unauthorized"
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    assert body == b'{"message":"Unauthorized"}'
    assert headers["x-amzn-errortype"] == "UnauthorizedException"
    assert headers["x-request-id"] == "ws-refused-1"
    assert "x-authproxy-hint" in headers
    assert headers["connection"] == "close"


async def test_timeout_bounds_the_handshake_only(fake: Callable[..., FakeApiGateway],
                                                 serve: Serve) -> None:
    up = fake()
    sp = serve(config(f"{up.url}/Development", auth="none", extra="    timeout: 1"))
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, "/ws/")) as ws:
        await asyncio.sleep(2.5)  # well past `timeout`
        await ws.send_str("still here")
        assert (await ws.receive(timeout=5)).data == "still here"
    # ... and a handshake that does not come within it is a 504.
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(ws_url(sp, "/ws/"), headers={"X-Fake-Delay": "5"})
        assert e.value.status == 504
        assert time.monotonic() - started < 4


async def test_idle_timeout_closes_a_silent_tunnel_and_traffic_keeps_it_open(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake()
    sp = serve(config(f"{up.url}/Development", auth="none", extra="    idle_timeout: 1.5"),
               "--log-format", "json")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(ws_url(sp, "/ws/busy")) as ws:
            for _ in range(6):  # 3 s of traffic, twice the idle timeout
                await asyncio.sleep(0.5)
                await ws.send_str("tick")
                assert (await ws.receive(timeout=5)).data == "tick"
        started = time.monotonic()
        async with s.ws_connect(ws_url(sp, "/ws/quiet")) as ws:
            msg = await ws.receive(timeout=10)
            waited = time.monotonic() - started
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert 1.4 < waited < 5
    line = await access_line(sp, "/ws/quiet")
    assert line["websocket"]["closed_by"] == "idle_timeout"
    await eventually(lambda: up.ws_open == 0)


async def test_https_becomes_wss_with_the_ca_bundle_and_wss_may_be_written(
        fake: Callable[..., FakeApiGateway], serve: Serve, tmp_path: Path) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    up = fake(ssl_context=ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    for scheme in ("https", "wss"):
        url = up.url.replace("https", scheme) + "/Development"
        sp = serve(config(url, extra=f"    tls_verify: {bundle}"))
        async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, "/ws/tls")) as ws:
            await ws.send_str(f"over {scheme}")
            assert (await ws.receive()).data == f"over {scheme}"
        assert up.seen[-1].header("Authorization") == TOKEN
    # Without the bundle the certificate is not trusted: 502, as for HTTP.
    sp = serve(config(up.url + "/Development"))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(ws_url(sp, "/ws/tls"))
    assert e.value.status == 502


async def test_wss_through_https_proxy_connect(fake: Callable[..., FakeApiGateway],
                                               serve: Serve, tmp_path: Path,
                                               background: BackgroundLoop) -> None:
    from test_forward import ConnectProxy

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    up = fake(ssl_context=ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    corp = ConnectProxy()
    port = background.run(corp.start())
    sp = serve(config(up.url + "/Development", extra=f"    tls_verify: {bundle}"),
               env={"HTTPS_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": ""})
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, "/ws/")) as ws:
        await ws.send_str("via corp")
        assert (await ws.receive()).data == "via corp"
    assert corp.targets == [f"127.0.0.1:{up.port}"]
    corp.server.close()


# --- the guard applies to handshakes ---------------------------------------------------------

@pytest.mark.parametrize("headers,listen,status,code", [
    ({"Host": "evil.example"}, "", 403, "host_not_allowed"),
    ({"Origin": "http://evil.example"}, "", 403, "origin_not_allowed"),
    ({}, "shared_secret: s3cret-value", 401, "secret_required"),
])
async def test_the_guard_refuses_handshakes_before_the_upstream_sees_them(
        headers: dict[str, str], listen: str, status: int, code: str,
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake()
    sp = serve(config(f"{up.url}/Development", listen=listen))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(ws_url(sp, "/ws/"), headers=headers)
        assert (e.value.status, e.value.headers["X-Authproxy-Error"]) == (status, code)
        if listen:
            async with s.ws_connect(ws_url(sp, "/ws/"),
                                    headers={"X-Authproxy-Secret": "s3cret-value"}) as ws:
                await ws.send_str("with the secret")
                assert (await ws.receive()).data == "with the secret"
            assert len(up.seen) == 1 and up.seen[0].header("X-Authproxy-Secret") is None
            return
    assert not up.seen


# --- visibility: access log, inspector, metrics ---------------------------------------------

async def test_access_log_inspector_and_metrics_show_each_websocket(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake()
    sp = serve(config(f"{up.url}/Development"), "--log-format", "json")
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(ws_url(sp, "/ws/seen?x=1"))
        await ws.send_str("a" * 1000)
        assert len((await ws.receive()).data) == 1000
        live = await admin(sp, "/api/websockets")
        assert [w["path"] for w in live["open"]] == ["/ws/seen?x=1"] and not live["recent"]
        entry = live["open"][0]
        assert entry["status"] == 101 and entry["websocket"]["open"]
        assert entry["websocket"]["bytes_up"] > 1000 and entry["websocket"]["bytes_down"] > 1000
        sent = {h["name"]: h["value"] for h in entry["sent_headers"]}
        assert sent["Authorization"] != TOKEN and "***" in sent["Authorization"]
        assert "***" in sent["Sec-WebSocket-Key"]  # its name says key: redacted too
        metrics = await admin(sp, "/metrics")
        assert "authproxy_websocket_tunnels_open 1.0" in metrics
        assert "authproxy_in_flight_requests 0.0" in metrics  # a tunnel is no request
        await ws.close()
    line = await access_line(sp, "/ws/seen")
    assert (line["endpoint"], line["status"]) == ("ws", 101)
    assert line["websocket"]["closed_by"] == "client"
    assert line["websocket"]["bytes_up"] > 1000 and line["websocket"]["bytes_down"] > 1000
    assert line["total_ms"] > 0 and line["upstream_ms"] is not None
    assert TOKEN not in sp.log()
    done = await admin(sp, "/api/websockets")
    assert not done["open"] and done["recent"][0]["websocket"]["closed_by"] == "client"
    metrics = await admin(sp, "/metrics")
    assert "authproxy_websocket_tunnels_open 0.0" in metrics
    assert "authproxy_websocket_tunnels_total 1.0" in metrics
    up_bytes = [ln for ln in metrics.splitlines()
                if ln.startswith('authproxy_websocket_bytes_total{direction="client_to_up')]
    assert float(up_bytes[0].split()[-1]) > 1000
    assert 'authproxy_requests_total{endpoint="ws",status="101"} 1.0' in metrics


# --- drain --------------------------------------------------------------------------------

async def test_sigterm_closes_open_tunnels_after_drain_timeout(
        fake: Callable[..., FakeApiGateway], serve: Serve) -> None:
    up = fake()
    sp = serve(config(f"{up.url}/Development", listen="drain_timeout: 1.5"),
               "--log-format", "json")
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url(sp, "/ws/draining")) as ws:
        sp.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.sleep(0.5)
        await ws.send_str("during the drain")  # still served meanwhile
        assert (await ws.receive(timeout=5)).data == "during the drain"
        msg = await ws.receive(timeout=10)
        waited = time.monotonic() - started
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert 1.2 < waited < 6
    assert await asyncio.to_thread(sp.proc.wait, 15) == 0
    line = await access_line(sp, "/ws/draining")
    assert line["websocket"]["closed_by"] == "drain"
    await eventually(lambda: up.ws_open == 0)


async def test_a_401_on_the_handshake_refreshes_the_credential_once_and_retries(
        fake: Callable[..., FakeApiGateway], serve: Serve, background: BackgroundLoop,
        tmp_path: Path) -> None:
    cognito = FakeCognito()
    background.run(cognito.start())
    try:
        pool = make_pool(cognito)
        up = fake()
        sp = serve(pool.config(f"{up.url}", extra=""), env={"XDG_CACHE_HOME": str(tmp_path)})
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(ws_url(sp, "/api/one")) as ws:
                await ws.send_str("first")
                assert (await ws.receive()).data == "first"
            first = up.seen[-1].header("Authorization")
            assert first and first.startswith("Bearer eyJ")
            up.reject.add(first)  # as if API Gateway now found it revoked
            async with s.ws_connect(ws_url(sp, "/api/two")) as ws:
                await ws.send_str("second")
                assert (await ws.receive()).data == "second"
        tries = [x for x in up.seen if x.raw_path == "/Development/two"]
        assert [t.header("Authorization") == first for t in tries] == [True, False]
    finally:
        background.run(cognito.stop())
