"""A fake Amazon Cognito Identity (identity pools): a real aiohttp server on 127.0.0.1 speaking
the enhanced flow's wire format (GetId, GetCredentialsForIdentity), for tests and the demo.

    identity = FakeCognitoIdentity()
    await identity.start()
    pool = identity.add_pool(providers=user_pool_provider(cognito, user_pool, client_id))
    ... GetId / GetCredentialsForIdentity against identity.url ...
    identity.issued[access_key_id]  # what a fake API Gateway needs to check a SigV4 signature

It refuses what Cognito Identity refuses, so code that passes here is not merely agreeing with
its own misreading: the JSON 1.1 Content-Type and a full `X-Amz-Target`, a JSON object body,
botocore's constraints on each member (pattern, length, required), unknown pools and identities,
guests where the pool allows none, and Logins that do not verify. ID tokens are verified for
real: RS256 signature against the user pool's JWKS (fetched from its URL, as AWS fetches it, or
given), `iss` against the provider name, `aud` against the pool's allowed app clients,
`token_use`, `exp` on the fake's clock. The messages are the ones AWS sends where they are known
from its users' bug reports (each is quoted below); where they are not, the wording is ours and
says so. A signed-in user keeps one identity per (pool, provider, `sub`); a guest gets a new one
per GetId, as in AWS (SDKs keep a guest's id themselves). Every credential handed out is kept in
`issued`, so a test can give the secret to whatever checks the signature. Faults (500s,
throttling, a dropped connection, an unreadable 200), a delay and per-operation counters let
tests prove retry and single-flight behaviour by counting; `clock` (wall seconds) drives every
time-dependent rule, so tests move time by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from proxy.credentials.aws_keys import AwsKeys
from proxy.fakes.aws_json import AMZ_JSON, read_call
from proxy.fakes.aws_json import JsonFault as IdentityFault
from proxy.fakes.cognito import FakeCognito
from proxy.secret import Secret

_TARGET = "AWSCognitoIdentityService."
OPERATIONS = ("GetId", "GetCredentialsForIdentity")
# botocore's cognito-identity model: IdentityPoolId and IdentityId are both
# {"min": 1, "max": 55, "pattern": "[\w-]+:[0-9a-f-]+"}; LoginsMap has at most 10 entries,
# IdentityProviderName 1..128 characters, IdentityProviderToken 1..50000.
_ID_PATTERN = re.compile(r"[\w-]+:[0-9a-f-]+")
_ID_MAX, _LOGINS_MAX, _NAME_MAX, _TOKEN_MAX = 55, 10, 128, 50_000
FAULTS = ("throttle", "down", "garbage")  # or an HTTP status (500, 503, ...)
_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # what AWS access key ids are made of

# Messages AWS is seen sending (GitHub issues of its SDKs, quoted verbatim there)
NO_GUESTS = "Unauthenticated access is not supported for this identity pool."
LOGINS_MISMATCH = ("Logins don't match. Please include at least one valid login for this "
                   "identity or identity pool.")
BAD_ISSUER = "Invalid login token. Issuer doesn't match providerName"
BAD_SIGNATURE = "Invalid login token. Couldn't verify signed token."
NOT_SUPPORTED = "Token is not from a supported provider of this identity pool."
NO_AUD = "Invalid login token. Missing a required claim: aud"
FORBIDDEN = "Access to Identity '{}' is forbidden."  # seen when the identity's login lapsed


@dataclass(frozen=True)
class Provider:
    """A Cognito user pool an identity pool trusts (an entry of CognitoIdentityProviders)."""
    client_ids: tuple[str, ...]  # the app clients whose ID tokens it accepts (`aud`)
    jwks_url: str | None = None  # where its keys are published, fetched per verification
    jwks: dict[str, Any] | None = None  # or the key set itself
    # the `iss` its tokens carry; None: https://<provider name>, as for every real user pool
    issuer: str | None = None


def user_pool_provider(cognito: FakeCognito, user_pool_id: str,
                       *client_ids: str) -> dict[str, Provider]:
    """The `providers` entry for a FakeCognito user pool. Its provider name is its issuer
    without the scheme, as in AWS; the issuer is http://127.0.0.1:<port>/<id> rather than
    AWS's https form, hence the explicit `issuer`."""
    issuer = cognito.issuer(user_pool_id)
    return {issuer.split("://", 1)[1]: Provider(tuple(client_ids),
                                                jwks_url=cognito.jwks_url(user_pool_id),
                                                issuer=issuer)}


