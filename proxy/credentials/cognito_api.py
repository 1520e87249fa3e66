"""Cognito's wire protocol as the token source and `login` use it: InitiateAuth and
RespondToAuthChallenge (unsigned JSON 1.1 calls), the OAuth2 token endpoint (client
credentials; a managed login's code exchange and refresh), and the line between transient
failures (retry later) and refusals (do not).

Nothing here logs or raises a secret: requests are logged by operation and status only, and
Cognito's error messages are scrubbed of every secret the call carried before they are kept.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from proxy.config import CognitoCredential
from proxy.credentials import srp
from proxy.credentials.aws_json import error_kind, error_message, json_object

log = logging.getLogger("authproxy.cognito")

_TARGET = "AWSCognitoIdentityProviderService."
# Throttling and Cognito's own trouble: trying again later can help. Everything else it says
# (NotAuthorizedException above all) is an answer, and repeating it can lock a user out.
TRANSIENT = frozenset({
    "TooManyRequestsException", "LimitExceededException", "ThrottlingException",
    "InternalErrorException", "ServiceUnavailable", "ServiceUnavailableException",
    "too_many_requests", "server_error", "temporarily_unavailable"})
MAX_CHALLENGES = 8  # a sign-in asks a few questions at most; more means something is looping


class CognitoError(Exception):
    """A refusal or failure from Cognito (or on the way to it). `kind` is Cognito's error type
    (`NotAuthorizedException`) or ours (`NetworkError`, `ChallengeRequired`)."""

    def __init__(self, kind: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.transient = kind, message, transient


@dataclass(frozen=True)
class Tokens:
    access_token: str = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)  # only from a sign-in (or rotation)
    expires_in: int
    method: str  # how they were obtained: USER_SRP_AUTH, REFRESH_TOKEN_AUTH, client_credentials
    challenges: tuple[str, ...] = ()  # answered on the way, e.g. ("SOFTWARE_TOKEN_MFA",)


@dataclass(frozen=True)
class Challenge:
    name: str  # NEW_PASSWORD_REQUIRED, SOFTWARE_TOKEN_MFA, SMS_MFA, EMAIL_OTP, ...
    parameters: dict[str, str]
    session: str | None = field(default=None, repr=False)


# Given a challenge, return its ChallengeResponses (USERNAME and SECRET_HASH are added here).
Answer = Callable[[Challenge], Awaitable[dict[str, str]]]


class CognitoApi:
    def __init__(self, session: aiohttp.ClientSession, config: CognitoCredential, *,
                 timeout: float = 10.0) -> None:
        self._http, self._cfg = session, config
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._secret = config.client_secret.reveal() if config.client_secret else None
        self._known = [s.reveal() for s in (config.client_secret, config.password,
                                            config.refresh_token) if s]

    # --- the flows ---------------------------------------------------------------------------

    async def sign_in(self, username: str, password: str, *, use_srp: bool,
                      answer: Answer | None = None) -> Tokens:
        """USER_SRP_AUTH (then PASSWORD_VERIFIER) or USER_PASSWORD_AUTH, then whatever
        challenges the pool asks; without `answer`, any challenge is a ChallengeRequired error."""
        flow = "USER_SRP_AUTH" if use_srp else "USER_PASSWORD_AUTH"
        params = {"USERNAME": username, **self._hash(username)}
        a, big_a = srp.generate_a() if use_srp else (0, 0)
        params.update({"SRP_A": f"{big_a:x}"} if use_srp else {"PASSWORD": password})
        result = await self._call("InitiateAuth", {
            "AuthFlow": flow, "ClientId": self._cfg.client_id, "AuthParameters": params},
            flow, (password,))
        answered: list[str] = []
        while "AuthenticationResult" not in result:
            ch = Challenge(str(result.get("ChallengeName", "")),
                           dict(result.get("ChallengeParameters") or {}), result.get("Session"))
            if len(answered) >= MAX_CHALLENGES:
                raise CognitoError("TooManyChallenges", f"still asked {ch.name} after "
                                   f"{', '.join(answered)}", transient=False)
            internal = (ch.parameters.get("USERNAME") or ch.parameters.get("USER_ID_FOR_SRP")
                        or username)
            if ch.name == "PASSWORD_VERIFIER":
                answers = self._password_verifier(ch, password, a, big_a)
            elif answer is None:
                raise CognitoError("ChallengeRequired", ch.name, transient=False)
            else:
                answers = await answer(ch)
                answered.append(ch.name)
            body: dict[str, Any] = {"ChallengeName": ch.name, "ClientId": self._cfg.client_id,
                                    "ChallengeResponses": {"USERNAME": internal, **answers,
                                                           **self._hash(internal)}}
            if ch.session:
                body["Session"] = ch.session
            result = await self._call("RespondToAuthChallenge", body, ch.name,
                                      (password, *answers.values()))
        return self._tokens(result, flow, tuple(answered))

    async def refresh(self, refresh_token: str, username: str) -> Tokens:
        """REFRESH_TOKEN_AUTH. `username` must be Cognito's internal one (the access token's
        `username` claim) when the client has a secret: the hash of an email is refused."""
        params = {"REFRESH_TOKEN": refresh_token, **self._hash(username)}
        result = await self._call("InitiateAuth", {
            "AuthFlow": "REFRESH_TOKEN_AUTH", "ClientId": self._cfg.client_id,
            "AuthParameters": params}, "REFRESH_TOKEN_AUTH", (refresh_token,))
        return self._tokens(result, "REFRESH_TOKEN_AUTH", ())

    async def client_credentials(self) -> Tokens:
        form = {"grant_type": "client_credentials"}
        if self._cfg.scopes:
            form["scope"] = " ".join(self._cfg.scopes)
        data = await self._token_endpoint(form, ())
        return Tokens(access_token=str(data["access_token"]), id_token=None, refresh_token=None,
                      expires_in=int(data.get("expires_in", 3600)), method="client_credentials")

    async def authorization_code(self, code: str, verifier: str, redirect_uri: str) -> Tokens:
        """The managed login's code, with the PKCE verifier it was asked for with."""
        data = await self._token_endpoint({
            "grant_type": "authorization_code", "client_id": self._cfg.client_id, "code": code,
            "redirect_uri": redirect_uri, "code_verifier": verifier}, (code, verifier))
        return self._oauth_tokens(data, "authorization_code")

    async def oauth_refresh(self, refresh_token: str) -> Tokens:
        """grant_type=refresh_token at <domain>/oauth2/token: a managed login's refresh."""
        data = await self._token_endpoint({
            "grant_type": "refresh_token", "client_id": self._cfg.client_id,
            "refresh_token": refresh_token}, (refresh_token,))
        return self._oauth_tokens(data, "refresh_token")

    # --- helpers -----------------------------------------------------------------------------

    def _hash(self, username: str) -> dict[str, str]:
        if self._secret is None:
            return {}
        return {"SECRET_HASH": srp.secret_hash(username, self._cfg.client_id, self._secret)}

    def _password_verifier(self, ch: Challenge, password: str, a: int,
                           big_a: int) -> dict[str, str]:
        p, ts = ch.parameters, srp.timestamp()
        try:
            signature = srp.password_claim(
                pool_id=self._cfg.user_pool_id, user_id=p["USER_ID_FOR_SRP"],
                password=password, a=a, big_a=big_a, big_b_hex=p["SRP_B"], salt_hex=p["SALT"],
                secret_block=p["SECRET_BLOCK"], ts=ts)
        except (KeyError, ValueError) as e:  # includes SrpError: a B that would leak the key
            raise CognitoError("InvalidChallenge", f"unusable PASSWORD_VERIFIER challenge "
                               f"({type(e).__name__})", transient=False) from None
        return {"TIMESTAMP": ts, "PASSWORD_CLAIM_SECRET_BLOCK": p["SECRET_BLOCK"],
                "PASSWORD_CLAIM_SIGNATURE": signature}

    async def _token_endpoint(self, form: dict[str, str],
                              secrets: Iterable[str]) -> dict[str, Any]:
        url = f"{self._cfg.domain.rstrip('/')}/oauth2/token"
        # Content-Type set here, not left to the session: Cognito refuses a form without it.
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._secret is not None or form["grant_type"] == "client_credentials":
            # A confidential client authenticates with Basic (client_secret_basic); a public
            # one only names itself in the body.
            basic = base64.b64encode(f"{self._cfg.client_id}:{self._secret or ''}".encode())
            headers["Authorization"] = f"Basic {basic.decode()}"
        return await self._send(url, "oauth2/token", form["grant_type"], secrets, data=form,
                                headers=headers)

    @staticmethod
    def _oauth_tokens(data: dict[str, Any], method: str) -> Tokens:
        id_token = data.get("id_token")
        refresh = data.get("refresh_token")
        return Tokens(access_token=str(data["access_token"]),
                      id_token=str(id_token) if id_token else None,
                      refresh_token=str(refresh) if refresh else None,
                      expires_in=int(data.get("expires_in", 3600)), method=method)

    @staticmethod
    def _tokens(result: dict[str, Any], method: str, answered: tuple[str, ...]) -> Tokens:
        auth = result["AuthenticationResult"]
        return Tokens(access_token=str(auth["AccessToken"]), id_token=auth.get("IdToken"),
                      refresh_token=auth.get("RefreshToken"),
                      expires_in=int(auth.get("ExpiresIn", 3600)), method=method,
                      challenges=answered)

    async def _call(self, operation: str, body: dict[str, Any], what: str,
                    secrets: Iterable[str]) -> dict[str, Any]:
        headers = {"X-Amz-Target": _TARGET + operation,
                   "Content-Type": "application/x-amz-json-1.1"}
        url = self._cfg.idp_url.rstrip("/") + "/"
        return await self._send(url, operation, what, secrets, json=body, headers=headers)

    async def _send(self, url: str, operation: str, what: str, secrets: Iterable[str],
                    **kwargs: Any) -> dict[str, Any]:
        started = time.monotonic()
        try:
            async with self._http.post(url, timeout=self._timeout, allow_redirects=False,
                                       **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("cognito %s %s %s: %s", self._cfg.name, operation, what, type(e).__name__)
            raise CognitoError("NetworkError", f"cannot reach {url}: {type(e).__name__}"
                               f"{': ' + str(e) if str(e) else ''}", transient=True) from None
        log.debug("cognito %s %s %s -> %s in %.0f ms", self._cfg.name, operation, what, status,
                  (time.monotonic() - started) * 1000)
        try:
            data = json_object(raw)
        except ValueError:
            data = {}
        if status == 200 and data:
            return data
        kind = error_kind(data, status, str(data.get("error") or ""))
        message = error_message(data, status, "error_description")
        for secret in (*self._known, *secrets):
            if secret:
                message = message.replace(secret, "***")
        # a 200 we cannot read came from something in between (a captive portal, a proxy)
        transient = kind in TRANSIENT or status >= 500 or status in (200, 429)
        raise CognitoError(kind, message[:300], transient=transient)


def advice(e: CognitoError, cfg: CognitoCredential) -> str:
    """What went wrong and what to do, in the user's terms, for errors and status pages."""
    n, user, why = cfg.name, cfg.username, f"{e.kind}: {e.message}"
    fix = f"credentials.{n}"
    if e.transient:
        return f"Cognito unavailable ({why})"
    if e.kind == "RefreshTokenRefused" and "secret hash" in e.message.lower():
        return (f"Cognito refused the SECRET_HASH on refresh ({why}): set {fix}.username to "
                "the user's Cognito username (the access token's `username` claim; a UUID in "
                f"pools that sign in by email), or run `authproxy login {n}`")
    if e.kind in ("RefreshTokenRefused", "NoSavedLogin") and cfg.flow == "authorization_code":
        what = ("the saved sign-in was refused (refresh token expired or revoked)"
                if e.kind == "RefreshTokenRefused" else "no saved sign-in")
        return (f"{what}: run `authproxy login {n}` to sign in on the managed login page at "
                f"{cfg.domain}")
    if e.kind in ("RefreshTokenRefused", "NoSavedLogin"):
        what = ("refresh token expired or revoked" if e.kind == "RefreshTokenRefused"
                else "no password and no saved sign-in")
        return f"{what}: run `authproxy login {n}`" + (
            f" (or set {fix}.password)" if cfg.flow != "refresh_token" else "")
    if e.kind == "unauthorized_client" and cfg.flow == "authorization_code":
        return (f"{why}: enable the authorization code grant on app client {cfg.client_id} "
                "(its managed login settings)")
    if e.kind == "ChallengeRequired":
        return (f"sign-in for user {user} needs {e.message}: run `authproxy login {n}` once "
                "to answer it; serve then uses the saved refresh token")
    if "secret hash" in e.message.lower() or e.kind == "invalid_client":
        return f"Cognito refused the app client secret ({why}): fix {fix}.client_secret"
    if "disabled" in e.message.lower():
        return f"user {user} is disabled in the user pool ({why})"
    if e.kind == "NotAuthorizedException":
        return f"wrong password for user {user} ({why}): fix {fix}.password"
    if e.kind == "UserNotFoundException":
        return f"no user {user} in pool {cfg.user_pool_id}: fix {fix}.username"
    if e.kind == "ResourceNotFoundException":
        return f"{why}: check {fix}.client_id, user_pool_id and region"
    if e.kind == "InvalidParameterException":
        return f"{why}: check that {fix}.flow is enabled on the app client"
    if e.kind == "invalid_scope":
        return f"{why}: fix {fix}.scopes"
    return f"Cognito refused ({why})"
