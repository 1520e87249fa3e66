"""Shared by the Cognito tests: a running fake Cognito (import `fake_fixture` to get the
`fake` fixture, `http_fixture` for `http`), a raw wire client independent of proxy.credentials
(so the fake is tested on its own), and a clock that tests move by hand instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.config import CognitoCredential
from proxy.credentials import CredentialSource, Outgoing
from proxy.credentials.cognito import CognitoSource
from proxy.fakes.cognito import FakeCognito
from proxy.secret import Secret

TARGET = "AWSCognitoIdentityProviderService."


@pytest.fixture(name="fake")
async def fake_fixture() -> AsyncIterator[FakeCognito]:
    f = FakeCognito()
    await f.start()
    yield f
    await f.stop()


@pytest.fixture(name="http")
async def http_fixture() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, url: str, operation: str,
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One Cognito API call as botocore would make it."""
    headers = {"X-Amz-Target": TARGET + operation,
               "Content-Type": "application/x-amz-json-1.1"}
    async with http.post(url + "/", json=body, headers=headers) as resp:
        data: dict[str, Any] = await resp.json(content_type=None)
        return resp.status, data


async def verify(http: aiohttp.ClientSession, fake: FakeCognito, pool: str,
                 token: str, audience: str | None = None) -> dict[str, Any]:
    """Check a token's signature against the pool's published JWKS, as API Gateway would."""
    async with http.get(fake.jwks_url(pool)) as resp:
        assert resp.status == 200
        jwks = jwt.PyJWKSet.from_dict(await resp.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer=fake.issuer(pool),
        options={"verify_aud": audience is not None})
    return claims


# Bearer credentials ignore the request; these helpers read the one header they give.
REQUEST = Outgoing(method="GET", host="api.example", raw_path="/Development/x", query="",
                   headers=())


def _value(source: CredentialSource, headers: tuple[tuple[str, str], ...]) -> str:
    assert [k for k, _ in headers] == [source.header_name]
    return headers[0][1]


async def header(source: CredentialSource) -> str:
    """The header value a request gets (waiting for a fetch if need be)."""
    return _value(source, await source.headers_for(REQUEST))


def current(source: CredentialSource) -> str | None:
    """The header value ready now, without waiting."""
    headers = source.current()
    return _value(source, headers) if headers is not None else None


async def rejected(source: CredentialSource, value: str) -> bool:
    """The upstream answered 401 to a request sent with `value`."""
    return await source.rejected(((source.header_name, value),))


class FakeClock:
    """Monotonic and wall time that move only when a test calls `advance`; `sleep` wakes when
    the clock passes its deadline."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    """Wait (in real time, briefly) for background work such as a refresh to finish."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class CognitoEnv:
    """A fake pool with user alice, and factories for credentials and started sources that
    share one ClientSession, a FakeClock and a private token cache directory."""

    def __init__(self, fake: FakeCognito, http: aiohttp.ClientSession, cache_dir: Path) -> None:
        self.fake, self.http, self.cache_dir = fake, http, cache_dir
        self.clock = FakeClock()
        self.pool = fake.add_pool()
        self.client = fake.add_client(self.pool)
        self.user = fake.add_user(self.pool, "alice", "Passw0rd!", email="alice@example.com")
        self.sources: list[CognitoSource] = []

    def cred(self, **kw: Any) -> CognitoCredential:
        values: dict[str, Any] = {
            "name": "user", "flow": "password", "client_id": self.client,
            "user_pool_id": self.pool, "region": "us-east-1", "username": "alice",
            "password": Secret("Passw0rd!"), "endpoint": self.fake.url, "refresh_margin": 30.0}
        values.update(kw)
        return CognitoCredential(**values)

    async def source(self, config: CognitoCredential | None = None, *, start: bool = True,
                     **kw: Any) -> CognitoSource:
        src = CognitoSource(config or self.cred(**kw), cache_dir=self.cache_dir,
                            clock=self.clock, rng=random.Random(7))
        self.sources.append(src)
        if start:
            await src.start(self.http)
        return src

    async def settle(self, source: CognitoSource) -> None:
        """Let the background task react to a clock move and finish any fetch it started."""
        for _ in range(20):
            await asyncio.sleep(0)
        await eventually(lambda: source.status()["state"] not in ("fetching", "refreshing"))
        for _ in range(20):
            await asyncio.sleep(0)

    async def step(self, source: CognitoSource, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle(source)


@pytest.fixture(name="env")
async def env_fixture(fake: FakeCognito, http: aiohttp.ClientSession,
                      tmp_path: Path) -> AsyncIterator[CognitoEnv]:
    env = CognitoEnv(fake, http, tmp_path / "cache")
    yield env
    for src in env.sources:
        await src.close()
