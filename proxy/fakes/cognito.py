"""A fake Amazon Cognito user pool service: a real aiohttp server on 127.0.0.1 speaking the real
wire format, for tests and `authproxy demo`.

    fake = FakeCognito()
    await fake.start()
    pool = fake.add_pool()
    client = fake.add_client(pool, secret="s3cr3t")
    fake.add_user(pool, "alice", "Passw0rd!", email="alice@example.com")
    ... CognitoCredential(endpoint=fake.url, user_pool_id=pool, client_id=client, ...)

It refuses what real Cognito refuses, so code that passes here is not merely agreeing with its
own misreading: the JSON API wants `Content-Type: application/x-amz-json-1.1` and a full
`X-Amz-Target`, /oauth2/token a form body with its Content-Type and a well-formed client
authentication; SRP is verified with the fake's own server-side math (`cognito_srp`, which shares
no code with the client under test), including the TIMESTAMP's format and age; SECRET_HASH is
required and checked (with Cognito's internal username on refresh); challenge sessions expire
after three minutes and die after three wrong codes; repeated wrong passwords lock the user out
for a while, as Cognito does. Tokens are RS256 JWTs with Cognito's claims, signed by separate ID
and access keys published at the pool's JWKS URL. Faults (throttling, 500, delay, stopped,
revoked refresh tokens) and per-operation call counters let tests prove retry and single-flight
behaviour by counting. The managed login pages (`/oauth2/authorize`, `/login`) and their grants
at /oauth2/token live in `managed_login`. Every time-dependent rule reads `clock` (wall
seconds), so tests move time by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.fakes import cognito_srp
from proxy.fakes.aws_json import AMZ_JSON, read_call
from proxy.fakes.aws_json import JsonFault as CognitoFault
from proxy.fakes.cognito_pool import (
    FakeClient,
    FakePool,
    FakeUser,
    jwks,
    new_pool,
    set_password,
    sign,
    user_tokens,
)
from proxy.fakes.managed_login import ManagedLogin, oauth_error

_CALL: contextvars.ContextVar[str | None] = contextvars.ContextVar("fake_cognito_call")
_TARGET = "AWSCognitoIdentityProviderService."
MFA_CODE_KEYS = {"SOFTWARE_TOKEN_MFA": "SOFTWARE_TOKEN_MFA_CODE", "SMS_MFA": "SMS_MFA_CODE",
                 "EMAIL_OTP": "EMAIL_OTP_CODE"}
CHALLENGES = ("NEW_PASSWORD_REQUIRED", *MFA_CODE_KEYS)
ALL_FLOWS = frozenset({"USER_PASSWORD_AUTH", "USER_SRP_AUTH", "REFRESH_TOKEN_AUTH"})
FORM = "application/x-www-form-urlencoded"
OAUTH_GRANTS = frozenset({"client_credentials", "authorization_code", "refresh_token"})
SESSION_LIFETIME = 180.0  # AuthSessionValidity's default: three minutes per challenge
MAX_CODE_ATTEMPTS = 3  # wrong MFA codes one session survives; then it is dead
# Cognito does not document how far TIMESTAMP may be from its clock; clients with a clock off
# by more than about five minutes are reported to fail, so the fake allows that much.
TIMESTAMP_TOLERANCE = 300.0
# "After five failed sign-in attempts ... locks out your user for one second. The lockout
# duration then doubles after each additional one failed attempt, up to a maximum of
# approximately 15 minutes", and 15 quiet minutes forget the failures (AWS developer guide,
# "Lockout behavior for failed sign-in attempts").
LOCKOUT_AFTER, LOCKOUT_MAX, LOCKOUT_FORGET = 5, 900.0, 900.0
_BAD_TIMESTAMP = "TIMESTAMP format should be EEE MMM d HH:mm:ss z yyyy in english."


@dataclass
class _Pending:
    """A sign-in between InitiateAuth and RespondToAuthChallenge."""
    pool: FakePool
    client: FakeClient
    user: FakeUser
    challenge: str
    expires: float  # wall time, on the fake's clock
    done: set[str] = field(default_factory=set)
    srp: cognito_srp.ServerSession | None = None
    wrong_codes: int = 0


@dataclass
class _Refresh:
    pool_id: str
    client_id: str
    username: str
    auth_time: int
    revoked: bool = False
    scopes: tuple[str, ...] = ()  # granted by a managed login; () for InitiateAuth's


class FakeCognito:
    def __init__(self, *, region: str = "us-east-1", host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.region, self.host, self.port = region, host, port
        self.clock = clock  # wall seconds: token times, session expiry, lockouts, TIMESTAMP age
        self.token_lifetime = 3600  # seconds, for ID and access tokens (ExpiresIn)
        self.clock_skew = 0.0  # seconds added to iat/exp: a Cognito whose clock is off
        self.delay = 0.0  # seconds every auth call waits before answering
        self.calls: Counter[str] = Counter()  # "InitiateAuth/USER_SRP_AUTH", "oauth2/token", ...
        # (start, end, call) on time.monotonic() for every auth call: when refreshes happened
        self.events: list[tuple[float, float, str]] = []
        self.pools: dict[str, FakePool] = {}
        self.clients: dict[str, FakeClient] = {}
        self._fault: str | None = None
        self._fault_times: int | None = None
        self._srp: dict[str, _Pending] = {}  # by SECRET_BLOCK
        self._sessions: dict[str, _Pending] = {}
        self._refresh: dict[str, _Refresh] = {}
        self.managed = ManagedLogin(self)
        self._runner: web.AppRunner | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again, on the same port after `stop`, so a test can make Cognito refuse
        connections for a while)."""
        app = web.Application()
        app.router.add_post("/", self._api)
        app.router.add_post("/oauth2/token", self._oauth2_token)
        app.router.add_get("/{pool}/.well-known/jwks.json", self._jwks)
        self.managed.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- configuration ----------------------------------------------------------------------

    def add_pool(self, pool_id: str | None = None, *, email_as_username: bool = False) -> str:
        pool_id = pool_id or f"{self.region}_{secrets.token_hex(5)}"
        self.pools[pool_id] = new_pool(pool_id, email_as_username)
        return pool_id

    def add_client(self, pool_id: str, client_id: str | None = None, *,
                   secret: str | None = None, scopes: Sequence[str] = (),
                   auth_flows: Sequence[str] = tuple(ALL_FLOWS),
                   oauth_flows: Sequence[str] | None = None, callback_urls: Sequence[str] = (),
                   identity_providers: Sequence[str] = ("COGNITO",)) -> str:
        """`oauth_flows` (AllowedOAuthFlows) defaults to client_credentials for a client with a
        secret and scopes, the only kind Cognito lets have it, and to none otherwise; `code`
        (the managed login) needs `callback_urls`, which Cognito takes only as https:// or
        http://localhost / http://127.0.0.1. `scopes` are the client's AllowedOAuthScopes."""
        client_id = client_id or secrets.token_hex(13)
        if oauth_flows is None:
            oauth_flows = ("client_credentials",) if secret and scopes else ()
        for url in callback_urls:
            if not re.fullmatch(r"https://[^\s#]+|http://(localhost|127\.0\.0\.1)(:\d+)?"
                                r"(/[^\s#]*)?", url):
                raise ValueError(f"Cognito refuses the callback URL {url!r}: https://, or "
                                 "http:// on localhost or 127.0.0.1 only")
        if "code" in oauth_flows and not callback_urls:
            raise ValueError("the code grant needs at least one callback URL")
        self.clients[client_id] = FakeClient(client_id, pool_id, secret, tuple(scopes),
                                             frozenset(auth_flows), frozenset(oauth_flows),
                                             tuple(callback_urls), tuple(identity_providers))
        return client_id

    def add_user(self, pool_id: str, username: str, password: str, *, email: str | None = None,
                 attributes: dict[str, str] | None = None, groups: Sequence[str] = (),
                 challenge: str | Sequence[str] | None = None, mfa_code: str = "123456",
                 enabled: bool = True) -> FakeUser:
        """`username` is what the user types. In a pool created with email_as_username the
        internal username is a UUID, as in Cognito, and `username` must be the email."""
        pool = self.pools[pool_id]
        wanted = [challenge] if isinstance(challenge, str) else list(challenge or ())
        unknown = set(wanted) - set(CHALLENGES)
        if unknown:
            raise ValueError(f"unknown challenge(s) {sorted(unknown)}; use {CHALLENGES}")
        if pool.email_as_username:
            email, internal = username, str(uuid.uuid4())
        else:
            internal = username
        user = FakeUser(internal, password, email, dict(attributes or {}), list(groups),
                        sorted(wanted, key=CHALLENGES.index), mfa_code, enabled)
        if pool.email_as_username:
            user.sub = internal
        set_password(pool_id, user, password)
        pool.users[internal] = user
        return user

    def set_fault(self, kind: str | None, times: int | None = None) -> None:
        """Make the next `times` auth calls (all, when None) fail: "throttle" answers
        TooManyRequestsException, "error" a 500. None clears. To refuse connections, `stop()`."""
        if kind not in (None, "throttle", "error"):
            raise ValueError(f"unknown fault {kind!r}")
        self._fault, self._fault_times = kind, times

    def revoke_refresh_tokens(self, username: str | None = None) -> int:
        hit = [r for r in self._refresh.values() if username in (None, r.username)]
        for r in hit:
            r.revoked = True
        return len(hit)

    def count(self, operation: str, flow: str | None = None) -> int:
        """Calls received (faulted ones included) for an operation, optionally one flow."""
        if flow:
            return self.calls[f"{operation}/{flow}"]
        return sum(n for k, n in self.calls.items() if k == operation
                   or k.startswith(operation + "/"))

    def issuer(self, pool_id: str) -> str:
        # Like Cognito's, the issuer plus /.well-known/jwks.json is the JWKS URL.
        return f"{self.url}/{pool_id}"

    def jwks_url(self, pool_id: str) -> str:
        return f"{self.issuer(pool_id)}/.well-known/jwks.json"

    def jwks(self, pool_id: str) -> dict[str, Any]:
        return jwks(self.pools[pool_id])

    # --- HTTP -------------------------------------------------------------------------------

    async def _guard(self, name: str) -> None:
        self.calls[name] += 1
        _CALL.set(name)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._fault and self._fault_times != 0:
            if self._fault_times is not None:
                self._fault_times -= 1
            if self._fault == "throttle":
                raise CognitoFault("TooManyRequestsException", "Rate exceeded")
            raise CognitoFault("InternalErrorException", "Internal server error", 500)

    async def _api(self, request: web.Request) -> web.Response:
        started, token = time.monotonic(), _CALL.set(None)
        try:
            return await self._api_call(request)
        finally:
            if name := _CALL.get():
                self.events.append((started, time.monotonic(), name))
            _CALL.reset(token)

    async def _api_call(self, request: web.Request) -> web.Response:
        try:
            op, body = await read_call(request, _TARGET, ("InitiateAuth",
                                                          "RespondToAuthChallenge"))
            if op == "InitiateAuth":
                flow = str(body.get("AuthFlow", ""))
                flow = "REFRESH_TOKEN_AUTH" if flow == "REFRESH_TOKEN" else flow
                await self._guard(f"{op}/{flow}")
                result = self._initiate(flow, self._client(body), body.get("AuthParameters")
                                        or {})
            elif op == "RespondToAuthChallenge":
                name = str(body.get("ChallengeName", ""))
                await self._guard(f"{op}/{name}")
                result = self._respond(name, self._client(body), body)
        except CognitoFault as f:
            return f.response()
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"__type": "SerializationException", "message": str(e)},
                                     status=400, content_type=AMZ_JSON)
        return web.json_response(result, content_type=AMZ_JSON)

    async def _jwks(self, request: web.Request) -> web.Response:
        if request.match_info["pool"] not in self.pools:
            raise web.HTTPNotFound()
        return web.json_response(self.jwks(request.match_info["pool"]))

    async def _oauth2_token(self, request: web.Request) -> web.Response:
        # Counted by grant ("oauth2/token/authorization_code"); count("oauth2/token") sums them.
        form = await request.post() if request.content_type == FORM else None
        grant = str(form.get("grant_type", "")) if form is not None else ""
        try:
            await self._guard(f"oauth2/token/{grant}" if grant in OAUTH_GRANTS
                              else "oauth2/token")
        except CognitoFault as f:
            status = 429 if f.kind == "TooManyRequestsException" else f.status
            return web.json_response({"error": "server_error" if status >= 500
                                      else "too_many_requests"}, status=status)
        # Every refusal below is Cognito's documented shape: 400 {"error": ...}.
        if form is None:
            return _oauth_error("invalid_request")  # "Must always be" a form (token endpoint)
        client, error = self._token_client(request.headers.getall("Authorization", []), form)
        if client is None:
            return _oauth_error(error)
        if not grant:
            return _oauth_error("invalid_request")
        if grant in ("authorization_code", "refresh_token"):
            return self.managed.token(grant, client, form)
        if grant != "client_credentials":
            return _oauth_error("unsupported_grant_type")
        if "client_credentials" not in client.oauth_flows:
            return _oauth_error("unauthorized_client")
        asked = str(form.get("scope", "")).split()
        if not client.scopes or not set(asked) <= set(client.scopes):
            return _oauth_error("invalid_scope")
        now = int(self.clock() + self.clock_skew)
        claims = {"sub": client.client_id, "token_use": "access", "scope": " ".join(
            asked or client.scopes), "auth_time": now, "client_id": client.client_id,
            "version": 2}
        token = sign(self.pools[client.pool_id], "access", claims, issuer=self.issuer(
            client.pool_id), now=now, lifetime=self.token_lifetime)
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime,
                                  "token_type": "Bearer"})

    def _token_client(self, authorization: list[str], form: Any,
                      ) -> tuple[FakeClient, str] | tuple[None, str]:
        """The client a token request authenticates as, by client_secret_basic or
        client_secret_post (Cognito takes either, never both at once), or, for a public client
        (no secret), by its client_id alone; or the error to answer."""
        body_id, body_secret = form.get("client_id"), form.get("client_secret")
        if len(authorization) > 1:
            return None, "invalid_request"
        if authorization:
            scheme, _, cred = authorization[0].partition(" ")
            if scheme.lower() != "basic" or body_secret is not None:
                return None, "invalid_request" if body_secret is not None else "invalid_client"
            try:
                decoded = base64.b64decode(cred.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None, "invalid_client"
            # no colon: an empty secret, which no confidential client has
            client_id, _, secret = decoded.partition(":")
            if body_id is not None and body_id != client_id:
                return None, "invalid_client"
        elif body_id is not None and body_secret is not None:
            client_id, secret = str(body_id), str(body_secret)
        elif body_id is not None:
            public = self.clients.get(str(body_id))
            # A client with a secret must prove it; one without has nothing to prove.
            if public is None or public.secret is not None:
                return None, "invalid_client"
            return public, ""
        else:
            return None, "invalid_client"
        client = self.clients.get(client_id)
        if (client is None or client.secret is None
                or not secrets.compare_digest(client.secret.encode(), secret.encode())):
            return None, "invalid_client"
        return client, ""

    # --- the operations ---------------------------------------------------------------------

    def _client(self, body: dict[str, Any]) -> FakeClient:
        client = self.clients.get(str(body.get("ClientId", "")))
        if client is None:
            raise CognitoFault("ResourceNotFoundException",
                               f"User pool client {body.get('ClientId')} does not exist.")
        return client

    def _check_secret_hash(self, client: FakeClient, params: dict[str, Any], user: str) -> None:
        if client.secret is None:
            return
        sent = params.get("SECRET_HASH")
        if not sent:
            raise CognitoFault("NotAuthorizedException", f"Client {client.client_id} is "
                               "configured with secret but SECRET_HASH was not received")
        expected = cognito_srp.secret_hash(user, client.client_id, client.secret)
        if not secrets.compare_digest(str(sent).encode(), expected.encode()):
            raise CognitoFault("NotAuthorizedException",
                               f"Unable to verify secret hash for client {client.client_id}")

    # --- shared with the managed login ------------------------------------------------------

    def check_password(self, pool: FakePool, typed: str, password: str) -> FakeUser:
        """The user `typed` names, if `password` is theirs; CognitoFault as the JSON API would
        refuse it (lockout included)."""
        user = self._user(pool, typed)
        self._password_checked(user, secrets.compare_digest(password.encode(),
                                                            user.password.encode()))
        return user

    def new_refresh_token(self, pool_id: str, client_id: str, username: str, auth_time: int,
                          scopes: tuple[str, ...] = ()) -> str:
        token = secrets.token_urlsafe(300)
        self._refresh[token] = _Refresh(pool_id, client_id, username, auth_time, scopes=scopes)
        return token

    def refresh_record(self, token: str) -> _Refresh | None:
        return self._refresh.get(token)

    def _user(self, pool: FakePool, name: str) -> FakeUser:
        user = pool.find(name)
        if user is None:
            raise CognitoFault("UserNotFoundException", "User does not exist.")
        if not user.enabled:
            raise CognitoFault("NotAuthorizedException", "User is disabled.")
        return user

    def _password_checked(self, user: FakeUser, right: bool) -> None:
        """Count a password check towards Cognito's lockout: a refusal while locked out (even
        with the right password) neither counts nor lengthens the lockout."""
        now = self.clock()
        if now < user.locked_until:
            raise CognitoFault("NotAuthorizedException", "Password attempts exceeded")
        if user.failures and now - user.last_failure >= LOCKOUT_FORGET:
            user.failures = 0
        if right:
            user.failures = 0
            return
        user.failures += 1
        user.last_failure = now
        if user.failures >= LOCKOUT_AFTER:
            user.locked_until = now + min(2.0 ** (user.failures - LOCKOUT_AFTER), LOCKOUT_MAX)
        raise CognitoFault("NotAuthorizedException", "Incorrect username or password.")

    def _initiate(self, flow: str, client: FakeClient, params: dict[str, Any]) -> dict[str, Any]:
        if flow not in ALL_FLOWS:
            raise CognitoFault("InvalidParameterException", f"Unsupported auth flow {flow}")
        if flow not in client.auth_flows:
            raise CognitoFault("InvalidParameterException",
                               f"{flow} flow not enabled for this client")
        pool = self.pools[client.pool_id]
        if flow == "REFRESH_TOKEN_AUTH":
            ref = self._refresh.get(str(params.get("REFRESH_TOKEN", "")))
            if ref is None or ref.client_id != client.client_id:
                raise CognitoFault("NotAuthorizedException", "Invalid Refresh Token")
            if ref.revoked:
                raise CognitoFault("NotAuthorizedException", "Refresh Token has been revoked")
            user = self._user(pool, ref.username)
            # Cognito wants the hash of its internal username here, not what the user typed.
            self._check_secret_hash(client, params, user.username)
            return {"AuthenticationResult": self._tokens(pool, client, user, ref.auth_time),
                    "ChallengeParameters": {}}
        typed = str(params.get("USERNAME", ""))
        self._check_secret_hash(client, params, typed)
        user = self._user(pool, typed)
        if flow == "USER_PASSWORD_AUTH":
            sent = str(params.get("PASSWORD", ""))
            self._password_checked(user, secrets.compare_digest(sent.encode(),
                                                                user.password.encode()))
            return self._next(self._pending(pool, client, user, ""))
        try:
            server = cognito_srp.ServerSession(user.verifier, str(params.get("SRP_A", "")))
        except ValueError:
            raise CognitoFault("InvalidParameterException", "SRP_A is missing or invalid") from None
        block = base64.b64encode(secrets.token_bytes(64)).decode()
        self._srp[block] = self._pending(pool, client, user, "PASSWORD_VERIFIER", srp=server)
        return {"ChallengeName": "PASSWORD_VERIFIER", "ChallengeParameters": {
            "SALT": user.salt, "SRP_B": f"{server.big_b:x}", "SECRET_BLOCK": block,
            "USER_ID_FOR_SRP": user.username, "USERNAME": user.username}}

    def _pending(self, pool: FakePool, client: FakeClient, user: FakeUser, challenge: str,
                 srp: cognito_srp.ServerSession | None = None) -> _Pending:
        return _Pending(pool, client, user, challenge, self.clock() + SESSION_LIFETIME, srp=srp)

    def _respond(self, name: str, client: FakeClient, body: dict[str, Any]) -> dict[str, Any]:
        answers: dict[str, Any] = body.get("ChallengeResponses") or {}
        key = (str(answers.get("PASSWORD_CLAIM_SECRET_BLOCK")) if name == "PASSWORD_VERIFIER"
               else str(body.get("Session")))
        store = self._srp if name == "PASSWORD_VERIFIER" else self._sessions
        pending = store.pop(key, None)  # one answer per session, right or wrong
        if pending is None or pending.client is not client:
            raise CognitoFault("NotAuthorizedException", "Invalid session for the user.")
        if self.clock() >= pending.expires:
            raise CognitoFault("NotAuthorizedException",
                               "Invalid session for the user, session is expired.")
        if pending.challenge != name:
            raise CognitoFault("InvalidParameterException",
                               f"expected challenge {pending.challenge}, got {name}")
        user, pool = pending.user, pending.pool
        if pending.pool.find(str(answers.get("USERNAME", ""))) is not user:
            raise CognitoFault("NotAuthorizedException", "Incorrect username or password.")
        self._check_secret_hash(client, answers, str(answers["USERNAME"]))
        if name == "PASSWORD_VERIFIER":
            self._password_verifier(pending, answers)
        elif name == "NEW_PASSWORD_REQUIRED":
            new = str(answers.get("NEW_PASSWORD", ""))
            if len(new) < 8:
                raise CognitoFault("InvalidPasswordException", "Password does not conform to "
                                   "policy: Password not long enough")
            set_password(pool.pool_id, user, new)
            user.challenges.remove(name)
        elif not secrets.compare_digest(str(answers.get(MFA_CODE_KEYS[name], "")).encode(),
                                        user.mfa_code.encode()):
            pending.wrong_codes += 1
            if pending.wrong_codes < MAX_CODE_ATTEMPTS:  # the user may try again, a few times
                self._sessions[key] = pending
            raise CognitoFault("CodeMismatchException", "Invalid code received for user")
        pending.done.add(name)
        return self._next(pending)

    def _password_verifier(self, pending: _Pending, answers: dict[str, Any]) -> None:
        parsed = cognito_srp.parse_timestamp(str(answers.get("TIMESTAMP", "")))
        if parsed is None:
            raise CognitoFault("InvalidParameterException", _BAD_TIMESTAMP)
        when, canonical = parsed
        assert pending.srp is not None
        right = pending.srp.check(
            pool_id=pending.pool.pool_id, user_id=pending.user.username,
            secret_block=str(answers.get("PASSWORD_CLAIM_SECRET_BLOCK", "")),
            timestamp=canonical, signature=str(answers.get("PASSWORD_CLAIM_SIGNATURE", "")))
        if abs(when.timestamp() - self.clock()) > TIMESTAMP_TOLERANCE:
            # A clock problem, not a guess at the password: refused without counting.
            raise CognitoFault("NotAuthorizedException", "Incorrect username or password.")
        self._password_checked(pending.user, right)

    def _next(self, pending: _Pending) -> dict[str, Any]:
        """After the password checks out: the user's next challenge, or tokens."""
        left = [c for c in pending.user.challenges if c not in pending.done]
        if not left:
            tokens = self._tokens(pending.pool, pending.client, pending.user, None)
            return {"AuthenticationResult": tokens, "ChallengeParameters": {}}
        pending.challenge, session = left[0], secrets.token_urlsafe(96)
        pending.expires, pending.wrong_codes = self.clock() + SESSION_LIFETIME, 0
        self._sessions[session] = pending
        params = {"USER_ID_FOR_SRP": pending.user.username}
        if pending.challenge == "NEW_PASSWORD_REQUIRED":
            params.update(requiredAttributes="[]", userAttributes=json.dumps(
                {"email": pending.user.email or ""}))
        elif pending.challenge in ("SMS_MFA", "EMAIL_OTP"):
            medium = "SMS" if pending.challenge == "SMS_MFA" else "EMAIL"
            params.update(CODE_DELIVERY_DELIVERY_MEDIUM=medium,
                          CODE_DELIVERY_DESTINATION="+*******0100" if medium == "SMS"
                          else "a***@e***")
        return {"ChallengeName": pending.challenge, "Session": session,
                "ChallengeParameters": params}

    def _tokens(self, pool: FakePool, client: FakeClient, user: FakeUser,
                auth_time: int | None) -> dict[str, Any]:
        now = int(self.clock() + self.clock_skew)
        result = user_tokens(pool, client, user, issuer=self.issuer(pool.pool_id), now=now,
                             lifetime=self.token_lifetime, auth_time=auth_time or now)
        if auth_time is None:  # a sign-in, not a refresh: Cognito hands out a refresh token
            result["RefreshToken"] = self.new_refresh_token(pool.pool_id, client.client_id,
                                                            user.username, now)
        return result


_oauth_error = oauth_error


async def _main(port: int) -> None:
    fake = FakeCognito(port=port)
    await fake.start()
    pool = fake.add_pool()
    client = fake.add_client(pool, "demo-client")
    m2m = fake.add_client(pool, "demo-m2m", secret="demo-m2m-secret", scopes=["demo/read"])
    fake.add_user(pool, "demo", "demo-password", email="demo@example.com")
    print(f"fake Cognito at {fake.url}\n\ncredentials:\n  user:\n    type: cognito\n"
          f"    flow: srp\n    endpoint: {fake.url}\n    user_pool_id: {pool}\n"
          f"    client_id: {client}\n    username: demo\n    password: demo-password\n"
          f"  machine:\n    type: cognito\n    flow: client_credentials\n"
          f"    domain: {fake.url}\n    client_id: {m2m}\n    client_secret: demo-m2m-secret\n"
          f"    scopes: [demo/read]\n\nJWKS: {fake.jwks_url(pool)}\nCtrl-C stops.", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(description="Run a fake Cognito on 127.0.0.1")
    parser.add_argument("--port", type=int, default=9229)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().port))
