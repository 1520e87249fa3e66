"""Cross-check against moto's Cognito emulator, written by other people: it catches misreadings
of the wire format that the in-repo fake would share with the code. moto does not check SRP,
SECRET_HASH or lifetimes (see COGNITO.md), so those stay with the fake."""

from __future__ import annotations

import json
import logging
import os
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
