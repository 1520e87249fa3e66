"""`type: cognito`: a User Pools token per credential, obtained and kept fresh by the refresh
core (proxy/credentials/refresh.py). This module says only how to fetch one (refresh token
first, a sign-in when it is refused), which failures are transient, and how the token becomes
the header: the scheduling, single flight, backoff and hold-offs are the core's.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from proxy.config import CognitoCredential
from proxy.credentials import managed_login, token_store
from proxy.credentials.base import (
    CredentialSource,
    CredentialsUnavailable,
    Description,
    Headers,
    LoginResult,
    Outgoing,
    Prompt,
)
from proxy.credentials.clock import Clock
from proxy.credentials.cognito_api import CognitoApi, CognitoError, Tokens, advice
from proxy.credentials.cognito_login import login
from proxy.credentials.refresh import Failure, Fetched, Refresher
from proxy.credentials.shared import Codec, SharedSlot
from proxy.secret import Secret

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authproxy.cognito")

@dataclass(frozen=True)
class _Token:
    headers: Headers = field(repr=False)  # ((header, prefix + JWT),), built once per token
    claims: dict[str, Any]
    id_token: str | None = field(default=None, repr=False)  # for identity pools' Logins
    # What a fleet shares beside the header (token_cache): the bare JWT, the refresh token
    # that renews it, and Cognito's internal username (SECRET_HASH on refresh needs it).
    jwt: str = field(default="", repr=False)
    refresh_token: Secret | None = field(default=None, repr=False)
    username: str = ""


_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class CognitoSource(CredentialSource):
    refreshable = True  # an upstream 401 makes the proxy call `rejected` and replay
    uses_http = True  # every flow calls Cognito's API or its token endpoint

    def __init__(self, config: CognitoCredential, *, cache_dir: Path | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self.name, self.header_name, self.flow = config.name, config.header, config.flow
        self._cfg = config
        self._cache_dir = cache_dir
        self._cache = (None if config.flow == "client_credentials" else
                       token_store.path_for(config, cache_dir or token_store.default_dir()))
        self._cache_stamp: tuple[int, int] | None = None
        self._refresh_token: Secret | None = config.refresh_token
        self._refused: Secret | None = None  # a refresh token Cognito refused: not tried again
        self._username = config.username  # Cognito's internal one once a token tells us
        self._session: aiohttp.ClientSession | None = None
        self._core: Refresher[_Token] = Refresher(
            config.name, self._fetch, self._classify, margin=config.refresh_margin,
            clock=clock, rng=rng, recheck=self._login_changed)
        self.methods: Counter[str] = Counter()  # successful fetches by how: REFRESH_TOKEN_AUTH..

    # --- the CredentialSource protocol -------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._load_cache()
        await self._core.start()

    async def close(self) -> None:
        await self._core.close()

    def current(self) -> Headers | None:
        tok = self._core.current()
        return tok.headers if tok is not None else None

    async def headers_for(self, request: Outgoing) -> Headers:
        return (await self._core.get()).headers

    async def rejected(self, sent: Headers) -> bool:
        return await self._core.force(lambda tok: tok.headers == sent)

    def share(self, slot: SharedSlot) -> None:
        codec = Codec("cognito-token/1", self._encode, self._decode)
        self._core.share(slot.store(codec), slot.key(codec), adopted=self._adopted)

    async def id_token(self) -> str:
        """The signed-in user's current ID token (what an identity pool's `Logins` takes),
        whichever token this credential injects; raises CredentialsUnavailable."""
        tok = await self._core.get()
        if not tok.id_token or not _JWT_SHAPE.fullmatch(tok.id_token):
            raise CredentialsUnavailable(f"credential {self.name} has no ID token "
                                         f"(flow {self._cfg.flow} gives none)")
        return tok.id_token

    def describe(self) -> Description:
        cfg = self._cfg
        if cfg.flow == "client_credentials":
            who = cfg.domain
        elif cfg.flow == "authorization_code":
            via = f" via {cfg.identity_provider}" if cfg.identity_provider else ""
            who = f"managed login at {cfg.domain}{via}"
        else:
            who = f"{cfg.username or '(login cache)'} @ {cfg.user_pool_id}"
        secret = ", client secret set" if cfg.client_secret else ""
        return Description(
            name=self.name, type="cognito", header=cfg.header,
            summary=f"cognito {cfg.flow}, {cfg.token} token as {cfg.header}: {cfg.prefix}<jwt>, "
                    f"{who}{secret}",
            how=f"cognito {cfg.flow}, {cfg.token} token fetched and refreshed at run time; "
                f"{self._sign_in()}",
            headers=((cfg.header, f"{cfg.prefix}<{cfg.token} token>"),),
            prefix=cfg.prefix, flow=cfg.flow, refreshed=True,
            settings=frozenset({"token", "prefix"}),
            signs_in=True)  # client_credentials: login itself says why there is none

    def status(self) -> dict[str, Any]:
        core = self._core.status()
        tok = self._core.held()
        return {
            "name": self.name, "type": "cognito", "flow": self.flow, "state": core["state"],
            "ready": core["ready"], "header": self.header_name, "token": self._cfg.token,
            "username": self._username or None,
            **{k: core[k] for k in ("expires_at", "expires_in", "refresh_in", "last_error",
                                    "last_error_at", "retry_in", "fetches")},
            "methods": dict(self.methods),
            "claims": dict(tok.claims) if tok else None,
            "token_cache": str(self._cache) if self._cache else None,
            **({"domain": self._cfg.domain, "identity_provider": self._cfg.identity_provider}
               if self.flow == "authorization_code" else {}),
        }

    async def login(self, prompt: Prompt, session: aiohttp.ClientSession,
                    cache_dir: Path | None = None, timeout: float | None = None
                    ) -> LoginResult:
        directory = cache_dir or self._cache_dir or token_store.default_dir()
        if self._cfg.flow == "authorization_code":
            return await managed_login.login(self._cfg, prompt, session, directory,
                                             timeout or managed_login.CALLBACK_TIMEOUT)
        return await login(self._cfg, prompt, session, directory)

    # --- fetching: what the refresh core calls -----------------------------------------------

    async def _fetch(self) -> Fetched[_Token]:
        tokens = await self._obtain()
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
        if tokens.refresh_token:
            self._refresh_token = Secret(tokens.refresh_token)
        self._username = str(claims.get("username") or claims.get("cognito:username")
                             or self._username)
        self.methods[tokens.method] += 1
        return Fetched(self._token(jwt_text, claims, tokens.id_token, self._refresh_token,
                                   self._username),
                       lifetime, f"{self._cfg.token} token via {tokens.method}")

    def _token(self, jwt_text: str, claims: dict[str, Any], id_token: str | None,
               refresh_token: Secret | None, username: str) -> _Token:
        return _Token(((self._cfg.header, self._cfg.prefix + jwt_text),), claims, id_token,
                      jwt_text, refresh_token, username)

    # --- the fleet's cache (token_cache) -----------------------------------------------------

    @staticmethod
    def _encode(tok: _Token) -> dict[str, Any]:
        return {"jwt": tok.jwt, "id_token": tok.id_token, "username": tok.username,
                "refresh_token": tok.refresh_token.reveal() if tok.refresh_token else None}

    def _decode(self, data: dict[str, Any]) -> _Token:
        jwt_text, id_token, refresh = data["jwt"], data.get("id_token"), data.get("refresh_token")
        if not isinstance(jwt_text, str) or not _JWT_SHAPE.fullmatch(jwt_text):
            raise ValueError("not a compact JWT")  # it goes into a header line as is
        try:
            claims: dict[str, Any] = jwt.decode(jwt_text, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise ValueError("unreadable JWT") from e
        return self._token(jwt_text, claims, str(id_token) if id_token else None,
                           Secret(str(refresh)) if refresh else None,
                           str(data.get("username") or ""))

    def _adopted(self, tok: _Token) -> None:
        """A token another member fetched: its refresh token is the one to refresh with."""
        if tok.refresh_token is not None and tok.refresh_token != self._refused:
            self._refresh_token = tok.refresh_token
        self._username = tok.username or self._username

    def _classify(self, e: Exception) -> Failure:
        if not isinstance(e, CognitoError):
            if isinstance(e, KeyError | ValueError | TypeError | jwt.PyJWTError):
                e = CognitoError("MalformedResponse", f"unexpected answer from Cognito "
                                 f"({type(e).__name__})", transient=True)
            else:  # e.g. a closed session: try again later rather than give up
                log.debug("credential %s: fetch failed", self.name, exc_info=e)
                e = CognitoError("InternalError", type(e).__name__, transient=True)
        return Failure(advice(e, self._cfg), e.transient)

    async def _obtain(self) -> Tokens:
        assert self._session is not None
        api, cfg = CognitoApi(self._session, self._cfg), self._cfg
        if cfg.flow == "client_credentials":
            return await api.client_credentials()
        self._load_cache()
        if cfg.flow == "authorization_code":
            return await self._managed_login_refresh(api)
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

    async def _managed_login_refresh(self, api: CognitoApi) -> Tokens:
        """grant_type=refresh_token at <domain>/oauth2/token: a managed login has no password
        to fall back on, so a refused refresh token waits for a new `authproxy login`."""
        if self._refresh_token is None:
            raise CognitoError("NoSavedLogin", "no saved sign-in", transient=False)
        try:
            return await api.oauth_refresh(self._refresh_token.reveal())
        except CognitoError as e:
            if e.transient or e.kind != "invalid_grant":
                raise
            self._refused, self._refresh_token = self._refresh_token, None
            raise CognitoError("RefreshTokenRefused", e.message, transient=False) from None

    # --- the login cache ---------------------------------------------------------------------

    def _login_changed(self) -> bool:
        """A refusal may be mended by a new `authproxy login` (another process writes it)."""
        if self._cache and token_store.stamp(self._cache) != self._cache_stamp:
            log.info("credential %s: token cache changed; trying again", self.name)
            return True
        return False

    def _load_cache(self) -> None:
        if self._cache is None or token_store.stamp(self._cache) == self._cache_stamp:
            return
        self._cache_stamp = token_store.stamp(self._cache)
        saved = token_store.load(self._cache)
        if saved and saved.refresh_token != self._refused:
            self._refresh_token, self._username = saved.refresh_token, saved.username or (
                self._username)

    def _sign_in(self) -> str:
        """How the credential will sign in, from what is on disk (no network)."""
        cfg = self._cfg
        if cfg.flow == "client_credentials":
            return f"client credentials at {cfg.domain}/oauth2/token"
        assert self._cache is not None
        saved = token_store.load(self._cache)
        if cfg.flow == "authorization_code":
            if saved is None:
                return (f"NO saved sign-in: requests will get 503 until you run `authproxy "
                        f"login {cfg.name}` (the managed login page, in a browser)")
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved.saved_at))
            return (f"sign-in of {saved.username or '?'} saved by `authproxy login` ({when}), "
                    f"refreshed at {cfg.domain}/oauth2/token")
        if saved is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved.saved_at))
            return f"saved sign-in from `authproxy login` ({when}) used first"
        if cfg.password is not None or cfg.refresh_token is not None:
            return "signs in with the configured " + (
                "password" if cfg.password is not None else "refresh token")
        return (f"NO password and no saved sign-in: requests will get 503 until you run "
                f"`authproxy login {cfg.name}`")
