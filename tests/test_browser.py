"""The browser-facing defences, proven in a real headless Chromium against the real
`authproxy serve` process and the fake API Gateway.

Origins: `http://app.test:P` is listed in cors.allow_origins; `http://evil.test:P` is any other
site the developer happens to visit; both are served by one local page server (port P) and exist
only inside the browser (`--host-resolver-rules`). The proxy and the upstream are on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_fixtures import (
    Pages,
    ProxyProcess,
    authproxy,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    page_server,
    proxy_config,
)

from proxy.fakes.apigw import FakeApiGateway

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.browser

BLANK = "<!doctype html><title>test page</title>"

# Runs in the page: the outcome of a fetch() as the page's own script would see it.
FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {ok: true, status: r.status, body: await r.text(),
            requestId: r.headers.get('X-Request-Id')};
  } catch (e) {
    return {ok: false, error: String(e)};
  }
}"""

JSON_POST = {"method": "POST", "headers": {"Content-Type": "application/json"},
             "body": json.dumps({"hello": "world"})}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeApiGateway]:
    fake = FakeApiGateway()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    async with page_server() as p:
        p.pages["/blank"] = BLANK
        yield p


@pytest.fixture
async def proxy(upstream: FakeApiGateway, pages: Pages, tmp_path: Path
                ) -> AsyncIterator[ProxyProcess]:
    config = proxy_config(upstream.url, [pages.url("app.test", "")])
    async with authproxy(config, tmp_path) as p:
        yield p


async def open_page(browser: Browser, url: str) -> Page:
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    await page.goto(url)
    return page


