"""The fake Cognito Identity, driven over HTTP with the raw wire format (not through
proxy.credentials), so that the identity pool source's tests stand on a fake that is itself
known to refuse what Cognito Identity refuses. ID tokens come from a running FakeCognito."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import aiohttp
import jwt
import pytest
from cognito_fixtures import FakeClock, call, http_fixture  # noqa: F401
from cryptography.hazmat.primitives.asymmetric import rsa
from identity_fixtures import clock_fixture, cognito_fixture, identity_fixture  # noqa: F401

from proxy.fakes.cognito import FakeCognito
from proxy.fakes.cognito_identity import (
    BAD_ISSUER,
    BAD_SIGNATURE,
    LOGINS_MISMATCH,
    NO_AUD,
    NO_GUESTS,
    NOT_SUPPORTED,
    FakeCognitoIdentity,
    Provider,
    user_pool_provider,
)
from proxy.fakes.cognito_pool import sign, user_tokens

AMZ_JSON = "application/x-amz-json-1.1"
TARGET = "AWSCognitoIdentityService."
ID_RE = re.compile(r"us-east-1:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")



class Users:
    """A FakeCognito user pool with an app client and users alice and bob, trusted by an
    identity pool that also allows guests."""

    def __init__(self, cognito: FakeCognito, identity: FakeCognitoIdentity,
                 http: aiohttp.ClientSession) -> None:
        self.cognito, self.identity, self.http = cognito, identity, http
        self.user_pool = cognito.add_pool()
        self.client = cognito.add_client(self.user_pool)
        self.users = {name: cognito.add_user(self.user_pool, name, "Passw0rd!")
                      for name in ("alice", "bob")}
        self.providers = user_pool_provider(cognito, self.user_pool, self.client)
        (self.key,) = self.providers
        self.pool = identity.add_pool(providers=self.providers)

    async def id_token(self, username: str = "alice") -> str:
        status, body = await call(self.http, self.cognito.url, "InitiateAuth", {
            "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": self.client,
            "AuthParameters": {"USERNAME": username, "PASSWORD": "Passw0rd!"}})
        assert status == 200, body
        return str(body["AuthenticationResult"]["IdToken"])

    def tokens(self, username: str = "alice", *, now: int | None = None) -> dict[str, Any]:
        """Tokens minted directly with the user pool's keys, for shapes a sign-in never
        gives (expired ones, other claims)."""
        pool = self.cognito.pools[self.user_pool]
        return user_tokens(pool, self.cognito.clients[self.client], self.users[username],
                           issuer=self.cognito.issuer(self.user_pool),
                           now=int(now if now is not None else self.cognito.clock()),
                           lifetime=3600, auth_time=0)

    def signed(self, claims: dict[str, Any]) -> str:
        """An ID-key-signed token with exactly these claims (plus iss, iat, exp, jti)."""
        return sign(self.cognito.pools[self.user_pool], "id", claims,
                    issuer=self.cognito.issuer(self.user_pool), now=int(self.cognito.clock()),
                    lifetime=3600)


@pytest.fixture
def users(cognito: FakeCognito, identity: FakeCognitoIdentity,
          http: aiohttp.ClientSession) -> Users:
    return Users(cognito, identity, http)


async def op(http: aiohttp.ClientSession, url: str, operation: str,
             body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One call as botocore makes it."""
    return await _post(http, url, json.dumps(body).encode(), TARGET + operation, AMZ_JSON)


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, target: str | None,
                content_type: str | None) -> tuple[int, dict[str, Any]]:
    headers = {}
    if target is not None:
        headers["X-Amz-Target"] = target
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with http.post(url + "/", data=body, headers=headers) as resp:
        if resp.status == 200:
            assert resp.content_type == AMZ_JSON
        data: dict[str, Any] = await resp.json(content_type=None)
        if resp.status != 200:
            # errors carry both the body type and x-amzn-ErrorType, as AWS's do
            assert resp.headers["x-amzn-ErrorType"] == f"{data['__type']}:"
        return resp.status, data


def refused(result: tuple[int, dict[str, Any]], kind: str, message: str | None = None) -> None:
    status, data = result
    assert (status, data["__type"]) == (400, kind), data
    if message is not None:
        assert data["message"] == message


# --- guests ----------------------------------------------------------------------------------

