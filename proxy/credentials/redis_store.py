"""`token_cache` on Redis (or Valkey, ElastiCache): the bytes, TTLs and fleet lock that
proxy/credentials/shared.py builds on, through redis-py's asyncio client (the optional extra
`authproxy[redis]`).

Redis is a help, never a dependency: every call is bounded by `token_cache.timeout` (redis-py's
own retries are off, so the bound is the bound), and a failing call opens a breaker for a
while, during which calls do not reach Redis at all: `get` answers None, `put` is dropped and
`lock` is ours, so each process serves from its own cache and fetches for itself. A probe
(PING) notices recovery. The lock is `SET key token NX PX ttl`, renewed every third of its TTL
while the fetch runs and released by compare-and-delete (Lua), so a lock that lapsed and was
taken by another process is never deleted by the one that lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError

from proxy.config import TokenCache
from proxy.credentials.clock import Clock, SystemClock

log = logging.getLogger("authproxy.token_cache")

T = TypeVar("T")

BREAKER_BASE, BREAKER_CAP = 0.5, 5.0  # seconds Redis is left alone after failures: 0.5, 1 .. 5
PROBE_HEALTHY, PROBE_DEGRADED = 10.0, 1.0  # seconds between PINGs
OPERATIONS = ("get", "put", "lock", "renew", "unlock", "ping")

# KEYS[1] the lock, ARGV[1] our token
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) " \
           "else return 0 end"
# ARGV[2] the TTL in milliseconds
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"


class _Unavailable(Exception):
    """Redis could not be used for this call (the breaker is open, or the call failed)."""


class RedisStore:
    """A shared cache's ByteStore on one Redis; `start`/`close` run with the proxy."""

    def __init__(self, config: TokenCache, *, clock: Clock | None = None) -> None:
        assert config.url is not None
        self._clock: Clock = clock or SystemClock()
        self.timeout = config.timeout
        self.shown_url = redacted_url(config.url.reveal())
        tls: dict[str, Any] = {}
        if config.url.reveal().startswith("rediss://"):
            if config.tls_verify is False:
                tls = {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
            elif isinstance(config.tls_verify, str):
                tls = {"ssl_ca_certs": config.tls_verify}
        self._client = aioredis.Redis.from_url(
            config.url.reveal(), socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            # One immediate retry on a new connection after a connection error: a pooled
            # connection goes stale when Redis restarts or fails over, and the first call
            # after that should not count as Redis being down. Never after a timeout: that
            # would double the bound (which asyncio.timeout below enforces anyway).
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            health_check_interval=0, **tls)
        self._release = self._client.register_script(_RELEASE)
        self._renew = self._client.register_script(_RENEW)
        self.state = "starting"  # ok | degraded
        self.last_error: str | None = None
        self.degraded_since: float | None = None  # wall time
        self.errors: Counter[str] = Counter({op: 0 for op in OPERATIONS})
        self._failures = 0
        self._closed_until = -math.inf  # monotonic: the breaker is open before this
        self._probe: asyncio.Task[None] | None = None

    # --- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(_Unavailable):
            await self._call("ping", self._client.ping)
            log.info("token_cache: sharing tokens through %s", self.shown_url)
        self._probe = asyncio.create_task(self._probing(), name="token-cache-probe")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    def status(self) -> dict[str, Any]:
        since = None if self.degraded_since is None else dt.datetime.fromtimestamp(
            self.degraded_since, dt.UTC).isoformat(timespec="seconds")
        return {"url": self.shown_url, "state": self.state, "last_error": self.last_error,
                "degraded_since": since, "errors": dict(self.errors)}

    # --- the ByteStore protocol ----------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._call("get", lambda: self._client.get(key))
        except _Unavailable:
            return None
        # bytes: the client is made without decode_responses
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, data: bytes, ttl: float) -> None:
        with contextlib.suppress(_Unavailable):
            await self._call("put", lambda: self._client.set(key, data,
                                                             px=max(int(ttl * 1000), 1)))

    @contextlib.asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        token = secrets.token_hex(16)
        ms = max(int(ttl * 1000), 1)
        try:
            got = bool(await self._call("lock", lambda: self._client.set(
                key, token, nx=True, px=ms)))
        except _Unavailable:
            yield True  # no fleet to coordinate with: this process fetches for itself
            return
        if not got:
            yield False
            return
        renewing = asyncio.create_task(self._renewing(key, token, ttl), name="token-cache-lock")
        try:
            yield True
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(_Unavailable):  # else it lapses by itself within ttl
                await self._call("unlock", lambda: self._release(keys=[key], args=[token]))

    # --- inside --------------------------------------------------------------------------------

    async def _renewing(self, key: str, token: str, ttl: float) -> None:
        while True:
            await self._clock.sleep(ttl / 3)
            try:
                kept = await self._call("renew", lambda: self._renew(
                    keys=[key], args=[token, max(int(ttl * 1000), 1)]))
            except _Unavailable:
                continue  # Redis is away; so are the others' claims on the lock
            if not kept:
                log.info("token_cache: a fetch outlasted its lock (%s s); another member may "
                         "fetch too", ttl)
                return

    async def _probing(self) -> None:
        last = self._clock.monotonic()
        while True:
            # Short ticks, so that a failure between two healthy pings is probed soon after.
            await self._clock.sleep(PROBE_DEGRADED)
            now = self._clock.monotonic()
            if self.state == "ok" and now - last < PROBE_HEALTHY:
                continue
            last = now
            with contextlib.suppress(_Unavailable):
                await self._call("ping", self._client.ping)

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._clock.monotonic() < self._closed_until:
            raise _Unavailable
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(op, e)
            raise _Unavailable from None
        if self.state != "ok":
            if self.state == "degraded":
                log.warning("token_cache: %s answers again; sharing tokens again",
                            self.shown_url)
            self.state, self.last_error, self.degraded_since = "ok", None, None
            self._failures = 0
        return result

    def _failed(self, op: str, e: Exception) -> None:
        self.errors[op] += 1
        self._failures += 1
        self._closed_until = self._clock.monotonic() + min(
            BREAKER_CAP, BREAKER_BASE * 2 ** (self._failures - 1))
        why = describe_error(e, self.timeout)
        if self.state != "degraded" or why != self.last_error:
            log.warning("token_cache: %s %s; each process uses its own cache until it is back",
                        self.shown_url, why)
        if self.state != "degraded":
            self.degraded_since = self._clock.time()
        self.state, self.last_error = "degraded", why


def describe_error(e: Exception, timeout: float) -> str:
    """What went wrong, in the user's terms; never the URL's password (redis-py's messages
    name the host and port at most, and are cut short anyway)."""
    if isinstance(e, TimeoutError) or type(e).__name__ == "TimeoutError":
        return f"did not answer within {timeout:g} s (token_cache.timeout)"
    text = str(e)
    if isinstance(e, AuthenticationError) or (isinstance(e, ResponseError) and re.match(
            r"(NOAUTH|WRONGPASS|NOPERM)", text)):
        return ("refused this client (wrong or missing password or user in token_cache.url, "
                f"or an ACL without the commands it needs: {text[:80]})")
    return f"is unreachable ({type(e).__name__}: {text[:160]})"


def redacted_url(url: str) -> str:
    """The URL without its password: for logs, readyz and metrics."""
    return re.sub(r"^(rediss?://)([^@/]*)@", lambda m: m.group(1) + (
        m.group(2).split(":", 1)[0] + ":***@" if m.group(2) else ""), url)
