"""Cognito Identity's wire protocol as `source: identity_pool` uses it: the enhanced flow's GetId
and GetCredentialsForIdentity (unsigned JSON 1.1 calls: both are public operations in
botocore's model), and the line between transient failures (retry later) and refusals (do not).

Nothing here logs or raises a secret: calls are logged by operation and status only, the ID
tokens in `Logins` are scrubbed from every message the service sends back, and the returned
secret key and session token go straight into `Secret`s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from proxy.credentials.aws_json import error_kind, error_message, json_object
from proxy.credentials.aws_keys import AwsKeys
from proxy.secret import Secret

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authproxy.identity")

_TARGET = "AWSCognitoIdentityService."
# Throttling and trouble inside AWS (or at the identity provider behind it): trying again later
# can help. Every other answer (NotAuthorizedException above all) says the same thing next time.
TRANSIENT = frozenset({
    "TooManyRequestsException", "ThrottlingException", "InternalErrorException",
    "ExternalServiceException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure"})
_MIN_SCRUB = 8  # pieces of a token shorter than this are too common to be worth masking


class IdentityError(Exception):
    """A refusal or failure from Cognito Identity (or on the way to it). `kind` is the service's
    error type (`NotAuthorizedException`) or ours (`NetworkError`, `InvalidResponse`)."""

    def __init__(self, kind: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.transient = kind, message, transient


def identity_endpoint(region: str) -> str:
    """Cognito Identity's regional endpoint; the China partition has its own DNS suffix."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://cognito-identity.{region}.{suffix}/"


def logins_key(id_token_issuer: str) -> str:
    """The `Logins` key for an ID token: its `iss` without the scheme, which is the provider
    name the identity pool knows the user pool by (`cognito-idp.<region>.amazonaws.com/<id>`)."""
    return id_token_issuer.split("://", 1)[-1].rstrip("/")


class IdentityApi:
    def __init__(self, session: aiohttp.ClientSession, endpoint: str,
                 timeout: float = 10.0) -> None:
        # Imported here, as in _call: iam.py loads this module for its types and failures
        # whatever its source, and only an identity pool makes an IdentityApi.
        import aiohttp

        self._http = session
        self._url = endpoint.rstrip("/") + "/"
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def get_id(self, identity_pool_id: str,
                     logins: Mapping[str, str] | None = None) -> str:
        """A guest identity id (a new one each call), or the signed-in user's own (stable)."""
        body: dict[str, Any] = {"IdentityPoolId": identity_pool_id}
        if logins:
            body["Logins"] = dict(logins)
        data = await self._call("GetId", body, (logins or {}).values())
        identity_id = data.get("IdentityId")
        if not isinstance(identity_id, str) or not identity_id:
            raise IdentityError("InvalidResponse", "GetId answered without an IdentityId",
                                transient=True)
        return identity_id

    async def get_credentials(self, identity_id: str, logins: Mapping[str, str] | None = None
                              ) -> tuple[AwsKeys, float]:
        """Temporary keys for the identity's role, and their Expiration (epoch seconds)."""
        body: dict[str, Any] = {"IdentityId": identity_id}
        if logins:
            body["Logins"] = dict(logins)
        data = await self._call("GetCredentialsForIdentity", body, (logins or {}).values())
        creds = data.get("Credentials")
        if not isinstance(creds, dict):
            raise IdentityError("InvalidResponse", "GetCredentialsForIdentity answered "
                                "without Credentials", transient=True)
        fields = {name: creds.get(name) for name in ("AccessKeyId", "SecretKey", "SessionToken")}
        missing = [name for name, value in fields.items()
                   if not isinstance(value, str) or not value]
        expiration: Any = creds.get("Expiration")
        # JSON 1.1 sends timestamps as epoch seconds, often with a fraction; a bool is a number
        # to Python but never a timestamp.
        if not isinstance(expiration, int | float) or isinstance(expiration, bool):
            missing.append("Expiration")
        if missing:
            # names only: the values present may be the very secrets this must not print
            raise IdentityError("InvalidResponse", "Credentials without usable "
                                f"{', '.join(missing)}", transient=True)
        keys = AwsKeys(access_key_id=str(fields["AccessKeyId"]),
                       secret_access_key=Secret(str(fields["SecretKey"])),
                       session_token=Secret(str(fields["SessionToken"])))
        return keys, float(expiration)

    async def _call(self, operation: str, body: dict[str, Any],
                    secrets: Iterable[str]) -> dict[str, Any]:
        import aiohttp  # loaded by __init__ already

        headers = {"X-Amz-Target": _TARGET + operation,
                   "Content-Type": "application/x-amz-json-1.1"}
        started = time.monotonic()
        try:
            async with self._http.post(self._url, json=body, headers=headers,
                                       timeout=self._timeout, allow_redirects=False) as resp:
                raw = await resp.read()
                status = resp.status
                error_header = resp.headers.get("x-amzn-ErrorType", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("identity %s: %s", operation, type(e).__name__)
            raise IdentityError("NetworkError", f"cannot reach {self._url}: {type(e).__name__}"
                                f"{': ' + str(e) if str(e) else ''}", transient=True) from None
        log.debug("identity %s -> %s in %.0f ms", operation, status,
                  (time.monotonic() - started) * 1000)
        try:
            data = json_object(raw)
        except ValueError:
            data = {}
        if status == 200 and data:
            return data
        kind = error_kind(data, status, error_header)
        message = error_message(data, status)
        message = _scrub(message, secrets)
        # a 200 we cannot read came from something in between (a captive portal, a proxy)
        transient = kind in TRANSIENT or status >= 500 or status in (200, 429)
        raise IdentityError(kind, message[:300], transient=transient)


def _scrub(message: str, secrets: Iterable[str]) -> str:
    """Mask every secret the call carried, and each long piece of one: a service that quotes a
    token may quote only its payload."""
    for secret in secrets:
        for piece in (secret, *secret.split(".")):
            if len(piece) >= _MIN_SCRUB:
                message = message.replace(piece, "***")
    return message