async def test_guest_flow_hands_out_fresh_keys_and_remembers_them(
        identity: FakeCognitoIdentity, http: aiohttp.ClientSession, clock: FakeClock) -> None:
    clock.advance(0.25)  # a wall time with a fraction: Expiration is not always whole
    pool = identity.add_pool()
    status, first = await op(http, identity.url, "GetId", {"IdentityPoolId": pool})
    assert status == 200 and ID_RE.fullmatch(first["IdentityId"])
    status, second = await op(http, identity.url, "GetId", {"IdentityPoolId": pool})
    assert status == 200 and second["IdentityId"] != first["IdentityId"]  # a new guest each time

    status, body = await op(http, identity.url, "GetCredentialsForIdentity",
                            {"IdentityId": first["IdentityId"]})
    assert status == 200 and body["IdentityId"] == first["IdentityId"]
    creds = body["Credentials"]
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", creds["AccessKeyId"])
    assert len(creds["SecretKey"]) == 40 and len(creds["SessionToken"]) > 400
    assert creds["Expiration"] == clock.time() + 3600 and creds["Expiration"] % 1 == 0.25
    issued = identity.issued[creds["AccessKeyId"]]
    assert (issued.secret_access_key, issued.session_token) == (creds["SecretKey"],
                                                                creds["SessionToken"])
    assert (issued.identity_id, issued.authenticated) == (first["IdentityId"], False)
    assert creds["SecretKey"] not in repr(issued) and creds["SessionToken"] not in repr(issued)
    keys = issued.aws_keys(creds["AccessKeyId"])
    assert keys.secret_access_key.reveal() == creds["SecretKey"]

    identity.credentials_lifetime = 900
    _, again = await op(http, identity.url, "GetCredentialsForIdentity",
                        {"IdentityId": first["IdentityId"]})
    assert again["Credentials"]["AccessKeyId"] != creds["AccessKeyId"]  # fresh every call
    assert again["Credentials"]["SecretKey"] != creds["SecretKey"]
    assert again["Credentials"]["Expiration"] == clock.time() + 900
    assert len(identity.issued) == 2
    assert (identity.count("GetId"), identity.count("GetCredentialsForIdentity")) == (2, 2)


async def test_a_pool_without_guests_refuses_them(identity: FakeCognitoIdentity,
                                                  http: aiohttp.ClientSession) -> None:
    closed = identity.add_pool(allow_unauthenticated=False)
    refused(await op(http, identity.url, "GetId", {"IdentityPoolId": closed}),
            "NotAuthorizedException", NO_GUESTS)
    # a guest identity outlives its pool's change of mind, its credentials do not
    pool = identity.add_pool()
    _, body = await op(http, identity.url, "GetId", {"IdentityPoolId": pool})
    identity.pools[pool].allow_unauthenticated = False
    refused(await op(http, identity.url, "GetCredentialsForIdentity",
                     {"IdentityId": body["IdentityId"]}), "NotAuthorizedException", NO_GUESTS)


async def test_unknown_pool_and_identity(identity: FakeCognitoIdentity,
                                         http: aiohttp.ClientSession) -> None:
    nobody = "us-east-1:00000000-0000-0000-0000-000000000000"
    refused(await op(http, identity.url, "GetId", {"IdentityPoolId": nobody}),
            "ResourceNotFoundException")
    refused(await op(http, identity.url, "GetCredentialsForIdentity", {"IdentityId": nobody}),
            "ResourceNotFoundException")


# --- the wire format -------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "content_type", "body", "kind"), [
    (None, AMZ_JSON, b"{}", "UnknownOperationException"),
    ("GetId", AMZ_JSON, b"{}", "UnknownOperationException"),  # unprefixed
    (TARGET + "GetOpenIdToken", AMZ_JSON, b"{}", "UnknownOperationException"),
    ("AWSCognitoIdentityProviderService.GetId", AMZ_JSON, b"{}", "UnknownOperationException"),
    (TARGET + "GetId", "application/json", b"{}", "SerializationException"),
    (TARGET + "GetId", None, b"{}", "SerializationException"),
    (TARGET + "GetId", AMZ_JSON, b"{not json", "SerializationException"),
    (TARGET + "GetId", AMZ_JSON, b"[]", "SerializationException"),
    (TARGET + "GetId", AMZ_JSON, b'{"IdentityPoolId": 7}', "SerializationException"),
    (TARGET + "GetId", AMZ_JSON, b'{"IdentityPoolId": "us-east-1:0", "Logins": []}',
     "SerializationException"),
    (TARGET + "GetId", AMZ_JSON, b'{"IdentityPoolId": "us-east-1:0", "Logins": {"a": 1}}',
     "SerializationException"),
])
async def test_refuses_what_the_json_protocol_refuses(
        identity: FakeCognitoIdentity, http: aiohttp.ClientSession, target: str | None,
        content_type: str | None, body: bytes, kind: str) -> None:
    refused(await _post(http, identity.url, body, target, content_type), kind)


