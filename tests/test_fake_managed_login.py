"""The fake managed login on its own, spoken to as a browser and as an OAuth client would,
without proxy.credentials: it signs in the pool's users, and refuses what Cognito refuses."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
from cognito_fixtures import fake_fixture, http_fixture, verify  # noqa: F401
from managed_login_fixtures import PASSWORD, SsoPool, form_fields, query, sign_in, sso_pool

from proxy.fakes.cognito import FakeCognito

FORM = "application/x-www-form-urlencoded"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(p: SsoPool, challenge: str | None = None, **overrides: str) -> str:
    params = {"response_type": "code", "client_id": p.client, "redirect_uri": p.callback,
              "scope": "openid email", "state": "st-123", "nonce": "n-456"}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(overrides)
    return f"{p.fake.url}/oauth2/authorize?{urlencode({k: v for k, v in params.items() if v})}"


async def token(http: aiohttp.ClientSession, p: SsoPool, form: dict[str, str],
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with http.post(p.fake.url + "/oauth2/token", data=form, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


def exchange(p: SsoPool, code: str, verifier: str | None, **overrides: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "client_id": p.client, "code": code,
            "redirect_uri": p.callback, **({"code_verifier": verifier} if verifier else {})}
    form.update(overrides)
    return {k: v for k, v in form.items() if v}


async def code_for(http: aiohttp.ClientSession, p: SsoPool, challenge: str | None) -> str:
    location = await sign_in(http, authorize(p, challenge))
    assert location.startswith(p.callback + "?")
    got = query(location)
    assert got["state"] == "st-123"
    return got["code"]


async def test_sign_in_exchange_and_refresh(fake: FakeCognito,
                                            http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake)
    verifier, challenge = pkce()
    code = await code_for(http, p, challenge)
    status, body = await token(http, p, exchange(p, code, verifier))
    assert status == 200, body
    assert set(body) == {"access_token", "id_token", "refresh_token", "expires_in",
                         "token_type"}
    claims = await verify(http, fake, p.pool, body["id_token"], audience=p.client)
    assert claims["nonce"] == "n-456" and claims["cognito:username"] == "alice"
    assert claims["token_use"] == "id" and claims["email"] == "alice@example.test"
    access = await verify(http, fake, p.pool, body["access_token"])
    assert access["scope"] == "openid email" and access["client_id"] == p.client

    status, again = await token(http, p, {"grant_type": "refresh_token", "client_id": p.client,
                                          "refresh_token": body["refresh_token"]})
    assert status == 200 and "refresh_token" not in again  # no new refresh token
    renewed = await verify(http, fake, p.pool, again["id_token"], audience=p.client)
    assert renewed["auth_time"] == claims["auth_time"] and "nonce" not in renewed
    assert fake.calls["oauth2/authorize"] == 1 and fake.calls["login"] == 1
    assert fake.calls["oauth2/token/authorization_code"] == 1
    assert fake.calls["oauth2/token/refresh_token"] == 1
    assert fake.count("oauth2/token") == 2

    fake.revoke_refresh_tokens("alice")
    assert await token(http, p, {"grant_type": "refresh_token", "client_id": p.client,
                                 "refresh_token": body["refresh_token"]}) == (
        400, {"error": "invalid_grant"})


async def test_codes_are_single_use_and_need_the_right_verifier(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake)
    verifier, challenge = pkce()
    invalid_grant = (400, {"error": "invalid_grant"})

    code = await code_for(http, p, challenge)
    other_verifier, _ = pkce()
    assert await token(http, p, exchange(p, code, other_verifier)) == invalid_grant
    # the code died with the wrong attempt: the right verifier comes too late
    assert await token(http, p, exchange(p, code, verifier)) == invalid_grant

    code = await code_for(http, p, challenge)
    assert (await token(http, p, exchange(p, code, verifier)))[0] == 200
    assert await token(http, p, exchange(p, code, verifier)) == invalid_grant  # reused

    code = await code_for(http, p, challenge)
    assert await token(http, p, exchange(p, code, None)) == (400, {"error": "invalid_request"})
    code = await code_for(http, p, challenge)
    assert await token(http, p, exchange(p, code, verifier[:40])) == invalid_grant  # too short
    code = await code_for(http, p, challenge)
    assert await token(http, p, exchange(p, code, verifier, redirect_uri=(
        f"http://localhost:{p.port}/other"))) == invalid_grant
    # bound to the client it was issued to
    other = fake.add_client(p.pool, scopes=["openid"], oauth_flows=["code"],
                            callback_urls=[p.callback])
    code = await code_for(http, p, challenge)
    assert await token(http, p, exchange(p, code, verifier, client_id=other)) == invalid_grant
    assert await token(http, p, exchange(p, "no-such-code", verifier)) == invalid_grant


async def test_codes_expire_after_five_minutes(http: aiohttp.ClientSession) -> None:
    now = [1_772_694_489.0]
    fake = FakeCognito(clock=lambda: now[0])
    await fake.start()
    try:
        p = sso_pool(fake)
        verifier, challenge = pkce()
        code = await code_for(http, p, challenge)
        now[0] += 301
        assert await token(http, p, exchange(p, code, verifier)) == (
            400, {"error": "invalid_grant"})
        code = await code_for(http, p, challenge)
        now[0] += 299
        assert (await token(http, p, exchange(p, code, verifier)))[0] == 200
    finally:
        await fake.stop()


async def _page(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str | None]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


async def test_authorize_refuses_what_cognito_refuses(fake: FakeCognito,
                                                      http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake)
    _, challenge = pkce()
    # No redirect to a URI the client did not register, nor for an unknown client: a page.
    for url in (authorize(p, challenge, redirect_uri="http://localhost:1/callback"),
                authorize(p, challenge, redirect_uri="http://evil.test/callback"),
                authorize(p, challenge, client_id="nobody")):
        status, page, location = await _page(http, url)
        assert status == 400 and location is None, page
    assert "redirect_mismatch" in (await _page(http, authorize(
        p, challenge, redirect_uri=p.callback + "/x")))[1]

    async def refused(url: str) -> str:
        status, _, location = await _page(http, url)
        assert status == 302 and location and location.startswith(p.callback + "?")
        got = query(location)
        assert got["state"] == "st-123" and "code" not in got
        return got["error"]

    assert await refused(authorize(p, challenge, response_type="token")) == (
        "unsupported_response_type")
    assert await refused(authorize(p, challenge, scope="openid orders/write")) == (
        "invalid_scope")
    assert await refused(authorize(p, challenge, code_challenge_method="plain")) == (
        "invalid_request")
    assert await refused(authorize(p, "too-short", code_challenge_method="S256")) == (
        "invalid_request")
    assert await refused(authorize(p, challenge, identity_provider="Google")) == (
        "invalid_request")
    no_code = fake.add_client(p.pool, scopes=["openid"], oauth_flows=["implicit"],
                              callback_urls=[p.callback])
    assert await refused(authorize(p, challenge, client_id=no_code)) == "unauthorized_client"
    # and the same request, as it should be, leads to the form
    status, _, location = await _page(http, authorize(p, challenge))
    assert status == 302 and location and location.startswith("/login?")


async def test_the_form_checks_users_and_passwords_and_cancel_denies(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake)
    _, challenge = pkce()
    url = authorize(p, challenge)
    async with http.get(url) as resp:
        page = await resp.text()
    assert '<form method="post" action="/login">' in page and 'id="password"' in page
    fields = form_fields(page)
    assert fields["redirect_uri"] == p.callback and fields["code_challenge"] == challenge

    async def post(data: dict[str, str], **kw: Any) -> tuple[int, str, str | None]:
        async with http.post(fake.url + "/login", data=data, allow_redirects=False,
                             **kw) as r:
            return r.status, await r.text(), r.headers.get("Location")

    for user, password in (("alice", "wrong"), ("nobody", PASSWORD)):
        status, page, location = await post({**fields, "username": user, "password": password,
                                             "action": "signin"})
        assert status == 200 and location is None
        assert "Incorrect username or password." in page and 'id="username"' in page
    fake.pools[p.pool].users["alice"].enabled = False
    assert "User is disabled." in (await post({**fields, "username": "alice",
                                               "password": PASSWORD}))[1]
    fake.pools[p.pool].users["alice"].enabled = True
    fake.add_user(p.pool, "mfa", PASSWORD, challenge="SOFTWARE_TOKEN_MFA")
    assert "does not answer SOFTWARE_TOKEN_MFA" in (await post({
        **fields, "username": "mfa", "password": PASSWORD}))[1]
    # hidden fields are checked again: a tampered redirect_uri gets no redirect
    status, _, location = await post({**fields, "redirect_uri": "http://evil.test/cb",
                                      "username": "alice", "password": PASSWORD})
    assert status == 400 and location is None
    # a form post must be a form
    status, _, _ = await post(None, json={**fields, "username": "alice",  # type: ignore[arg-type]
                                          "password": PASSWORD})
    assert status == 400

    location = await sign_in(http, url, action="cancel")
    assert query(location) == {"error": "access_denied", "state": "st-123",
                               "error_description": "The user cancelled the sign-in"}
    assert location.startswith(p.callback + "?")


async def test_wrong_passwords_lock_the_user_out_as_the_api_does(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake)
    async with http.get(authorize(p)) as resp:
        fields = form_fields(await resp.text())
    for _ in range(5):
        async with http.post(fake.url + "/login", data={**fields, "username": "alice",
                                                        "password": "wrong"}) as r:
            await r.read()
    async with http.post(fake.url + "/login", data={**fields, "username": "alice",
                                                    "password": PASSWORD},
                         allow_redirects=False) as r:
        assert r.status == 200 and "Password attempts exceeded" in await r.text()


async def test_token_endpoint_authenticates_the_client(fake: FakeCognito,
                                                       http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake, secret="app-secret")
    verifier, challenge = pkce()
    basic = {"Authorization": "Basic " + base64.b64encode(
        f"{p.client}:app-secret".encode()).decode()}
    invalid_client = (400, {"error": "invalid_client"})
    code = await code_for(http, p, challenge)
    # a confidential client must prove its secret; naming itself is not enough
    assert await token(http, p, exchange(p, code, verifier)) == invalid_client
    code = await code_for(http, p, challenge)
    status, body = await token(http, p, exchange(p, code, verifier), basic)
    assert status == 200 and body["refresh_token"]
    refresh = {"grant_type": "refresh_token", "client_id": p.client,
               "refresh_token": body["refresh_token"]}
    assert await token(http, p, refresh) == invalid_client
    assert (await token(http, p, refresh, basic))[0] == 200
    # a form without its Content-Type is refused before anything else
    async with http.post(fake.url + "/oauth2/token", json=refresh, headers=basic) as r:
        assert (r.status, await r.json()) == (400, {"error": "invalid_request"})
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as bare:
        async with bare.post(fake.url + "/oauth2/token", data=urlencode(refresh).encode(),
                             headers=basic) as r:
            assert (r.status, await r.json()) == (400, {"error": "invalid_request"})
    # a public client's refresh token is not another client's
    public = sso_pool(fake)
    assert await token(http, public, {**refresh, "client_id": public.client}) == (
        400, {"error": "invalid_grant"})


def test_callback_urls_are_what_cognito_accepts(fake: FakeCognito) -> None:
    pool = fake.add_pool()
    for url in ("http://localhost:8976/callback", "http://127.0.0.1:8976/callback",
                "https://app.example.com/cb"):
        fake.add_client(pool, oauth_flows=["code"], scopes=["openid"], callback_urls=[url])
    for url in ("http://app.example.com/cb", "http://localhost.evil.test/cb", "ftp://x"):
        with pytest.raises(ValueError, match="refuses the callback URL"):
            fake.add_client(pool, oauth_flows=["code"], callback_urls=[url])
    with pytest.raises(ValueError, match="needs at least one callback URL"):
        fake.add_client(pool, oauth_flows=["code"], scopes=["openid"])


async def test_a_token_without_openid_has_no_id_token(fake: FakeCognito,
                                                      http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake)
    verifier, challenge = pkce()
    location = await sign_in(http, authorize(p, challenge, scope="email"))
    status, body = await token(http, p, exchange(p, query(location)["code"], verifier))
    assert status == 200 and "id_token" not in body
    assert jwt.decode(body["access_token"], options={"verify_signature": False})[
        "scope"] == "email"


async def test_identity_provider_goes_straight_to_that_providers_form(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    p = sso_pool(fake, identity_providers=["COGNITO", "Google"])
    verifier, challenge = pkce()
    url = authorize(p, challenge, identity_provider="Google")
    async with http.get(url) as resp:
        page = await resp.text()
    assert "<h1>Sign in with Google</h1>" in page
    assert form_fields(page)["identity_provider"] == "Google"
    location = await sign_in(http, url)
    status, body = await token(http, p, exchange(p, query(location)["code"], verifier))
    assert status == 200 and body["id_token"]
