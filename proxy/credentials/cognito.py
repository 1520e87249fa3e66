"""`type: cognito`: a User Pools token per credential, cached and refreshed ahead of expiry.

Expiry is judged on our monotonic clock, never by comparing Cognito's `exp` with our wall clock:
a token's lifetime (its `exp - iat`) is laid onto the monotonic time at which we *asked* for it,
which corrects for any skew between the two clocks and errs on the early side.

One fetch at a time per credential: every caller that needs a token joins the one in-flight
task. A background task refreshes at `exp - refresh_margin` while the old token keeps serving,
retries transient failures with capped exponential backoff and jitter, and holds off for a long
time after a refusal (see PERMANENT_HOLDOFF).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from proxy.config import CognitoCredential
from proxy.credentials import token_store
from proxy.credentials.base import CredentialSource, CredentialsUnavailable
from proxy.credentials.clock import Clock, SystemClock
from proxy.credentials.cognito_api import CognitoApi, CognitoError, Tokens, advice
from proxy.secret import Secret

log = logging.getLogger("authproxy.cognito")

BACKOFF_BASE, BACKOFF_CAP = 1.0, 60.0  # seconds; transient failures: 1, 2, 4 ... 60, jittered
# A refusal (wrong password, revoked refresh token, disabled user) is tried again only after
# this long: repeated failed sign-ins lock a Cognito user out, and the fix arrives another way
# (a reload builds a new source; a new `authproxy login` is noticed at once, see _holding_off).
PERMANENT_HOLDOFF = 900.0
FORCED_REFRESH_INTERVAL = 30.0  # upstream 401s force at most one refresh this often
EXPIRY_GUARD = 5.0  # a token this close to exp is not handed out: it could expire in flight
OUTCOMES = ("success", "transient_error", "permanent_error")


@dataclass
class _Token:
    value: str = field(repr=False)  # the header value: prefix + JWT
    expires: float  # monotonic
    refresh_at: float  # monotonic
    guard: float
    wall_expires: float
    claims: dict[str, Any]


_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class CognitoSource(CredentialSource):
    refreshable = True  # an upstream 401 makes the proxy call `rejected` and replay

    def __init__(self, config: CognitoCredential, *, cache_dir: Path | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self.name, self.header_name, self.flow = config.name, config.header, config.flow
        self._cfg = config
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._cache = (None if config.flow == "client_credentials" else
                       token_store.path_for(config, cache_dir or token_store.default_dir()))
        self._cache_stamp: tuple[int, int] | None = None
        self._refresh_token: Secret | None = config.refresh_token
        self._refused: Secret | None = None  # a refresh token Cognito refused: not tried again
        self._username = config.username  # Cognito's internal one once a token tells us
        self._session: aiohttp.ClientSession | None = None
        self._token: _Token | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._error: str | None = None
        self._error_at: float | None = None
        self._permanent = False
        self._retry_at = 0.0
        self._failures = 0
        self._forced_at = -math.inf
        self.fetches: Counter[str] = Counter({k: 0 for k in OUTCOMES})
        self.methods: Counter[str] = Counter()  # successful fetches by how: REFRESH_TOKEN_AUTH..

    # --- the CredentialSource protocol -------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._load_cache()
        self._loop_task = asyncio.create_task(self._run(), name=f"cognito-{self.name}")

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def current(self) -> str | None:
        tok = self._token
        if tok is not None and self._clock.monotonic() < tok.expires - tok.guard:
            return tok.value
        return None

    async def header(self) -> str:
        value = self.current()
        if value is not None:
            return value
        if self._session is None:
            raise CredentialsUnavailable(f"credential {self.name}: not started")
        if not self._holding_off():
            await self._single_flight()
        value = self.current()
        if value is None:
            raise self._unavailable()
        return value

    async def rejected(self, value: str) -> bool:
        if self._token is not None and self._token.value != value:
            return self.current() is not None  # already replaced: replay with the new one
        if self._inflight is None or self._inflight.done():
            now = self._clock.monotonic()
            if now - self._forced_at < FORCED_REFRESH_INTERVAL or self._holding_off():
                return False  # the API keeps refusing fresh tokens; fetching will not help
            self._forced_at = now
            log.info("credential %s: upstream refused the token; fetching a new one", self.name)
        await self._single_flight()
        new = self.current()
        return new is not None and new != value

    def status(self) -> dict[str, Any]:
        now, tok, valid = self._clock.monotonic(), self._token, self.current() is not None
        busy = self._inflight is not None and not self._inflight.done()
        if busy:
            state = "refreshing" if valid else "fetching"
        elif valid:
            state = "ready"
        elif self._error:
            state = "failed" if self._permanent else "retrying"
        else:
            state = "expired" if tok else "starting"
        expires_in = round(tok.expires - now, 1) if tok else None
        return {
            "name": self.name, "type": "cognito", "flow": self.flow, "state": state,
            "ready": valid, "header": self.header_name, "token": self._cfg.token,
            "username": self._username or None,
            "expires_at": _iso(tok.wall_expires) if tok else None, "expires_in": expires_in,
            "refresh_in": round(max(tok.refresh_at - now, 0), 1) if tok else None,
            "last_error": self._error, "last_error_at": _iso(self._error_at),
            "retry_in": round(self._retry_at - now, 1) if self._retry_at > now else None,
            "fetches": dict(self.fetches), "methods": dict(self.methods),
            "claims": dict(tok.claims) if tok else None,
            "token_cache": str(self._cache) if self._cache else None,
        }

    # --- fetching ----------------------------------------------------------------------------

    async def _single_flight(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name=f"cognito-fetch-{self.name}")
        # shielded: a request that gives up must not cancel the fetch the others are awaiting
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        asked_at = self._clock.monotonic()
        try:
            tokens = await self._obtain()
            self._accept(tokens, asked_at)
        except CognitoError as e:
            self._failed(e)
        except (KeyError, ValueError, TypeError, jwt.PyJWTError) as e:
            self._failed(CognitoError("MalformedResponse", f"unexpected answer from Cognito "
                                      f"({type(e).__name__})", transient=True))
        except Exception as e:  # the refresher must outlive any surprise, e.g. a closed session
            log.debug("credential %s: fetch failed", self.name, exc_info=True)
            self._failed(CognitoError("InternalError", type(e).__name__, transient=True))

    async def _obtain(self) -> Tokens:
        assert self._session is not None
        api, cfg = CognitoApi(self._session, self._cfg), self._cfg
        if cfg.flow == "client_credentials":
            return await api.client_credentials()
        self._load_cache()
        if self._refresh_token is not None:
            try:
                return await api.refresh(self._refresh_token.reveal(), self._username)
            except CognitoError as e:
                if e.transient or e.kind != "NotAuthorizedException":
                    raise
                self._refused, self._refresh_token = self._refresh_token, None
                if cfg.password is None:
                    raise CognitoError("RefreshTokenRefused", e.message, transient=False) from None
                log.info("credential %s: refresh token refused (%s); signing in again",
                         self.name, e.message)
        if cfg.password is None:
            raise CognitoError("NoSavedLogin", "no password and no saved sign-in",
                               transient=False)
        return await api.sign_in(cfg.username, cfg.password.reveal(), use_srp=cfg.flow == "srp")

    def _accept(self, tokens: Tokens, asked_at: float) -> None:
        jwt_text = tokens.access_token if self._cfg.token == "access" else tokens.id_token
        if not jwt_text:
            raise ValueError("no ID token in the answer")
        if not _JWT_SHAPE.fullmatch(jwt_text):
            # It goes into a header line as is; base64 decoding alone would let a line break by.
            raise ValueError("the token is not a compact JWT")
        claims: dict[str, Any] = jwt.decode(jwt_text, options={"verify_signature": False})
        lifetime = float(claims["exp"] - claims["iat"]) if "iat" in claims else tokens.expires_in
        if lifetime <= 0:
            raise ValueError("token already expired when issued")
        margin = min(self._cfg.refresh_margin, lifetime / 2)
        now = self._clock.monotonic()
        self._token = _Token(
            value=self._cfg.prefix + jwt_text, expires=asked_at + lifetime,
            # at least a second between fetches, even for absurdly short lifetimes
            refresh_at=max(asked_at + lifetime - margin, now + 1.0),
            guard=min(EXPIRY_GUARD, lifetime / 10),
            wall_expires=self._clock.time() + (asked_at + lifetime - now), claims=claims)
        if tokens.refresh_token:
            self._refresh_token = Secret(tokens.refresh_token)
        self._username = str(claims.get("username") or claims.get("cognito:username")
                             or self._username)
        self._error, self._error_at, self._permanent = None, None, False
        self._retry_at, self._failures = 0.0, 0
        self.fetches["success"] += 1
        self.methods[tokens.method] += 1
        self._wake.set()
        log.info("credential %s: new %s token via %s, valid %.0f s, refresh in %.0f s",
                 self.name, self._cfg.token, tokens.method, lifetime,
                 self._token.refresh_at - now)

    def _failed(self, e: CognitoError) -> None:
        now = self._clock.monotonic()
        self._error, self._error_at = advice(e, self._cfg), self._clock.time()
        self._permanent = not e.transient
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
        left = self._token.expires - now if self._token else 0
        log.warning("credential %s: %s; retrying in %.1f s%s", self.name, self._error, delay,
                    f" (current token still valid for {left:.0f} s)" if left > 0 else "")

    # --- background --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock.monotonic()
            if self._retry_at > now:
                delay = self._retry_at - now
            else:
                delay = self._token.refresh_at - now if self._token else 0.0
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
        if self._permanent and self._cache and token_store.stamp(self._cache) != (
                self._cache_stamp):
            log.info("credential %s: token cache changed; trying again", self.name)
            self._retry_at = 0.0
            return False
        return True

    def _load_cache(self) -> None:
        if self._cache is None or token_store.stamp(self._cache) == self._cache_stamp:
            return
        self._cache_stamp = token_store.stamp(self._cache)
        saved = token_store.load(self._cache)
        if saved and saved.refresh_token != self._refused:
            self._refresh_token, self._username = saved.refresh_token, saved.username or (
                self._username)

    def _unavailable(self) -> CredentialsUnavailable:
        reason = self._error or "no token yet"
        retry = self._retry_at - self._clock.monotonic()
        when = f"; next attempt in {retry:.0f} s" if retry > 0 and not self._permanent else ""
        return CredentialsUnavailable(f"credential {self.name}: {reason}{when}")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
