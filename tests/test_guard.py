from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from conftest import ServeProcess

from proxy.config import Cors, Listen
from proxy.guard import Guard
from proxy.http.client_conn import ProxyServer, Request
from proxy.http.listen import Listener
from proxy.http.respond import Response
from proxy.secret import Secret

ORIGINS = Cors(allow_origins=("http://localhost:3000", "https://*.example.com"))


def guard(listen: Listen | None = None, cors: Cors = ORIGINS, port: int = 8080) -> Guard:
    g = Guard(listen or Listen(port=0), cors)
    g.set_port(port)
    return g


def request(method: str = "GET", host: str | None = "localhost:8080",
            headers: list[tuple[str, str]] | None = None) -> Request:
    h = [("Host", host)] if host is not None else []
    return Request.made(method, "/api/x", headers=h + (headers or []))


def refused(resp: Response | None, status: int, code: str) -> bool:
    assert resp is not None, "request was let through"
    assert isinstance(resp.body, bytes)
    return (resp.status == status and resp.headers["X-Authproxy-Error"] == code
            and json.loads(resp.body)["error"] == code)


# --- Host ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    "localhost", "localhost:8080", "LOCALHOST:9", "127.0.0.1", "127.0.0.1:8080",
    "[::1]", "[::1]:8080", "app.localhost:8080", "a.b.localhost", "API.LocalHost:1",
])
def test_loopback_hosts_are_allowed_on_any_port(host: str) -> None:
    assert guard().check(request(host=host)) is None


@pytest.mark.parametrize("host", [
    "rebind.test:8080", "rebind.test", "localhost.evil.example", "localhost.evil.example:8080",
    "evil.localhost.example", "localhostx", "xlocalhost", ".localhost", "a..localhost",
    "127.0.0.2", "127.0.0.1.nip.io", "0.0.0.0:8080", "[::2]:8080", "::1", "[::1", "[::1]x",
    "localhost:80x", "localhost:8080:1", "", "192.168.1.10:8080", "localhost@evil.test",
])
def test_other_hosts_are_refused(host: str) -> None:
    assert refused(guard().check(request(host=host)), 403, "host_not_allowed")


def test_missing_or_repeated_host_is_refused() -> None:
    assert refused(guard().check(request(host=None)), 403, "host_not_allowed")
    twice = request(headers=[("Host", "localhost")])
    assert refused(guard().check(twice), 403, "host_not_allowed")


def test_allowed_hosts_extend_the_set() -> None:
    g = guard(Listen(allowed_hosts=("authproxy", "proxy.internal", "::2")))
    for host in ("authproxy:8080", "PROXY.internal", "[::2]:1", "localhost"):
        assert g.check(request(host=host)) is None, host
    assert refused(g.check(request(host="other.internal")), 403, "host_not_allowed")


def test_host_check_runs_before_everything_else() -> None:
    g = guard(Listen(shared_secret=Secret("s3cret")))
    r = request("OPTIONS", host="rebind.test:8080",
                headers=[("Origin", "http://localhost:3000"),
                         ("Access-Control-Request-Method", "POST")])
    assert refused(g.check(r), 403, "host_not_allowed")


# --- Origin -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
def test_disallowed_origin_is_refused_on_every_method(method: str) -> None:
    r = request(method, headers=[("Origin", "http://evil.test")])
    assert refused(guard().check(r), 403, "origin_not_allowed")


@pytest.mark.parametrize("origin", [
    "http://localhost:3000", "https://app.example.com", "https://a.b.example.com",
])
def test_allowed_origins_pass(origin: str) -> None:
    r = request("POST", headers=[("Origin", origin), ("Sec-Fetch-Site", "cross-site")])
    assert guard().check(r) is None


@pytest.mark.parametrize("origin", [
    "http://localhost:3001", "https://example.com", "https://evil-example.com",
    "https://app.example.com.evil.test", "http://localhost.evil.example:3000", "null",
    "http://rebind.test:8080",
])
def test_origins_that_look_close_are_refused(origin: str) -> None:
    r = request("POST", headers=[("Origin", origin)])
    assert refused(guard().check(r), 403, "origin_not_allowed")