@pytest.mark.parametrize(("body", "what"), [
    ({}, "Value null at 'identityPoolId'"),
    ({"IdentityPoolId": ""}, "length between 1 and 55"),
    ({"IdentityPoolId": "us-east-1:" + "0" * 50}, "length between 1 and 55"),
    ({"IdentityPoolId": "us-east-1_AbCdEf"}, "regular expression pattern"),  # a user pool id
    ({"IdentityPoolId": "us-east-1:0F3C"}, "regular expression pattern"),  # hex is lower case
    ({"IdentityPoolId": "us-east-1:0", "Logins": {f"p{i}": "t" for i in range(11)}},
     "less than or equal to 10"),
    ({"IdentityPoolId": "us-east-1:0", "Logins": {"p": ""}}, "values between 1 and 50000"),
    ({"IdentityPoolId": "us-east-1:0", "Logins": {"": "t"}}, "keys must have length"),
    ({"IdentityPoolId": "us-east-1:0", "Logins": {"x" * 129: "t"}}, "keys must have length"),
])
async def test_validates_members_as_the_model_says(identity: FakeCognitoIdentity,
                                                   http: aiohttp.ClientSession,
                                                   body: dict[str, Any], what: str) -> None:
    status, data = await op(http, identity.url, "GetId", body)
    refused((status, data), "ValidationException")
    assert what in data["message"]


async def test_identity_id_is_validated_too(identity: FakeCognitoIdentity,
                                            http: aiohttp.ClientSession) -> None:
    for body in ({}, {"IdentityId": "alice"}, {"IdentityId": 3}):
        status, data = await op(http, identity.url, "GetCredentialsForIdentity", body)
        assert status == 400
        assert data["__type"] in ("ValidationException", "SerializationException")
    status, data = await op(http, identity.url, "GetCredentialsForIdentity", {})
    assert "Value null at 'identityId'" in data["message"]


# --- signed-in users -------------------------------------------------------------------------

async def test_a_signed_in_user_keeps_one_identity(users: Users,
                                                   http: aiohttp.ClientSession) -> None:
    url = users.identity.url
    token = await users.id_token()
    logins = {users.key: token}
    _, first = await op(http, url, "GetId", {"IdentityPoolId": users.pool, "Logins": logins})
    again = await users.id_token()  # a new sign-in, a new token: the same identity
    assert again != token
    _, second = await op(http, url, "GetId", {"IdentityPoolId": users.pool,
                                              "Logins": {users.key: again}})
    assert ID_RE.fullmatch(first["IdentityId"]) and second == first
    _, bob = await op(http, url, "GetId", {"IdentityPoolId": users.pool,
                                           "Logins": {users.key: await users.id_token("bob")}})
    assert bob["IdentityId"] != first["IdentityId"]

    status, body = await op(http, url, "GetCredentialsForIdentity",
                            {"IdentityId": first["IdentityId"], "Logins": logins})
    assert status == 200, body
    issued = users.identity.issued[body["Credentials"]["AccessKeyId"]]
    assert (issued.identity_id, issued.authenticated) == (first["IdentityId"], True)


async def test_an_authenticated_identity_needs_its_own_login(
        users: Users, http: aiohttp.ClientSession) -> None:
    url = users.identity.url
    _, alice = await op(http, url, "GetId", {"IdentityPoolId": users.pool,
                                             "Logins": {users.key: await users.id_token()}})
    forbidden = f"Access to Identity '{alice['IdentityId']}' is forbidden."
    refused(await op(http, url, "GetCredentialsForIdentity",
                     {"IdentityId": alice["IdentityId"]}), "NotAuthorizedException", forbidden)
    bob = {users.key: await users.id_token("bob")}
    refused(await op(http, url, "GetCredentialsForIdentity",
                     {"IdentityId": alice["IdentityId"], "Logins": bob}),
            "NotAuthorizedException", forbidden)
    # and a guest identity is not turned into someone by GetCredentialsForIdentity
    _, guest = await op(http, url, "GetId", {"IdentityPoolId": users.pool})
    refused(await op(http, url, "GetCredentialsForIdentity",
                     {"IdentityId": guest["IdentityId"], "Logins": bob}),
            "NotAuthorizedException", LOGINS_MISMATCH)