@dataclass(frozen=True)
class IssuedKeys:
    """Temporary credentials the fake handed out, for whatever has to check a signature."""
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    identity_id: str
    authenticated: bool
    expiration: float  # epoch seconds on the fake's clock

    def aws_keys(self, access_key_id: str) -> AwsKeys:
        return AwsKeys(access_key_id, Secret(self.secret_access_key),
                       Secret(self.session_token))


@dataclass
class FakeIdentityPool:
    pool_id: str
    allow_unauthenticated: bool
    providers: dict[str, Provider]


@dataclass
class FakeIdentity:
    identity_id: str
    pool_id: str
    logins: set[tuple[str, str]] = field(default_factory=set)  # (provider, sub); empty: guest


class IssuedView(Mapping[str, str]):
    """A live view of the keys a FakeCognitoIdentity handed out: access key id -> its secret
    key (`what="secret_access_key"`) or its session token (`what="session_token"`), the shape
    the fake API Gateway's IAM mode takes. `revoked` keys are gone from the view (as revoked
    or expired credentials are for API Gateway). Truthy even while empty, so the API Gateway
    fake is in IAM mode before the first key is issued."""

    def __init__(self, identity: FakeCognitoIdentity, what: str) -> None:
        self.identity, self.what = identity, what
        self.revoked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        if key in self.revoked:
            raise KeyError(key)
        return str(getattr(self.identity.issued[key], self.what))

    def __iter__(self) -> Iterator[str]:
        return iter([k for k in self.identity.issued if k not in self.revoked])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __bool__(self) -> bool:
        return True


