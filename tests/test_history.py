"""The exchange history behind the inspector: what a record holds (marked headers, decoded claims,
a curl through the proxy), the filters and polling cursor of `/api/exchanges`, the credentials
API, and a sweep that looks for every secret in every page, API and log line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cognito_fixtures import fake_fixture  # noqa: F401  (the `fake` fixture)
from conftest import MakeProxy
from test_hints import make_jwt
from yarl import URL

from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito

EXCHANGES = "/_authproxy/api/exchanges"
ID_TOKEN = make_jwt(**{"cognito:groups": ["admin"], "email": "alice@example.com",
                       "jti": "should-not-show"})
API_KEY = "static-api-key-0123456789abcdef"


def config(url: str, history: int = 200) -> str:
    return f"""
credentials:
  jwt: {{type: static, value: "Bearer {ID_TOKEN}"}}
  key: {{type: static, header: x-api-key, value: "{API_KEY}"}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: jwt}}
  - {{name: keyed, endpoint: "{url}/Development", auth: key}}
  - {{name: open, endpoint: "{url}/Development", set_headers: {{X-Stage-Note: hello}}}}
admin: {{history: {history}}}
"""


async def exchanges(client: TestClient[Any, Any], **params: str) -> dict[str, Any]:
    resp = await client.get(EXCHANGES, params=params)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


def by_name(headers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {h["name"].lower(): h for h in headers}


async def test_a_record_shows_what_arrived_what_went_and_what_came_back(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    resp = await client.get("/api/orders/7?x=1", headers={
        "Authorization": "Bearer the-clients-own-token", "Connection": "keep-alive",
        "X-Trace": "t-1"})
    assert resp.status == 200
    [x] = (await exchanges(client))["exchanges"]
    assert x["method"] == "GET" and x["path"] == "/api/orders/7?x=1" and x["endpoint"] == "api"
    assert x["status"] == 200 and x["upstream_url"] == f"{apigw.url}/Development/orders/7?x=1"
    assert x["total_ms"] >= x["upstream_ms"] > 0 and x["bytes"] == len(await resp.read())
    assert x["request_id"] == resp.headers["X-Request-Id"] and x["amzn_request_id"]
    assert x["injected_header"] == "Authorization" and x["hint"] is None

    received = by_name(x["request_headers"])
    assert received["authorization"]["mark"] == "replaced"
    assert received["authorization"]["value"] == "Bearer ***(21 chars)"
    assert received["connection"]["mark"] == "dropped"  # hop-by-hop
    assert received["host"]["mark"] == "replaced" and received["x-trace"]["mark"] is None
    sent = by_name(x["sent_headers"])
    assert sent["authorization"]["mark"] == "injected"
    assert sent["authorization"]["value"] == f"Bearer {ID_TOKEN[:8]}…({len(ID_TOKEN)} chars)"
    assert sent["host"] == {"name": "Host", "value": f"127.0.0.1:{apigw.port}",
                            "mark": "replaced"}
    assert sent["x-forwarded-for"]["mark"] == "added"
    assert sent["x-request-id"]["mark"] == "added"  # generated: the client sent none
    assert sent["x-trace"]["mark"] is None and "connection" not in sent
    assert by_name(x["response_headers"])["x-request-id"]["value"] == x["request_id"]


async def test_decoded_claims_of_the_injected_token(apigw: FakeApiGateway,
                                                    make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    await client.get("/api/x")
    await client.get("/open/x")
    token, none = [x["token"] for x in (await exchanges(client))["exchanges"]][::-1]
    assert none is None  # auth: none injects nothing
    assert token["header"] == "Authorization" and token["alg"] == "HS256"
    assert token["value"] == f"Bearer {ID_TOKEN[:8]}…({len(ID_TOKEN)} chars)"
    claims = token["claims"]
    assert claims["token_use"] == "id" and claims["cognito:username"] == "alice"
    assert claims["sub"] == "5f0c-sub" and claims["aud"] == "1example23456789"
    assert claims["cognito:groups"] == ["admin"]
    assert "jti" not in claims and "email" not in claims  # only what helps debugging
    # The token was made when this module was imported, with an hour to live.
    assert 3000 < token["expires_in"] <= 3600
    assert re.search(r"\(20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC, expires in (5\dm|1h)",
                     token["times"]["exp"]), token["times"]["exp"]
    assert re.search(r"\(20.* UTC, (\d+m( \d+s)?) ago\)$", token["times"]["iat"])
    signature = ID_TOKEN.split(".")[2]
    assert signature not in json.dumps(token) and ID_TOKEN.split(".")[1] not in json.dumps(token)


async def test_set_headers_and_static_api_keys_are_marked_and_redacted(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    await client.get("/keyed/x")
    await client.get("/open/x", headers={"X-Request-Id": "mine-1"})
    opened, keyed = (await exchanges(client))["exchanges"]
    key = by_name(keyed["sent_headers"])["x-api-key"]
    assert key == {"name": "x-api-key", "value": f"***({len(API_KEY)} chars)",
                   "mark": "injected"}
    assert keyed["token"] is None  # an API key is not a JWT
    sent = by_name(opened["sent_headers"])
    assert sent["x-stage-note"] == {"name": "X-Stage-Note", "value": "hello", "mark": "added"}
    assert sent["x-request-id"]["mark"] is None and opened["request_id"] == "mine-1"


async def test_curl_goes_through_the_proxy_without_the_secret(apigw: FakeApiGateway,
                                                              make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    await client.post("/api/orders?dry=1", data=b'{"n": 1}', headers={
        "Content-Type": "application/json", "X-Trace": "it's quoted", "Cookie": "sid=abc",
        "Authorization": "Bearer client-token"})
    await client.head("/keyed/items")
    head, post = (await exchanges(client))["exchanges"]
    words = shlex.split(post["curl"], comments=True)
    assert words[:4] == ["curl", "-sS", "-X", "POST"]
    assert words[4] == f"http://127.0.0.1:{client.port}/api/orders?dry=1"
    assert ["-H", "Content-Type: application/json"] == words[words.index("Content-Type: "
                                                                        "application/json") - 1:
                                                            words.index("Content-Type: "
                                                                        "application/json") + 1]
    assert "X-Trace: it's quoted" in words and words[-2:] == ["--data-binary", "@body"]
    assert "left out (secret): Cookie" in post["curl"] and "sid=abc" not in post["curl"]
    assert "Authorization" not in post["curl"] and "client-token" not in post["curl"]
    assert ID_TOKEN[:20] not in post["curl"]
    assert "Host" not in " ".join(words) and "Content-Length" not in " ".join(words)
    assert shlex.split(head["curl"])[:3] == ["curl", "-sS", "--head"]
    assert API_KEY not in head["curl"] and "x-api-key" not in head["curl"]

    # The command works: run its request (minus the body) through the proxy again.
    resp = await client.head("/keyed/items")
    assert resp.status == 200
    assert apigw.seen[-1].header("x-api-key") == API_KEY


async def test_shared_secret_becomes_an_environment_variable_in_curl(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    secret = "shared-secret-value-42"
    client = await make_proxy(config(apigw.url) + f"listen: {{shared_secret: {secret}}}\n")
    auth = {"X-Authproxy-Secret": secret}
    await client.get("/open/x", headers=auth)
    body = await (await client.get(EXCHANGES, headers=auth)).text()
    x = json.loads(body)["exchanges"][0]
    assert '-H "X-Authproxy-Secret: $AUTHPROXY_SECRET"' in x["curl"]
    assert secret not in body


async def test_polling_with_since_returns_only_newer_exchanges(apigw: FakeApiGateway,
                                                               make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url, history=3))
    first = await exchanges(client)
    assert first == {"exchanges": [], "last_id": 0, "capacity": 3, "endpoints": []}
    for i in range(2):
        await client.get(f"/open/{i}")
    page = await exchanges(client)
    assert [x["id"] for x in page["exchanges"]] == [2, 1] and page["last_id"] == 2
    assert (await exchanges(client, since="2"))["exchanges"] == []
    for i in range(2, 5):
        await client.get(f"/open/{i}")
    newer = await exchanges(client, since="2")
    assert [x["path"] for x in newer["exchanges"]] == ["/open/4", "/open/3", "/open/2"]
    # The ring keeps `history` entries: the two oldest are gone.
    assert [x["id"] for x in (await exchanges(client))["exchanges"]] == [5, 4, 3]
    assert [x["id"] for x in (await exchanges(client, limit="2"))["exchanges"]] == [5, 4]


async def test_filters_by_endpoint_status_and_text(apigw: FakeApiGateway,
                                                   make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    await client.get("/api/a")
    await client.get("/api/b", headers={"X-Fake-Status": "401",
                                        "X-Fake-Body": '{"message":"Unauthorized"}'})
    await client.get("/keyed/c", headers={"X-Fake-Status": "503", "X-Note": "Needle-7"})
    await client.get("/nowhere")

    async def paths(**params: str) -> list[str]:
        return [x["path"] for x in (await exchanges(client, **params))["exchanges"]]

    assert await paths(endpoint="api") == ["/api/b", "/api/a"]
    assert await paths(endpoint="keyed,-") == ["/nowhere", "/keyed/c"]
    assert await paths(status="4xx") == ["/nowhere", "/api/b"]
    assert await paths(status="401,5xx") == ["/keyed/c", "/api/b"]
    assert await paths(q="needle-7") == ["/keyed/c"]  # a header value, any case
    assert await paths(q="put an access token") == ["/api/b"]  # the hint
    assert await paths(q="no_route") == ["/nowhere"]  # the proxy's own error
    assert await paths(q='"cognito:username": "alice"') == ["/api/b", "/api/a"]  # claims
    assert await paths(endpoint="api", status="2xx", q="/api/") == ["/api/a"]
    assert await paths(q=API_KEY) == []  # redacted values cannot be searched for
    page = await exchanges(client)
    assert page["endpoints"] == ["-", "api", "keyed"]

    for bad in ({"status": "4x"}, {"status": "999"}, {"since": "x"}, {"limit": "1.5"}):
        resp = await client.get(EXCHANGES, params=bad)
        assert resp.status == 400 and (await resp.json())["error"] == "bad_request", bad


async def test_the_proxys_own_answers_are_recorded_without_marks(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    await client.get("/nowhere", headers={"X-Trace": "t"})
    [x] = (await exchanges(client))["exchanges"]
    assert x["status"] == 404 and x["endpoint"] == "-" and x["upstream_url"] is None
    assert x["error"].startswith("no_route: no endpoint matches /nowhere")
    assert x["sent_headers"] == [] and x["token"] is None
    assert all(h["mark"] is None for h in x["request_headers"])
    assert by_name(x["response_headers"])["x-authproxy-error"]["value"] == "no_route"
    assert x["bytes"] and x["bytes"] > 0


async def test_admin_requests_are_not_history(apigw: FakeApiGateway,
                                              make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    for path in ("/_authproxy/healthz", "/_authproxy/", EXCHANGES, "/_authproxy/api/credentials"):
        assert (await client.get(path)).status == 200
    assert (await exchanges(client))["last_id"] == 0


async def test_credentials_api_shows_static_token_expiry(apigw: FakeApiGateway,
                                                         make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    resp = await client.get("/_authproxy/api/credentials")
    body = await resp.json()
    assert set(body) == {"jwt", "key"}
    jwt_cred, key = body["jwt"], body["key"]
    assert jwt_cred["state"] == "ready" and jwt_cred["flow"] == "static" and jwt_cred["ready"]
    assert jwt_cred["token"]["claims"]["token_use"] == "id"
    assert 3000 < jwt_cred["token"]["expires_in"] <= 3600
    assert key["token"] is None and key["header"] == "x-api-key"
    text = await resp.text()
    assert API_KEY not in text and ID_TOKEN.split(".")[2] not in text


async def test_credentials_api_shows_cognito_state_and_fetches(
        apigw: FakeApiGateway, make_proxy: MakeProxy, fake: FakeCognito, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    client = await make_proxy(cognito_config(apigw.url, fake))
    assert (await client.get("/api/x")).status == 200
    body = await (await client.get("/_authproxy/api/credentials")).json()
    user = body["user"]
    assert user["type"] == "cognito" and user["flow"] == "password"
    assert user["state"] == "ready" and user["ready"] is True
    assert user["fetches"]["success"] == 1 and user["last_error"] is None
    assert 3500 < user["expires_in"] <= 3600
    assert user["token"]["claims"]["token_use"] == "id"
    assert user["token"]["claims"]["cognito:username"] == "alice"


def cognito_config(apigw_url: str, fake: FakeCognito, secret: str | None = None,
                   shared_secret: str | None = None) -> str:
    pool = fake.add_pool()
    client_id = fake.add_client(pool, secret=secret)
    fake.add_user(pool, "alice", "Pa55word-for-alice!", groups=["admin"])
    return f"""
