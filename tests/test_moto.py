"""Cross-check against moto's Cognito emulator, written by other people: it catches misreadings
of the wire format that the in-repo fake would share with the code. moto does not check SRP,
SECRET_HASH or lifetimes (see COGNITO.md), so those stay with the fake."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cognito_fixtures import FakeClock, current, header, rejected

from proxy.config import CognitoCredential
from proxy.credentials import CredentialsUnavailable
from proxy.credentials.cognito import CognitoSource
from proxy.credentials.identity_api import IdentityApi, IdentityError, logins_key
from proxy.login import login
from proxy.secret import Secret

pytestmark = pytest.mark.moto

if os.environ.get("CI") or os.environ.get("AUTHPROXY_REQUIRE_MOTO"):
    import boto3
    from moto.server import ThreadedMotoServer
else:  # a developer without the test extra installed gets a skip, CI gets a failure
    boto3 = pytest.importorskip("boto3")
    ThreadedMotoServer = pytest.importorskip("moto.server").ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def idp(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")  # never real credentials, never a real endpoint
    return boto3.client("cognito-idp", endpoint_url=moto_url, region_name=REGION)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _pool(idp: Any, *users: tuple[str, str, bool]) -> tuple[str, str]:
    pool = idp.create_user_pool(PoolName="authproxy")["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool, ClientName="authproxy",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH",
                           "ALLOW_USER_SRP_AUTH"])["UserPoolClient"]["ClientId"]
    for username, password, permanent in users:
        idp.admin_create_user(UserPoolId=pool, Username=username, TemporaryPassword=password,
                              MessageAction="SUPPRESS",
                              UserAttributes=[{"Name": "email", "Value": f"{username}@x.test"}])
        if permanent:
            idp.admin_set_user_password(UserPoolId=pool, Username=username, Password=password,
                                        Permanent=True)
    return pool, client


def _cred(url: str, pool: str, client: str, **kw: Any) -> CognitoCredential:
    values: dict[str, Any] = {"name": "user", "flow": "password", "client_id": client,
                              "user_pool_id": pool, "region": REGION, "username": "alice",
                              "password": Secret("Passw0rd!1"), "endpoint": url}
    return CognitoCredential(**(values | kw))


async def test_sign_in_refresh_and_jwks(idp: Any, moto_url: str, http: aiohttp.ClientSession,
                                        tmp_path: Path) -> None:
    pool, client = _pool(idp, ("alice", "Passw0rd!1", True))
    clock = FakeClock()
    source = CognitoSource(_cred(moto_url, pool, client), cache_dir=tmp_path, clock=clock)
    await source.start(http)
    try:
        first = await header(source)
        assert source.status()["methods"] == {"USER_PASSWORD_AUTH": 1}
        # moto always issues 3600 s tokens; the refresh is due at exp - 300 s
        assert source.status()["refresh_in"] == pytest.approx(3300, abs=5)
        assert await rejected(source, first) is True  # refresh now, as after an upstream 401
        second = current(source)
        assert second is not None
        assert source.status()["methods"] == {"USER_PASSWORD_AUTH": 1, "REFRESH_TOKEN_AUTH": 1}
    finally:
        await source.close()

    async with http.get(f"{moto_url}/{pool}/.well-known/jwks.json") as resp:
        assert resp.status == 200
        jwks = jwt.PyJWKSet.from_dict(await resp.json())
    for value in (first, second):
        token = value.removeprefix("Bearer ")
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in jwks.keys if k.key_id == kid)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=client,
                            issuer=f"https://cognito-idp.{REGION}.amazonaws.com/{pool}")
        assert claims["token_use"] == "id" and claims["cognito:username"] == "alice"


async def test_wrong_password_and_revoked_refresh_token(
        idp: Any, moto_url: str, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="authproxy")
    pool, client = _pool(idp, ("alice", "Passw0rd!1", True))
    bad = CognitoSource(_cred(moto_url, pool, client, password=Secret("wrong-one")),
                        cache_dir=tmp_path, clock=FakeClock())
    await bad.start(http)
    try:
        with pytest.raises(CredentialsUnavailable, match="wrong password for user alice"):
            await header(bad)
    finally:
        await bad.close()

    source = CognitoSource(_cred(moto_url, pool, client), cache_dir=tmp_path, clock=FakeClock())
    await source.start(http)
    try:
        first = await header(source)
        assert source._refresh_token is not None
        refresh = source._refresh_token.reveal()
        idp.admin_user_global_sign_out(UserPoolId=pool, Username="alice")
        assert await rejected(source, first) is True
        # moto refused the revoked refresh token, so the source signed in again
        assert source.status()["methods"] == {"USER_PASSWORD_AUTH": 2}
    finally:
        await source.close()
    assert refresh not in caplog.text and refresh not in json.dumps(source.status())
    assert "refresh token refused" in caplog.text


async def test_login_answers_new_password_required(
        idp: Any, moto_url: str, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    pool, client = _pool(idp, ("newbie", "Temp0rary!1", False))
    config = _cred(moto_url, pool, client, username="newbie", password=None)
    answers = iter(["Temp0rary!1", "N3w-Passw0rd!", "N3w-Passw0rd!"])
    result = await login(config, lambda kind, message, secret: next(answers), session=http,
                         cache_dir=tmp_path)
    assert result.challenges == ("NEW_PASSWORD_REQUIRED",)
    source = CognitoSource(config, cache_dir=tmp_path, clock=FakeClock())
    await source.start(http)
    try:
        assert (await header(source)).startswith("Bearer ")
        assert source.status()["methods"] == {"REFRESH_TOKEN_AUTH": 1}
    finally:
        await source.close()


# --- Cognito Identity (identity pools) --------------------------------------------------------
# moto's cognito-identity (see COGNITO.md) answers the enhanced flow with the real wire format
# but checks almost nothing: new random ids, fixed keys, Expiration now + 90 s, Logins not
# verified. So these check the format only; the semantics stay with the in-repo fake.

@pytest.fixture
def identity_pools(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")  # never real credentials, never a real endpoint
    return boto3.client("cognito-identity", endpoint_url=moto_url, region_name=REGION)


async def test_identity_pool_guest_flow(identity_pools: Any, moto_url: str,
                                        http: aiohttp.ClientSession) -> None:
    pool = identity_pools.create_identity_pool(
        IdentityPoolName="authproxy", AllowUnauthenticatedIdentities=True)["IdentityPoolId"]
    api = IdentityApi(http, moto_url)
    before = time.time()
    identity_id = await api.get_id(pool)
    assert re.fullmatch(r"us-east-1:[0-9a-f-]{36}", identity_id)
    keys, expiration = await api.get_credentials(identity_id)
    # moto's fixed keys arrive as AwsKeys, secrets wrapped; its Expiration has a fraction
    assert keys.access_key_id == "TESTACCESSKEY12345"
    assert keys.secret_access_key == Secret("ABCSECRETKEY")
    assert keys.session_token == Secret("ABC12345")
    assert before + 80 < expiration < time.time() + 100
    assert "ABCSECRETKEY" not in repr(keys)


async def test_identity_pool_logins_key_from_a_moto_id_token(
        idp: Any, identity_pools: Any, moto_url: str, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    user_pool, client = _pool(idp, ("alice", "Passw0rd!1", True))
    result = idp.initiate_auth(ClientId=client, AuthFlow="USER_PASSWORD_AUTH",
                               AuthParameters={"USERNAME": "alice", "PASSWORD": "Passw0rd!1"})
    token = result["AuthenticationResult"]["IdToken"]
    issuer = jwt.decode(token, options={"verify_signature": False})["iss"]
    # the key computed from moto's (AWS-shaped) iss is the provider name AWS documents
    provider = logins_key(issuer)
    assert provider == f"cognito-idp.{REGION}.amazonaws.com/{user_pool}"
    pool = identity_pools.create_identity_pool(
        IdentityPoolName="authproxy", AllowUnauthenticatedIdentities=False,
        CognitoIdentityProviders=[{"ProviderName": provider, "ClientId": client}],
    )["IdentityPoolId"]
    api = IdentityApi(http, moto_url + "/")
    identity_id = await api.get_id(pool, {provider: token})
    keys, _ = await api.get_credentials(identity_id, {provider: token})
    assert keys.access_key_id and keys.session_token is not None


async def test_identity_pool_unknown_pool_is_an_error(moto_url: str,
                                                      http: aiohttp.ClientSession) -> None:
    # AWS answers 400 ResourceNotFoundException; moto 5.2 fails with a 500 HTML page. Either
    # way IdentityApi must raise rather than hand back something half-read.
    with pytest.raises(IdentityError):
        await IdentityApi(http, moto_url).get_id("us-east-1:00000000-0000-0000-0000-000000000000")