class FakeCognitoIdentity:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.host, self.port = host, port
        self.clock = clock  # wall seconds: token expiry, credential Expiration
        self.credentials_lifetime = 3600.0  # seconds: what AWS gives an identity pool role
        self.delay = 0.0  # seconds every call waits before answering
        self.calls: Counter[str] = Counter()  # per operation, faulted calls included
        self.pools: dict[str, FakeIdentityPool] = {}
        self.identities: dict[str, FakeIdentity] = {}
        self.issued: dict[str, IssuedKeys] = {}  # by access key id
        self._faults: deque[int | str] = deque()
        self._by_login: dict[tuple[str, str, str], str] = {}  # (pool, provider, sub) -> id
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen (again on the same port after `stop`, so a test can make the service
        refuse connections for a while); returns the URL."""
        app = web.Application()
        app.router.add_post("/", self._api)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession()
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self._http:
            await self._http.close()
            self._http = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- configuration ----------------------------------------------------------------------

    def add_pool(self, region: str = "us-east-1", *, allow_unauthenticated: bool = True,
                 providers: Mapping[str, Provider] | None = None,
                 pool_id: str | None = None) -> str:
        pool_id = pool_id or f"{region}:{uuid.uuid4()}"
        self.pools[pool_id] = FakeIdentityPool(pool_id, allow_unauthenticated,
                                               dict(providers or {}))
        return pool_id

    def fail_next(self, n: int = 1, fault: int | str = 500) -> None:
        """Make the next `n` calls fail: an HTTP status (5xx answers InternalErrorException),
        "throttle" (400 TooManyRequestsException), "down" (the connection is dropped without
        an answer) or "garbage" (a 200 whose body is not JSON, as from a captive portal)."""
        if not (isinstance(fault, int) and 400 <= fault <= 599) and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: an HTTP status or one of {FAULTS}")
        self._faults.extend([fault] * n)

    def count(self, operation: str) -> int:
        """Calls of an operation that passed the wire-format checks (faulted ones included)."""
        return self.calls[operation]

    # --- HTTP -------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        try:
            op, body = await read_call(request, _TARGET, OPERATIONS, empty_body=True)
            self.calls[op] += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self._faults:
                dropped = self._fault(request, self._faults.popleft())
                if dropped is not None:
                    return dropped
            if op == "GetId":
                result = await self._get_id(body)
            else:
                result = await self._get_credentials(body)
        except IdentityFault as f:
            return f.response()
        return web.Response(text=json.dumps(result), content_type=AMZ_JSON)

    def _fault(self, request: web.Request, fault: int | str) -> web.StreamResponse | None:
        if fault == "throttle":
            raise IdentityFault("TooManyRequestsException", "Rate exceeded")
        if fault == "down":
            if request.transport is not None:
                request.transport.abort()  # no status line at all, as a dying host gives
            return web.Response(status=500)  # never sent: the connection is gone
        if fault == "garbage":
            return web.Response(text="<html>Sign in to the hotel Wi-Fi</html>",
                                content_type="text/html")
        assert isinstance(fault, int)
        if fault >= 500:
            raise IdentityFault("InternalErrorException", "Internal server error", fault)
        raise IdentityFault(f"HTTP{fault}", f"fault {fault}", fault)

    # --- the operations ---------------------------------------------------------------------

    async def _get_id(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = _id_member(body, "IdentityPoolId", "identityPoolId")
        logins = _logins(body)  # every member is validated before anything is looked up
        pool = self._pool(pool_id)
        if not logins:
            if not pool.allow_unauthenticated:
                raise IdentityFault("NotAuthorizedException", NO_GUESTS)
            return {"IdentityId": self._new_identity(pool).identity_id}
        verified = [await self._verify(pool, name, token) for name, token in logins.items()]
        found = {self._by_login[(pool.pool_id, name, sub)] for name, sub in verified
                 if (pool.pool_id, name, sub) in self._by_login}
        if len(found) > 1:
            raise IdentityFault("ResourceConflictException",  # our wording
                                "These logins belong to different identities.")
        identity = self.identities[found.pop()] if found else self._new_identity(pool)
        for name, sub in verified:  # several logins at once link them into one identity
            identity.logins.add((name, sub))
            self._by_login[(pool.pool_id, name, sub)] = identity.identity_id
        return {"IdentityId": identity.identity_id}

    async def _get_credentials(self, body: dict[str, Any]) -> dict[str, Any]:
        identity_id = _id_member(body, "IdentityId", "identityId")
        logins = _logins(body)
        identity = self.identities.get(identity_id)
        if identity is None:
            raise IdentityFault("ResourceNotFoundException",  # our wording
                                f"Identity '{identity_id}' not found.")
        pool = self.pools[identity.pool_id]
        if not identity.logins:
            if logins:  # "Logins should not be specified ... for an unauthenticated identity"
                raise IdentityFault("NotAuthorizedException", LOGINS_MISMATCH)
            if not pool.allow_unauthenticated:
                raise IdentityFault("NotAuthorizedException", NO_GUESTS)
        elif not logins:
            # an authenticated identity's credentials are for whoever proves to be its user
            raise IdentityFault("NotAuthorizedException", FORBIDDEN.format(identity_id))
        for name, token in logins.items():
            if await self._verify(pool, name, token) not in identity.logins:
                raise IdentityFault("NotAuthorizedException", FORBIDDEN.format(identity_id))
        return {"IdentityId": identity_id, "Credentials": self._issue(identity)}

    def _pool(self, pool_id: str) -> FakeIdentityPool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise IdentityFault("ResourceNotFoundException",  # our wording
                                f"IdentityPool '{pool_id}' not found.")
        return pool

    def _new_identity(self, pool: FakeIdentityPool) -> FakeIdentity:
        region = pool.pool_id.split(":", 1)[0]
        identity = FakeIdentity(f"{region}:{uuid.uuid4()}", pool.pool_id)
        self.identities[identity.identity_id] = identity
        return identity

    def _issue(self, identity: FakeIdentity) -> dict[str, Any]:
        key_id = "ASIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()  # 40 characters, like AWS
        # long and full of + / =, like STS's, so header handling downstream is exercised
        token = base64.b64encode(secrets.token_bytes(600)).decode()
        expiration = self.clock() + self.credentials_lifetime
        self.issued[key_id] = IssuedKeys(secret, token, identity.identity_id,
                                         bool(identity.logins), expiration)
        return {"AccessKeyId": key_id, "SecretKey": secret, "SessionToken": token,
                "Expiration": expiration}

    async def _verify(self, pool: FakeIdentityPool, name: str, token: str) -> tuple[str, str]:
        """The (provider, sub) an ID token proves, or the refusal AWS gives it, in AWS's order
        as far as its messages show it: the key is compared with the token's `iss` before the
        pool's configuration is consulted (a misspelt key gets BAD_ISSUER, not NOT_SUPPORTED)."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise IdentityFault("NotAuthorizedException", BAD_SIGNATURE) from None
        if str(unverified.get("iss", "")).split("://", 1)[-1] != name:
            raise IdentityFault("NotAuthorizedException", BAD_ISSUER)
        if not pool.providers:
            raise IdentityFault("NotAuthorizedException", LOGINS_MISMATCH)
        provider = pool.providers.get(name)
        if provider is None:
            raise IdentityFault("NotAuthorizedException", NOT_SUPPORTED)
        if unverified["iss"] != (provider.issuer or f"https://{name}"):  # http:// for https://
            raise IdentityFault("NotAuthorizedException", BAD_ISSUER)
        try:
            key = next(k for k in (await self._keys(provider)).keys
                       if k.key_id == header.get("kid"))
            # Only the signature here: every claim is checked below on the fake's clock.
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "verify_aud": False, "verify_iss": False})
        except (jwt.PyJWTError, StopIteration):
            raise IdentityFault("NotAuthorizedException", BAD_SIGNATURE) from None
        exp, now = claims.get("exp"), int(self.clock())
        if not isinstance(exp, int) or now >= exp:
            raise IdentityFault("NotAuthorizedException",
                                f"Invalid login token. Token expired: {now} >= {exp}")
        if "aud" not in claims:  # what an access token (client_id, no aud) gets
            raise IdentityFault("NotAuthorizedException", NO_AUD)
        if claims.get("token_use") != "id":
            raise IdentityFault("NotAuthorizedException",  # our wording
                                "Invalid login token. Not an ID token.")
        if claims["aud"] not in provider.client_ids:  # seen for a token of another app client
            raise IdentityFault("NotAuthorizedException", NOT_SUPPORTED)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise IdentityFault("NotAuthorizedException",  # our wording
                                "Invalid login token. Missing a required claim: sub")
        return name, sub

    async def _keys(self, provider: Provider) -> jwt.PyJWKSet:
        if provider.jwks is not None:
            return jwt.PyJWKSet.from_dict(provider.jwks)
        assert provider.jwks_url and self._http
        try:
            async with self._http.get(provider.jwks_url) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError):
            # the user pool is down or answers nonsense: a dependency's failure, not a refusal
            raise IdentityFault("ExternalServiceException",  # our wording
                                "Could not fetch the identity provider's keys.") from None
        return jwt.PyJWKSet.from_dict(data)


