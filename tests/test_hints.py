"""Hints: for each API Gateway refusal body the fake answers with, the proxy adds an
`X-Authproxy-Hint` that names the likely cause and fix, logs it, keeps it in the history, and
never quotes the token."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cognito_fixtures import fake_fixture  # noqa: F401  (the `fake` fixture)
from conftest import MakeProxy

from proxy.config import CognitoCredential, Endpoint
from proxy.credentials import build_source
from proxy.debug.hints import build_hinter
from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito
from proxy.secret import Secret

POOL_ISS = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"
SIGNING_KEY = "a test key that is long enough for HS256 !"


def make_jwt(**claims: Any) -> str:
    """A Cognito-shaped JWT (HS256: API Gateway is faked, nothing verifies it)."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "5f0c-sub", "iss": POOL_ISS, "token_use": "id",
                            "iat": now - 60, "exp": now + 3600, "aud": "1example23456789",
                            "cognito:username": "alice"}
    return jwt.encode(base | claims, SIGNING_KEY, algorithm="HS256")


ID_TOKEN = make_jwt(**{"cognito:groups": ["admin", "ops"]})
ACCESS_TOKEN = make_jwt(token_use="access", client_id="1example23456789",
                        scope="aws.cognito.signin.user.admin")
OPAQUE = "opaque-static-token-0123456789"
API_KEY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"

UNAUTHORIZED = '{"message":"Unauthorized"}'
EXPIRED = '{"message":"The incoming token has expired"}'
DENIED = '{"message":"User is not authorized to access this resource"}'
FORBIDDEN = '{"message":"Forbidden"}'


def config(url: str, value: str, header: str = "Authorization", stage: str = "/Development",
           auth: str = "tok") -> str:
    return f"""
credentials:
  tok: {{type: static, header: "{header}", value: "{value}"}}
endpoints:
  - {{name: api, endpoint: "{url}{stage}", auth: {auth}}}
"""


def refusal(status: int, body: str) -> dict[str, str]:
    return {"X-Fake-Status": str(status), "X-Fake-Body": body}


async def hint_for(make_proxy: MakeProxy, cfg: str, status: int, body: str,
                   path: str = "/api/orders") -> str:
    client = await make_proxy(cfg)
    resp = await client.get(path, headers=refusal(status, body))
    assert resp.status == status
    assert await resp.text() == body  # the body still reaches the client untouched
    hint = resp.headers.get("X-Authproxy-Hint")
    assert hint, f"no hint for {status} {body}"
    return hint


# --- 401 Unauthorized ------------------------------------------------------------------------

async def test_access_token_to_a_cognito_authorizer(apigw: FakeApiGateway,
                                                    make_proxy: MakeProxy) -> None:
    hint = await hint_for(make_proxy, config(apigw.url, f"Bearer {ACCESS_TOKEN}"), 401,
                          UNAUTHORIZED)
    assert "token_use=access" in hint and "ID tokens only" in hint
    assert "put an ID token in credential 'tok'" in hint
    assert "us-east-1_AbCdEf123" in hint  # the pool to compare with the authorizer's
    assert ACCESS_TOKEN not in hint and ACCESS_TOKEN.split(".")[1] not in hint


async def test_bearer_prefix_versus_bare_token(apigw: FakeApiGateway,
                                               make_proxy: MakeProxy) -> None:
    # The authorizer wants the bare ID token; the credential sends it with "Bearer ".
    apigw.require = {"Authorization": ID_TOKEN}
    client = await make_proxy(config(apigw.url, f"Bearer {ID_TOKEN}"))
    resp = await client.get("/api/orders")
    assert resp.status == 401
    hint = resp.headers["X-Authproxy-Hint"]
    assert "token_use=id" in hint
    assert "went as 'Bearer <token>'" in hint and "drop 'Bearer ' from its value" in hint

    bare = await hint_for(make_proxy, config(apigw.url, ID_TOKEN), 401, UNAUTHORIZED)
    assert "went bare" in bare and "start its value with 'Bearer '" in bare


