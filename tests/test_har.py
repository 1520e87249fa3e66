"""proxy/debug/har.py and `GET <admin>/api/exchanges.har`, through the real `authproxy serve`:
the file a user downloads is HAR 1.2 (checked field by field against the spec's structure, and
read back by haralyzer, a HAR reader of its own), filtered like the JSON API, redacted exactly as
the inspector is, with the proxy's timings."""

from __future__ import annotations

import datetime as dt
import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from browser_fixtures import browser_fixture  # noqa: F401  (the `browser` fixture)
from conftest import MakeProxy, ServeProcess
from haralyzer import HarPage, HarParser

from proxy.fakes.apigw import FakeApiGateway

if TYPE_CHECKING:
    from playwright.async_api import Browser

TOKEN = "har-static-token-0123456789abcdef"
QUERY_SECRET = "har-query-secret-fedcba9876543210"


def _config(url: str) -> str:
    return (f"credentials:\n  tok: {{type: static, value: {TOKEN}}}\n"
            f'endpoints:\n  - {{name: api, endpoint: "{url}/Development", auth: tok}}\n'
            '  - {name: open, endpoint: "' + url + '/Development"}\n')


@pytest.fixture
def proxy(serve: Callable[..., ServeProcess], threaded_apigw: FakeApiGateway) -> ServeProcess:
    sp = serve(_config(threaded_apigw.url))
    assert sp.get("/api/items?page=2")[0] == 200
    assert sp.get(f"/api/items?access_token={QUERY_SECRET}&x=1")[0] == 200
    assert sp.get("/api/login", {"X-Fake-Status": "401",
                                 "X-Fake-Body": '{"message":"Unauthorized"}'})[0] == 401
    assert _no_redirect(sp, "/open/redirect", {"X-Fake-Location": "https://elsewhere.example/x"}
                        ) == 302
    assert sp.get("/nowhere")[0] == 404  # the proxy's own answer: never went upstream
    return sp


def _no_redirect(sp: ServeProcess, path: str, headers: dict[str, str]) -> int:
    """A GET whose redirect is not followed (urllib would follow it off loopback)."""
    host, port = urlsplit(sp.url).hostname, urlsplit(sp.url).port
    conn = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _har(sp: ServeProcess, query: str = "") -> tuple[dict[str, str], dict[str, Any]]:
    status, headers, body = sp.get(f"/_authproxy/api/exchanges.har{query}")
    assert status == 200, body
    return headers, json.loads(body)


def _check_structure(har: dict[str, Any]) -> None:
    """The HAR 1.2 spec's required fields and their types (softwareishard.com/blog/har-12-spec)."""
    log = har["log"]
    assert log["version"] == "1.2"
    assert isinstance(log["creator"]["name"], str) and isinstance(log["creator"]["version"], str)
    assert isinstance(log["entries"], list)
    for e in log["entries"]:
        dt.datetime.fromisoformat(e["startedDateTime"])  # ISO 8601 with a zone
        assert dt.datetime.fromisoformat(e["startedDateTime"]).tzinfo is not None
        req, resp, t = e["request"], e["response"], e["timings"]
        for key, kind in (("method", str), ("url", str), ("httpVersion", str),
                          ("cookies", list), ("headers", list), ("queryString", list),
                          ("headersSize", int), ("bodySize", int)):
            assert isinstance(req[key], kind), key
        for key, kind in (("status", int), ("statusText", str), ("httpVersion", str),
                          ("cookies", list), ("headers", list), ("content", dict),
                          ("redirectURL", str), ("headersSize", int), ("bodySize", int)):
            assert isinstance(resp[key], kind), key
        assert isinstance(resp["content"]["size"], int)
        assert isinstance(resp["content"]["mimeType"], str)
        for h in req["headers"] + resp["headers"] + req["queryString"]:
            assert isinstance(h["name"], str) and isinstance(h["value"], str)
        assert isinstance(e["cache"], dict)
        for key in ("send", "wait", "receive"):
            assert t[key] >= 0
        for key in ("blocked", "dns", "connect", "ssl"):
            assert t.get(key, -1) == -1 or t[key] >= 0
        # `time` is the sum of the timings that are known
        assert abs(e["time"] - sum(v for v in t.values() if v != -1)) < 1e-6
        assert all(not k.startswith("_") or k == "_authproxy" for k in e)


