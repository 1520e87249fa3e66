"""The fake Cognito, driven over HTTP with the raw wire format (not through proxy.credentials),
so that the token source's tests stand on a fake that is itself known to behave like Cognito."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import Any

import aiohttp
import jwt
import pytest
from cognito_fixtures import call, fake_fixture, http_fixture, verify  # noqa: F401

from proxy.credentials import srp
from proxy.fakes.cognito import FakeCognito


def _auth(flow: str, client: str, **params: str) -> dict[str, Any]:
    return {"AuthFlow": flow, "ClientId": client, "AuthParameters": params}


async def _srp_sign_in(http: aiohttp.ClientSession, fake: FakeCognito, pool: str, client: str,
                       username: str, password: str, secret: str | None = None,
                       ) -> tuple[int, dict[str, Any]]:
    a, big_a = srp.generate_a()
    params = {"USERNAME": username, "SRP_A": f"{big_a:x}"}
    if secret:
        params["SECRET_HASH"] = srp.secret_hash(username, client, secret)
    status, ch = await call(http, fake.url, "InitiateAuth", _auth("USER_SRP_AUTH", client,
                                                                   **params))
    assert status == 200, ch
    assert ch["ChallengeName"] == "PASSWORD_VERIFIER"
    p = ch["ChallengeParameters"]
    ts = srp.timestamp()
    answers = {"USERNAME": p["USERNAME"], "TIMESTAMP": ts,
               "PASSWORD_CLAIM_SECRET_BLOCK": p["SECRET_BLOCK"],
               "PASSWORD_CLAIM_SIGNATURE": srp.password_claim(
                   pool_id=pool, user_id=p["USER_ID_FOR_SRP"], password=password, a=a,
                   big_a=big_a, big_b_hex=p["SRP_B"], salt_hex=p["SALT"],
                   secret_block=p["SECRET_BLOCK"], ts=ts)}
    if secret:
        answers["SECRET_HASH"] = srp.secret_hash(p["USERNAME"], client, secret)
    return await call(http, fake.url, "RespondToAuthChallenge", {
        "ChallengeName": "PASSWORD_VERIFIER", "ClientId": client,
        "ChallengeResponses": answers})


async def test_password_sign_in_gives_verifiable_tokens_with_cognito_claims(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!", email="alice@example.com", groups=["admins"])
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="alice", PASSWORD="Passw0rd!"))
    assert status == 200, body
    result = body["AuthenticationResult"]
    assert result["ExpiresIn"] == 3600 and result["TokenType"] == "Bearer"
    assert result["RefreshToken"]
    id_claims = await verify(http, fake, pool, result["IdToken"], audience=client)
    access = await verify(http, fake, pool, result["AccessToken"])
    assert id_claims["token_use"] == "id" and id_claims["cognito:username"] == "alice"
    assert id_claims["email"] == "alice@example.com" and id_claims["cognito:groups"] == ["admins"]
    assert access["token_use"] == "access" and access["client_id"] == client
    assert "aud" not in access and access["username"] == "alice"
    assert access["scope"] == "aws.cognito.signin.user.admin"
    assert id_claims["sub"] == access["sub"]
    assert id_claims["exp"] - id_claims["iat"] == 3600
    assert id_claims["auth_time"] == id_claims["iat"]
    assert id_claims["iss"] == f"{fake.url}/{pool}"
    assert (jwt.get_unverified_header(result["IdToken"])["kid"]
            != jwt.get_unverified_header(result["AccessToken"])["kid"])
    assert fake.count("InitiateAuth", "USER_PASSWORD_AUTH") == 1


@pytest.mark.parametrize(("username", "password", "kind", "message"), [
    ("alice", "wrong", "NotAuthorizedException", "Incorrect username or password."),
    ("nobody", "x", "UserNotFoundException", "User does not exist."),
    ("bob", "Passw0rd!", "NotAuthorizedException", "User is disabled."),
])
async def test_sign_in_errors_have_cognito_shape(
        fake: FakeCognito, http: aiohttp.ClientSession, username: str, password: str,
        kind: str, message: str) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    fake.add_user(pool, "bob", "Passw0rd!", enabled=False)
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME=username, PASSWORD=password))
    assert status == 400
    assert body == {"__type": kind, "message": message}


async def test_unknown_client_and_disabled_flow(fake: FakeCognito,
                                                http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    srp_only = fake.add_client(pool, auth_flows=["USER_SRP_AUTH", "REFRESH_TOKEN_AUTH"])
    fake.add_user(pool, "alice", "Passw0rd!")
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", srp_only, USERNAME="alice", PASSWORD="Passw0rd!"))
    assert (status, body["__type"]) == (400, "InvalidParameterException")
    assert "USER_PASSWORD_AUTH flow not enabled" in body["message"]
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", "nope", USERNAME="alice", PASSWORD="Passw0rd!"))
    assert (status, body["__type"]) == (400, "ResourceNotFoundException")


async def test_srp_right_password_signs_in_and_wrong_one_fails(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    status, body = await _srp_sign_in(http, fake, pool, client, "alice", "Passw0rd!")
    assert status == 200, body
    assert body["AuthenticationResult"]["IdToken"]
    status, body = await _srp_sign_in(http, fake, pool, client, "alice", "Passw0rd?")
    assert (status, body["__type"]) == (400, "NotAuthorizedException")
    assert fake.count("RespondToAuthChallenge", "PASSWORD_VERIFIER") == 2


async def _srp_answer(http: aiohttp.ClientSession, fake: FakeCognito, pool: str, client: str,
                      ts: str, password: str = "Passw0rd!") -> tuple[int, dict[str, Any]]:
    """USER_SRP_AUTH as alice, answering PASSWORD_VERIFIER with a signature over `ts`."""
    a, big_a = srp.generate_a()
    _, ch = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_SRP_AUTH", client, USERNAME="alice", SRP_A=f"{big_a:x}"))
    p = ch["ChallengeParameters"]
    sig = srp.password_claim(pool_id=pool, user_id="alice", password=password, a=a,
                             big_a=big_a, big_b_hex=p["SRP_B"], salt_hex=p["SALT"],
                             secret_block=p["SECRET_BLOCK"], ts=ts)
    return await call(http, fake.url, "RespondToAuthChallenge", {
        "ChallengeName": "PASSWORD_VERIFIER", "ClientId": client, "ChallengeResponses": {
            "USERNAME": "alice", "TIMESTAMP": ts, "PASSWORD_CLAIM_SECRET_BLOCK":
            p["SECRET_BLOCK"], "PASSWORD_CLAIM_SIGNATURE": sig}})


async def test_srp_timestamp_must_be_readable_canonical_and_recent(
        http: aiohttp.ClientSession) -> None:
    now = [1_772_694_489.0]  # Thu Mar 5 07:08:09 UTC 2026
    fake = FakeCognito(clock=lambda: now[0])
    await fake.start()
    try:
        pool = fake.add_pool()
        client = fake.add_client(pool)
        fake.add_user(pool, "alice", "Passw0rd!")
        assert (await _srp_answer(http, fake, pool, client, "Thu Mar 5 07:08:09 UTC 2026")
                )[0] == 200
        # Unreadable as Java's "EEE MMM d HH:mm:ss z yyyy": Cognito's own message.
        for ts in ("Thu Mar 5 07:08:09 +05:30 2026", "2026-03-05T07:08:09Z",
                   "Donnerstag Mär 5 07:08:09 UTC 2026", "Thu Feb 30 07:08:09 UTC 2026", ""):
            status, body = await _srp_answer(http, fake, pool, client, ts)
            assert (status, body) == (400, {"__type": "InvalidParameterException", "message":
                                            "TIMESTAMP format should be EEE MMM d HH:mm:ss z "
                                            "yyyy in english."}), ts
        # Readable but not canonical (a zero-padded day, a wrong weekday): Cognito signs what
        # it parsed, so the client's signature does not match (measured on AWS).
        for ts in ("Thu Mar 05 07:08:09 UTC 2026", "Fri Mar 5 07:08:09 UTC 2026"):
            status, body = await _srp_answer(http, fake, pool, client, ts)
            assert (status, body["__type"]) == (400, "NotAuthorizedException"), ts
        # Canonical but stale or from the future beyond the tolerance, with the right password.
        for ts in ("Thu Mar 5 07:02:08 UTC 2026", "Thu Mar 5 07:14:10 UTC 2026"):
            status, body = await _srp_answer(http, fake, pool, client, ts)
            assert (status, body["__type"]) == (400, "NotAuthorizedException"), ts
        # A clock problem is not a guess at the password: only the two mismatched proofs count
        # towards the lockout.
        assert fake.pools[pool].users["alice"].failures == 2
        assert (await _srp_answer(http, fake, pool, client, "Thu Mar 5 07:03:10 UTC 2026")
                )[0] == 200  # within five minutes
    finally:
        await fake.stop()


async def test_secret_hash_is_strict_and_refresh_uses_the_internal_username(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool(email_as_username=True)
    client = fake.add_client(pool, secret="client-secret")
    user = fake.add_user(pool, "carol@example.com", "Passw0rd!")
    assert user.username != "carol@example.com"  # a UUID, as Cognito does for email pools

    base = {"USERNAME": "carol@example.com", "PASSWORD": "Passw0rd!"}
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, **base))
    assert (status, body["__type"]) == (400, "NotAuthorizedException")
    assert "SECRET_HASH was not received" in body["message"]
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, **base, SECRET_HASH=srp.secret_hash(
            "carol@example.com", client, "other-secret")))
    assert "Unable to verify secret hash" in body["message"]
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, **base, SECRET_HASH=srp.secret_hash(
            "carol@example.com", client, "client-secret")))
    assert status == 200, body
    refresh = body["AuthenticationResult"]["RefreshToken"]
    access = jwt.decode(body["AuthenticationResult"]["AccessToken"],
                        options={"verify_signature": False})
    assert access["username"] == user.username

    # on refresh, the hash of what was typed is refused; the internal username works
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "REFRESH_TOKEN_AUTH", client, REFRESH_TOKEN=refresh,
        SECRET_HASH=srp.secret_hash("carol@example.com", client, "client-secret")))
    assert (status, body["__type"]) == (400, "NotAuthorizedException")
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "REFRESH_TOKEN", client, REFRESH_TOKEN=refresh,
        SECRET_HASH=srp.secret_hash(user.username, client, "client-secret")))
    assert status == 200, body

    # SRP on the same client: typed name for InitiateAuth, internal one in the response
    status, body = await _srp_sign_in(http, fake, pool, client, "carol@example.com", "Passw0rd!",
                                      secret="client-secret")
    assert status == 200, body


async def test_refresh_keeps_auth_time_gives_no_new_refresh_token_and_honours_revocation(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    _, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="alice", PASSWORD="Passw0rd!"))
    first = jwt.decode(body["AuthenticationResult"]["IdToken"],
                       options={"verify_signature": False})
    refresh = body["AuthenticationResult"]["RefreshToken"]
    fake.clock_skew = 120  # the second token is issued "two minutes later"
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "REFRESH_TOKEN_AUTH", client, REFRESH_TOKEN=refresh))
    assert status == 200
    assert "RefreshToken" not in body["AuthenticationResult"]
    second = jwt.decode(body["AuthenticationResult"]["IdToken"],
                        options={"verify_signature": False})
    assert second["auth_time"] == first["auth_time"] and second["iat"] >= first["iat"] + 120
    assert fake.revoke_refresh_tokens("alice") == 1
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "REFRESH_TOKEN_AUTH", client, REFRESH_TOKEN=refresh))
    assert (status, body["__type"]) == (400, "NotAuthorizedException")
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "REFRESH_TOKEN_AUTH", client, REFRESH_TOKEN="made-up"))
    assert (status, body["__type"]) == (400, "NotAuthorizedException")


async def test_new_password_then_totp_challenge(fake: FakeCognito,
                                                http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "dave", "Temp0rary!", challenge=["SOFTWARE_TOKEN_MFA",
                                                         "NEW_PASSWORD_REQUIRED"],
                  mfa_code="654321")
    _, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="dave", PASSWORD="Temp0rary!"))
    assert body["ChallengeName"] == "NEW_PASSWORD_REQUIRED"

    async def respond(name: str, session: str, **answers: str) -> tuple[int, dict[str, Any]]:
        return await call(http, fake.url, "RespondToAuthChallenge", {
            "ChallengeName": name, "ClientId": client, "Session": session,
            "ChallengeResponses": {"USERNAME": "dave", **answers}})

    status, body = await respond("NEW_PASSWORD_REQUIRED", body["Session"],
                                 NEW_PASSWORD="N3w-Passw0rd!")
    assert status == 200 and body["ChallengeName"] == "SOFTWARE_TOKEN_MFA"
    status, wrong = await respond("SOFTWARE_TOKEN_MFA", body["Session"],
                                  SOFTWARE_TOKEN_MFA_CODE="000000")
    assert (status, wrong["__type"]) == (400, "CodeMismatchException")
    status, done = await respond("SOFTWARE_TOKEN_MFA", body["Session"],
                                 SOFTWARE_TOKEN_MFA_CODE="654321")
    assert status == 200 and done["AuthenticationResult"]["RefreshToken"]
    # the new password is now the password, the MFA stays
    status, body = await _srp_sign_in(http, fake, pool, client, "dave", "N3w-Passw0rd!")
    assert body["ChallengeName"] == "SOFTWARE_TOKEN_MFA"
    status, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="dave", PASSWORD="Temp0rary!"))
    assert body["__type"] == "NotAuthorizedException"


@pytest.mark.parametrize(("challenge", "key", "medium"), [
    ("SMS_MFA", "SMS_MFA_CODE", "SMS"), ("EMAIL_OTP", "EMAIL_OTP_CODE", "EMAIL")])
async def test_code_challenges(fake: FakeCognito, http: aiohttp.ClientSession, challenge: str,
                               key: str, medium: str) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "erin", "Passw0rd!", challenge=challenge, mfa_code="111222")
    _, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="erin", PASSWORD="Passw0rd!"))
    assert body["ChallengeName"] == challenge
    assert body["ChallengeParameters"]["CODE_DELIVERY_DELIVERY_MEDIUM"] == medium
    status, body = await call(http, fake.url, "RespondToAuthChallenge", {
        "ChallengeName": challenge, "ClientId": client, "Session": body["Session"],
        "ChallengeResponses": {"USERNAME": "erin", key: "111222"}})
    assert status == 200 and body["AuthenticationResult"]["AccessToken"]
    # a used session cannot be replayed
    status, body = await call(http, fake.url, "RespondToAuthChallenge", {
        "ChallengeName": challenge, "ClientId": client, "Session": "replayed",
        "ChallengeResponses": {"USERNAME": "erin", key: "111222"}})
    assert (status, body["__type"]) == (400, "NotAuthorizedException")


async def test_client_credentials(fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool, secret="m2m-secret", scopes=["orders/read", "orders/write"])
    basic = base64.b64encode(f"{client}:m2m-secret".encode()).decode()

    async def token(auth: str, scope: str | None) -> tuple[int, dict[str, Any]]:
        form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        async with http.post(fake.url + "/oauth2/token", data=form,
                             headers={"Authorization": f"Basic {auth}"}) as resp:
            return resp.status, await resp.json()

    status, body = await token(basic, "orders/read")
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert set(body) == {"access_token", "expires_in", "token_type"}
    claims = await verify(http, fake, pool, body["access_token"])
    assert claims["token_use"] == "access" and claims["scope"] == "orders/read"
    assert claims["client_id"] == claims["sub"] == client
    _, body = await token(basic, None)
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["scope"] == (
        "orders/read orders/write")
    assert await token(basic, "orders/delete") == (400, {"error": "invalid_scope"})
    wrong = base64.b64encode(f"{client}:nope".encode()).decode()
    assert await token(wrong, None) == (400, {"error": "invalid_client"})
    assert fake.count("oauth2/token") == 4


async def test_faults_counters_lifetime_and_restart(fake: FakeCognito,
                                                    http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    body = _auth("USER_PASSWORD_AUTH", client, USERNAME="alice", PASSWORD="Passw0rd!")
    fake.set_fault("throttle", times=2)
    for _ in range(2):
        status, err = await call(http, fake.url, "InitiateAuth", body)
        assert (status, err) == (400, {"__type": "TooManyRequestsException",
                                       "message": "Rate exceeded"})
    fake.set_fault("error")
    assert (await call(http, fake.url, "InitiateAuth", body))[0] == 500
    assert (await call(http, fake.url, "InitiateAuth", body))[0] == 500
    fake.set_fault(None)
    fake.token_lifetime = 10
    status, ok = await call(http, fake.url, "InitiateAuth", body)
    assert status == 200 and ok["AuthenticationResult"]["ExpiresIn"] == 10
    claims = jwt.decode(ok["AuthenticationResult"]["IdToken"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 10
    assert fake.count("InitiateAuth") == 5

    port = fake.port
    await fake.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, fake.url, "InitiateAuth", body)
    await fake.start()
    assert fake.port == port
    assert (await call(http, fake.url, "InitiateAuth", body))[0] == 200


async def test_delay(fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    fake.delay = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="alice", PASSWORD="Passw0rd!"))
    assert status == 200 and loop.time() - started >= 0.2
    (begin, end, name), = fake.events
    assert name == "InitiateAuth/USER_PASSWORD_AUTH" and end - begin >= 0.2


# --- what Cognito refuses -------------------------------------------------------------------

class _Clock:
    """Wall time for the fake that moves only by hand."""

    def __init__(self) -> None:
        self.now = 1_772_694_489.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def timed() -> Any:
    clock = _Clock()
    fake = FakeCognito(clock=clock)
    await fake.start()
    yield fake, clock
    await fake.stop()


async def _raw(http: aiohttp.ClientSession, url: str, body: bytes,
               headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(("headers", "kind"), [
    ({"Content-Type": "application/json"}, "SerializationException"),
    ({"Content-Type": "text/plain"}, "SerializationException"),
    ({}, "SerializationException"),  # aiohttp sends application/octet-stream for bytes
    ({"X-Amz-Target": "InitiateAuth"}, "UnknownOperationException"),
    ({"X-Amz-Target": "AWSCognitoIdentityProviderService.SignUp"}, "UnknownOperationException"),
    ({"X-Amz-Target": "AWSCognitoIdentityService.InitiateAuth"}, "UnknownOperationException"),
    ({"X-Amz-Target": ""}, "UnknownOperationException"),
])
async def test_json_api_wants_its_content_type_and_a_full_target(
        fake: FakeCognito, http: aiohttp.ClientSession, headers: dict[str, str],
        kind: str) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    body = json.dumps(_auth("USER_PASSWORD_AUTH", client, USERNAME="alice",
                            PASSWORD="Passw0rd!")).encode()
    sent = {"Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth", **headers}
    if not headers:
        del sent["Content-Type"]
    status, answer = await _raw(http, fake.url + "/", body, sent)
    assert status == 400 and answer["__type"] == kind and answer["message"]
    assert fake.count("InitiateAuth") == 0  # refused before it was an auth call
    assert (await _raw(http, fake.url + "/", b"[1, 2]", {
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target":
        "AWSCognitoIdentityProviderService.InitiateAuth"}))[1]["__type"] == (
        "SerializationException")
    # the same request with the right headers signs in
    status, _ = await call(http, fake.url, "InitiateAuth", json.loads(body))
    assert status == 200


async def _token(http: aiohttp.ClientSession, fake: FakeCognito, form: Any,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with http.post(fake.url + "/oauth2/token", data=form, headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None)


def _basic(text: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


async def test_token_endpoint_wants_a_form(fake: FakeCognito,
                                          http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool, secret="m2m-secret", scopes=["orders/read"])
    auth = _basic(f"{client}:m2m-secret")
    form = "grant_type=client_credentials"
    for content_type in ("application/json", "text/plain", "application/octet-stream"):
        assert await _token(http, fake, form, {**auth, "Content-Type": content_type}) == (
            400, {"error": "invalid_request"}), content_type
    # multipart/form-data is a form to aiohttp (and most servers), not to Cognito
    multipart = aiohttp.MultipartWriter("form-data")
    multipart.append("client_credentials").set_content_disposition("form-data",
                                                                   name="grant_type")
    assert await _token(http, fake, multipart, auth) == (400, {"error": "invalid_request"})
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as bare:
        async with bare.post(fake.url + "/oauth2/token", data=form.encode(),
                             headers=auth) as resp:
            assert (resp.status, await resp.json()) == (400, {"error": "invalid_request"})
    status, body = await _token(http, fake, form, {
        **auth, "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert status == 200 and body["access_token"]
    assert await _token(http, fake, {"scope": "orders/read"}, auth) == (
        400, {"error": "invalid_request"})  # no grant_type
    assert await _token(http, fake, {"grant_type": "password"}, auth) == (
        400, {"error": "unsupported_grant_type"})


async def test_token_endpoint_client_authentication(fake: FakeCognito,
                                                    http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    client = fake.add_client(pool, secret="m2m-secret", scopes=["orders/read"])
    public = fake.add_client(pool)
    grant = {"grant_type": "client_credentials"}
    # Cognito takes client_secret_basic and client_secret_post (its token endpoint docs).
    assert (await _token(http, fake, grant, _basic(f"{client}:m2m-secret")))[0] == 200
    assert (await _token(http, fake, {**grant, "client_id": client},
                         _basic(f"{client}:m2m-secret")))[0] == 200
    assert (await _token(http, fake, {**grant, "client_id": client,
                                      "client_secret": "m2m-secret"}))[0] == 200
    invalid_client = (400, {"error": "invalid_client"})
    for headers in ({"Authorization": "Basic %%%not-base64%%%"},
                    {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
                    _basic(f"{client}m2m-secret"),  # no colon
                    _basic(f"{client}:wrong-secret"), _basic(f"{client}:"),
                    _basic("nobody:m2m-secret"), _basic(f"{public}:"),
                    {"Authorization": "Bearer m2m-secret"}, {}):
        assert await _token(http, fake, grant, headers) == invalid_client, headers
    # The body's client id must be the one Basic authenticated.
    assert await _token(http, fake, {**grant, "client_id": public},
                        _basic(f"{client}:m2m-secret")) == invalid_client
    assert await _token(http, fake, {**grant, "client_id": client,
                                      "client_secret": "wrong"}) == invalid_client
    assert await _token(http, fake, {**grant, "client_id": client}) == invalid_client
    # Two ways of authenticating in one request (RFC 6749 section 2.3): refused, even when
    # both carry the right secret.
    assert await _token(http, fake, {**grant, "client_id": client, "client_secret":
                                     "m2m-secret"}, _basic(f"{client}:m2m-secret")) == (
        400, {"error": "invalid_request"})


async def test_grant_and_flow_must_be_enabled_on_the_client(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    pool = fake.add_pool()
    no_m2m = fake.add_client(pool, secret="s3cr3t", scopes=["orders/read"], oauth_flows=())
    assert await _token(http, fake, {"grant_type": "client_credentials"},
                        _basic(f"{no_m2m}:s3cr3t")) == (400, {"error": "unauthorized_client"})
    srp_only = fake.add_client(pool, auth_flows=["USER_SRP_AUTH"])
    fake.add_user(pool, "alice", "Passw0rd!")
    for flow, params in (("USER_PASSWORD_AUTH", {"PASSWORD": "Passw0rd!"}),
                         ("REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": "x"})):
        status, body = await call(http, fake.url, "InitiateAuth", _auth(
            flow, srp_only, USERNAME="alice", **params))
        assert (status, body) == (400, {"__type": "InvalidParameterException",
                                        "message": f"{flow} flow not enabled for this client"})


async def _mfa_session(http: aiohttp.ClientSession, fake: FakeCognito) -> tuple[str, str]:
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!", challenge="SOFTWARE_TOKEN_MFA", mfa_code="135790")
    _, body = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_PASSWORD_AUTH", client, USERNAME="alice", PASSWORD="Passw0rd!"))
    assert body["ChallengeName"] == "SOFTWARE_TOKEN_MFA"
    return client, body["Session"]


async def _code(http: aiohttp.ClientSession, fake: FakeCognito, client: str, session: str,
                code: str) -> tuple[int, dict[str, Any]]:
    return await call(http, fake.url, "RespondToAuthChallenge", {
        "ChallengeName": "SOFTWARE_TOKEN_MFA", "ClientId": client, "Session": session,
        "ChallengeResponses": {"USERNAME": "alice", "SOFTWARE_TOKEN_MFA_CODE": code}})


async def test_a_session_survives_two_wrong_codes_not_three(
        fake: FakeCognito, http: aiohttp.ClientSession) -> None:
    client, session = await _mfa_session(http, fake)
    for _ in range(2):
        assert (await _code(http, fake, client, session, "000000"))[1]["__type"] == (
            "CodeMismatchException")
    assert (await _code(http, fake, client, session, "135790"))[0] == 200

    client, session = await _mfa_session(http, fake)
    for _ in range(3):
        assert (await _code(http, fake, client, session, "000000"))[1]["__type"] == (
            "CodeMismatchException")
    # the session is dead: even the right code cannot use it
    assert await _code(http, fake, client, session, "135790") == (
        400, {"__type": "NotAuthorizedException", "message": "Invalid session for the user."})


async def test_challenge_sessions_expire_after_three_minutes(
        timed: tuple[FakeCognito, _Clock], http: aiohttp.ClientSession) -> None:
    fake, clock = timed
    expired = (400, {"__type": "NotAuthorizedException",
                     "message": "Invalid session for the user, session is expired."})
    client, session = await _mfa_session(http, fake)
    clock.now += 179
    assert (await _code(http, fake, client, session, "135790"))[0] == 200
    client, session = await _mfa_session(http, fake)
    clock.now += 180
    assert await _code(http, fake, client, session, "135790") == expired

    # PASSWORD_VERIFIER too: the signature is right, the challenge too old.
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    a, big_a = srp.generate_a()
    _, ch = await call(http, fake.url, "InitiateAuth", _auth(
        "USER_SRP_AUTH", client, USERNAME="alice", SRP_A=f"{big_a:x}"))
    clock.now += 200
    p, ts = ch["ChallengeParameters"], srp.timestamp(dt.datetime.fromtimestamp(clock.now, dt.UTC))
    sig = srp.password_claim(pool_id=pool, user_id="alice", password="Passw0rd!", a=a,
                             big_a=big_a, big_b_hex=p["SRP_B"], salt_hex=p["SALT"],
                             secret_block=p["SECRET_BLOCK"], ts=ts)
    assert await call(http, fake.url, "RespondToAuthChallenge", {
        "ChallengeName": "PASSWORD_VERIFIER", "ClientId": client, "ChallengeResponses": {
            "USERNAME": "alice", "TIMESTAMP": ts, "PASSWORD_CLAIM_SECRET_BLOCK":
            p["SECRET_BLOCK"], "PASSWORD_CLAIM_SIGNATURE": sig}}) == expired


async def test_repeated_wrong_passwords_lock_the_user_out(
        timed: tuple[FakeCognito, _Clock], http: aiohttp.ClientSession) -> None:
    fake, clock = timed
    pool = fake.add_pool()
    client = fake.add_client(pool)
    fake.add_user(pool, "alice", "Passw0rd!")
    exceeded = (400, {"__type": "NotAuthorizedException",
                      "message": "Password attempts exceeded"})

    async def sign_in(password: str) -> tuple[int, dict[str, Any]]:
        return await call(http, fake.url, "InitiateAuth", _auth(
            "USER_PASSWORD_AUTH", client, USERNAME="alice", PASSWORD=password))

    for _ in range(5):
        assert await sign_in("wrong") == (400, {"__type": "NotAuthorizedException",
                                                "message": "Incorrect username or password."})
    # locked for 2^(5-5) = 1 s: the right password is refused too, and so is SRP
    assert await sign_in("Passw0rd!") == exceeded
    assert (await _srp_answer(http, fake, pool, client,
                              srp.timestamp(dt.datetime.fromtimestamp(clock.now, dt.UTC))
                              )) == exceeded
    clock.now += 0.9
    assert await sign_in("wrong") == exceeded  # attempts while locked do not count
    clock.now += 0.1
    assert (await sign_in("wrong"))[1]["message"] == "Incorrect username or password."
    assert await sign_in("Passw0rd!") == exceeded  # sixth failure: 2 s now
    clock.now += 1.5
    assert await sign_in("Passw0rd!") == exceeded
    clock.now += 0.5
    assert (await sign_in("Passw0rd!"))[0] == 200
    # a success forgets the failures: four more are not a lockout
    for _ in range(4):
        await sign_in("wrong")
    assert (await sign_in("Passw0rd!"))[0] == 200

    # fifteen quiet minutes forget them too
    for _ in range(4):
        await sign_in("wrong")
    clock.now += 900
    assert (await sign_in("wrong"))[1]["message"] == "Incorrect username or password."
    assert (await sign_in("Passw0rd!"))[0] == 200