def test_null_origin_only_when_listed() -> None:
    r = request("POST", headers=[("Origin", "null")])
    assert refused(guard(cors=Cors(allow_origins=("*",))).check(r), 403, "origin_not_allowed")
    assert guard(cors=Cors(allow_origins=("null",))).check(r) is None


def test_two_origin_headers_are_refused() -> None:
    r = request("POST", headers=[("Origin", "http://localhost:3000"),
                                 ("Origin", "http://evil.test")])
    assert refused(guard().check(r), 403, "origin_not_allowed")


@pytest.mark.parametrize("origin", [
    "http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080",
    "http://app.localhost:8080", "HTTP://LOCALHOST:8080",
])
def test_the_proxys_own_origin_is_always_allowed(origin: str) -> None:
    g = guard(cors=Cors())  # nothing listed
    assert g.check(request("POST", headers=[("Origin", origin)])) is None


@pytest.mark.parametrize("origin", [
    "http://localhost:8081", "http://localhost", "https://localhost:8080",
    "http://rebind.test:8080", "http://localhost.evil.example:8080", "http://localhost:8080/x",
    "http://localhost:08080x",
])
def test_near_misses_of_the_own_origin_are_refused(origin: str) -> None:
    g = guard(cors=Cors())
    assert refused(g.check(request("POST", headers=[("Origin", origin)])), 403,
                   "origin_not_allowed")


def test_own_origin_follows_the_bound_port_and_allowed_hosts() -> None:
    g = Guard(Listen(port=0, allowed_hosts=("authproxy",)), Cors())
    own = request("POST", headers=[("Origin", "http://localhost:41234")])
    assert refused(g.check(own), 403, "origin_not_allowed")  # port 0: not bound yet
    g.set_port(41234)
    assert g.check(own) is None
    other = request("POST", headers=[("Origin", "http://authproxy:41234")])
    assert g.check(other) is None


def test_own_origin_on_port_80_has_no_port_in_it() -> None:
    g = guard(cors=Cors(), port=80)
    assert g.check(request("POST", headers=[("Origin", "http://localhost")])) is None


def test_configured_port_counts_until_set_port_is_called() -> None:
    g = Guard(Listen(port=8080), Cors())
    assert g.check(request("POST", headers=[("Origin", "http://localhost:8080")])) is None


def test_cross_site_without_origin_is_refused() -> None:
    r = request(headers=[("Sec-Fetch-Site", "cross-site")])
    assert refused(guard().check(r), 403, "origin_not_allowed")
    r = request(headers=[("Sec-Fetch-Site", "Cross-Site")])
    assert refused(guard().check(r), 403, "origin_not_allowed")


@pytest.mark.parametrize("site", ["same-origin", "same-site", "none"])
def test_other_fetch_sites_without_origin_pass(site: str) -> None:
    assert guard().check(request(headers=[("Sec-Fetch-Site", site)])) is None


def test_plain_clients_without_origin_pass() -> None:
    assert guard().check(request("POST")) is None


# --- shared secret ------------------------------------------------------------------------------

SECRETIVE = Listen(shared_secret=Secret("s3cret-välue"))


@pytest.mark.parametrize("value", [None, "", "s3cret", "s3cret-välue ", "S3CRET-VÄLUE", "x"])
def test_wrong_or_missing_secret_is_401(value: str | None) -> None:
    headers = [("X-Authproxy-Secret", value)] if value is not None else []
    resp = guard(SECRETIVE).check(request(headers=headers))
    assert refused(resp, 401, "secret_required")
    assert resp is not None and isinstance(resp.body, bytes)
    assert b"s3cret" not in resp.body


def test_right_secret_passes() -> None:
    r = request(headers=[("X-Authproxy-Secret", "s3cret-välue")])
    assert guard(SECRETIVE).check(r) is None


def test_no_secret_configured_needs_no_header() -> None:
    assert guard().check(request()) is None


def test_preflight_needs_no_secret_but_a_bare_options_does() -> None:
    g = guard(SECRETIVE)
    pre = request("OPTIONS", headers=[("Origin", "http://localhost:3000"),
                                      ("Access-Control-Request-Method", "POST")])
    assert g.check(pre) is None
    bare = request("OPTIONS", headers=[("Origin", "http://localhost:3000")])
    assert refused(g.check(bare), 401, "secret_required")