@pytest.mark.e2e
def test_the_har_is_har_1_2_and_a_har_reader_reads_it(proxy: ServeProcess,
                                                      threaded_apigw: FakeApiGateway) -> None:
    headers, har = _har(proxy)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Content-Disposition"].startswith('attachment; filename="authproxy-')
    assert headers["Content-Disposition"].endswith('.har"')
    _check_structure(har)
    entries = har["log"]["entries"]
    assert len(entries) == 5
    # oldest first, as a browser records them
    assert [e["_authproxy"]["local_path"].split("?")[0] for e in entries] == [
        "/api/items", "/api/items", "/api/login", "/open/redirect", "/nowhere"]

    parsed = HarParser(har)
    page, = parsed.pages
    assert isinstance(page, HarPage)
    got = page.entries
    assert [(x.request.method, x.response.status) for x in got] == [
        ("GET", 200), ("GET", 200), ("GET", 401), ("GET", 302), ("GET", 404)]
    first = got[0]
    assert first.request.url == f"{threaded_apigw.url}/Development/items?page=2"
    assert first.startTime is not None
    assert HarParser.match_headers(first, "request", "Authorization", r"^\*\*\*\(")
    assert first.response.mimeType.startswith("application/json")
    redirect = got[3]
    assert redirect.response.redirectURL == "https://elsewhere.example/x"
    own = got[4]
    assert own.request.url.startswith(proxy.url) and own.request.url.endswith("/nowhere")


@pytest.mark.e2e
def test_the_har_is_redacted_as_the_inspector_and_carries_the_proxys_facts(
        proxy: ServeProcess) -> None:
    _, har = _har(proxy)
    text = json.dumps(har)
    assert TOKEN not in text and QUERY_SECRET not in text
    entries = har["log"]["entries"]
    sent = {h["name"]: h for h in entries[0]["request"]["headers"]}
    assert sent["Authorization"]["_mark"] == "injected"
    assert sent["Authorization"]["value"] == f"***({len(TOKEN)} chars)"
    assert {"name": "page", "value": "2"} in entries[0]["request"]["queryString"]
    secret_q = dict((q["name"], q["value"]) for q in entries[1]["request"]["queryString"])
    assert secret_q["x"] == "1" and secret_q["access_token"] != QUERY_SECRET
    # the same records the JSON API hands out: ids, endpoint, request ids, timings
    status, _, body = proxy.get("/_authproxy/api/exchanges")
    records = {r["id"]: r for r in json.loads(body)["exchanges"]}
    for e in entries:
        mine = e["_authproxy"]
        record = records[mine["id"]]
        assert mine["endpoint"] == record["endpoint"]
        assert mine["request_id"] == record["request_id"]
        assert e["time"] == record["total_ms"]
        assert e["timings"]["wait"] == (record["upstream_ms"] or 0)
        assert e["response"]["bodySize"] == (record["bytes"] if record["bytes"] is not None
                                             else -1)
    assert entries[2]["comment"]  # the 401's hint
    assert entries[4]["_authproxy"]["error"].startswith("no_route")


@pytest.mark.e2e
def test_the_har_takes_the_json_apis_filters(proxy: ServeProcess) -> None:
    _, only_401 = _har(proxy, "?status=401")
    assert [e["response"]["status"] for e in only_401["log"]["entries"]] == [401]
    _, open_only = _har(proxy, "?endpoint=open")
    assert [e["_authproxy"]["endpoint"] for e in open_only["log"]["entries"]] == ["open"]
    _, text = _har(proxy, "?q=page%3D2")
    assert len(text["log"]["entries"]) == 1
    status, _, body = proxy.get("/_authproxy/api/exchanges.har?status=4x")
    assert status == 400 and json.loads(body)["error"] == "bad_request"


@pytest.mark.browser
async def test_download_har_in_chromium_takes_the_filters(
        browser: Browser, apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    from playwright.async_api import expect

    client = await make_proxy(_config(apigw.url))
    await client.get("/api/items")
    await client.get("/api/login", headers={"X-Fake-Status": "401"})
    await client.get("/nowhere")
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"http://127.0.0.1:{client.port}/_authproxy/")
    await expect(page.locator("#exchanges tbody tr")).to_have_count(3)
    await page.fill("#f-status", "4xx")
    await expect(page.locator("#exchanges tbody tr")).to_have_count(2)
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download HAR").click()
    download = await info.value
    assert download.suggested_filename.startswith("authproxy-")
    assert download.suggested_filename.endswith(".har")
    har = json.loads(Path(await download.path()).read_text())
    _check_structure(har)
    assert sorted(e["response"]["status"] for e in har["log"]["entries"]) == [401, 404]
    assert TOKEN not in json.dumps(har)
    await context.close()
