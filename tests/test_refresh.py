"""The refresh core on its own: a scripted fetch and a hand-moved clock (no sleeping), so every
rule of SPEC "Tokens" is checked without Cognito: schedule, single flight, backoff, hold-off,
forced refresh, the margin rules and the store interface."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import pytest
from cognito_fixtures import FakeClock

from proxy.credentials import CredentialsUnavailable
from proxy.credentials.refresh import (
    BACKOFF_CAP,
    FETCH_LOCK_TTL,
    FORCED_REFRESH_INTERVAL,
    HOLDER_WAIT,
    JITTER,
    PERMANENT_HOLDOFF,
    Failure,
    Fetched,
    MemoryStore,
    Refresher,
    Stored,
)


class Boom(Exception):
    def __init__(self, transient: bool) -> None:
        super().__init__("transient" if transient else "permanent")
        self.transient = transient


class Source:
    """A strategy in miniature: values v1, v2, ... with a set lifetime, or scripted failures."""

    def __init__(self, lifetime: float = 100.0) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.fail: list[bool] = []  # queued failures: True transient, False permanent
        self.gate: asyncio.Event | None = None  # set: a fetch waits for it (in flight)

    async def fetch(self) -> Fetched[str]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise Boom(self.fail.pop(0))
        return Fetched(f"v{self.calls}", self.lifetime, "test value")

    @staticmethod
    def classify(e: Exception) -> Failure:
        assert isinstance(e, Boom)
        return Failure(f"it went {e}", e.transient)


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def make(clock: FakeClock, src: Source, margin: float = 30.0,
               **kw: object) -> Refresher[str]:
    r: Refresher[str] = Refresher("cred", src.fetch, src.classify, margin=margin, clock=clock,
                                  rng=random.Random(1), **kw)  # type: ignore[arg-type]
    await r.start()
    await settle()
    return r


async def step(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await settle()


async def test_fetches_at_start_and_refreshes_at_expiry_minus_margin(clock: FakeClock) -> None:
    src = Source(lifetime=100)
    r = await make(clock, src)
    assert src.calls == 1 and r.current() == "v1"
    assert r.status()["refresh_in"] == pytest.approx(70)
    await step(clock, 69.9)
    assert src.calls == 1
    await step(clock, 0.2)
    assert src.calls == 2 and r.current() == "v2"
    await r.close()


async def test_single_flight_and_the_old_value_serves_during_a_refresh(
        clock: FakeClock) -> None:
    src = Source(lifetime=100)
    src.gate = asyncio.Event()
    r = await make(clock, src)
    values = asyncio.gather(*(r.get() for _ in range(100)))
    await settle()
    assert src.calls == 1 and r.status()["state"] == "fetching"
    src.gate.set()
    assert set(await values) == {"v1"}
    src.gate.clear()
    await step(clock, 71)
    assert r.status()["state"] == "refreshing" and src.calls == 2
    assert await r.get() == "v1"  # not blocked behind the refresh
    src.gate.set()
    await settle()
    assert r.current() == "v2"
    await r.close()


async def test_expiry_guard_and_the_monotonic_lifetime(clock: FakeClock) -> None:
    src = Source(lifetime=100)
    src.fail = [True] * 50  # nothing new arrives: the held value runs out
    r = await make(clock, src)
    assert src.calls == 1 and r.current() is None  # the first fetch failed
    src.fail = []
    await step(clock, 1)
    assert r.current() == "v2"
    src.fail = [True] * 50
    await step(clock, 94.5)
    assert r.current() == "v2"  # 5.5 s left
    await step(clock, 1)
    assert r.current() is None  # within the 5 s guard: could expire in flight
    assert r.status()["state"] == "retrying"
    with pytest.raises(CredentialsUnavailable, match="it went transient"):
        await r.get()
    await r.close()


async def test_transient_failures_back_off_exponentially_with_jitter_up_to_the_cap(
        clock: FakeClock) -> None:
    src = Source()
    src.fail = [True] * 20
    r = await make(clock, src)
    delays = []
    for _ in range(9):
        delays.append(r.status()["retry_in"])  # rounded to 0.1 s
        await step(clock, delays[-1] + 0.05)
    for n, delay in enumerate(delays):
        full = min(BACKOFF_CAP, 2.0 ** n)
        assert full / 2 - 0.05 <= delay <= full + 0.05, (n, delay)
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    assert r.status()["fetches"]["transient_error"] == 10 and src.calls == 10
    await r.close()


async def test_permanent_failure_holds_off_and_recheck_ends_it(clock: FakeClock) -> None:
    src = Source()
    src.fail = [False, False]
    cause_gone = False
    r = await make(clock, src, recheck=lambda: cause_gone)
    for _ in range(10):
        with pytest.raises(CredentialsUnavailable, match="it went permanent"):
            await r.get()
        await step(clock, 60)
    assert src.calls == 1 and r.status()["state"] == "failed"  # no loop
    cause_gone = True
    with pytest.raises(CredentialsUnavailable):
        await r.get()  # tried at once, refused again
    assert src.calls == 2
    cause_gone = False
    await step(clock, PERMANENT_HOLDOFF)
    assert src.calls == 3 and r.current() == "v3"
    await r.close()


async def test_forced_refresh_is_rate_limited(clock: FakeClock) -> None:
    src = Source()
    r = await make(clock, src)
    assert await r.force(lambda v: v == "v1") is True and r.current() == "v2"
    assert await r.force(lambda v: v == "v1") is True  # a late refusal of v1: replay with v2
    assert await r.force(lambda v: v == "v2") is False  # again so soon: the API is the problem
    assert src.calls == 2
    await step(clock, FORCED_REFRESH_INTERVAL + 1)
    assert await r.force(lambda v: v == "v2") is True and src.calls == 3
    await r.close()


async def test_margin_over_half_the_lifetime_is_honoured_and_warned_once(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="authproxy")
    src = Source(lifetime=10)
    r = await make(clock, src, margin=8)
    assert r.status()["refresh_in"] == pytest.approx(2)
    for _ in range(3):
        await step(clock, 2)
    assert src.calls == 4
    assert len([m for m in caplog.messages if "refresh_margin" in m]) == 1
    await r.close()


async def test_never_more_often_than_once_a_second(clock: FakeClock) -> None:
    src = Source(lifetime=10)
    r = await make(clock, src, margin=3600)
    for _ in range(10):
        await step(clock, 0.25)
    assert src.calls == 1 + 2  # at 1.0 and 2.0 s, not on every tick
    await r.close()


async def test_values_go_to_the_store_and_a_stored_one_is_used_at_start(
        clock: FakeClock) -> None:
    store: MemoryStore[str] = MemoryStore()
    src = Source(lifetime=100)
    first = await make(clock, src, store=store, key="k")
    item = await store.get("k")
    assert item is not None and item.value == "v1"
    assert item.expires_at == pytest.approx(clock.time() + 100)
    await first.close()
    again = Source()
    second = await make(clock, again, store=store, key="k")
    assert again.calls == 0 and second.current() == "v1"  # no fetch: the stored one is good
    assert second.status()["refresh_in"] == pytest.approx(70)
    await second.close()


class FleetStore(MemoryStore[str]):
    """A store whose lock another process holds: as Redis would be during its fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.locks = 0

    @contextlib.asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        self.locks += 1
        yield False


