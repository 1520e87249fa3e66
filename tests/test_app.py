"""The request path through the app: unusable targets, routing errors, and the guarantee that the
upstream host never comes from the request, sent over raw sockets as a hostile client would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import MakeProxy

from proxy.app import target_problem
from proxy.fakes.apigw import FakeApiGateway


def config(url: str) -> str:
    return f"""
credentials:
  tok: {{type: static, value: tok-123456789}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: tok}}
  - {{name: root, endpoint: "{url}/Development/root", prefix: /}}
"""


async def raw_request(port: int, target: str, host: str = "127.0.0.1",
                      extra: str = "") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
                 .encode("latin-1"))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("target", [
    "http://evil.example/api/x", "https://evil.example:443/api/x", "//evil.example/api/x",
    "/api/@evil.example/x", "/api/..\\..\\x", "/api/%2e%2e/%2E%2E/x", "/api/../x", "/api/./x",
    "/api/x/..", "/api%2f..%2fx", "/@evil.example", "/api/x?next=http://evil.example/",
    "/api/%5c%2e%2e%5cx", "*",
])
async def test_upstream_host_never_comes_from_the_request(
        target: str, apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    status, headers, body = await raw_request(client.port, target)
    if status == 200:
        seen = apigw.seen[-1]
        assert seen.header("Host") == f"127.0.0.1:{apigw.port}"
        assert seen.raw_path.startswith("/Development/")
        assert ".." not in seen.raw_path.lower().replace("%2e", ".")
    else:
        assert status in (400, 404), (status, body)
        if target != "*":  # "*" is refused by aiohttp's parser itself, before the proxy
            assert json.loads(body)["error"] in ("bad_request", "no_route")
    assert all(s.header("Host") == f"127.0.0.1:{apigw.port}" for s in apigw.seen)


async def test_absolute_form_is_a_bad_request(apigw: FakeApiGateway,
                                             make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    status, headers, body = await raw_request(client.port, f"{apigw.url}/Development/x")
    assert status == 400
    assert headers["X-Authproxy-Error"] == "bad_request"
    assert not apigw.seen


async def test_no_route_names_the_endpoints(apigw: FakeApiGateway,
                                            make_proxy: MakeProxy) -> None:
    client = await make_proxy(f"""
endpoints:
  - {{name: api, endpoint: "{apigw.url}/Development"}}
""")
    resp = await client.get("/apix")
    assert resp.status == 404
    assert resp.headers["X-Authproxy-Error"] == "no_route"
    body = await resp.json()
    assert body["error"] == "no_route" and "/api" in body["message"]


async def test_admin_prefix_is_never_forwarded(apigw: FakeApiGateway,
                                              make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))  # "root" takes every path
    for path in ("/_authproxy/healthz", "/_authproxy/nothing", "/_authproxy"):
        await client.get(path)
    assert not apigw.seen
    resp = await client.get("/_authproxyx")
    assert resp.status == 200  # a different path, forwarded by the "/" endpoint
    assert apigw.seen[-1].raw_path == "/Development/root/_authproxyx"


def test_target_problem() -> None:
    assert target_problem("/api/x") is None
    assert target_problem("/api/x.y/..z/.well-known") is None
    assert target_problem("/api/%2E%2e/x")
    assert target_problem("http://x/")
    assert target_problem("/a\\b")


async def test_the_guard_runs_before_admin_and_preflight(apigw: FakeApiGateway) -> None:
    # Proxy.handle itself, served as `authproxy serve` serves it (make_server): a page that
    # rebinds a hostile name to 127.0.0.1 must not read admin answers (readyz, the exchanges
    # of the inspector) nor get a preflight approved, and the shared secret guards admin too.
    from proxy.app import make_server
    from proxy.config import parse_config
    from proxy.http.listen import Listener

    text = config(apigw.url) + """
cors: {allow_origins: ["http://localhost:3000"]}
listen: {shared_secret: "s3cret-0123456789"}
"""
    server, proxy = make_server(parse_config(text, "test.yaml", {}))
    listener = Listener(server)
    listener.bind("127.0.0.1", 0)
    listener.start()
    await proxy.start()
    port = listener.sockets[0].getsockname()[1]
    proxy.set_port(port)
    secret = "X-Authproxy-Secret: s3cret-0123456789\r\n"
    preflight = ("Origin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n")
    try:
        for target in ("/_authproxy/healthz", "/_authproxy/readyz", "/_authproxy/metrics",
                       "/_authproxy"):
            status, headers, _ = await raw_request(port, target, host="rebind.test",
                                                   extra=secret)
            assert (status, headers.get("X-Authproxy-Error")) == (403, "host_not_allowed"), target
            status, headers, _ = await raw_request(port, target)
            assert (status, headers.get("X-Authproxy-Error")) == (401, "secret_required"), target
        status, _, _ = await raw_request(port, "/_authproxy/healthz", extra=secret)
        assert status == 200

        for host, code in (("rebind.test", "host_not_allowed"), (f"127.0.0.1:{port}", None)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"OPTIONS /api/x HTTP/1.1\r\nHost: {host}\r\n{preflight}"
                         "Connection: close\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
            if code:
                assert head.startswith("HTTP/1.1 403") and f"X-Authproxy-Error: {code}" in head
                assert "Access-Control-Allow-Origin" not in head
            else:  # the same preflight from an allowed host is answered (no secret needed)
                assert "Access-Control-Allow-Origin: http://localhost:3000" in head, head
        assert not apigw.seen
    finally:
        listener.close()
        await server.shutdown(1.0)
        await proxy.close()


async def test_the_credentials_session_comes_with_the_first_source_that_calls_http(
        apigw: FakeApiGateway, make_proxy: MakeProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Static values call nothing: the app makes no aiohttp ClientSession for them (nor imports
    # aiohttp, tests/test_cli.py). A reload that brings a Cognito credential brings the session,
    # which the credential then signs in through; closing the app closes it.
    from conftest import PROXIES

    from proxy.config import parse_config
    from proxy.fakes.cognito import FakeCognito

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    client = await make_proxy(config(apigw.url))
    proxy = PROXIES[client]
    assert proxy.session is None
    fake = FakeCognito()
    await fake.start()
    try:
        pool = fake.add_pool()
        app_client = fake.add_client(pool)
        fake.add_user(pool, "alice", "Passw0rd!")
        await proxy.reload(parse_config(config(apigw.url).replace("endpoints:", f"""\
  user:
    type: cognito
    flow: password
    user_pool_id: {pool}
    client_id: {app_client}
    username: alice
    password: Passw0rd!
    endpoint: {fake.url}
endpoints:
  - {{name: user, endpoint: "{apigw.url}/Development", auth: user, prefix: /user}}"""),
                                        "test.yaml", {}))
        session = proxy.session
        assert session is not None
        resp = await client.get("/user/x")
        assert resp.status == 200
        sent = dict((await resp.json())["headers"])
        assert sent["Authorization"].startswith("Bearer ey")
        await proxy.reload(parse_config(config(apigw.url), "test.yaml", {}))
        assert proxy.session is session  # kept for the process's lifetime, as before
    finally:
        await fake.stop()
    await proxy.close()
    assert session.closed
