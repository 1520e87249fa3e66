"""`type: iam`: API Gateway's AWS_IAM authorization. Each request is signed with SigV4
(proxy/credentials/sigv4.py) using AWS credentials from one of three sources:

- `identity_pool`: a Cognito identity pool, as Amplify does it (enhanced flow: GetId, then
  GetCredentialsForIdentity). A guest identity unless `login` names a cognito credential, whose
  ID token goes in `Logins` and buys the pool's authenticated role; the credentials are bought
  again when that token changes. A guest's identity id is kept in the token cache directory
  (as Amplify keeps it in local storage) so a restarted proxy is the same guest.
- `keys`: an access key (and optional session token) from the config.
- `aws`: botocore's default chain and profiles (proxy/credentials/aws_chain.py).

Temporary credentials are an expiring value like any token: the refresh core keeps them fresh.
The signature itself depends on the request, so `current()` never answers: the forwarder reads
the body, hashes it, and asks `headers_for` (`requires_request_body`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from proxy.config import IamCredential
from proxy.credentials import token_store
from proxy.credentials.aws_chain import AwsChain  # loads without botocore (an optional extra)
from proxy.credentials.aws_keys import AwsKeys
from proxy.credentials.base import (
    CredentialSource,
    CredentialsUnavailable,
    Description,
    Headers,
    Outgoing,
)
from proxy.credentials.clock import Clock, SystemClock
from proxy.credentials.identity_api import (
    IdentityApi,
    IdentityError,
    identity_endpoint,
    logins_key,
)
from proxy.credentials.refresh import Failure, Fetched, Refresher
from proxy.credentials.shared import Codec, SharedSlot
from proxy.credentials.sigv4 import EMPTY_SHA256, Signer, region_from_host
from proxy.secret import Secret

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authproxy.iam")


class _SignsIn(Protocol):
    """What an identity pool needs of its `login` credential (a cognito one)."""

    name: str

    async def id_token(self) -> str: ...


@dataclass(frozen=True)
class _Creds:
    keys: AwsKeys = field(repr=False)
    login_token: str | None = field(default=None, repr=False)  # the ID token they were bought with
    identity_id: str | None = None


class IamSource(CredentialSource):
    requires_request_body: ClassVar[bool] = True  # the signature covers the body's SHA-256
    refreshable: ClassVar[bool] = True
    also_sets: ClassVar[frozenset[str]] = frozenset({"x-amz-date", "x-amz-security-token"})
    signs_url: ClassVar[bool] = True  # WebSocket `$connect`: a presigned handshake URL

    def __init__(self, config: IamCredential, *, cache_dir: Path | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self.name, self.header_name = config.name, "Authorization"
        self.max_request_body = config.max_signed_body
        self._cfg = config
        self.uses_http = config.source == "identity_pool"  # keys and botocore's chain: no
        self._clock: Clock = clock or SystemClock()
        self._cache_dir = cache_dir or token_store.default_dir()
        self._signers: dict[str, Signer] = {}  # by Host: the region comes from the host
        self._session: aiohttp.ClientSession | None = None
        self._login: _SignsIn | None = None
        self._guest_id: str | None = None
        self._authed: tuple[str, str] | None = None  # (user's sub, identity id)
        self._static: _Creds | None = None
        self._core: Refresher[_Creds] | None = None
        self._chain: AwsChain | None = None
        if config.source == "keys":
            assert config.secret_access_key is not None
            self._static = _Creds(AwsKeys(config.access_key_id, config.secret_access_key,
                                          config.session_token))
        else:
            if config.source == "aws":
                self._chain = AwsChain(config.profile)
            self._core = Refresher(config.name, self._fetch, self._classify,
                                   margin=config.refresh_margin, clock=clock, rng=rng)

    # --- the CredentialSource protocol -------------------------------------------------------

    def link(self, sources: Mapping[str, CredentialSource]) -> None:
        if self._cfg.login is not None:
            login = sources[self._cfg.login]
            assert hasattr(login, "id_token"), "config.py lets only cognito credentials in"
            self._login = login

    def depends_on(self) -> tuple[str, ...]:
        return (self._cfg.login,) if self._cfg.login else ()

    def share(self, slot: SharedSlot) -> None:
        # Identity-pool credentials only: botocore's chain gives different identities on
        # different machines with the same settings (instance roles, IRSA, env variables).
        if self._core is not None and self._chain is None:
            self._core.share(slot.store(_CODEC), slot.key(_CODEC), adopted=self._adopted)

    def _adopted(self, creds: _Creds) -> None:
        """Credentials another member bought: its identity id is ours too."""
        if creds.identity_id is None:
            return
        if self._login is None:
            self._guest_id = creds.identity_id
        elif creds.login_token is not None:
            import jwt  # PyJWT: only an identity pool signed in through `login` reads a token

            try:
                sub = str(jwt.decode(creds.login_token,
                                     options={"verify_signature": False}).get("sub", ""))
            except jwt.PyJWTError:
                return
            self._authed = (sub, creds.identity_id)

    async def start(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        if self._core is not None:
            await self._core.start()

    async def close(self) -> None:
        if self._core is not None:
            await self._core.close()

    def ready(self) -> bool:
        # Signatures are made per request; ready means valid credentials are at hand.
        return self._core is None or self._core.current() is not None

    def current_for(self, request: Outgoing) -> Headers | None:
        creds = self._held_creds()
        return None if creds is None else self._sign(creds, request)

    async def headers_for(self, request: Outgoing) -> Headers:
        return self._sign(self._held_creds() or await self._creds(), request)

    def _sign(self, creds: _Creds, request: Outgoing) -> Headers:
        return self._signer(request.host).sign(
            creds.keys, request.method, request.host, request.raw_path, request.query,
            request.headers, request.body_sha256 or EMPTY_SHA256, self._clock.time())

    async def presign(self, request: Outgoing, expires: int) -> tuple[str, Headers]:
        creds = self._held_creds() or await self._creds()
        signer = self._signer(request.host)
        query = signer.presign(creds.keys, request.method, request.host, request.raw_path,
                               request.query, expires, self._clock.time())
        # What `rejected` looks for: the key id these credentials signed with.
        return query, (("Authorization", f"Credential={creds.keys.access_key_id}/"),)

    async def rejected(self, sent: Headers) -> bool:
        if self._core is None:
            return False  # fixed keys: fetching again changes nothing
        signature = next((v for k, v in sent if k.lower() == "authorization"), "")
        return await self._core.force(lambda c: f"Credential={c.keys.access_key_id}/"
                                      in signature)

    async def aws_credentials(self) -> tuple[AwsKeys, float | None]:
        """The credentials themselves (for `authproxy token --format`), with their expiry as
        epoch seconds when they have one."""
        creds = await self._creds()
        if self._core is None:
            return creds.keys, None
        expires = self._core.status()["expires_in"]
        return creds.keys, None if expires is None else self._clock.time() + float(expires)

    def describe(self) -> Description:
        cfg = self._cfg
        region = cfg.region or "the endpoint host's" + (
            f" (else {cfg.pool_region})" if cfg.source == "identity_pool" else "")
        where = {"identity_pool": f"identity pool {cfg.identity_pool_id}, " + (
                     f"signed in through {cfg.login}" if cfg.login else "guest"),
                 "keys": f"access key {cfg.access_key_id[:4]}…"
                         + (" with a session token" if cfg.session_token else ""),
                 "aws": "botocore's default chain" + (f", profile {cfg.profile}"
                                                       if cfg.profile else "")}[cfg.source]
        signed = "host;x-amz-date" + (";x-amz-security-token" if cfg.source != "keys"
                                      or cfg.session_token else "") + " (+content-type)"
        return Description(
            name=self.name, type="iam", header=self.header_name,
            summary=f"iam {cfg.source}: SigV4 {cfg.service}, {where}",
            how=(f"iam {cfg.source}, SigV4 for {cfg.service} in region {region}; {where}; "
                 f"signed headers {signed}; body hashed first (at most {cfg.max_signed_body} "
                 "bytes)"),
            headers=(("Authorization", f"AWS4-HMAC-SHA256 Credential=<key id>/<date>/"
                      f"<region>/{cfg.service}/aws4_request, SignedHeaders=..., "
                      "Signature=<per request>"),
                     ("X-Amz-Date", "<per request>"))
            + ((("X-Amz-Security-Token", "<session token>"),)
               if cfg.source != "keys" or cfg.session_token else ()),
            redacted=True, flow=cfg.source, refreshed=self._core is not None, aws_keys=True)

    def status(self) -> dict[str, Any]:
        cfg = self._cfg
        base: dict[str, Any] = {"name": self.name, "type": "iam", "flow": cfg.source,
                                "header": self.header_name, "service": cfg.service,
                                "region": cfg.region}
        if self._core is None:
            assert self._static is not None
            return base | {"state": "ready", "ready": True,
                           "access_key_id": self._static.keys.shown_key_id}
        core, held = self._core.status(), self._core.held()
        return base | {
            **core, "access_key_id": held.keys.shown_key_id if held else None,
            "identity_id": held.identity_id if held else None,
            "identity_pool_id": cfg.identity_pool_id or None, "login": cfg.login}

    # --- credentials -------------------------------------------------------------------------

    def _held_creds(self) -> _Creds | None:
        """The credentials to sign with when no wait can be needed (the hot path: no
        coroutine); None when they must be fetched, or checked against a new ID token."""
        if self._core is None:
            return self._static
        return self._core.current() if self._login is None else None

    async def _creds(self) -> _Creds:
        if self._core is None:
            assert self._static is not None
            return self._static
        creds = await self._core.get()
        if self._login is not None and creds.login_token is not None:
            token = await self._login.id_token()
            if token != creds.login_token:
                # A new sign-in (or a refreshed ID token) buys its own credentials, as
                # Amplify drops its cached ones when the ID token changes.
                await self._core.renew()
                creds = await self._core.get()
        return creds

    def _signer(self, host: str) -> Signer:
        signer = self._signers.get(host)
        if signer is None:
            region = self._cfg.region or region_from_host(host) or (
                self._cfg.pool_region or None)
            if region is None:
                raise CredentialsUnavailable(
                    f"no signing region for {host}: set credentials.{self.name}.region")
            signer = self._signers[host] = Signer(region, self._cfg.service)
        return signer

    async def _fetch(self) -> Fetched[_Creds]:
        if self._chain is not None:
            got = await self._chain.fetch()
            return Fetched(_Creds(got.value), got.lifetime, got.what)
        return await self._from_pool()

    async def _from_pool(self) -> Fetched[_Creds]:
        assert self._session is not None
        cfg = self._cfg
        api = IdentityApi(self._session, cfg.endpoint or identity_endpoint(cfg.pool_region))
        token = await self._login.id_token() if self._login is not None else None
        logins = None
        if token is not None:
            import jwt  # see _adopted

            claims = jwt.decode(token, options={"verify_signature": False})
            logins = {logins_key(str(claims["iss"])): token}
            sub = str(claims.get("sub", ""))
            if self._authed is None or self._authed[0] != sub:
                self._authed = (sub, await api.get_id(cfg.identity_pool_id, logins))
            identity_id = self._authed[1]
        else:
            identity_id = self._guest_id or self._load_guest() or await self._new_guest(api)
        try:
            keys, expiration = await api.get_credentials(identity_id, logins)
        except IdentityError as e:
            if token is not None or e.transient or e.kind not in (
                    "ResourceNotFoundException", "NotAuthorizedException"):
                raise
            # A kept guest id the pool no longer knows (deleted, or another pool's): start over
            # as a new guest, once.
            log.info("credential %s: guest identity %s refused (%s); getting a new one",
                     self.name, identity_id, e.kind)
            identity_id = await self._new_guest(api)
            keys, expiration = await api.get_credentials(identity_id, None)
        lifetime = expiration - self._clock.time()
        who = "signed-in" if token else "guest"
        return Fetched(_Creds(keys, token, identity_id), lifetime,
                       f"{who} credentials for {identity_id}")

    def _classify(self, e: Exception) -> Failure:
        if isinstance(e, IdentityError):
            fix = ""
            if e.kind == "NotAuthorizedException" and self._login is None:
                fix = ("; does the identity pool allow unauthenticated (guest) identities? "
                       f"Or set credentials.{self.name}.login")
            elif e.kind == "ResourceNotFoundException":
                fix = f"; check credentials.{self.name}.identity_pool_id"
            return Failure(f"Cognito Identity refused ({e.kind}: {e.message}){fix}"
                           if not e.transient else f"Cognito Identity unavailable ({e.kind}: "
                           f"{e.message})", e.transient)
        if isinstance(e, CredentialsUnavailable):
            # The login credential's own trouble: its message says what to do; it retries.
            return Failure(f"login credential {self._cfg.login}: {e}", True)
        if self._chain is not None:
            return self._chain.classify(e)
        log.debug("credential %s: fetch failed", self.name, exc_info=e)
        return Failure(f"unexpected answer from Cognito Identity ({type(e).__name__})", True)

    # --- the guest identity id, kept across restarts -----------------------------------------

    def _guest_path(self) -> Path:
        return self._cache_dir / f"identity.{self._cfg.identity_pool_id.replace(':', '_')}.json"

    def _load_guest(self) -> str | None:
        try:
            data = json.loads(self._guest_path().read_text(encoding="utf-8"))
            self._guest_id = str(data["identity_id"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable guest identity file %s (%s)", self._guest_path(),
                        type(e).__name__)
            return None
        return self._guest_id

    async def _new_guest(self, api: IdentityApi) -> str:
        self._guest_id = await api.get_id(self._cfg.identity_pool_id, None)
        try:
            token_store.write_private(self._guest_path(), {"version": 1,
                                                           "identity_id": self._guest_id})
        except OSError as e:
            log.warning("cannot keep the guest identity id in %s (%s): a restart will be a "
                        "new guest", self._guest_path(), e.strerror)
        return self._guest_id



def _encode(c: _Creds) -> dict[str, Any]:
    keys = c.keys
    return {"access_key_id": keys.access_key_id,
            "secret_access_key": keys.secret_access_key.reveal(),
            "session_token": keys.session_token.reveal() if keys.session_token else None,
            "login_token": c.login_token, "identity_id": c.identity_id}


def _decode(d: dict[str, Any]) -> _Creds:
    token = d.get("session_token")
    return _Creds(AwsKeys(str(d["access_key_id"]), Secret(str(d["secret_access_key"])),
                          Secret(str(token)) if token else None),
                  str(d["login_token"]) if d.get("login_token") else None,
                  str(d["identity_id"]) if d.get("identity_id") else None)


_CODEC: Codec[_Creds] = Codec("iam-credentials/1", _encode, _decode)
