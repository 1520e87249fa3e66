"""The one piece of code that keeps an expiring value fresh, whatever the value is.

A strategy hands a `Refresher` two things: how to fetch (an async callable returning `Fetched`:
the value and its lifetime) and how to tell a transient failure from a permanent one
(`classify`). The refresher does the rest, the same way for Cognito tokens, identity-pool
credentials, command output and authorization-code logins:

- fetch at start, and again at `expires - margin` in the background while the old value serves;
- expiry on the monotonic clock: the lifetime is laid onto the monotonic time at which the value
  was *asked for*, which corrects for skew between our clock and the issuer's and errs early;
- single flight: every caller that needs a value joins the one fetch in progress;
- transient failures: capped exponential backoff with jitter, the old value serving while valid;
- permanent failures: a long hold-off instead of a loop (repeated failed sign-ins lock a user
  out), ended early only when the strategy says the cause may be gone;
- an upstream refusal forces one refresh, at most once per FORCED_REFRESH_INTERVAL.

Values are kept in a `Store` behind `get`/`put`/`lock`, so that a fleet-wide store (Redis, with
a lock held while one process fetches) can replace the in-process one without the refresher or
the strategy changing. The store never looks inside a value. With a shared store (`share`):

- the process holding the fleet's lock fetches; the others poll the store for its value, try
  the lock again now and then (a holder that died lets its lock lapse within FETCH_LOCK_TTL),
  and fetch without it only after HOLDER_WAIT, so a request never waits on the fleet for longer;
- a process that gets the lock first looks whether another one already stored a newer value,
  and takes that instead of fetching: the fleet refreshes once per lifetime, not once per member;
- each member's refresh time is moved earlier by a random part of the margin, so that one of
  them (the earliest) refreshes and the rest find its value, instead of all of them racing for
  the lock at the same instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from proxy.credentials.base import CredentialsUnavailable
from proxy.credentials.clock import Clock, SystemClock

log = logging.getLogger("authproxy.credentials")

V = TypeVar("V")

BACKOFF_BASE, BACKOFF_CAP = 1.0, 60.0  # seconds; transient failures: 1, 2, 4 ... 60, jittered
# A refusal (wrong password, revoked refresh token, disabled user) is tried again only after
# this long: the fix arrives another way (a reload builds a new source; the strategy's
# `recheck` notices a new `authproxy login` at once).
PERMANENT_HOLDOFF = 900.0
FORCED_REFRESH_INTERVAL = 30.0  # upstream refusals force at most one refresh this often
MIN_REFRESH_INTERVAL = 1.0  # never refresh more often than this, whatever margin and lifetime say
EXPIRY_GUARD = 5.0  # a value this close to expiry is not handed out: it could expire in flight
# A fleet lock lapses this long after its holder stops renewing it (a shared store renews it
# while the fetch runs), so a holder that dies mid-fetch holds the others up for at most this.
FETCH_LOCK_TTL = 5.0
HOLDER_WAIT = 10.0  # seconds to wait for another process's fetch before fetching ourselves
HOLDER_POLL = 0.1  # seconds between looks at the store while another process fetches
LOCK_RETRY = 0.5  # seconds between attempts to take the lock while waiting for its holder
# A stored value counts as another fetch's only when it expires this much later than ours:
# fetches are at least MIN_REFRESH_INTERVAL apart, and a value read back carries float noise.
NEWER_BY = 0.5
# Fleet jitter: a member's refresh time moves earlier by up to this part of the margin (and by
# no more than JITTER_CAP seconds), drawn anew for each value held.
JITTER, JITTER_CAP = 0.25, 60.0
OUTCOMES = ("success", "transient_error", "permanent_error")


@dataclass(frozen=True)
class Fetched(Generic[V]):
    """What one fetch produced."""

    value: V
    lifetime: float  # seconds the value is valid, counted from when it was asked for
    what: str = "value"  # for the log line, e.g. "id token via REFRESH_TOKEN_AUTH"


@dataclass(frozen=True)
class Failure:
    """A failed fetch as the strategy judges it."""

    message: str  # what went wrong and what to do, in the user's terms; never a secret
    transient: bool  # True: trying again later can help (network, 5xx, throttling)


@dataclass(frozen=True)
class Stored(Generic[V]):
    """A value as a store keeps it. Wall-clock expiry: another process's monotonic clock means
    nothing here, so a value read back is judged by our wall clock, then by our monotonic one."""

    value: V
    expires_at: float  # epoch seconds


class Store(Protocol[V]):
    """Where values are kept, by key. A shared store keys by a hash of the credential's settings
    and encrypts what it holds; the in-process one keeps objects as they are. A store's own
    trouble never reaches the refresher: a shared store that is down answers None, drops the
    put and yields True from `lock`, so the process carries on with its own fetches."""

    async def get(self, key: str) -> Stored[V] | None: ...

    async def put(self, key: str, item: Stored[V]) -> None: ...

    def lock(self, key: str, ttl: float) -> AbstractAsyncContextManager[bool]:
        """Held while one fetch runs. Yields True when this process holds it and should fetch;
        False when another one does: wait for its value to appear (`get`)."""
        ...


class MemoryStore(Generic[V]):
    """The default store: a dict in this process. Its lock is always ours, since the
    refresher's single flight already keeps a process to one fetch at a time."""

    def __init__(self) -> None:
        self._items: dict[str, Stored[V]] = {}

    async def get(self, key: str) -> Stored[V] | None:
        return self._items.get(key)

    async def put(self, key: str, item: Stored[V]) -> None:
        self._items[key] = item

    @contextlib.asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        yield True


