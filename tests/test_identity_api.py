"""IdentityApi against the fake Cognito Identity (with real ID tokens from the fake Cognito),
and against small raw servers for the answers no well-behaved service gives. moto's
cognito-identity is the independent cross-check, in test_moto.py."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cognito_fixtures import FakeClock, call, http_fixture  # noqa: F401
from identity_fixtures import clock_fixture, cognito_fixture, identity_fixture  # noqa: F401

from proxy.credentials.identity_api import (
    IdentityApi,
    IdentityError,
    identity_endpoint,
    logins_key,
)
from proxy.fakes.cognito import FakeCognito
from proxy.fakes.cognito_identity import FakeCognitoIdentity, user_pool_provider
from proxy.fakes.cognito_pool import user_tokens
from proxy.secret import Secret

Server = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]



@pytest.fixture
def api(identity: FakeCognitoIdentity, http: aiohttp.ClientSession) -> IdentityApi:
    return IdentityApi(http, identity.url)


@pytest.fixture
async def raw_server() -> AsyncIterator[Server]:
    """`url = await raw_server(handler)`: a one-route server answering whatever a test wants."""
    servers: list[TestServer] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_post("/", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/"))

    yield start
    for server in servers:
        await server.close()


def test_endpoint_and_logins_key() -> None:
    assert identity_endpoint("eu-west-1") == "https://cognito-identity.eu-west-1.amazonaws.com/"
    assert identity_endpoint("cn-north-1") == (
        "https://cognito-identity.cn-north-1.amazonaws.com.cn/")
    assert logins_key("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X") == (
        "cognito-idp.us-east-1.amazonaws.com/us-east-1_X")
    assert logins_key("http://127.0.0.1:9229/us-east-1_X/") == "127.0.0.1:9229/us-east-1_X"


async def test_guest_identity_and_its_keys(api: IdentityApi, identity: FakeCognitoIdentity,
                                           clock: FakeClock) -> None:
    clock.advance(0.5)
    pool = identity.add_pool()
    identity_id = await api.get_id(pool)
    assert identity_id.startswith("us-east-1:") and identity_id in identity.identities
    keys, expiration = await api.get_credentials(identity_id)
    issued = identity.issued[keys.access_key_id]
    assert isinstance(keys.secret_access_key, Secret) and isinstance(keys.session_token, Secret)
    assert keys.secret_access_key.reveal() == issued.secret_access_key
    assert keys.session_token.reveal() == issued.session_token
    assert expiration == issued.expiration == clock.time() + 3600  # the fraction kept
    assert issued.identity_id == identity_id and not issued.authenticated
    assert issued.secret_access_key not in repr(keys) and issued.session_token not in repr(keys)
    assert keys.shown_key_id == "ASIA…"


async def _id_token(cognito: FakeCognito, http: aiohttp.ClientSession, client: str,
                    username: str) -> str:
    status, body = await call(http, cognito.url, "InitiateAuth", {
        "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": client,
        "AuthParameters": {"USERNAME": username, "PASSWORD": "Passw0rd!"}})
    assert status == 200, body
    return str(body["AuthenticationResult"]["IdToken"])


async def test_signed_in_user_gets_authenticated_keys_for_a_stable_identity(
        api: IdentityApi, identity: FakeCognitoIdentity, cognito: FakeCognito,
        http: aiohttp.ClientSession) -> None:
    user_pool = cognito.add_pool()
    client = cognito.add_client(user_pool)
    cognito.add_user(user_pool, "alice", "Passw0rd!")
    pool = identity.add_pool(allow_unauthenticated=False,
                             providers=user_pool_provider(cognito, user_pool, client))
    token = await _id_token(cognito, http, client, "alice")
    logins = {logins_key(cognito.issuer(user_pool)): token}  # the key as the source builds it
    identity_id = await api.get_id(pool, logins)
    assert await api.get_id(pool, {logins_key(cognito.issuer(user_pool)): await _id_token(
        cognito, http, client, "alice")}) == identity_id
    keys, _ = await api.get_credentials(identity_id, logins)
    assert identity.issued[keys.access_key_id].authenticated

    with pytest.raises(IdentityError) as e:
        await api.get_credentials(identity_id)  # an authenticated identity needs its login
    assert (e.value.kind, e.value.transient) == ("NotAuthorizedException", False)
    with pytest.raises(IdentityError) as e:
        await api.get_id(pool)
    assert (e.value.kind, e.value.transient) == ("NotAuthorizedException", False)
    assert e.value.message == "Unauthenticated access is not supported for this identity pool."


async def test_refusals_are_permanent_and_never_show_the_token(
        api: IdentityApi, identity: FakeCognitoIdentity, cognito: FakeCognito,
        http: aiohttp.ClientSession, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="authproxy")
    user_pool = cognito.add_pool()
    client = cognito.add_client(user_pool)
    user = cognito.add_user(user_pool, "alice", "Passw0rd!")
    providers = user_pool_provider(cognito, user_pool, client)
    pool = identity.add_pool(providers=providers)
    key = logins_key(cognito.issuer(user_pool))
    expired = user_tokens(cognito.pools[user_pool], cognito.clients[client], user,
                          issuer=cognito.issuer(user_pool), now=int(clock.time()) - 7200,
                          lifetime=3600, auth_time=0)["IdToken"]
    cases: list[tuple[str, dict[str, str] | None, str]] = [
        (pool, {key: expired}, "NotAuthorizedException"),
        (pool, {key: expired[:-4] + "AAAA"}, "NotAuthorizedException"),
        (pool, {key: "x" * 60_000}, "ValidationException"),
        ("us-east-1:00000000-0000-0000-0000-000000000000", None, "ResourceNotFoundException"),
        ("us-east-1_AbCdEf", None, "ValidationException"),
    ]
    for pool_id, logins, kind in cases:
        with pytest.raises(IdentityError) as e:
            await api.get_id(pool_id, logins)
        assert (e.value.kind, e.value.transient) == (kind, False), e.value
        for token in (logins or {}).values():
            assert token not in str(e.value) and token not in caplog.text
    with pytest.raises(IdentityError, match="Token expired: "):
        await api.get_id(pool, {key: expired})
    with pytest.raises(IdentityError) as e:
        await api.get_credentials("us-east-1:00000000-0000-0000-0000-000000000000")
    assert (e.value.kind, e.value.transient) == ("ResourceNotFoundException", False)


@pytest.mark.parametrize(("fault", "kind"), [
    (500, "InternalErrorException"), (503, "InternalErrorException"),
    ("throttle", "TooManyRequestsException"), ("down", "NetworkError"), ("garbage", "HTTP200"),
])
async def test_transient_failures(api: IdentityApi, identity: FakeCognitoIdentity,
                                  fault: int | str, kind: str) -> None:
    pool = identity.add_pool()
    identity_id = await api.get_id(pool)
    for call_ in (lambda: api.get_id(pool), lambda: api.get_credentials(identity_id)):
        identity.fail_next(1, fault)
        with pytest.raises(IdentityError) as e:
            await call_()
        assert (e.value.kind, e.value.transient) == (kind, True)
    assert (identity.count("GetId"), identity.count("GetCredentialsForIdentity")) == (2, 1)
    await api.get_credentials(identity_id)  # and the next call goes through


async def test_unreachable_and_slow(identity: FakeCognitoIdentity,
                                    http: aiohttp.ClientSession) -> None:
    pool = identity.add_pool()
    identity.delay = 1.0
    with pytest.raises(IdentityError) as e:
        await IdentityApi(http, identity.url, timeout=0.2).get_id(pool)
    assert (e.value.kind, e.value.transient) == ("NetworkError", True)
    assert "TimeoutError" in e.value.message
    await identity.stop()
    with pytest.raises(IdentityError) as e:
        await IdentityApi(http, identity.url).get_id(pool)
    assert (e.value.kind, e.value.transient) == ("NetworkError", True)
    assert e.value.message.startswith(f"cannot reach {identity.url}/")


async def test_what_goes_on_the_wire(raw_server: Server, http: aiohttp.ClientSession) -> None:
    seen: list[tuple[dict[str, str], Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), json.loads(await request.read())))
        if request.headers["X-Amz-Target"].endswith(".GetId"):
            return web.json_response({"IdentityId": "eu-west-1:abc"})
        # exponent form, as JSON allows: a parser of its own would have to know that
        return web.Response(text='{"IdentityId": "eu-west-1:abc", "Credentials": {'
                            '"AccessKeyId": "ASIAXYZ", "SecretKey": "s", "SessionToken": "t",'
                            ' "Expiration": 1.7000036005E9}}', content_type="text/html")

    api = IdentityApi(http, (await raw_server(handler)).rstrip("/"))  # the slash is added
    assert await api.get_id("eu-west-1:0") == "eu-west-1:abc"
    keys, expiration = await api.get_credentials("eu-west-1:abc", {"idp/x": "tok"})
    assert expiration == 1_700_003_600.5 and keys.access_key_id == "ASIAXYZ"
    (h1, b1), (h2, b2) = seen
    assert h1["X-Amz-Target"] == "AWSCognitoIdentityService.GetId"
    assert h2["X-Amz-Target"] == "AWSCognitoIdentityService.GetCredentialsForIdentity"
    for headers in (h1, h2):
        assert headers["Content-Type"] == "application/x-amz-json-1.1"
        assert "Authorization" not in headers and "X-Amz-Date" not in headers  # unsigned
    assert b1 == {"IdentityPoolId": "eu-west-1:0"}  # no empty Logins for a guest
    assert b2 == {"IdentityId": "eu-west-1:abc", "Logins": {"idp/x": "tok"}}


async def test_error_shapes_and_masking(raw_server: Server, http: aiohttp.ClientSession,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="authproxy")
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6IngifQ.c2lnbmF0dXJlLWJ5dGVz"
    payload = token.split(".")[1]
    answers = iter([
        (400, {"__type": "com.amazonaws.cognito.identity#NotAuthorizedException:http://x/",
               "message": f"Invalid login token {token}"}, None),
        (400, {"__type": "InvalidParameterException", "Message": f"claims {payload} rejected"},
         None),
        (400, None, "ThrottlingException:http://internal.amazon.com/"),  # the header alone
        (429, None, None),
        (502, {"__type": "ServiceUnavailable"}, None),
        (500, None, None),  # an HTML error page, as moto's
    ])

    async def handler(request: web.Request) -> web.Response:
        status, body, error_type = next(answers)
        headers = {"x-amzn-ErrorType": error_type} if error_type else {}
        if body is None:
            return web.Response(status=status, headers=headers, text="<html>oops</html>")
        return web.json_response(body, status=status, headers=headers)

    api = IdentityApi(http, await raw_server(handler))
    expected = [("NotAuthorizedException", False, "Invalid login token ***"),
                ("InvalidParameterException", False, "claims *** rejected"),
                ("ThrottlingException", True, "HTTP 400"),
                ("HTTP429", True, "HTTP 429"),
                ("ServiceUnavailable", True, "HTTP 502"),
                ("HTTP500", True, "HTTP 500")]
    for kind, transient, message in expected:
        with pytest.raises(IdentityError) as e:
            await api.get_id("us-east-1:0", {"idp/x": token})
        assert (e.value.kind, e.value.transient, e.value.message) == (kind, transient, message)
        assert str(e.value) == f"{kind}: {message}"
    assert payload not in caplog.text


async def test_unusable_success_is_transient_and_names_no_secret(
        raw_server: Server, http: aiohttp.ClientSession) -> None:
    bodies = iter([
        {},  # an empty object reads as nothing at all
        {"IdentityId": 42},
        {"IdentityId": "us-east-1:a"},  # no Credentials
        {"Credentials": {"AccessKeyId": "ASIAX", "SecretKey": "the-secret-key-value",
                         "SessionToken": "the-session-token-value", "Expiration": "tomorrow"}},
        {"Credentials": {"AccessKeyId": "ASIAX", "SecretKey": "",
                         "SessionToken": "the-session-token-value", "Expiration": True}},
    ])

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(next(bodies))

    api = IdentityApi(http, await raw_server(handler))
    for what in ("get_id", "get_id", "get_credentials", "get_credentials", "get_credentials"):
        with pytest.raises(IdentityError) as e:
            await (api.get_id("us-east-1:0") if what == "get_id"
                   else api.get_credentials("us-east-1:a"))
        assert e.value.transient
        assert "the-secret-key-value" not in str(e.value)
        assert "the-session-token-value" not in str(e.value)
    assert e.value.message == "Credentials without usable SecretKey, Expiration"