async def test_opaque_value_is_not_a_jwt(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    hint = await hint_for(make_proxy, config(apigw.url, OPAQUE), 401, UNAUTHORIZED)
    assert "not a JWT" in hint and "credential 'tok'" in hint and OPAQUE not in hint


async def test_unauthorized_without_any_token(apigw: FakeApiGateway,
                                              make_proxy: MakeProxy) -> None:
    hint = await hint_for(make_proxy, config(apigw.url, OPAQUE, auth="none"), 401, UNAUTHORIZED)
    assert "auth: none" in hint and "endpoint 'api'" in hint
    # The credential injects x-api-key, but authorizers read Authorization.
    hint = await hint_for(make_proxy, config(apigw.url, API_KEY, header="x-api-key"), 401,
                          UNAUTHORIZED)
    assert "no Authorization header" in hint and "'x-api-key'" in hint


async def test_unauthorized_with_an_expired_token(apigw: FakeApiGateway,
                                                  make_proxy: MakeProxy) -> None:
    old = make_jwt(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    hint = await hint_for(make_proxy, config(apigw.url, f"Bearer {old}"), 401, UNAUTHORIZED)
    assert "expired 1h ago" in hint and "static tokens are not refreshed" in hint


async def test_cognito_credential_with_the_wrong_token_type(
        apigw: FakeApiGateway, make_proxy: MakeProxy, fake: FakeCognito,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pool = fake.add_pool()
    client_id = fake.add_client(pool)
    fake.add_user(pool, "alice", "Correct-Horse-1")
    cfg = f"""
credentials:
  user:
    type: cognito
    flow: password
    user_pool_id: {pool}
    client_id: {client_id}
    username: alice
    password: Correct-Horse-1
    token: access
    endpoint: {fake.url}
endpoints:
  - {{name: api, endpoint: "{apigw.url}/Development", auth: user}}
"""
    hint = await hint_for(make_proxy, cfg, 401, UNAUTHORIZED)
    assert "token_use=access" in hint and "set token: id on credential 'user'" in hint
    assert 'if the authorizer (a REST API Cognito authorizer, say) wants the bare token, ' \
           'set prefix: ""' in hint


# --- 401 The incoming token has expired -------------------------------------------------------

async def test_expired_token_while_the_local_clock_is_behind(apigw: FakeApiGateway,
                                                             make_proxy: MakeProxy) -> None:
    # By our clock the token is good for 20 more minutes; API Gateway's clock says it is not.
    ahead = make_jwt(exp=int(time.time()) + 1200)
    hint = await hint_for(make_proxy, config(apigw.url, f"Bearer {ahead}"), 401, EXPIRED)
    assert "by this machine's clock it expires in 19m" in hint or \
        "by this machine's clock it expires in 20m" in hint
    assert "clock is at least" in hint and "behind" in hint and "sync it" in hint


async def test_expired_token_really_expired(apigw: FakeApiGateway,
                                            make_proxy: MakeProxy) -> None:
    old = make_jwt(iat=int(time.time()) - 4000, exp=int(time.time()) - 400)
    hint = await hint_for(make_proxy, config(apigw.url, old), 401, EXPIRED)
    assert "expired 6m 40s ago" in hint and "it lived 1h" in hint
    assert "put a fresh one in it" in hint and "behind" not in hint


# --- 403s -------------------------------------------------------------------------------------

async def test_missing_authentication_token_wrong_stage(apigw: FakeApiGateway,
                                                        make_proxy: MakeProxy) -> None:
    # The fake's API is deployed to /Development; the endpoint says /Dev: API Gateway's own 403.
    client = await make_proxy(config(apigw.url, f"Bearer {ID_TOKEN}", stage="/Dev"))
    resp = await client.get("/api/orders")
    assert resp.status == 403
    assert await resp.json() == {"message": "Missing Authentication Token"}
    hint = resp.headers["X-Authproxy-Hint"]
    assert "no resource for this method and path" in hint
    assert "stage '/Dev'" in hint and "endpoint 'api'" in hint and "IAM (SigV4)" in hint


async def test_sigv4_parse_error_means_no_such_resource(apigw: FakeApiGateway,
                                                        make_proxy: MakeProxy) -> None:
    body = ('{"message":"Invalid key=value pair (missing equal-sign) in Authorization header '
            "(hashed with SHA-256 and encoded with Base64): 'aGFzaGVkIHRva2Vu'.\"}")
    hint = await hint_for(make_proxy, config(apigw.url, f"Bearer {ID_TOKEN}"), 403, body)
    assert "as an AWS SigV4 signature" in hint and "stage '/Development'" in hint
    assert "aGFzaGVkIHRva2Vu" not in hint


async def test_lambda_authorizer_deny(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    hint = await hint_for(make_proxy, config(apigw.url, f"Bearer {ID_TOKEN}"), 403, DENIED)
    assert "Lambda authorizer" in hint and "Deny" in hint and "caching" in hint
    assert "cognito:groups=admin ops" in hint


async def test_resource_policy_explicit_deny(apigw: FakeApiGateway,
                                             make_proxy: MakeProxy) -> None:
    body = ('{"Message":"User: anonymous is not authorized to perform: execute-api:Invoke on '
            'resource: arn:aws:execute-api:us-east-1:123456789012:abc/Development/GET/orders '
            'with an explicit deny"}')
    hint = await hint_for(make_proxy, config(apigw.url, OPAQUE), 403, body)
    assert "resource policy" in hint and "redeploy" in hint


async def test_forbidden_with_a_wrong_api_key(apigw: FakeApiGateway,
                                              make_proxy: MakeProxy) -> None:
    hint = await hint_for(make_proxy, config(apigw.url, API_KEY, header="x-api-key"), 403,
                          FORBIDDEN)
    assert "refused the x-api-key" in hint and "usage plan" in hint
    assert "stage '/Development'" in hint and API_KEY not in hint


async def test_forbidden_without_an_api_key(apigw: FakeApiGateway,
                                            make_proxy: MakeProxy) -> None:
    hint = await hint_for(make_proxy, config(apigw.url, f"Bearer {ID_TOKEN}"), 403, FORBIDDEN)
    assert "requires an API key and no x-api-key header was sent" in hint
    assert "header: x-api-key" in hint


# --- when there is nothing to say, where hints go, what they never hold -----------------------

@pytest.mark.parametrize(("status", "body"), [
    (403, '{"message":"Something else entirely"}'),
    (401, "<html>Unauthorized</html>"),
    (403, "[1, 2]"),
    (200, UNAUTHORIZED),  # only refusals are explained
    (500, FORBIDDEN),
])
async def test_no_hint_for_other_answers(apigw: FakeApiGateway, make_proxy: MakeProxy,
                                         status: int, body: str) -> None:
    client = await make_proxy(config(apigw.url, OPAQUE))
    resp = await client.get("/api/x", headers=refusal(status, body))
    assert resp.status == status and "X-Authproxy-Hint" not in resp.headers


async def test_hint_is_logged_and_kept_in_history(apigw: FakeApiGateway, make_proxy: MakeProxy,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="authproxy.debug.hints")
    client = await make_proxy(config(apigw.url, f"Bearer {ACCESS_TOKEN}"))
    resp = await client.get("/api/orders", headers=refusal(401, UNAUTHORIZED)
                            | {"X-Request-Id": "req-42"})
    hint = resp.headers["X-Authproxy-Hint"]
    records = [r for r in caplog.records if r.name == "authproxy.debug.hints"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    line = records[0].getMessage()
    assert line.startswith('api: API Gateway answered 401 "Unauthorized" (request req-42)')
    assert line.endswith(hint)
    assert records[0].__dict__["request_id"] == "req-42"
    assert ACCESS_TOKEN not in caplog.text and ACCESS_TOKEN.split(".")[2] not in caplog.text

    history = await (await client.get("/_authproxy/api/exchanges")).json()
    assert history["exchanges"][0]["hint"] == hint


def test_stage_missing_from_an_execute_api_url() -> None:
    ep = Endpoint(name="api", endpoint="https://abc123.execute-api.us-east-1.amazonaws.com",
                  prefix="/api")
    hinter = build_hinter(ep, None)
    hint = hinter(403, b'{"message":"Missing Authentication Token"}', [])
    assert hint is not None and "has no stage in its URL" in hint


def test_expiry_judged_with_the_given_clock() -> None:
    cred = CognitoCredential(name="user", flow="password", client_id="c",
                             user_pool_id="us-east-1_X", password=Secret("pw"))
    ep = Endpoint(name="api", endpoint="https://h.example/prod", auth="user", prefix="/api")
    token = make_jwt(iat=1_000_000, exp=1_003_600)
    sent = [("Authorization", f"Bearer {token}")]
    facts = build_source(cred).describe()
    late = build_hinter(ep, facts, now=lambda: 1_003_700.0)(401, EXPIRED.encode(), sent)
    assert late is not None and "expired 1m 40s ago" in late and "not refreshed" in late
    early = build_hinter(ep, facts, now=lambda: 1_003_000.0)(401, EXPIRED.encode(), sent)
    assert early is not None and "expires in 10m" in early and "behind" in early
    for hint in (late, early):
        assert token not in hint and all(" " <= c <= "~" for c in hint)