def _id_member(body: dict[str, Any], name: str, member: str) -> str:
    """A required IdentityPoolId or IdentityId, checked as AWS checks it (ValidationException
    with this message: seen quoted in SDK bug reports for identityPoolId)."""
    value = body.get(name)
    if value is None:
        raise IdentityFault("ValidationException", "1 validation error detected: Value null "
                            f"at '{member}' failed to satisfy constraint: Member must not be "
                            "null")
    if not isinstance(value, str):
        raise IdentityFault("SerializationException", f"{name} must be a string")
    if not 1 <= len(value) <= _ID_MAX:
        raise IdentityFault("ValidationException", f"1 validation error detected: Value "
                            f"'{value}' at '{member}' failed to satisfy constraint: Member "
                            f"must have length between 1 and {_ID_MAX}")
    if not _ID_PATTERN.fullmatch(value):
        raise IdentityFault("ValidationException", f"1 validation error detected: Value "
                            f"'{value}' at '{member}' failed to satisfy constraint: Member "
                            "must satisfy regular expression pattern: [\\w-]+:[0-9a-f-]+")
    return value


def _logins(body: dict[str, Any]) -> dict[str, str]:
    logins = body.get("Logins")
    if logins is None:
        return {}
    if not isinstance(logins, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in logins.items()):
        raise IdentityFault("SerializationException", "Logins must map strings to strings")
    # validation messages never quote a token: the model marks IdentityProviderToken sensitive
    if len(logins) > _LOGINS_MAX:
        raise IdentityFault("ValidationException", "1 validation error detected: Value at "
                            "'logins' failed to satisfy constraint: Member must have length "
                            f"less than or equal to {_LOGINS_MAX}")
    for name, token in logins.items():
        if not 1 <= len(name) <= _NAME_MAX or not 1 <= len(token) <= _TOKEN_MAX:
            raise IdentityFault("ValidationException", "1 validation error detected: Value at "
                                "'logins' failed to satisfy constraint: Map keys must have "
                                f"length between 1 and {_NAME_MAX}, values between 1 and "
                                f"{_TOKEN_MAX}")
    return logins