def test_origin_is_judged_before_the_secret() -> None:
    r = request("POST", headers=[("Origin", "http://evil.test")])
    assert refused(guard(SECRETIVE).check(r), 403, "origin_not_allowed")


def test_secret_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b
    monkeypatch.setattr(hmac, "compare_digest", spy)
    guard(SECRETIVE).check(request(headers=[("X-Authproxy-Secret", "guess")]))
    assert calls == [(b"guess", "s3cret-välue".encode())]


# --- bind warning -------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"])
def test_no_warning_on_loopback(host: str) -> None:
    assert Guard(Listen(host=host), Cors()).bind_warning() is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "myhost.example"])
def test_loud_warning_elsewhere_without_secret(host: str) -> None:
    g = Guard(Listen(host=host, port=0), Cors())
    g.set_port(9999)
    text = g.bind_warning()
    assert text is not None and text.startswith("WARNING")
    assert "shared_secret" in text and ":9999" in text


def test_no_warning_elsewhere_with_secret() -> None:
    assert Guard(Listen(host="0.0.0.0", shared_secret=Secret("x")), Cors()).bind_warning() is None


# --- through the real server ---------------------------------------------------------------------

Served = tuple[aiohttp.ClientSession, int, list[str]]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    # Our own client connections (as `authproxy serve` has them) with the guard in front of a
    # handler that records what got past it.
    g = Guard(Listen(port=0), ORIGINS)
    seen: list[str] = []

    async def handle(request: Request) -> Response:
        denied = g.check(request)
        if denied is not None:
            return denied
        seen.append(request.method)
        return Response(text="ok")

    server = ProxyServer(handle, header_timeout=5, keepalive_timeout=5)
    listener = Listener(server)
    listener.bind("127.0.0.1", 0)
    listener.start()
    port = listener.sockets[0].getsockname()[1]
    g.set_port(port)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        yield session, port, seen
    listener.close()
    await server.shutdown(1.0)


async def test_real_server_refuses_rebinding_and_cross_site(served: Served) -> None:
    client, port, seen = served
    r = await client.get("/", headers={"Host": f"rebind.test:{port}"})
    assert r.status == 403 and r.headers["X-Authproxy-Error"] == "host_not_allowed"
    r = await client.post("/", headers={"Origin": "http://evil.test"}, data="a=1")
    assert r.status == 403 and (await r.json())["error"] == "origin_not_allowed"
    r = await client.get("/img", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403
    assert seen == []
    r = await client.post("/", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert r.status == 200
    r = await client.post("/", headers={"Origin": "https://app.example.com"})
    assert r.status == 200
    assert seen == ["POST", "POST"]


# --- the warning at start -----------------------------------------------------------------------

@pytest.mark.e2e
def test_serve_warns_when_it_listens_beyond_loopback_without_a_secret(
        serve: Callable[..., ServeProcess]) -> None:
    # The real process: Guard.bind_warning is only worth something if serve logs it.
    text = 'endpoints:\n  - {name: api, endpoint: "http://127.0.0.1:9/Development"}\n'
    open_sp = serve(text, "--host", "0.0.0.0")
    secret_sp = serve(text + 'listen: {shared_secret: "s3cret-0123456789"}\n', "--host",
                      "0.0.0.0")
    loopback_sp = serve(text)
    for sp in (open_sp, secret_sp, loopback_sp):
        assert sp.stop() == 0
    port = open_sp.url.rsplit(":", 1)[1]
    warned = [line for line in open_sp.log().splitlines() if "WARNING: listening on" in line]
    assert len(warned) == 1, open_sp.log()
    assert f"0.0.0.0:{port}" in warned[0] and "listen.shared_secret is not set" in warned[0]
    assert "WARNING" in warned[0].split("WARNING: listening")[0]  # logged at warning level
    for quiet in (secret_sp, loopback_sp):
        assert "WARNING: listening on" not in quiet.log(), quiet.log()
        assert "listening on http://" in quiet.log()