@dataclass(frozen=True)
class _Held(Generic[V]):
    value: V
    expires: float  # monotonic
    usable_until: float  # monotonic: expires minus the in-flight guard
    refresh_at: float  # monotonic
    wall_expires: float


class Refresher(Generic[V]):
    def __init__(self, name: str, fetch: Callable[[], Awaitable[Fetched[V]]],
                 classify: Callable[[Exception], Failure], *, margin: float,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 store: Store[V] | None = None, key: str | None = None,
                 recheck: Callable[[], bool] | None = None) -> None:
        """`recheck`, during a permanent failure's hold-off: True when its cause may be gone
        (Cognito: a new `authproxy login` changed the token cache), so the next caller tries."""
        self.name = name
        self._fetcher, self._classify, self._recheck = fetch, classify, recheck
        self._margin = margin
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._store: Store[V] = store if store is not None else MemoryStore()
        self._key = key or name
        self._adopted: Callable[[V], None] | None = None
        self._jitter = 0.0
        self._held: _Held[V] | None = None
        self._started = False
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._error: str | None = None
        self._error_at: float | None = None
        self._permanent = False
        self._retry_at = 0.0
        self._failures = 0
        self._forced_at = -math.inf
        self._warned_margin = False
        self.fetches: Counter[str] = Counter({k: 0 for k in OUTCOMES})

    # --- life -------------------------------------------------------------------------------

    def share(self, store: Store[V], key: str, *, adopted: Callable[[V], None] | None = None,
              jitter: float = JITTER) -> None:
        """Keep values in a store other processes use too (before `start`). `adopted(value)`
        is told of each value taken from the store rather than fetched here, so the strategy
        can take what it keeps beside the value (a refresh token, an identity id)."""
        assert not self._started, "share() before start()"
        self._store, self._key, self._adopted, self._jitter = store, key, adopted, jitter

    async def start(self) -> None:
        self._started = True
        stored = await self._store.get(self._key)
        if stored is not None and not self._adopt(stored) and self._adopted is not None:
            # Expired, but what came with it (a refresh token) may still be good.
            self._adopted(stored.value)
        self._loop_task = asyncio.create_task(self._run(), name=f"refresh-{self.name}")

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- what strategies call ---------------------------------------------------------------

    def current(self) -> V | None:
        """The value if it is valid now, without waiting (the hot path: a clock read)."""
        held = self._held
        if held is not None and self._clock.monotonic() < held.usable_until:
            return held.value
        return None

    def held(self) -> V | None:
        """The last value obtained, valid or not (for status pages: what expired)."""
        return self._held.value if self._held is not None else None

    async def get(self) -> V:
        """The value, fetching it if need be; raises CredentialsUnavailable."""
        value = self.current()
        if value is not None:
            return value
        if not self._started:
            raise CredentialsUnavailable(f"credential {self.name}: not started")
        if not self._holding_off():
            await self._single_flight()
        value = self.current()
        if value is None:
            raise self._unavailable()
        return value

    async def force(self, was_sent: Callable[[V], bool]) -> bool:
        """The upstream refused a request that carried a value (`was_sent(value)` says which).
        Fetch a new one unless that was done lately; True when a different valid value is now
        there and the request is worth sending again."""
        held = self._held
        if held is not None and not was_sent(held.value):
            return self.current() is not None  # already replaced: replay with the new one
        if self._inflight is None or self._inflight.done():
            now = self._clock.monotonic()
            if now - self._forced_at < FORCED_REFRESH_INTERVAL or self._holding_off():
                return False  # the API keeps refusing fresh values; fetching will not help
            self._forced_at = now
            log.info("credential %s: upstream refused the value; fetching a new one", self.name)
        await self._single_flight()
        new = self.current()
        return new is not None and not was_sent(new)

    async def renew(self) -> None:
        """What the value was made from has changed (a new ID token to buy credentials with):
        fetch anew now, the held value serving meanwhile. Unlike `force`, not rate-limited, but
        a transient failure's backoff and a permanent hold-off are respected, so a fetch that
        keeps failing is not retried by every request."""
        if self._retry_at > self._clock.monotonic():
            return
        await self._single_flight()

    def status(self) -> dict[str, Any]:
        """The refresh state, JSON-able: the strategy adds its own facts to it."""
        now, held, valid = self._clock.monotonic(), self._held, self.current() is not None
        if self._inflight is not None and not self._inflight.done():
            state = "refreshing" if valid else "fetching"
        elif valid:
            state = "ready"
        elif self._error:
            state = "failed" if self._permanent else "retrying"
        else:
            state = "expired" if held else "starting"
        return {
            "state": state, "ready": valid,
            "expires_at": _iso(held.wall_expires) if held else None,
            "expires_in": round(held.expires - now, 1) if held else None,
            "refresh_in": round(max(held.refresh_at - now, 0), 1) if held else None,
            "last_error": self._error, "last_error_at": _iso(self._error_at),
            "retry_in": round(self._retry_at - now, 1) if self._retry_at > now else None,
            "fetches": dict(self.fetches),
        }

    # --- fetching ----------------------------------------------------------------------------

    async def _single_flight(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name=f"fetch-{self.name}")
        # shielded: a request that gives up must not cancel the fetch the others are awaiting
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        try:
            deadline = self._clock.monotonic() + HOLDER_WAIT
            while True:
                async with self._store.lock(self._key, FETCH_LOCK_TTL) as ours:
                    if ours:
                        if not await self._newer_stored():
                            await self._fetch_and_keep()
                        return
                    if self._clock.monotonic() >= deadline:
                        log.info("credential %s: the fetch of another process did not deliver "
                                 "in %.0f s; fetching here", self.name, HOLDER_WAIT)
                        await self._fetch_and_keep()
                        return
                until = min(deadline, self._clock.monotonic() + LOCK_RETRY)
                if await self._await_holder(until):
                    return
        except Exception as e:  # the refresher must outlive any surprise
            # The type only: a message is the strategy's to scrub (classify) before it shows.
            log.debug("credential %s: fetch failed (%s)", self.name, type(e).__name__)
            self._failed(self._classify(e))

    async def _fetch_and_keep(self) -> None:
        asked_at = self._clock.monotonic()
        fetched = await self._fetcher()
        if fetched.lifetime <= 0:
            raise ValueError("the value had expired when it was issued")
        held = self._accept(fetched, asked_at)
        await self._store.put(self._key, Stored(fetched.value, held.wall_expires))

    def _is_newer(self, stored: Stored[V] | None) -> bool:
        before = self._held.wall_expires if self._held else -math.inf
        return stored is not None and stored.expires_at > before + NEWER_BY

    async def _newer_stored(self) -> bool:
        """With the lock: has another process stored a newer value since ours? Then it
        refreshed already (its schedule came first), and we take its value."""
        stored = await self._store.get(self._key)
        return stored is not None and self._is_newer(stored) and self._adopt(stored)

    async def _await_holder(self, until: float) -> bool:
        """Another process fetches: watch the store for its value until `until`."""
        while self._clock.monotonic() < until:
            await self._clock.sleep(HOLDER_POLL)
            stored = await self._store.get(self._key)
            if stored is not None and self._is_newer(stored) and self._adopt(stored):
                return True
        return False

    def _accept(self, fetched: Fetched[V], asked_at: float) -> _Held[V]:
        lifetime, now = fetched.lifetime, self._clock.monotonic()
        held = self._hold(fetched.value, asked_at + lifetime, lifetime, now)
        self._error, self._error_at, self._permanent = None, None, False
        self._retry_at, self._failures = 0.0, 0
        self.fetches["success"] += 1
        self._wake.set()
        log.info("credential %s: new %s, valid %.0f s, refresh in %.0f s", self.name,
                 fetched.what, lifetime, held.refresh_at - now)
        return held

    def _adopt(self, stored: Stored[V]) -> bool:
        """Take a value another process (or an earlier run) stored, if it is still good."""
        now = self._clock.monotonic()
        left = stored.expires_at - self._clock.time()
        if left <= EXPIRY_GUARD:
            return False
        held = self._hold(stored.value, now + left, left, now)
        if self._adopted is not None:
            self._adopted(stored.value)
        self._wake.set()
        log.info("credential %s: value from the shared cache, valid %.0f s, refresh in %.0f s",
                 self.name, left, held.refresh_at - now)
        return True

    def _hold(self, value: V, expires: float, lifetime: float, now: float) -> _Held[V]:
        margin = self._margin
        if margin > lifetime / 2 and not self._warned_margin:
            # Honoured, as the user asked, but a fleet refreshing that eagerly is rarely meant.
            self._warned_margin = True
            log.warning("credential %s: refresh_margin %g s is more than half the lifetime of "
                        "its value (%.0f s); refreshing %.0f s after each fetch", self.name,
                        margin, lifetime, max(lifetime - margin, MIN_REFRESH_INTERVAL))
        early = self._rng.random() * min(margin * self._jitter, JITTER_CAP) if self._jitter else 0
        self._held = held = _Held(
            value=value, expires=expires,
            usable_until=expires - min(EXPIRY_GUARD, lifetime / 10),
            refresh_at=max(expires - margin - early, now + MIN_REFRESH_INTERVAL),
            wall_expires=self._clock.time() + (expires - now))
        return held

    def _failed(self, failure: Failure) -> None:
        now = self._clock.monotonic()
        self._error, self._error_at = failure.message, self._clock.time()
        self._permanent = not failure.transient
        if self._permanent:
            self.fetches["permanent_error"] += 1
            self._retry_at = now + PERMANENT_HOLDOFF
            log.error("credential %s: %s (not tried again for %.0f s)", self.name, self._error,
                      PERMANENT_HOLDOFF)
            return
        self.fetches["transient_error"] += 1
        self._failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self._failures - 1))
        delay *= 0.5 + self._rng.random() / 2  # jitter: a fleet does not retry in lockstep
        self._retry_at = now + delay
        left = self._held.expires - now if self._held else 0
        log.warning("credential %s: %s; retrying in %.1f s%s", self.name, self._error, delay,
                    f" (current value still valid for {left:.0f} s)" if left > 0 else "")

    # --- background --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock.monotonic()
            if self._retry_at > now:
                delay = self._retry_at - now
            else:
                delay = self._held.refresh_at - now if self._held else 0.0
            if delay > 0:
                await self._sleep(delay)
            else:
                await self._single_flight()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when an on-demand fetch changed the schedule."""
        waits = [asyncio.ensure_future(self._clock.sleep(seconds)),
                 asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _holding_off(self) -> bool:
        if self._retry_at <= self._clock.monotonic():
            return False
        if self._permanent and self._recheck is not None and self._recheck():
            self._retry_at = 0.0
            return False
        return True

    def _unavailable(self) -> CredentialsUnavailable:
        reason = self._error or "no value yet"
        retry = self._retry_at - self._clock.monotonic()
        when = f"; next attempt in {retry:.0f} s" if retry > 0 and not self._permanent else ""
        # No name: every caller says which credential (the 503, `authproxy token NAME`).
        return CredentialsUnavailable(f"{reason}{when}")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