async def _get_id(users: Users, logins: dict[str, str],
                  pool: str | None = None) -> tuple[int, dict[str, Any]]:
    return await op(users.http, users.identity.url, "GetId",
                    {"IdentityPoolId": pool or users.pool, "Logins": logins})


def _tamper(token: str, **claims: Any) -> str:
    head, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    raw = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{head}.{raw}.{signature}"


async def test_logins_that_do_not_verify_are_refused(users: Users, clock: FakeClock) -> None:
    token = await users.id_token()
    assert (await _get_id(users, {users.key: token}))[0] == 200
    bad = "NotAuthorizedException"
    refused(await _get_id(users, {users.key: _tamper(token, sub="someone-else")}), bad,
            BAD_SIGNATURE)
    refused(await _get_id(users, {users.key: "not-a-jwt"}), bad, BAD_SIGNATURE)
    # signed by another key that claims the pool's kid: the signature itself is checked
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                        algorithm="RS256", headers={"kid": kid})
    refused(await _get_id(users, {users.key: forged}), bad, BAD_SIGNATURE)
    # HS256 with the public key as the secret (the classic confusion) is not RS256
    refused(await _get_id(users, {users.key: jwt.encode(claims, "k" * 32, algorithm="HS256",
                                                       headers={"kid": kid})}),
            bad, BAD_SIGNATURE)
    refused(await _get_id(users, {users.key: users.tokens()["AccessToken"]}), bad, NO_AUD)
    refused(await _get_id(users, {users.key: users.signed(
        {"sub": "x", "aud": users.client, "token_use": "access"})}), bad)
    refused(await _get_id(users, {users.key: users.signed(
        {"aud": users.client, "token_use": "id"})}), bad)  # no sub
    other_client = users.cognito.add_client(users.user_pool)
    refused(await _get_id(users, {users.key: users.signed(
        {"sub": "x", "aud": other_client, "token_use": "id"})}), bad, NOT_SUPPORTED)

    clock.advance(3599)
    assert (await _get_id(users, {users.key: token}))[0] == 200
    clock.advance(1)
    status, data = await _get_id(users, {users.key: token})
    refused((status, data), bad)
    assert data["message"].startswith("Invalid login token. Token expired: ")


async def test_the_logins_key_must_name_a_provider_the_pool_trusts(users: Users) -> None:
    token = await users.id_token()
    bad = "NotAuthorizedException"
    # AWS's form of the key, for a token whose iss is the fake's http://127.0.0.1:<port>/<id>
    aws_key = f"cognito-idp.us-east-1.amazonaws.com/{users.user_pool}"
    refused(await _get_id(users, {aws_key: token}), bad, BAD_ISSUER)
    # another user pool's token under its own (right) key, in a pool that does not trust it
    other = users.cognito.add_pool()
    other_client = users.cognito.add_client(other)
    users.cognito.add_user(other, "carol", "Passw0rd!")
    (other_key,) = user_pool_provider(users.cognito, other, other_client)
    status, body = await call(users.http, users.cognito.url, "InitiateAuth", {
        "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": other_client,
        "AuthParameters": {"USERNAME": "carol", "PASSWORD": "Passw0rd!"}})
    refused(await _get_id(users, {other_key: body["AuthenticationResult"]["IdToken"]}), bad,
            NOT_SUPPORTED)
    # a pool that trusts no provider at all
    guests_only = users.identity.add_pool()
    refused(await _get_id(users, {users.key: token}, guests_only), bad, LOGINS_MISMATCH)
    # a provider configured by name alone expects AWS's https issuer, not http
    https_only = users.identity.add_pool(providers={users.key: Provider((users.client,),
                                         jwks=users.cognito.jwks(users.user_pool))})
    refused(await _get_id(users, {users.key: token}, https_only), bad, BAD_ISSUER)


