"""The inspector page: served with headers that let it run only its own files, and, in a real
headless Chromium, showing live exchanges, hints, decoded claims and credentials without a
single secret in its DOM."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_fixtures import browser_fixture  # noqa: F401  (the `browser` fixture)
from conftest import MakeProxy
from test_hints import make_jwt

from proxy.fakes.apigw import FakeApiGateway

if TYPE_CHECKING:
    from playwright.async_api import Browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
API_KEY = "inspector-api-key-9f8e7d6c5b4a"
FILES = ("index.html", "app.js", "style.css")


def config(url: str, extra: str = "", token: str = "") -> str:
    return f"""
credentials:
  jwt: {{type: static, value: "Bearer {token or make_jwt()}"}}
  key: {{type: static, header: x-api-key, value: "{API_KEY}"}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: jwt}}
  - {{name: keyed, endpoint: "{url}/Development", auth: key}}
{extra}"""


def source(name: str) -> str:
    return (resources.files("proxy.debug.inspector") / name).read_text()


# --- served as static files with a strict policy ----------------------------------------------

async def test_page_and_its_files_carry_the_security_headers(apigw: FakeApiGateway,
                                                             make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    for path, ctype, name in (("/_authproxy/", "text/html", "index.html"),
                              ("/_authproxy/static/app.js", "text/javascript", "app.js"),
                              ("/_authproxy/static/style.css", "text/css", "style.css")):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"].startswith(ctype)
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
        assert await resp.text() == source(name)
    api = await client.get("/_authproxy/api/exchanges")
    assert api.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_admin_prefix_alone_redirects_to_the_page(apigw: FakeApiGateway,
                                                            make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, "admin: {prefix: /_ap}"))
    resp = await client.get("/_ap", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == "/_ap/"
    assert (await client.get("/_ap/static/app.js")).status == 200


async def test_no_inspector_when_disabled(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, "admin: {inspector: false}"))
    for path in ("/_authproxy/", "/_authproxy/static/app.js", "/_authproxy/api/exchanges"):
        assert (await client.get(path)).status == 404, path
    assert (await client.get("/_authproxy/healthz")).status == 200


def test_page_runs_no_inline_code_and_writes_no_html() -> None:
    html = source("index.html")
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S)
    assert scripts == [""]  # one script, from a file
    assert re.search(r"<script\b[^>]*\bsrc=\"static/app.js\"", html)
    assert not re.search(r"\son[a-z]+\s*=", html, re.I)  # no inline handlers
    assert not re.search(r"\sstyle\s*=", html, re.I) and "<style" not in html
    assert not re.search(r"(https?:)?//", html.replace("http-equiv", ""))  # nothing external
    js = source("app.js")
    # Header values come from any local client: the page writes text, never markup.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setAttribute(\"style\""):
        assert sink not in js, sink
    assert "http://" not in js and "https://" not in js


# --- in a real browser ------------------------------------------------------------------------

@pytest.mark.browser
async def test_inspector_in_chromium(browser: Browser, apigw: FakeApiGateway,
                                     make_proxy: MakeProxy) -> None:
    from playwright.async_api import expect

    token = make_jwt(**{"cognito:groups": ["admin", "ops"]})
    client = await make_proxy(config(apigw.url, token=token))
    await client.get("/api/orders/7?verbose=1", headers={"X-Trace": "<b>not markup</b>"})
    await client.get("/api/admin", headers={"X-Fake-Status": "401",
                                            "X-Fake-Body": '{"message":"Unauthorized"}'})
    await client.post("/keyed/items", json={"n": 1})
    await client.get("/nowhere")

    base = f"http://127.0.0.1:{client.port}"
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(base + "/_authproxy/")

    rows = page.locator("#exchanges tbody tr")
    await expect(rows).to_have_count(4)
    await expect(rows.first).to_contain_text("/nowhere")
    await expect(page.locator("#live")).to_contain_text("live")

    # Live: an exchange made while the page is open shows up without a reload.
    await client.get("/api/later")
    await expect(rows).to_have_count(5)
    await expect(rows.first).to_contain_text("/api/later")

    # One exchange: summary, marked headers, decoded claims with a live "expires in".
    await rows.filter(has_text="/api/orders/7").click()
    detail = page.locator("#detail")
    await expect(detail).to_contain_text(f"{apigw.url}/Development/orders/7?verbose=1")
    await expect(detail).to_contain_text("X-Trace")
    await expect(detail).to_contain_text("<b>not markup</b>")  # shown as text, not parsed
    assert await detail.locator("b").count() == 0
    claims = detail.locator("table.claims")
    for text in ("token_use", "cognito:username", "alice", "5f0c-sub", "1example23456789",
                 "admin, ops"):
        await expect(claims).to_contain_text(text)
    await expect(claims.locator("[data-exp]")).to_have_text(re.compile(r"expires in (59m|1h)"))
    sent = detail.locator("section.headers", has_text="as sent upstream")
    injected = sent.locator("tr", has=page.locator(".mark-injected"))
    await expect(injected).to_have_count(1)
    await expect(injected).to_contain_text("Authorization")
    await expect(injected).to_contain_text(f"Bearer {token[:8]}…({len(token)} chars)")

    # Copy as curl: through the proxy, without the token.
    await detail.get_by_role("button", name="Copy as curl").click()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(f"curl -sS '{base}/api/orders/7?verbose=1'")
    assert "X-Trace" in copied and "Authorization" not in copied

    # The refused exchange: its hint.
    await rows.filter(has_text="/api/admin").click()
    await expect(detail.locator(".hint")).to_contain_text("token_use=id")

    # The credentials panel.
    card = page.locator('[data-credential="jwt"]')
    await expect(card).to_contain_text("ready")
    await expect(card.locator("[data-exp]")).to_have_text(re.compile(r"expires in (59m|1h)"))
    await expect(page.locator('[data-credential="key"]')).to_contain_text("x-api-key")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "inspector.png"), full_page=True)

    # Filters: endpoint, status, text.
    await page.select_option("#f-endpoint", "keyed")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("/keyed/items")
    await page.select_option("#f-endpoint", "")
    await page.fill("#f-status", "4xx")
    await expect(rows).to_have_count(2)
    await page.fill("#f-status", "")
    await page.fill("#f-text", "verbose")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("/api/orders/7")

    # No secret anywhere in the DOM, the page's text or what its scripts fetched.
    dom = await page.content() + await page.evaluate("document.body.innerText")
    fetched: list[Any] = await page.evaluate(
        "Promise.all(['api/exchanges', 'api/credentials'].map(u => fetch(u).then(r => r.text())))")
    for text in [dom, *fetched]:
        for secret in (token, token.split(".")[1], token.split(".")[2], API_KEY):
            assert secret not in text
    assert json.loads(fetched[0])["exchanges"]  # the check above read real data
    assert not problems, problems
    await context.close()


@pytest.mark.browser
async def test_inspector_shows_open_and_recent_websockets_in_chromium(
        browser: Browser, apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    from playwright.async_api import expect

    token = make_jwt()
    client = await make_proxy(config(apigw.url, token=token))
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(f"http://127.0.0.1:{client.port}/_authproxy/")
    rows = page.locator("#websockets tbody tr")
    await expect(page.locator("#ws-empty")).to_be_visible()

    ws = await client.ws_connect("/api/live?room=1")
    await ws.send_str("hello")
    assert (await ws.receive()).data == "hello"
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("/api/live?room=1")
    await expect(rows.first).to_contain_text("open")
    await expect(page.locator("#ws-count")).to_have_text("(1 open)")

    await ws.close()
    await expect(rows.first).to_contain_text("closed by client (1000)")
    await expect(page.locator("#ws-count")).to_have_text("(0 open)")
    # The handshake is an exchange too, its headers redacted like any other.
    await page.locator("#exchanges tbody tr", has_text="/api/live").click()
    detail = page.locator("#detail")
    await expect(detail).to_contain_text("closed by client (1000)")
    await expect(detail).to_contain_text(f"Bearer {token[:8]}…({len(token)} chars)")
    assert token not in await page.content()
    assert problems == []
