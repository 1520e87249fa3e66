"""Shared by the Cognito tests: a running fake Cognito (import `fake_fixture` to get the
`fake` fixture, `http_fixture` for `http`), a raw wire client independent of proxy.credentials
(so the fake is tested on its own), and a clock that tests move by hand instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.fakes.cognito import FakeCognito

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