credentials:
  user:
    type: cognito
    flow: password
    user_pool_id: {pool}
    client_id: {client_id}
    {f"client_secret: {secret}" if secret else ""}
    username: alice
    password: Pa55word-for-alice!
    endpoint: {fake.url}
  key: {{type: static, header: x-api-key, value: "{API_KEY}"}}
  jwt: {{type: static, value: "Bearer {ID_TOKEN}"}}
endpoints:
  - {{name: api, endpoint: "{apigw_url}/Development", auth: user}}
  - {{name: keyed, endpoint: "{apigw_url}/Development", auth: key}}
  - {{name: static, endpoint: "{apigw_url}/Development", auth: jwt}}
listen: {{shared_secret: {shared_secret or "null"}}}
logging: {{log_headers: true}}
"""


async def test_no_secret_reaches_any_page_api_or_log_line(
        apigw: FakeApiGateway, make_proxy: MakeProxy, fake: FakeCognito, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    caplog.set_level(logging.DEBUG)
    client = await make_proxy(cognito_config(apigw.url, fake, secret="client-secret-abc123xyz",
                                                   shared_secret="the-shared-secret-xyz"))
    auth = {"X-Authproxy-Secret": "the-shared-secret-xyz"}
    refusal = {"X-Fake-Status": "401", "X-Fake-Body": '{"message":"Unauthorized"}'}
    for path, extra in (("/api/x", {}), ("/api/y", refusal), ("/keyed/z", {}),
                        ("/static/w", refusal), ("/static/v", {"X-Fake-Status": "403",
                         "X-Fake-Body": '{"message":"The incoming token has expired"}'})):
        await client.get(path, headers=auth | extra | {"Cookie": "session=cookie-secret-99"})
    await client.get("/_authproxy/api/exchanges")  # no secret: refused

    # Every secret value that exists: configured ones, and the tokens that really went upstream.
    secrets = {"client-secret-abc123xyz", "Pa55word-for-alice!", API_KEY,
               "the-shared-secret-xyz", "cookie-secret-99", ID_TOKEN}
    for seen in apigw.seen:
        for name in ("Authorization", "x-api-key"):
            value = seen.header(name)
            if value:
                secrets.add(value.removeprefix("Bearer "))
    tokens = [s for s in secrets if s.count(".") == 2]
    assert len(tokens) >= 2  # the Cognito ID token (maybe refreshed) and the static one
    secrets |= {t.split(".")[2] for t in tokens} | {t.split(".")[1] for t in tokens}
    cached = list(tmp_path.rglob("*"))
    secrets |= {json.loads(p.read_text()).get("refresh_token", "") for p in cached
                if p.is_file() and p.read_text().startswith("{")} - {""}
    secrets |= set(fake._refresh)  # every refresh token the fake Cognito handed out
    assert len(secrets) > 9

    outputs: dict[str, str] = {}
    for path in ("/_authproxy/api/exchanges", "/_authproxy/api/credentials",
                 "/_authproxy/readyz", "/_authproxy/metrics", "/_authproxy/",
                 "/_authproxy/static/app.js", "/_authproxy/static/style.css"):
        resp = await client.get(path, headers=auth)
        assert resp.status == 200, path
        outputs[path] = await resp.text()
        outputs[path + " headers"] = json.dumps(list(resp.headers.items()))
    await asyncio.sleep(0)
    outputs["logs"] = caplog.text + "".join(
        json.dumps(r.__dict__, default=str) for r in caplog.records)
    exchanges_seen = json.loads(outputs["/_authproxy/api/exchanges"])["exchanges"]
    assert len(exchanges_seen) == 6 and any(x["hint"] for x in exchanges_seen)
    assert exchanges_seen[0]["error"].startswith("secret_required")  # refused: still shown
    assert any(x["token"] and x["token"]["claims"]["token_use"] == "id" for x in exchanges_seen)
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}…) is in {where}"


async def test_records_are_built_when_asked_for_and_tokens_decoded_once(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    from conftest import PROXIES

    from proxy.debug.history import _decode

    _decode.cache_clear()
    client = await make_proxy(config(apigw.url))
    for _ in range(20):
        await client.get("/api/x")
    history = PROXIES[client].history
    assert history is not None
    # The request path only kept references: nothing decoded, nothing redacted yet.
    assert _decode.cache_info().currsize == 0
    assert all(e.record is None and e.received for e in history.entries)
    assert len((await exchanges(client))["exchanges"]) == 20
    info = _decode.cache_info()
    assert info.misses == 1 and info.hits == 19  # one token, decoded once
    # Built records keep only redacted values: the raw headers are gone.
    assert all(e.record and e.received is None and e.ex is None for e in history.entries)


# A callback and a presigned-URL style query: secrets among harmless parameters, one name
# percent-encoded, one value with `+` and an escaped slash, a repeat, an empty value, a bare name.
SECRET_QUERY = ("code=auth-code-1a&state=st-9&access_token=at-secret-3c&X-Amz-Signature=sig-5e"
                "&X-Amz-Credential=AKIDEXAMPLE%2F20240101&api_key=key-7a&%61ccess_token=enc-9c"
                "&keep=a+b%2Fc&keep=&flag")
SHOWN_QUERY = ("code=***(12 chars)&state=st-9&access_token=***(12 chars)"
               "&X-Amz-Signature=***(6 chars)&X-Amz-Credential=***(20 chars)&api_key=***(6 chars)"
               "&%61ccess_token=***(6 chars)&keep=a+b%2Fc&keep=&flag")
QUERY_SECRETS = ("auth-code-1a", "at-secret-3c", "sig-5e", "AKIDEXAMPLE", "key-7a", "enc-9c",
                 "ref-code-2b", "sts-token-4d", "loc-sig-6f")


async def test_query_secrets_are_redacted_in_paths_urls_headers_and_curl(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    location = "https://bucket.s3.amazonaws.com/k?X-Amz-Security-Token=sts-token-4d&v=1"
    resp = await client.get(URL(f"/open/cb?{SECRET_QUERY}", encoded=True),
                            allow_redirects=False, headers={
                                "Referer": "http://app.test/login?code=ref-code-2b&x=1",
                                "X-Fake-Location": location + "&X-Amz-Signature=loc-sig-6f"})
    assert resp.status == 302
    # Forwarded untouched: redaction happens when a record is shown, never on the way.
    assert apigw.seen[-1].raw_path == f"/Development/cb?{SECRET_QUERY}"

    body = await (await client.get(EXCHANGES)).text()
    [x] = json.loads(body)["exchanges"]
    assert x["path"] == f"/open/cb?{SHOWN_QUERY}"
    assert x["upstream_url"] == f"{apigw.url}/Development/cb?{SHOWN_QUERY}"
    received = by_name(x["request_headers"])
    assert received["referer"]["value"] == "http://app.test/login?code=***(11 chars)&x=1"
    assert received["x-fake-location"]["value"] == (
        "https://bucket.s3.amazonaws.com/k?X-Amz-Security-Token=***(12 chars)&v=1"
        "&X-Amz-Signature=***(10 chars)")
    assert by_name(x["response_headers"])["location"]["value"] == (
        received["x-fake-location"]["value"])
    assert by_name(x["sent_headers"])["referer"]["mark"] is None  # marks compare raw values

    words = shlex.split(x["curl"], comments=True)
    assert words[2] == f"http://127.0.0.1:{client.port}/open/cb?{SHOWN_QUERY}"
    assert "Referer: http://app.test/login?code=***(11 chars)&x=1" in words
    assert "secret values redacted (***): the URL, Referer, X-Fake-Location" in x["curl"]
    for secret in QUERY_SECRETS:
        assert secret not in body, secret
    # Searching finds the redacted record, never by a secret.
    assert len((await exchanges(client, q="access_token=***"))["exchanges"]) == 1
    for secret in ("at-secret-3c", "ref-code-2b", "sts-token-4d"):
        assert (await exchanges(client, q=secret))["exchanges"] == []


async def test_secret_looking_request_headers_are_redacted_and_left_out_of_curl(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    await client.get("/open/x", headers={"X-Session-Token": "hdr-token-11",
                                         "X-Client-Secret": "hdr-secret-22",
                                         "X-Trace": "visible"})
    body = await (await client.get(EXCHANGES)).text()
    [x] = json.loads(body)["exchanges"]
    received = by_name(x["request_headers"])
    assert received["x-session-token"]["value"] == "***(12 chars)"
    assert received["x-client-secret"]["value"] == "***(13 chars)"
    assert by_name(x["sent_headers"])["x-session-token"]["mark"] is None
    assert "left out (secret): X-Session-Token, X-Client-Secret" in x["curl"]
    assert "X-Trace: visible" in x["curl"]
    assert "hdr-token-11" not in body and "hdr-secret-22" not in body