async def test_key_set_given_directly_and_user_pool_down(users: Users) -> None:
    token = await users.id_token()
    direct = users.identity.add_pool(providers={users.key: Provider(
        (users.client,), jwks=users.cognito.jwks(users.user_pool),
        issuer=users.cognito.issuer(users.user_pool))})
    assert (await _get_id(users, {users.key: token}, direct))[0] == 200
    await users.cognito.stop()  # its JWKS URL is gone: AWS's dependency failed, not the token
    refused(await _get_id(users, {users.key: token}), "ExternalServiceException")
    assert (await _get_id(users, {users.key: token}, direct))[0] == 200


async def test_several_logins_link_into_one_identity(users: Users) -> None:
    cognito = users.cognito
    second_pool = cognito.add_pool()
    second_client = cognito.add_client(second_pool)
    cognito.add_user(second_pool, "alice2", "Passw0rd!")
    providers = users.providers | user_pool_provider(cognito, second_pool, second_client)
    pool = users.identity.add_pool(providers=providers)
    (second_key,) = set(providers) - {users.key}

    async def second_token(name: str) -> str:
        _, body = await call(users.http, cognito.url, "InitiateAuth", {
            "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": second_client,
            "AuthParameters": {"USERNAME": name, "PASSWORD": "Passw0rd!"}})
        return str(body["AuthenticationResult"]["IdToken"])

    _, linked = await _get_id(users, {users.key: await users.id_token(),
                                      second_key: await second_token("alice2")}, pool)
    _, alone = await _get_id(users, {second_key: await second_token("alice2")}, pool)
    assert alone == linked
    _, bob = await _get_id(users, {users.key: await users.id_token("bob")}, pool)
    refused(await _get_id(users, {users.key: await users.id_token("bob"),
                                  second_key: await second_token("alice2")}, pool),
            "ResourceConflictException")
    assert bob != linked


# --- faults ----------------------------------------------------------------------------------

async def test_faults_and_counters(identity: FakeCognitoIdentity,
                                   http: aiohttp.ClientSession) -> None:
    pool = identity.add_pool()
    body = {"IdentityPoolId": pool}
    identity.fail_next(2, 503)
    for _ in range(2):
        status, data = await op(http, identity.url, "GetId", body)
        assert (status, data["__type"]) == (503, "InternalErrorException")
    assert (await op(http, identity.url, "GetId", body))[0] == 200
    identity.fail_next(1, "throttle")
    refused(await op(http, identity.url, "GetId", body), "TooManyRequestsException")
    identity.fail_next(1, "garbage")
    async with http.post(identity.url + "/", data=json.dumps(body).encode(), headers={
            "X-Amz-Target": TARGET + "GetId", "Content-Type": AMZ_JSON}) as resp:
        assert resp.status == 200
        with pytest.raises(ValueError):
            json.loads(await resp.read())
    identity.fail_next(1, "down")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await op(http, identity.url, "GetId", body)
    assert (await op(http, identity.url, "GetId", body))[0] == 200
    assert identity.count("GetId") == 7 and identity.count("GetCredentialsForIdentity") == 0
    with pytest.raises(ValueError):
        identity.fail_next(1, "explode")
    with pytest.raises(ValueError):
        identity.fail_next(1, 200)


async def test_delay_and_restart(identity: FakeCognitoIdentity,
                                 http: aiohttp.ClientSession) -> None:
    pool = identity.add_pool()
    identity.delay = 0.2
    started = time.monotonic()
    assert (await op(http, identity.url, "GetId", {"IdentityPoolId": pool}))[0] == 200
    assert time.monotonic() - started >= 0.2
    identity.delay = 0
    url = identity.url
    await identity.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await op(http, url, "GetId", {"IdentityPoolId": pool})
    assert await identity.start() == url  # the same port again
    assert (await op(http, url, "GetId", {"IdentityPoolId": pool}))[0] == 200


async def test_concurrent_calls_are_all_counted(identity: FakeCognitoIdentity,
                                                http: aiohttp.ClientSession) -> None:
    pool = identity.add_pool()
    results = await asyncio.gather(*(op(http, identity.url, "GetId", {"IdentityPoolId": pool})
                                     for _ in range(5)))
    assert {r[0] for r in results} == {200}
    assert len({r[1]["IdentityId"] for r in results}) == 5 and identity.count("GetId") == 5
