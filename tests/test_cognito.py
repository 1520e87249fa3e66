"""CognitoSource against the fake Cognito over real HTTP on 127.0.0.1, with a hand-moved clock."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import jwt
import pytest
from aiohttp import web
from cognito_fixtures import (  # noqa: F401
    CognitoEnv,
    current,
    env_fixture,
    eventually,
    fake_fixture,
    header,
    http_fixture,
    rejected,
)

from proxy.credentials import CredentialsUnavailable, build_sources, token_store
from proxy.credentials.cognito import CognitoSource
from proxy.credentials.refresh import PERMANENT_HOLDOFF
from proxy.secret import Secret


def _claims(value: str) -> dict[str, object]:
    token = value.removeprefix("Bearer ")
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


@pytest.mark.parametrize("flow", ["password", "srp"])
async def test_cold_start_1000_concurrent_requests_cause_one_sign_in(env: CognitoEnv,
                                                                     flow: str) -> None:
    env.fake.delay = 0.05  # every caller arrives while the one sign-in is in flight
    source = await env.source(flow=flow)
    values = await asyncio.gather(*(header(source) for _ in range(1000)))
    assert len(set(values)) == 1 and values[0].startswith("Bearer eyJ")
    assert env.fake.count("InitiateAuth") == 1
    assert env.fake.count("RespondToAuthChallenge") == (1 if flow == "srp" else 0)
    assert source.status()["fetches"] == {"success": 1, "transient_error": 0,
                                          "permanent_error": 0}
    claims = _claims(values[0])
    assert claims["token_use"] == "id" and claims["cognito:username"] == "alice"


async def test_registry_builds_a_cognito_source(env: CognitoEnv) -> None:
    sources = build_sources({"user": env.cred()})
    assert isinstance(sources["user"], CognitoSource)
    assert sources["user"].header_name == "Authorization" and sources["user"].flow == "password"


async def test_wrong_password_is_a_clear_permanent_failure_with_bounded_attempts(
        env: CognitoEnv) -> None:
    source = await env.source(password=Secret("not-the-password"))
    results = await asyncio.gather(*(header(source) for _ in range(200)),
                                   return_exceptions=True)
    assert all(isinstance(r, CredentialsUnavailable) for r in results)
    message = str(results[0])
    assert "wrong password for user alice" in message
    assert "fix credentials.user.password" in message
    for _ in range(5):
        await env.step(source, 60)
        with pytest.raises(CredentialsUnavailable, match="wrong password"):
            await header(source)
    assert env.fake.count("InitiateAuth") == 1  # no loop: a lockout is worse than a 503
    status = source.status()
    assert status["state"] == "failed" and status["ready"] is False
    assert "wrong password" in status["last_error"]
    assert status["fetches"]["permanent_error"] == 1
    await env.step(source, PERMANENT_HOLDOFF)  # only after the long hold-off, once
    assert env.fake.count("InitiateAuth") == 2


@pytest.mark.parametrize("flow", ["password", "srp"])
async def test_srp_and_password_flows_fail_on_a_wrong_password(env: CognitoEnv,
                                                               flow: str) -> None:
    good = await env.source(flow=flow)
    assert _claims(await header(good))["cognito:username"] == "alice"
    bad = await env.source(flow=flow, password=Secret("Passw0rd?"))
    with pytest.raises(CredentialsUnavailable, match="wrong password for user alice"):
        await header(bad)


@pytest.mark.parametrize("fault", ["throttle", "error", "refused"])
async def test_cognito_down_while_a_token_is_cached(env: CognitoEnv, fault: str) -> None:
    env.fake.token_lifetime = 100
    source = await env.source()
    first = await header(source)
    if fault == "refused":
        await env.fake.stop()
    else:
        env.fake.set_fault(fault)
    await env.step(source, 71)  # past exp - margin: the background refresh starts failing
    for _ in range(8):  # ~20 s of outage, well before the token expires
        assert await header(source) == first
        await env.step(source, 2.5)
    status = source.status()
    assert status["state"] == "ready" and "Cognito unavailable" in status["last_error"]
    attempts = status["fetches"]["transient_error"]
    assert 3 <= attempts <= 6, attempts  # backoff: 1, 2, 4, 8 s (jittered), not every tick
    if fault == "refused":
        await env.fake.start()
    else:
        assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == attempts
        env.fake.set_fault(None)
    await env.step(source, 8)
    await env.step(source, 8)
    second = await header(source)
    assert second != first
    assert source.status()["methods"] == {"USER_PASSWORD_AUTH": 1, "REFRESH_TOKEN_AUTH": 1}
    assert source.status()["last_error"] is None


async def test_expired_token_is_never_served_while_cognito_is_down(env: CognitoEnv) -> None:
    env.fake.token_lifetime = 100
    source = await env.source()
    await header(source)
    env.fake.set_fault("error")
    await env.step(source, 94)
    assert current(source) is not None  # 6 s left: still handed out
    await env.step(source, 2)
    assert current(source) is None  # within the 5 s guard: not handed out
    with pytest.raises(CredentialsUnavailable, match="Cognito unavailable.*InternalError"):
        await header(source)
    assert source.status()["state"] == "retrying"
    env.fake.set_fault(None)
    await env.step(source, 60)
    assert current(source) is not None


async def test_cold_start_while_cognito_throttles_then_recovers(env: CognitoEnv) -> None:
    env.fake.set_fault("throttle", times=1)
    source = await env.source()
    with pytest.raises(CredentialsUnavailable, match="TooManyRequestsException"):
        await header(source)
    with pytest.raises(CredentialsUnavailable, match="next attempt in"):
        await header(source)  # inside the backoff: answered at once, Cognito not asked
    assert env.fake.count("InitiateAuth") == 1
    await env.step(source, 1)
    assert (await header(source)).startswith("Bearer ")
    assert env.fake.count("InitiateAuth") == 2


async def test_background_refresh_uses_refresh_token_auth_and_never_blocks(
        env: CognitoEnv) -> None:
    env.fake.token_lifetime = 100
    source = await env.source(flow="srp")
    first = await header(source)
    assert source.status()["refresh_in"] == pytest.approx(70, abs=0.5)
    env.fake.delay = 0.3
    env.clock.advance(71)
    await eventually(lambda: source.status()["state"] == "refreshing")
    started = asyncio.get_running_loop().time()
    assert await header(source) == first  # the old token keeps serving during the refresh
    assert asyncio.get_running_loop().time() - started < 0.05
    await env.settle(source)
    second = await header(source)
    assert second != first
    assert _claims(second)["auth_time"] == _claims(first)["auth_time"]
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 1
    assert env.fake.count("InitiateAuth", "USER_SRP_AUTH") == 1
    assert source.status()["methods"] == {"USER_SRP_AUTH": 1, "REFRESH_TOKEN_AUTH": 1}


async def test_revoked_refresh_token_leads_to_a_full_sign_in(env: CognitoEnv) -> None:
    env.fake.token_lifetime = 100
    source = await env.source()
    first = await header(source)
    env.fake.revoke_refresh_tokens()
    await env.step(source, 71)
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 1
    assert env.fake.count("InitiateAuth", "USER_PASSWORD_AUTH") == 2
    assert await header(source) != first
    await env.step(source, 71)  # and the new refresh token is used next time
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 2
    assert env.fake.count("InitiateAuth", "USER_PASSWORD_AUTH") == 2


@pytest.mark.parametrize("flow", ["password", "srp", "refresh_token", "client_credentials"])
async def test_client_secret_in_every_flow(env: CognitoEnv, flow: str) -> None:
    fake = env.fake
    fake.token_lifetime = 100
    pool = fake.add_pool(email_as_username=True)
    client = fake.add_client(pool, secret="cl13nt-s3cr3t", scopes=["orders/read"])
    user = fake.add_user(pool, "bob@example.com", "B0b-Passw0rd!")
    kw: dict[str, object] = {
        "flow": flow, "user_pool_id": pool, "client_id": client,
        "client_secret": Secret("cl13nt-s3cr3t"), "username": "bob@example.com",
        "password": Secret("B0b-Passw0rd!")}
    if flow == "refresh_token":
        seed = await env.source(**kw | {"flow": "password", "name": "seed"})
        await header(seed)
        refresh = seed._refresh_token
        assert refresh is not None
        await seed.close()
        # with a secret, refresh needs Cognito's internal username, not the email
        kw.update(password=None, refresh_token=refresh, username=user.username)
    if flow == "client_credentials":
        kw.update(domain=fake.url, token="access", user_pool_id="", username="", password=None)
    source = await env.source(**kw)
    value = await header(source)
    claims = _claims(value)
    if flow == "client_credentials":
        assert claims["client_id"] == client and claims["scope"] == "orders/read"
        assert fake.count("oauth2/token") == 1
    else:
        assert claims["cognito:username"] == user.username
    await env.step(source, 71)  # the refresh (or a new client-credentials token) works too
    assert await header(source) != value
    assert source.status()["fetches"]["success"] == 2
    assert source.status()["last_error"] is None
    if flow != "client_credentials":  # a refresh, not a second sign-in after a refused hash
        assert source.status()["methods"]["REFRESH_TOKEN_AUTH"] == (
            2 if flow == "refresh_token" else 1)
        assert fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == (
            2 if flow == "refresh_token" else 1)


async def test_wrong_client_secret_is_named(env: CognitoEnv) -> None:
    client = env.fake.add_client(env.pool, secret="right")
    source = await env.source(client_id=client, client_secret=Secret("wrong"))
    with pytest.raises(CredentialsUnavailable, match=r"fix credentials\.user\.client_secret"):
        await header(source)


async def test_access_token_bare_in_a_custom_header(env: CognitoEnv) -> None:
    source = await env.source(token="access", prefix="", header="X-Token")
    value = await header(source)
    assert value.startswith("eyJ") and source.header_name == "X-Token"
    assert _claims(value)["token_use"] == "access"


@pytest.mark.parametrize("skew", [-7200, 7200])
async def test_expiry_is_corrected_for_clock_skew(env: CognitoEnv, skew: float) -> None:
    env.fake.token_lifetime = 100
    env.fake.clock_skew = skew  # Cognito's clock two hours off ours
    source = await env.source()
    await header(source)
    assert source.status()["expires_in"] == pytest.approx(100, abs=0.5)
    await env.step(source, 50)
    assert current(source) is not None


async def test_margin_over_half_the_lifetime_is_honoured_with_one_warning(
        env: CognitoEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="authproxy")
    env.fake.token_lifetime = 10
    source = await env.source(refresh_margin=8)
    await header(source)
    assert source.status()["refresh_in"] == pytest.approx(2, abs=0.5)  # 10 - 8, not capped
    for _ in range(3):
        await env.step(source, 2)
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 3
    warnings = [r for r in caplog.records if "refresh_margin" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per credential, not once per refresh
    assert "more than half" in warnings[0].getMessage()


async def test_margin_beyond_the_lifetime_refreshes_at_most_once_a_second(
        env: CognitoEnv) -> None:
    env.fake.token_lifetime = 10
    source = await env.source(refresh_margin=300)
    await header(source)
    assert source.status()["refresh_in"] == pytest.approx(1, abs=0.05)
    await env.step(source, 0.5)
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 0
    for _ in range(4):
        await env.step(source, 0.5)
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 2


async def test_upstream_401_refreshes_once(env: CognitoEnv) -> None:
    source = await env.source()
    first = await header(source)
    assert await rejected(source, first) is True
    second = current(source)
    assert second is not None and second != first
    assert await rejected(source, first) is True  # a late 401 for the old token: just replay
    assert await rejected(source, second) is False  # again within 30 s: the API is the problem
    assert env.fake.count("InitiateAuth") == 2
    await env.step(source, 31)
    assert await rejected(source, second) is True
    assert env.fake.count("InitiateAuth") == 3


async def test_concurrent_401s_share_one_refresh(env: CognitoEnv) -> None:
    source = await env.source()
    first = await header(source)
    env.fake.delay = 0.05
    results = await asyncio.gather(*(rejected(source, first) for _ in range(50)))
    assert all(results)
    assert env.fake.count("InitiateAuth") == 2


async def test_saved_login_is_used_and_a_new_login_is_noticed(env: CognitoEnv) -> None:
    config = env.cred(password=None)
    source = await env.source(config)
    with pytest.raises(CredentialsUnavailable, match="run `authproxy login user`"):
        await header(source)
    assert env.fake.count("InitiateAuth") == 0
    # what `authproxy login user` does, from another process
    seed = await env.source(name="seed")
    await header(seed)
    assert seed._refresh_token is not None
    token_store.save(token_store.path_for(config, env.cache_dir), seed._refresh_token.reveal(),
                     "alice")
    value = await header(source)  # within the hold-off, but the cache file changed
    assert _claims(value)["cognito:username"] == "alice"
    assert env.fake.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == 1
    env.fake.revoke_refresh_tokens()
    env.fake.token_lifetime = 100
    await env.step(source, 3600)
    with pytest.raises(CredentialsUnavailable, match="refresh token expired or revoked: run "
                                                     "`authproxy login user`"):
        await header(source)


async def test_challenge_during_serve_points_to_login(env: CognitoEnv) -> None:
    env.fake.add_user(env.pool, "mfa", "Passw0rd!", challenge="SOFTWARE_TOKEN_MFA")
    source = await env.source(username="mfa")
    with pytest.raises(CredentialsUnavailable, match="needs SOFTWARE_TOKEN_MFA: run "
                                                     "`authproxy login user`"):
        await header(source)


async def test_no_secret_in_logs_status_or_errors(env: CognitoEnv,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = env.fake
    fake.token_lifetime = 100
    client = fake.add_client(env.pool, secret="Sup3r-Cl13nt-S3cr3t")
    m2m = fake.add_client(env.pool, secret="M2M-S3cr3t-Value", scopes=["a/b"])
    kw = {"client_id": client, "client_secret": Secret("Sup3r-Cl13nt-S3cr3t")}
    good = await env.source(**kw)
    machine = await env.source(flow="client_credentials", domain=fake.url, token="access",
                               client_id=m2m, client_secret=Secret("M2M-S3cr3t-Value"))
    bad = await env.source(**kw, password=Secret("Wr0ng-Passw0rd-Value"))
    values = [await header(good), await header(machine)]
    fake.set_fault("throttle", times=2)
    await env.step(good, 71)
    await env.step(good, 3)
    values.append(await header(good))
    errors = []
    for src in (bad,):
        try:
            await header(src)
        except CredentialsUnavailable as e:
            errors.append(str(e))
    fake.revoke_refresh_tokens()
    await env.step(good, 100)
    values.append(await header(good))
    texts = [caplog.text, *errors, *(json.dumps(s.status()) for s in (good, machine, bad))]
    secrets = ["Passw0rd!", "Sup3r-Cl13nt-S3cr3t", "M2M-S3cr3t-Value", "Wr0ng-Passw0rd-Value",
               *fake._refresh, *(v.removeprefix("Bearer ") for v in values)]
    assert len(errors) == 1 and "wrong password" in errors[0]
    assert "REFRESH_TOKEN_AUTH" in caplog.text and "TooManyRequestsException" in caplog.text
    for secret in secrets:
        for text in texts:
            assert secret not in text


async def test_refresh_with_the_typed_email_explains_the_internal_username(
        env: CognitoEnv) -> None:
    pool = env.fake.add_pool(email_as_username=True)
    client = env.fake.add_client(pool, secret="s3cr3t")
    env.fake.add_user(pool, "bob@example.com", "B0b-Passw0rd!")
    kw = {"user_pool_id": pool, "client_id": client, "client_secret": Secret("s3cr3t"),
          "username": "bob@example.com"}
    seed = await env.source(**kw, password=Secret("B0b-Passw0rd!"), name="seed")
    await header(seed)
    source = await env.source(**kw, flow="refresh_token", password=None,
                              refresh_token=seed._refresh_token)
    with pytest.raises(CredentialsUnavailable, match=r"set credentials\.user\.username to the "
                                                     "user's Cognito username"):
        await header(source)


async def test_secrets_echoed_by_the_server_are_scrubbed(
        env: CognitoEnv, aiohttp_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Some emulators (and who knows what proxy in between) quote what they were sent.
    async def echo(request: web.Request) -> web.Response:
        params = (await request.json())["AuthParameters"]
        quoted = params.get("REFRESH_TOKEN") or params.get("PASSWORD")
        return web.json_response({"__type": "NotAuthorizedException",
                                  "message": f"Invalid {quoted}"}, status=400)

    app = web.Application()
    app.router.add_post("/", echo)
    server = await aiohttp_server(app)
    caplog.set_level(logging.DEBUG)
    source = await env.source(endpoint=str(server.make_url("/")),
                              refresh_token=Secret("rt-S3CR3T-123"),
                              password=Secret("pw-S3CR3T-456"))
    with pytest.raises(CredentialsUnavailable, match=r"wrong password.*Invalid \*\*\*") as err:
        await header(source)
    assert "refresh token refused (Invalid ***)" in caplog.text
    for secret in ("rt-S3CR3T-123", "pw-S3CR3T-456"):
        assert secret not in caplog.text
        assert secret not in str(err.value)
        assert secret not in json.dumps(source.status())


@pytest.mark.parametrize("flow", ["client_credentials", "srp", "password"])
async def test_requests_carry_their_content_type_whatever_the_session_skips(
        env: CognitoEnv, flow: str) -> None:
    # A session told to invent no headers (as forwarding's is) must not change what Cognito
    # gets: CognitoApi names the Content-Type of its form and JSON posts itself.
    import aiohttp

    m2m = env.fake.add_client(env.pool, secret="m2m-secret", scopes=["a/b"])
    kw: dict[str, Any] = ({"client_id": m2m, "client_secret": Secret("m2m-secret"),
                           "domain": env.fake.url, "token": "access"}
                          if flow == "client_credentials" else {})
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type", "Accept",
                                                        "User-Agent")) as bare:
        source = CognitoSource(env.cred(flow=flow, **kw), cache_dir=env.cache_dir,
                               clock=env.clock)
        await source.start(bare)
        try:
            assert (await header(source)).startswith("Bearer eyJ")
        finally:
            await source.close()
    assert env.fake.count("oauth2/token" if flow == "client_credentials"
                          else "InitiateAuth") == 1