async def test_while_another_process_fetches_its_value_is_awaited(clock: FakeClock) -> None:
    store = FleetStore()
    src = Source()
    r: Refresher[str] = Refresher("cred", src.fetch, src.classify, margin=30, clock=clock,
                                  store=store)
    await r.start()
    await settle()
    assert r.status()["state"] == "fetching" and src.calls == 0
    await store.put("cred", Stored("theirs", clock.time() + 100))
    await step(clock, 0.1)
    assert r.current() == "theirs" and src.calls == 0
    await r.close()


async def test_a_lock_holder_that_never_delivers_is_not_waited_for_forever(
        clock: FakeClock) -> None:
    store = FleetStore()
    src = Source()
    r: Refresher[str] = Refresher("cred", src.fetch, src.classify, margin=30, clock=clock,
                                  store=store)
    await r.start()
    for _ in range(int(HOLDER_WAIT / 0.1) + 2):
        await step(clock, 0.1)
    assert src.calls == 1 and r.current() == "v1"
    await r.close()


class LapsingLock(MemoryStore[str]):
    """A fleet lock another process holds until `free_at` on the clock (it died; its lock
    lapses), after which it is ours."""

    def __init__(self, clock: FakeClock, free_at: float) -> None:
        super().__init__()
        self.clock, self.free_at, self.tries = clock, free_at, 0

    @contextlib.asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        self.tries += 1
        yield self.clock.monotonic() >= self.free_at


async def test_a_lapsed_lock_is_taken_before_the_holder_wait_is_over(clock: FakeClock) -> None:
    store = LapsingLock(clock, clock.monotonic() + FETCH_LOCK_TTL)
    src = Source()
    r: Refresher[str] = Refresher("cred", src.fetch, src.classify, margin=30, clock=clock)
    r.share(store, "k")
    await r.start()
    for _ in range(int(FETCH_LOCK_TTL / 0.1) + 8):
        await step(clock, 0.1)
    assert src.calls == 1 and r.current() == "v1"  # with the lock, not after HOLDER_WAIT
    assert FETCH_LOCK_TTL < HOLDER_WAIT and store.tries > 2
    assert (await store.get("k")) is not None
    await r.close()


async def test_with_the_lock_a_newer_stored_value_is_taken_instead_of_fetching(
        clock: FakeClock) -> None:
    store: MemoryStore[str] = MemoryStore()
    src = Source(lifetime=100)
    adopted: list[str] = []
    r: Refresher[str] = Refresher("cred", src.fetch, src.classify, margin=30, clock=clock,
                                  rng=random.Random(3))
    r.share(store, "k", adopted=adopted.append)
    await r.start()
    await settle()
    assert src.calls == 1 and adopted == []
    refresh_in = r.status()["refresh_in"]
    assert 70 - 30 * JITTER <= refresh_in <= 70
    await step(clock, refresh_in - 5)
    await store.put("k", Stored("theirs", clock.time() + 100))  # another member refreshed
    await step(clock, 5.1)
    assert src.calls == 1 and r.current() == "theirs" and adopted == ["theirs"]
    # the same value again is no reason to skip a fetch: ours is due, and it is ours
    await step(clock, r.status()["refresh_in"] + 0.1)
    assert src.calls == 2 and r.current() == "v2"
    await r.close()


async def test_an_expired_stored_value_still_hands_over_what_came_with_it(
        clock: FakeClock) -> None:
    store: MemoryStore[str] = MemoryStore()
    await store.put("k", Stored("old", clock.time() - 10))
    src = Source()
    adopted: list[str] = []
    r: Refresher[str] = Refresher("cred", src.fetch, src.classify, margin=30, clock=clock)
    r.share(store, "k", adopted=adopted.append)
    await r.start()
    await settle()
    assert adopted == ["old"] and r.current() == "v1"  # told, then fetched anew
    await r.close()
