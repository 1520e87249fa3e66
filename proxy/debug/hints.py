"""Why API Gateway refused: a one-line cause and fix for its well-known 401/403 bodies.

A `Hinter` is built per endpoint at start, from the endpoint and its credential's settings; the
forwarder calls it with the status, the upstream body and the headers that went upstream. It
reads the token that was sent (its claims, its prefix), never quotes it, and returns a hint for
`X-Authproxy-Hint`, the inspector and a warning on the `authproxy.debug.hints` logger. Header values
are the caller's business; a hint only names headers, claims that are not secrets, and times.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from yarl import URL

from proxy.config import Endpoint
from proxy.jwt import human_delta, parse
from proxy.target import Hinter

log = logging.getLogger("authproxy.debug.hints")

MAX_HINT = 700  # characters; a header value, so one line of printable ASCII


class Facts(Protocol):
    """What a hint needs to know of a credential: its `describe()` (proxy.credentials'
    Description) has these, so hints never look at a credential's class or config."""

    @property
    def name(self) -> str: ...
    @property
    def header(self) -> str: ...
    @property
    def flow(self) -> str: ...
    @property
    def refreshed(self) -> bool: ...
    @property
    def settings(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Sent:
    """What the authorizer got: the scheme word and the JWT's claims, never the value."""

    present: bool
    bearer: bool = False
    claims: dict[str, Any] | None = None
    length: int = 0


@dataclass(frozen=True)
class EndpointHints:
    endpoint: str
    base: str  # the upstream base URL, e.g. https://x.execute-api.../Development
    stage: str  # its path, e.g. /Development ("" when none)
    credential: Facts | None  # the endpoint's credential, None for auth: none
    header: str  # the header an authorizer reads the token from
    now: Callable[[], float] = time.time

    def __call__(self, status: int, body: bytes, sent: list[tuple[str, str]]) -> str | None:
        message = _message(body)
        if message is None:
            return None
        found = self.explain(status, message, sent)
        if found is None:
            return None
        label, hint = found
        hint = _clean(hint)
        request_id = next((v for k, v in sent if k.lower() == "x-request-id"), None)
        log.warning("%s: API Gateway answered %d %s (request %s): %s", self.endpoint, status,
                    label, request_id, hint, extra={
                        "endpoint": self.endpoint, "status": status, "apigw_message": label,
                        "request_id": request_id, "hint": hint})
        return hint

    def explain(self, status: int, message: str,
                sent: list[tuple[str, str]]) -> tuple[str, str] | None:
        low = message.lower().rstrip(".")
        if low == "unauthorized":
            return '"Unauthorized"', self.unauthorized(self.sent(sent), sent)
        if low == "the incoming token has expired":
            return '"The incoming token has expired"', self.expired(self.sent(sent))
        if low == "missing authentication token":
            return '"Missing Authentication Token"', self.no_resource(
                "API Gateway found no resource for this method and path")
        if low.startswith(("invalid key=value pair", "authorization header requires")):
            return "a SigV4 parse error", self.no_resource(
                "API Gateway read the Authorization header as an AWS SigV4 signature")
        if low == "user is not authorized to access this resource":
            return '"User is not authorized to access this resource"', self.denied(
                self.sent(sent))
        if "with an explicit deny" in low or (low.startswith("user: ")
                                             and "is not authorized to perform" in low):
            return "a resource policy denial", (
                "the API's resource policy refuses this caller (its source IP, VPC endpoint "
                "or principal conditions): fix the policy, then redeploy the stage")
        if low == "forbidden" and status == 403:
            return '"Forbidden"', self.forbidden(sent)
        if low.startswith("the request signature we calculated does not match"):
            return "a SigV4 signature mismatch", self.signature_mismatch(sent)
        if low.startswith("signature expired"):
            return '"Signature expired"', self.signature_expired(message, sent)
        if low.startswith("the security token included in the request is"):
            return "a refused security token", self.security_token(low)
        return None

    # --- SigV4 (type: iam) --------------------------------------------------------------------

    def signature_mismatch(self, sent: list[tuple[str, str]]) -> str:
        auth = next((v for k, v in sent if k.lower() == "authorization"), "")
        scope = auth.partition("Credential=")[2].split(",", 1)[0].split("/")[1:4]
        where = f" (signed for region {scope[1]}, service {scope[2]})" if len(scope) == 3 else ""
        name = self.credential.name if self.credential else "the client"
        return (f"API Gateway computed another SigV4 signature than {name} sent{where}: check "
                f"credentials.{name}.region and service against the API's, that the secret key "
                "belongs to the access key, and that nothing between the proxy and API Gateway "
                "rewrites the path, query or Host")

    def signature_expired(self, message: str, sent: list[tuple[str, str]]) -> str:
        # "Signature expired: <our date> is now earlier than <limit> (<their now> - 5 min.)"
        stamps = re.findall(r"\d{8}T\d{6}Z", message)
        ours = next((v for k, v in sent if k.lower() == "x-amz-date"), None)
        if len(stamps) >= 3 and ours:
            fmt = "%Y%m%dT%H%M%SZ"
            offset = (datetime.strptime(ours, fmt).replace(tzinfo=UTC)
                      - datetime.strptime(stamps[2], fmt).replace(tzinfo=UTC)).total_seconds()
            side = "behind" if offset < 0 else "ahead of"
            return (f"API Gateway refused the signature's date: this machine's clock is "
                    f"{human_delta(abs(offset))} {side} AWS's (signatures are good for 5 "
                    "minutes); sync it (e.g. timedatectl set-ntp true)")
        return ("API Gateway refused the signature's date as too old or too new: this machine's "
                "clock is more than 5 minutes off; sync it (e.g. timedatectl set-ntp true)")

    def security_token(self, low: str) -> str:
        what = "expired" if "expired" in low else "invalid"
        name = self.credential.name if self.credential else "the client"
        return (f"API Gateway says the session token is {what}: the proxy fetches new "
                f"credentials for {name} and sends the request once more; if this persists, the "
                "credentials come from another account or partition than the API, or the "
                "identity pool's role was changed")

    # --- reading what was sent ----------------------------------------------------------------

    def sent(self, headers: list[tuple[str, str]]) -> Sent:
        value = next((v for k, v in headers if k.lower() == self.header.lower()), None)
        if value is None:
            return Sent(present=False)
        scheme, sep, rest = value.partition(" ")
        bearer = bool(sep) and scheme.lower() == "bearer"
        try:
            claims: dict[str, Any] | None = parse(rest if bearer else value)[1]
        except ValueError:
            claims = None
        return Sent(present=True, bearer=bearer, claims=claims, length=len(value))

    def has(self, setting: str) -> bool:
        """The credential has this setting to fix the header with (token, prefix)."""
        return self.credential is not None and setting in self.credential.settings

    # --- one method per known answer ----------------------------------------------------------

    def unauthorized(self, s: Sent, headers: list[tuple[str, str]]) -> str:
        if not s.present or (self.header.lower() != "authorization" and not any(
                k.lower() == "authorization" for k, _ in headers)):
            return self.nothing_sent()
        if s.claims is None:
            return (f"the authorizer refused the {self.header} value of {self.whose}, which is "
                    "not a JWT: a Cognito or JWT authorizer needs one; for a Lambda authorizer "
                    "check the value and whether it expects a 'Bearer ' prefix")
        exp = s.claims.get("exp")
        if isinstance(exp, int | float) and exp <= self.now():
            return self.expired(s)
        use = s.claims.get("token_use")
        cred = self.credential
        if use == "access" and cred is not None and cred.flow == "client_credentials":
            parts = ["the authorizer refused a client_credentials access token (scope: "
                     f"{s.claims.get('scope', '-')}): the method needs OAuth scopes on its "
                     "Cognito authorizer that this app client is allowed"]
        elif use == "access":
            parts = ["an access token was sent (token_use=access), and a Cognito authorizer "
                     "without OAuth scopes on the method takes ID tokens only: "
                     f"{self.fix_token('id')}, or add authorization scopes to the method"]
        elif use == "id":
            parts = ["an ID token was sent (token_use=id); if the method has OAuth scopes on "
                     f"its Cognito authorizer it wants an access token: {self.fix_token('access')}"]
        else:
            parts = [f"the authorizer refused the JWT of {self.whose}"]
        parts.append(self.fix_prefix(s.bearer))
        iss = str(s.claims.get("iss", ""))
        if "cognito-idp" in iss:
            parts.append(f"check that the authorizer uses user pool {iss.rsplit('/', 1)[-1]}")
        return "; ".join(parts)

    @property
    def whose(self) -> str:
        c = self.credential
        return f"credential '{c.name}'" if c else "the client's own token (auth: none)"

    def fix_token(self, use: str) -> str:
        if self.credential is not None and self.has("token"):
            return f"set token: {use} on credential '{self.credential.name}'"
        kind = "an ID token" if use == "id" else "an access token"
        if self.credential is not None:
            return f"put {kind} in credential '{self.credential.name}'"
        return f"send {kind}"

    def fix_prefix(self, bearer: bool) -> str:
        if bearer:
            fix = ('set prefix: ""' if self.has("prefix") else "drop 'Bearer ' from its value"
                   if self.credential else "send it without 'Bearer '")
            return f"it went as 'Bearer <token>'; if the authorizer (a REST API Cognito " \
                   f"authorizer, say) wants the bare token, {fix}"
        fix = ('set prefix: "Bearer "' if self.has("prefix") else "start its value with 'Bearer '"
               if self.credential else "send it as 'Bearer <token>'")
        return f"it went bare; if the authorizer expects 'Bearer <token>', {fix}"

    def nothing_sent(self) -> str:
        if self.credential is None:
            return (f"the authorizer found no token: endpoint '{self.endpoint}' has auth: none, "
                    "so nothing was injected; give it a credential (auth: NAME)")
        return (f"the authorizer found no Authorization header: credential "
                f"'{self.credential.name}' sends '{self.credential.header}'; check which "
                "header the authorizer's identity source (token source) reads")

    def expired(self, s: Sent) -> str:
        exp = s.claims.get("exp") if s.claims else None
        if not isinstance(exp, int | float):
            return f"API Gateway says the token has expired: give {self.whose} a fresh one"
        now = self.now()
        when = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if exp > now:
            return (f"API Gateway says the token has expired, but by this machine's clock it "
                    f"expires in {human_delta(exp - now)} (exp {when}): this clock is at least "
                    f"{human_delta(exp - now)} behind; sync it (e.g. timedatectl set-ntp true)")
        ago = human_delta(now - exp)
        if self.credential is not None and self.credential.refreshed:
            return (f"the token expired {ago} ago (exp {when}) and was not refreshed: see "
                    f"the last error of {self.whose} in the inspector's credentials panel "
                    "(after a suspend, the next request fetches a new one)")
        iat = s.claims.get("iat") if s.claims else None
        lived = (f" (it lived {human_delta(exp - iat)})"
                 if isinstance(iat, int | float) and exp > iat else "")
        fix = ("static tokens are not refreshed; put a fresh one in it" if self.credential
               else "send a fresh one")
        return f"the token of {self.whose} expired {ago} ago (exp {when}){lived}: {fix}"

    def no_resource(self, what: str) -> str:
        url = URL(self.base)
        if not self.stage and (url.host or "").endswith(".amazonaws.com"):
            return (f"{what}: endpoint '{self.endpoint}' ({self.base}) has no stage in its URL; "
                    "add it (e.g. .../Development)")
        return (f"{what}: check the stage '{self.stage or '/'}' in endpoint '{self.endpoint}' "
                f"({self.base}), the path after it and the HTTP method, and that the API was "
                "deployed to that stage; or the method uses IAM (SigV4) auth, which authproxy "
                "does not sign")

    def denied(self, s: Sent) -> str:
        who = ""
        if s.claims:
            shown = {k: s.claims[k] for k in ("token_use", "scope", "cognito:groups")
                     if k in s.claims}
            who = " (token: " + ", ".join(
                f"{k}={' '.join(v) if isinstance(v, list) else v}" for k, v in shown.items()
            ) + ")" if shown else ""
        return ("the Lambda authorizer accepted the token but returned Deny, or an Allow whose "
                "Resource does not cover this method and path (with authorizer caching on, a "
                "policy made for one path is reused for others: allow arn:...:*/*/* or turn "
                f"caching off); check the authorizer's CloudWatch logs{who}")

    def forbidden(self, sent: list[tuple[str, str]]) -> str:
        also = ("; a private API reached outside its VPC endpoint, or an AWS WAF rule, answers "
                "the same")
        if any(k.lower() == "x-api-key" for k, _ in sent):
            return ("API Gateway refused the x-api-key that was sent: the key is wrong or "
                    "disabled, or not in a usage plan that includes this API and stage "
                    f"'{self.stage or '/'}'" + also)
        return ("the method requires an API key and no x-api-key header was sent: add a "
                "static credential with header: x-api-key and use it as auth of endpoint "
                f"'{self.endpoint}' (or set it with set_headers)" + also)


def build_hinter(ep: Endpoint, credential: Facts | None,
                 now: Callable[[], float] = time.time) -> Hinter:
    base = ep.endpoint.rstrip("/")
    header = credential.header if credential is not None else "Authorization"
    return EndpointHints(endpoint=ep.name, base=base, stage=URL(base).path.rstrip("/"),
                         credential=credential, header=header, now=now)


def _message(body: bytes) -> str | None:
    """API Gateway's `{"message": ...}` (`Message` in some answers); None for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    message = data.get("message", data.get("Message"))
    return message.strip() if isinstance(message, str) else None


def _clean(hint: str) -> str:
    text = "".join(c if " " <= c <= "~" else "?" for c in hint)
    return text if len(text) <= MAX_HINT else text[:MAX_HINT - 3] + "..."
