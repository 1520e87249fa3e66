"""The fake Cognito's model: users, app clients and pools (each with its own ID and access
signing keys), and the RS256 tokens it mints with Cognito's claims."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.fakes import cognito_srp


@dataclass
class FakeUser:
    username: str  # Cognito's internal username (`cognito:username`); a UUID for email pools
    password: str
    email: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    challenges: list[str] = field(default_factory=list)  # NEW_PASSWORD_REQUIRED, then an MFA
    mfa_code: str = "123456"
    enabled: bool = True
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))
    salt: str = ""
    verifier: int = 0
    # Cognito's lockout: failed password checks so far, when the last one was, and until when
    # (wall time) every attempt is refused with "Password attempts exceeded"
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass
class FakeClient:
    client_id: str
    pool_id: str
    secret: str | None
    scopes: tuple[str, ...]
    auth_flows: frozenset[str]  # ExplicitAuthFlows: USER_PASSWORD_AUTH, USER_SRP_AUTH, ...
    oauth_flows: frozenset[str] = frozenset()  # AllowedOAuthFlows: client_credentials, code
    callback_urls: tuple[str, ...] = ()  # CallbackURLs: where the managed login may redirect
    identity_providers: tuple[str, ...] = ("COGNITO",)  # SupportedIdentityProviders


@dataclass
class FakePool:
    pool_id: str
    email_as_username: bool
    id_key: rsa.RSAPrivateKey
    access_key: rsa.RSAPrivateKey
    kids: tuple[str, str] = field(default_factory=lambda: (secrets.token_hex(8),
                                                             secrets.token_hex(8)))
    users: dict[str, FakeUser] = field(default_factory=dict)

    def find(self, name: str) -> FakeUser | None:
        if name in self.users:
            return self.users[name]
        return next((u for u in self.users.values() if u.email and u.email == name
                     and self.email_as_username), None)


def new_pool(pool_id: str, email_as_username: bool) -> FakePool:
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in "ia"]
    return FakePool(pool_id, email_as_username, keys[0], keys[1])


def set_password(pool_id: str, user: FakeUser, password: str) -> None:
    """Store what a pool stores: a fresh salt and the SRP verifier (the password is kept too,
    for USER_PASSWORD_AUTH)."""
    user.password, user.salt = password, secrets.token_hex(16)
    user.verifier = cognito_srp.verifier(pool_id, user.username, password, user.salt)


def jwks(pool: FakePool) -> dict[str, Any]:
    keys = []
    for kid, key in zip(pool.kids, (pool.id_key, pool.access_key), strict=True):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
    return {"keys": keys}


def sign(pool: FakePool, use: str, claims: dict[str, Any], *, issuer: str, now: int,
         lifetime: int) -> str:
    claims = {**claims, "iss": issuer, "iat": now, "exp": now + lifetime,
              "jti": str(uuid.uuid4())}
    key, kid = (pool.id_key, pool.kids[0]) if use == "id" else (pool.access_key, pool.kids[1])
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def user_tokens(pool: FakePool, client: FakeClient, user: FakeUser, *, issuer: str, now: int,
                lifetime: int, auth_time: int, scope: str = "aws.cognito.signin.user.admin",
                id_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """AuthenticationResult without the refresh token: ID and access token as Cognito shapes
    them (ID: aud, cognito:username, attributes; access: client_id, username, scope). A managed
    login's tokens carry the scopes granted and, in the ID token, its nonce (`id_extra`)."""
    common: dict[str, Any] = {"sub": user.sub, "auth_time": auth_time,
                              "origin_jti": str(uuid.uuid4()), "event_id": str(uuid.uuid4())}
    if user.groups:
        common["cognito:groups"] = list(user.groups)
    id_claims: dict[str, Any] = {**common, **user.attributes, "aud": client.client_id,
                                 "token_use": "id", "cognito:username": user.username,
                                 **(id_extra or {})}
    if user.email:
        id_claims.update(email=user.email, email_verified=True)
    access_claims = {**common, "client_id": client.client_id, "token_use": "access",
                     "scope": scope, "username": user.username}
    opts: dict[str, Any] = {"issuer": issuer, "now": now, "lifetime": lifetime}
    return {"AccessToken": sign(pool, "access", access_claims, **opts),
            "IdToken": sign(pool, "id", id_claims, **opts),
            "ExpiresIn": lifetime, "TokenType": "Bearer"}
