"""proxy/credentials/redis_store.py and shared.py against a real redis-server: entries sealed
and keyed by settings, the fleet lock (SET NX PX, renewed, compare-and-delete), every call
bounded by `timeout` when Redis is refused, hung (SIGSTOP), restarted or asks for a password,
and recovery without help. The whole fleet, with `authproxy serve` processes, is
tests/test_fleet.py."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis_fixtures import RedisServer, redis_fixture

from proxy.config import CognitoCredential, IamCredential, TokenCache
from proxy.credentials.redis_store import RedisStore, redacted_url
from proxy.credentials.refresh import (
    FETCH_LOCK_TTL,
    JITTER,
    Failure,
    Fetched,
    Refresher,
    Stored,
)
from proxy.credentials.shared import Codec, SharedCache, settings_material
from proxy.secret import Secret

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]
__all__ = ["redis_fixture"]

KEY = Secret("an-encryption-key-of-some-length")
CODEC: Codec[str] = Codec("test/1", lambda v: {"v": v}, lambda d: str(d["v"]))
TIMEOUT = 0.3


def user(**kw: Any) -> CognitoCredential:
    base: dict[str, Any] = dict(name="user", flow="password", client_id="client-abc",
                                user_pool_id="us-east-1_PoolName", username="alice@example.test",
                                password=Secret("Passw0rd!"), client_secret=Secret("cs-123"))
    return CognitoCredential(**(base | kw))


def cache_for(server: RedisServer, url: str | None = None, key: Secret | None = KEY,
              timeout: float = TIMEOUT) -> SharedCache:
    cfg = TokenCache(url=Secret(url or server.url), encryption_key=key, timeout=timeout)
    return SharedCache(RedisStore(cfg), key_prefix=cfg.key_prefix, encryption_key=key)


@pytest.fixture
async def cache(redis_server: RedisServer) -> AsyncIterator[SharedCache]:
    c = cache_for(redis_server)
    await c.start()
    yield c
    await c.close()


async def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


# --- entries: keys and sealed values ----------------------------------------------------------

async def test_a_value_goes_in_sealed_and_comes_back(cache: SharedCache,
                                                     redis_server: RedisServer) -> None:
    store = cache.slot("user", settings_material(user())).store(CODEC)
    assert await store.get("ignored") is None
    expires = time.time() + 100
    await store.put("ignored", Stored("eyJ-the-token-value", expires))
    got = await store.get("ignored")
    assert got is not None and got.value == "eyJ-the-token-value"
    assert got.expires_at == pytest.approx(expires)
    ((key, value),) = redis_server.dump().items()
    assert key.decode() == store.key and key.startswith(b"authproxy:")
    assert b"eyJ" not in value and b"token" not in value
    with redis_server.client() as c:  # kept past its expiry, for what came with it
        assert 100 + 86000 < c.ttl(key) <= 100 + 86400
    assert cache.stats["user"]["hits"] == 1 and cache.stats["user"]["misses"] == 1


def test_keys_follow_the_settings_secrets_included_never_the_name() -> None:
    cache = SharedCache(NoStore(), key_prefix="p:", encryption_key=KEY)

    def key(cfg: Any) -> str:
        return cache.slot("x", settings_material(cfg)).key(CODEC)

    same = key(user())
    assert key(user(name="another-name")) == same  # two names for the same settings share
    for different in (user(password=Secret("Passw0rd?")), user(client_secret=Secret("cs-124")),
                      user(username="bob"), user(user_pool_id="us-east-1_Other"),
                      user(refresh_margin=60)):
        assert key(different) != same
    assert key(user()) != cache.slot("x", settings_material(user())).key(
        Codec("test/2", CODEC.encode, CODEC.decode))  # another shape, another entry
    for word in ("alice", "example", "PoolName", "client-abc", "Passw0rd"):
        assert word not in same


def test_a_login_credential_is_part_of_the_settings_by_what_it_is_not_its_name() -> None:
    pool = IamCredential(name="guest", source="identity_pool", login="user",
                         identity_pool_id="us-east-1:0f3c5e1a-1111-2222-3333-444455556666")
    alice = settings_material(pool, {"user": user(), "guest": pool})
    bob = settings_material(pool, {"user": user(username="bob"), "guest": pool})
    assert alice != bob and b"alice" in alice  # (material never leaves the process: scrypt)


async def test_an_entry_that_does_not_decrypt_is_a_miss_logged_once(
        cache: SharedCache, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    material = settings_material(user())
    ours = cache.slot("user", material).store(CODEC)
    await ours.put("k", Stored("v", time.time() + 100))
    other = cache_for(redis_server, key=Secret("another-encryption-key-here"))
    await other.start()
    try:
        theirs = other.slot("user", material).store(CODEC)
        assert theirs.key == ours.key  # same settings: same entry, which they cannot open
        with caplog.at_level(logging.WARNING, "authproxy.token_cache"):
            assert await theirs.get("k") is None
            assert await theirs.get("k") is None
        lines = [r.getMessage() for r in caplog.records if "does not decrypt" in r.getMessage()]
        assert len(lines) == 1 and "encryption_key" in lines[0]
        assert other.stats["user"]["undecryptable"] == 2
    finally:
        await other.close()
    # tampered with, or moved to another key: neither opens
    with redis_server.client() as c:
        data = bytearray(c.get(ours.key) or b"")
        data[-1] ^= 1
        c.set(ours.key, bytes(data))
        assert await ours.get("k") is None
        await ours.put("k", Stored("v", time.time() + 100))
        other_key = cache.slot("user", settings_material(user(username="bob"))).store(CODEC)
        c.set(other_key.key, c.get(ours.key) or b"")
        assert await other_key.get("k") is None and await ours.get("k") is not None


async def test_without_an_encryption_key_the_settings_still_seal_the_value(
        redis_server: RedisServer) -> None:
    c = cache_for(redis_server, key=None)
    await c.start()
    try:
        a = c.slot("a", settings_material(user())).store(CODEC)
        await a.put("k", Stored("the-value", time.time() + 100))
        assert b"the-value" not in next(iter(redis_server.dump().values()))
        assert (await a.get("k")) is not None
    finally:
        await c.close()


# --- the lock --------------------------------------------------------------------------------

async def test_the_lock_is_one_holders_renewed_while_held_and_released_by_its_holder(
        cache: SharedCache, redis_server: RedisServer) -> None:
    backend = cache.backend
    async with backend.lock("L", 0.3) as first:
        assert first is True
        async with backend.lock("L", 0.3) as second:
            assert second is False
        await asyncio.sleep(0.8)  # well past the TTL: renewed meanwhile
        with redis_server.client() as c:
            assert c.exists("L") and 0 < c.pttl("L") <= 300
    with redis_server.client() as c:
        assert not c.exists("L")
    # A lock that lapsed and was taken by another is not deleted by the one that lost it.
    async with backend.lock("M", 0.3) as ours:
        assert ours
        with redis_server.client() as c:
            c.set("M", "someone-else", px=5000)
    with redis_server.client() as c:
        assert c.get("M") == b"someone-else"


# --- Redis in trouble ------------------------------------------------------------------------

async def test_redis_down_answers_within_the_timeout_then_not_at_all_until_it_is_back(
        redis_server: RedisServer) -> None:
    redis_server.kill()
    c = cache_for(redis_server)
    store = c.slot("user", settings_material(user())).store(CODEC)
    try:
        _, took = await timed(c.start())
        assert took < TIMEOUT + 0.3
        status = c.status()
        assert status["state"] == "degraded" and "unreachable" in status["last_error"]
        assert (await timed(store.get("k")))[1] < 0.05  # the breaker: not even tried
        async with c.backend.lock("L", FETCH_LOCK_TTL) as ours:
            assert ours is True  # no fleet to wait for
        await store.put("k", Stored("v", time.time() + 100))  # dropped, quietly
        redis_server.start()
        for _ in range(60):  # the probe notices within its interval and the breaker's cap
            if c.status()["state"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert c.status()["state"] == "ok"
        await store.put("k", Stored("v", time.time() + 100))
        assert (await store.get("k")) is not None
        assert c.status()["errors"]["ping"] >= 1
    finally:
        await c.close()


async def test_a_hung_redis_costs_one_timeout_and_recovery_is_automatic(
        cache: SharedCache, redis_server: RedisServer) -> None:
    store = cache.slot("user", settings_material(user())).store(CODEC)
    await store.put("k", Stored("v", time.time() + 100))
    redis_server.pause()
    try:
        got, took = await timed(store.get("k"))
        assert got is None and TIMEOUT * 0.8 < took < TIMEOUT + 0.3
        status = cache.status()
        assert status["state"] == "degraded" and "did not answer within 0.3 s" in \
            status["last_error"]
        for _ in range(5):
            assert (await timed(store.get("k")))[1] < TIMEOUT + 0.1
    finally:
        redis_server.resume()
    for _ in range(80):
        if cache.status()["state"] == "ok":
            break
        await asyncio.sleep(0.1)
    assert cache.status()["state"] == "ok" and (await store.get("k")) is not None


async def test_a_restarted_empty_redis_is_used_again(cache: SharedCache,
                                                     redis_server: RedisServer) -> None:
    store = cache.slot("user", settings_material(user())).store(CODEC)
    await store.put("k", Stored("v", time.time() + 100))
    redis_server.restart()
    assert await store.get("k") is None  # a failed call at most, then a miss
    for _ in range(80):
        await store.put("k", Stored("v2", time.time() + 100))
        got = await store.get("k")
        if got is not None:
            break
        await asyncio.sleep(0.1)
    assert got is not None and got.value == "v2"


async def test_a_password_required_degrades_without_showing_it(
        cache: SharedCache, redis_server: RedisServer) -> None:
    store = cache.slot("user", settings_material(user())).store(CODEC)
    redis_server.require_password("the-redis-password")
    redis_server.restart()  # a connection closed first; the next ones must AUTH
    for _ in range(40):
        got, took = await timed(store.get("k"))
        assert got is None and took < TIMEOUT + 0.1
        if "refused" in (cache.status()["last_error"] or ""):
            break
        await asyncio.sleep(0.1)
    status = cache.status()
    assert status["state"] == "degraded" and "refused this client" in status["last_error"]
    right = cache_for(redis_server, url=f"redis://:the-redis-password@127.0.0.1:"
                                        f"{redis_server.port}/0")
    await right.start()
    try:
        assert right.status()["state"] == "ok"
        assert "the-redis-password" not in str(right.status())
        assert right.status()["url"] == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    finally:
        await right.close()


async def test_an_acl_user_with_only_the_commands_it_needs(cache: SharedCache,
                                                            redis_server: RedisServer) -> None:
    # What the README tells operators to grant: the key prefix, and GET SET DEL PEXPIRE
    # EVAL(SHA) PING (plus SCRIPT LOAD, which redis-py's scripts may use).
    with redis_server.client() as c:
        c.acl_setuser("authproxy", enabled=True, passwords=["+acl-user-pw-1"],
                      keys=["authproxy:*"], commands=[
                          "+get", "+set", "+del", "+pexpire", "+eval", "+evalsha",
                          "+ping", "+script|load"])
    c2 = cache_for(redis_server,
                   url=f"redis://authproxy:acl-user-pw-1@127.0.0.1:{redis_server.port}/0")
    await c2.start()
    try:
        store = c2.slot("user", settings_material(user())).store(CODEC)
        await store.put("k", Stored("v", time.time() + 100))
        async with store.lock("k", 1.0) as ours:
            assert ours
        assert (await store.get("k")) is not None
        assert c2.status()["state"] == "ok", c2.status()
        assert sum(c2.status()["errors"].values()) == 0
    finally:
        await c2.close()


async def test_rediss_verifies_the_server_against_the_configured_ca(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "tls", tls=True)
    server.start()
    assert server.ca_file is not None
    try:
        for verify, state in ((str(server.ca_file), "ok"), (True, "degraded"), (False, "ok")):
            cfg = TokenCache(url=Secret(server.url), encryption_key=KEY, timeout=1.0,
                             tls_verify=verify)
            c = SharedCache(RedisStore(cfg), key_prefix="authproxy:", encryption_key=KEY)
            await c.start()
            try:
                store = c.slot("user", settings_material(user())).store(CODEC)
                await store.put("k", Stored("v", time.time() + 100))
                assert c.status()["state"] == state, (verify, c.status())
                assert ((await store.get("k")) is not None) == (state == "ok")
            finally:
                await c.close()
    finally:
        server.stop()


def test_redacted_urls() -> None:
    assert redacted_url("rediss://app:pw@h:6380/1") == "rediss://app:***@h:6380/1"
    assert redacted_url("redis://h:6379/0") == "redis://h:6379/0"


# --- the refresh core over it ----------------------------------------------------------------

class Slow:
    """A fetch that takes a while, counted."""

    def __init__(self, seconds: float, lifetime: float = 60) -> None:
        self.seconds, self.lifetime, self.calls = seconds, lifetime, 0

    async def fetch(self) -> Fetched[str]:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return Fetched(f"v{self.calls}", self.lifetime)

    def classify(self, e: Exception) -> Failure:
        return Failure(str(e), True)


async def test_two_processes_fetch_once_the_waiter_takes_the_holders_value(
        redis_server: RedisServer) -> None:
    caches = [cache_for(redis_server), cache_for(redis_server)]
    src = Slow(0.5)
    refreshers = []
    for i, c in enumerate(caches):
        await c.start()
        slot = c.slot("user", settings_material(user()))
        r: Refresher[str] = Refresher(f"r{i}", src.fetch, src.classify, margin=10)
        r.share(slot.store(CODEC), slot.key(CODEC))
        refreshers.append(r)
    try:
        await asyncio.gather(*(r.start() for r in refreshers))
        values = await asyncio.gather(*(r.get() for r in refreshers))
        assert values == ["v1", "v1"] and src.calls == 1
        assert sum(c.stats["user"]["lock_waits"] for c in caches) >= 1
    finally:
        for r in refreshers:
            await r.close()
        for c in caches:
            await c.close()


async def test_shared_refresh_times_are_jittered_earlier_within_the_margin(
        redis_server: RedisServer) -> None:
    c = cache_for(redis_server)
    await c.start()
    src = Slow(0, lifetime=1000)
    slot = c.slot("user", settings_material(user()))
    times = []
    try:
        for seed in range(4):
            r: Refresher[str] = Refresher("r", src.fetch, src.classify, margin=100,
                                          rng=random.Random(seed))
            r.share(slot.store(CODEC), slot.key(CODEC))
            await r.start()
            await r.get()
            times.append(r.status()["refresh_in"])
            await r.close()
    finally:
        await c.close()
    assert all(900 - 100 * JITTER - 1 <= t <= 900 for t in times), times
    assert len({round(t) for t in times}) > 1  # members differ


class NoStore:
    """A ByteStore that keeps nothing, for key derivation alone."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"state": "ok"}

    async def get(self, key: str) -> bytes | None:
        return None

    async def put(self, key: str, data: bytes, ttl: float) -> None: ...

    def lock(self, key: str, ttl: float) -> Any:
        raise NotImplementedError