async def fetch(page: Page, url: str, init: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(FETCH, [url, init or {}])
    return result


def methods(upstream: FakeApiGateway) -> list[str]:
    return [f"{s.method} {s.raw_path}" for s in upstream.seen]


# a. ---------------------------------------------------------------------------------------------

async def test_allowed_page_posts_json_with_a_custom_header(
        browser: Browser, pages: Pages, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    page = await open_page(browser, pages.url("app.test", "/blank"))
    init = {**JSON_POST, "headers": {
        "Content-Type": "application/json", "X-Trace": "trace-1",
        # API Gateway often adds its own CORS headers; if the proxy let this one through next
        # to its own, the browser would see two Allow-Origin values and refuse the answer.
        "X-Fake-Header": "Access-Control-Allow-Origin: *"}}
    result = await fetch(page, proxy.url("/api/items?page=2"), init)

    assert result["ok"], result
    assert result["status"] == 200
    echo = json.loads(result["body"])
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/Development/items",
                                                              "page=2")
    assert result["requestId"], "X-Request-Id is listed in expose_headers"
    # The preflight was answered by the proxy and never reached API Gateway.
    assert methods(upstream) == ["POST /Development/items?page=2"]
    seen = upstream.seen[0]
    assert seen.header("x-api-key") == "browser-test-api-key"
    assert seen.header("X-Trace") == "trace-1"
    assert [r["status"] for r in await proxy.wait_access("OPTIONS", "/api/items")] == [204]


# b. ---------------------------------------------------------------------------------------------

async def test_disallowed_page_cannot_fetch(
        browser: Browser, pages: Pages, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    evil = await open_page(browser, pages.url("evil.test", "/blank"))
    simple = await fetch(evil, proxy.url("/api/simple"))
    preflighted = await fetch(evil, proxy.url("/api/json"), JSON_POST)

    assert not simple["ok"] and "Failed to fetch" in simple["error"], simple
    assert not preflighted["ok"], preflighted
    assert methods(upstream) == []
    # Refused by the proxy itself (not a network error): the simple GET at the guard, the JSON
    # POST already at its preflight.
    assert [r["status"] for r in await proxy.wait_access("GET", "/api/simple")] == [403]
    assert [r["status"] for r in await proxy.wait_access("OPTIONS", "/api/json")] == [403]
    assert proxy.access("POST", "/api/json") == []

    # The same fetch from the allowed page goes through, so the silence above means something.
    app = await open_page(browser, pages.url("app.test", "/blank"))
    assert (await fetch(app, proxy.url("/api/simple")))["status"] == 200
    assert methods(upstream) == ["GET /Development/simple"]


# c. ---------------------------------------------------------------------------------------------

FORM = """<!doctype html><title>form</title>
<form id="f" method="POST" action="{action}" enctype="text/plain">
  <input name="amount" value="100">
</form>
<script>document.getElementById("f").submit()</script>"""

IMG = """<!doctype html><title>img</title>
<img src="{src}" onerror="document.title = 'img done'" onload="document.title = 'img done'">"""


async def test_hostile_form_post_and_img_get_are_refused(
        browser: Browser, pages: Pages, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    pages.pages["/form"] = FORM.format(action=proxy.url("/api/transfer"))
    pages.pages["/img"] = IMG.format(src=proxy.url("/api/delete-everything"))
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(10_000)

    async with page.expect_response(proxy.url("/api/transfer")) as posted:
        await page.goto(pages.url("evil.test", "/form"))
    form = await posted.value
    assert form.request.method == "POST"
    assert (form.status, await form.header_value("X-Authproxy-Error")) == (
        403, "origin_not_allowed")

    await page.goto(pages.url("evil.test", "/img"))
    await page.wait_for_function("document.title === 'img done'")
    # Chromium's opaque-response blocking hides an image's failed answer from the page and from
    # Playwright alike; the proxy's access log tells who refused it.
    img = await proxy.wait_access("GET", "/api/delete-everything")
    assert [(r["status"], r.get("error")) for r in img] == [(403, "origin_not_allowed")]
    assert methods(upstream) == []

    # The allowed page's form does reach API Gateway: the refusals above are the guard's doing.
    async with page.expect_response(proxy.url("/api/transfer")) as posted:
        await page.goto(pages.url("app.test", "/form"))
    assert (await posted.value).status == 200
    assert methods(upstream) == ["POST /Development/transfer"]


# d. ---------------------------------------------------------------------------------------------

async def test_dns_rebinding_is_refused_by_the_host_check(
        browser: Browser, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    # After the attacker's name rebinds to 127.0.0.1, the attacker's script runs in the origin
    # http://rebind.test:<proxy port> and its same-origin requests land on the proxy; only the
    # Host header gives them away. Chromium's own Private Network Access would block a page
    # first loaded from a public address, but other browsers do not, so the script runs here in
    # a document of that origin loaded from 127.0.0.1 -- which the proxy refuses too.
    origin = proxy.url(host="rebind.test")
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    document = await page.goto(f"{origin}/")
    assert document is not None and document.status == 403

    for path, init in (("/api/items", None), ("/api/items", JSON_POST),
                       ("/_authproxy/healthz", None)):
        result = await fetch(page, path, init)
        assert result["ok"], result  # same-origin: the page can read the refusal itself
        assert result["status"] == 403, (path, result)
        assert json.loads(result["body"])["error"] == "host_not_allowed"
    assert methods(upstream) == []
    # The same requests by a name the proxy knows do get through: the Host made the difference.
    await page.goto(proxy.url("/_authproxy/healthz", host="localhost"))
    assert (await fetch(page, "/api/items", JSON_POST))["status"] == 200
    assert methods(upstream) == ["POST /Development/items"]


# e. ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("allow_credentials", [True, False])
async def test_credentials_include(browser: Browser, pages: Pages, upstream: FakeApiGateway,
                                   tmp_path: Path, allow_credentials: bool) -> None:
    config = proxy_config(upstream.url, [pages.url("app.test", "")], allow_credentials)
    async with authproxy(config, tmp_path) as proxy:
        page = await open_page(browser, pages.url("app.test", "/blank"))
        plain = await fetch(page, proxy.url("/api/me"))
        simple = await fetch(page, proxy.url("/api/me"), {"credentials": "include"})
        preflighted = await fetch(page, proxy.url("/api/me"),
                                  {**JSON_POST, "credentials": "include"})

    assert plain["ok"] and plain["status"] == 200, plain
    assert simple["ok"] is allow_credentials, simple
    assert preflighted["ok"] is allow_credentials, preflighted
    if allow_credentials:
        assert simple["status"] == preflighted["status"] == 200
        assert json.loads(preflighted["body"])["method"] == "POST"


# admin -----------------------------------------------------------------------------------------

FRAME = """<!doctype html><title>frame</title><iframe src="{src}"></iframe>"""


async def test_other_sites_cannot_read_the_admin_api(
        browser: Browser, pages: Pages, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    for host in ("evil.test", "app.test"):  # even an allowed app origin: admin is same-origin
        page = await open_page(browser, pages.url(host, "/blank"))
        for path in ("/_authproxy/api/exchanges", "/_authproxy/healthz"):
            result = await fetch(page, proxy.url(path))
            assert not result["ok"], (host, path, result)

    # Framing the inspector from another site is refused too (a cross-site navigation).
    pages.pages["/frame"] = FRAME.format(src=proxy.url("/_authproxy/"))
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    async with page.expect_response(proxy.url("/_authproxy/")) as framed:
        await page.goto(pages.url("evil.test", "/frame"))
    assert (await framed.value).status == 403

    # The proxy's own origin reads its admin API, and may call through it as well.
    own = await open_page(browser, proxy.url("/_authproxy/healthz"))
    health = await fetch(own, "/_authproxy/healthz")
    assert health["ok"] and json.loads(health["body"]) == {"status": "ok"}
    posted = await fetch(own, "/api/from-inspector", JSON_POST)
    assert posted["ok"] and posted["status"] == 200, posted
    assert methods(upstream) == ["POST /Development/from-inspector"]


async def test_the_inspector_page_never_shows_a_query_secret(
        browser: Browser, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    from playwright.async_api import expect

    page = await open_page(browser, proxy.url("/_authproxy/"))
    # The page's own origin calls through the proxy, as a developer's script on it would.
    called = await fetch(page, "/api/callback?access_token=SECRET-at-31&code=SECRET-code-32"
                               "&X-Amz-Signature=SECRET-sig-33&page=2")
    assert called["ok"] and called["status"] == 200, called
    assert methods(upstream) == ["GET /Development/callback?access_token=SECRET-at-31"
                                 "&code=SECRET-code-32&X-Amz-Signature=SECRET-sig-33&page=2"]

    rows = page.locator("#exchanges tbody tr")
    await expect(rows.filter(has_text="/api/callback")).to_have_count(1)
    await rows.filter(has_text="/api/callback").click()
    detail = page.locator("#detail")
    shown = ("callback?access_token=***(12 chars)&code=***(14 chars)"
             "&X-Amz-Signature=***(13 chars)&page=2")
    await expect(detail).to_contain_text(f"GET /api/{shown}")
    await expect(detail).to_contain_text(f"{upstream.url}/Development/{shown}")
    await expect(detail.locator("pre.curl")).to_contain_text(proxy.url(f"/api/{shown}"))
    # Nowhere on the page: not its text, not an attribute (the list's tooltips hold the path).
    dom = await page.content() + await page.evaluate("document.body.innerText")
    assert "SECRET" not in dom


# WebSockets -----------------------------------------------------------------------------------

# Runs in the page: open a WebSocket, send each message, collect `expect` answers, close.
WEBSOCKET = """async ([url, send, expect]) => new Promise((resolve) => {
  const got = [];
  let opened = false;
  const ws = new WebSocket(url);
  ws.onopen = () => { opened = true; for (const m of send) ws.send(m); };
  ws.onmessage = (e) => { got.push(e.data); if (got.length >= expect) ws.close(1000, "done"); };
  ws.onclose = (e) => resolve({opened, got, code: e.code});
  setTimeout(() => resolve({opened, got, code: "timeout"}), 8000);
})"""


async def websocket(page: Page, url: str, send: list[str], expect: int) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(WEBSOCKET, [url, send, expect])
    return result


async def test_allowed_page_opens_a_websocket_and_it_echoes(
        browser: Browser, pages: Pages, upstream: FakeApiGateway, proxy: ProxyProcess) -> None:
    page = await open_page(browser, pages.url("app.test", "/blank"))
    result = await websocket(page, proxy.url("/api/live?room=1").replace("http", "ws", 1),
                             ["hello", "push 2"], 3)
    assert result == {"opened": True, "got": ["hello", "push 1", "push 2"], "code": 1000}
    (seen,) = upstream.seen
    assert (seen.method, seen.raw_path) == ("GET", "/Development/live?room=1")
    assert seen.header("x-api-key") == "browser-test-api-key"  # a header no page could set
    assert seen.header("Origin") == pages.url("app.test", "")
    (line,) = await proxy.wait_access("GET", "/api/live")
    assert line["status"] == 101 and line["websocket"]["closed_by"] == "client"
    assert line["websocket"]["close_code"] == 1000


@pytest.mark.parametrize("host", ["evil.test", "rebind.test"])
async def test_hostile_page_cannot_open_a_websocket_through_the_proxy(
        host: str, browser: Browser, pages: Pages, upstream: FakeApiGateway,
        proxy: ProxyProcess) -> None:
    """Cross-site WebSocket hijacking: browsers send no preflight for a WebSocket, so only the
    guard's Origin (evil.test) and Host (rebind.test: DNS rebinding) checks stand in the way."""
    page = await open_page(browser, pages.url(host, "/blank"))
    target = proxy.url("/api/live", host="127.0.0.1" if host == "evil.test" else host)
    result = await websocket(page, target.replace("http", "ws", 1), ["steal"], 1)
    assert result["opened"] is False and result["got"] == [] and result["code"] == 1006, result
    assert not upstream.seen
    (line,) = await proxy.wait_access("GET", "/api/live")
    assert (line["status"], line["error"]) == (
        403, "origin_not_allowed" if host == "evil.test" else "host_not_allowed")
