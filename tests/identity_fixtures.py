"""Shared by the identity-pool tests: a fake Cognito user pool and a fake Cognito Identity on
one hand-moved clock (import the fixtures by name: `clock_fixture`, `cognito_fixture`,
`identity_fixture`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cognito_fixtures import FakeClock

from proxy.fakes.cognito import FakeCognito
from proxy.fakes.cognito_identity import FakeCognitoIdentity


@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="cognito")
async def cognito_fixture(clock: FakeClock) -> AsyncIterator[FakeCognito]:
    fake = FakeCognito(clock=clock.time)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(name="identity")
async def identity_fixture(clock: FakeClock) -> AsyncIterator[FakeCognitoIdentity]:
    fake = FakeCognitoIdentity(clock=clock.time)
    await fake.start()
    yield fake
    await fake.stop()
