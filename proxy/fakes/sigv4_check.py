"""How the fake API Gateway checks a SigV4 signature: recomputed from the request as it arrived
(method, raw path, raw query, the signed headers' received values, the body's SHA-256), with the
secret key it was told, and refused with API Gateway's answers.

Written apart from `proxy/credentials/sigv4.py` on purpose and must never import it: a fake that
shared the signer's code would agree with any mistake in it. Only the published rules are shared:
the canonical URI is the raw path, dot and empty segments removed, percent-encoded once more; the
canonical query decodes each name and value (`+` as a space, as API Gateway reads a query) and
encodes it again with only `A-Za-z0-9-_.~` kept.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.secret import redact

SKEW = 300  # seconds either way, as API Gateway allows
_STAMP = "%Y%m%dT%H%M%SZ"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")

MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.")
BAD_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True)
class Refusal:
    error_type: str  # x-amzn-ErrorType
    message: str
    status: int = 403


@dataclass(frozen=True)
class Request:
    method: str
    raw_target: str  # path and query exactly as on the request line
    headers: Sequence[tuple[str, str]]
    body_sha256: str


def check(request: Request, secrets: Mapping[str, str], tokens: Mapping[str, str], now: float,
          region: str | None = None, service: str = "execute-api") -> Refusal | None:
    """None when the signature verifies; else API Gateway's refusal. `secrets`: access key id ->
    secret key; `tokens`: access key id -> the session token it must come with (a key id that
    is not there must come without one); `region`: None accepts the one the signature names."""
    authorization = _header(request.headers, "authorization")
    if authorization is None:
        return Refusal("MissingAuthenticationTokenException", "Missing Authentication Token")
    fields, refusal = _parse(authorization)
    if refusal:
        return refusal
    stamp = _header(request.headers, "x-amz-date")
    missing = [f"Authorization header requires '{name}' parameter."
               for name in ("Credential", "Signature", "SignedHeaders") if name not in fields]
    if stamp is None:
        missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a "
                       "'Date' header.")
    if missing:
        # API Gateway quotes the header back; the fake shows it redacted.
        return Refusal("IncompleteSignatureException",
                       " ".join(missing) + f" Authorization={redact(authorization)}")
    assert stamp is not None
    try:
        signed_at = _epoch(stamp)
    except ValueError:
        return Refusal("IncompleteSignatureException",
                       f"Date must be in ISO-8601 'basic format'. Got '{stamp}'. See "
                       "http://en.wikipedia.org/wiki/ISO_8601")
    if signed_at < now - SKEW:
        return Refusal("InvalidSignatureException",
                       f"Signature expired: {stamp} is now earlier than {_fmt(now - SKEW)} "
                       f"({_fmt(now)} - 5 min.)")
    if signed_at > now + SKEW:
        return _not_yet_current(stamp, now)

    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return Refusal("IncompleteSignatureException",
                       f"Credential should be scoped with a valid terminator: 'aws4_request', "
                       f"not '{scope[-1]}'. ")
    key_id, scope_date, scope_region, scope_service, _ = scope
    if scope_date != stamp[:8]:
        return Refusal("InvalidSignatureException",
                       "Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
                       f"of date from HTTP: '{scope_date}' != '{stamp[:8]}', from '{stamp}'.")
    if region is not None and scope_region != region:
        return Refusal("InvalidSignatureException",
                       f"Credential should be scoped to a valid region, not '{scope_region}'. ")
    if scope_service != service:
        return Refusal("InvalidSignatureException",
                       f"Credential should be scoped to correct service: '{service}'. ")
    secret = secrets.get(key_id)
    sent_token = _header(request.headers, "x-amz-security-token")
    if secret is None or not _same(sent_token, tokens.get(key_id)):
        return Refusal("UnrecognizedClientException", BAD_TOKEN)

    names = fields["SignedHeaders"].split(";")
    if "host" not in names:
        return Refusal("IncompleteSignatureException",
                       "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    path, _, query = request.raw_target.partition("?")
    canonical = "\n".join([
        request.method.upper(),
        _canonical_path(path),
        _canonical_query(query),
        "".join(f"{name}:{_header_values(request.headers, name)}\n" for name in names),
        fields["SignedHeaders"],
        request.body_sha256,
    ])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, "/".join(scope[1:]),
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = ("AWS4" + secret).encode("utf-8")
    for part in (scope_date, scope_region, scope_service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        return Refusal("InvalidSignatureException", MISMATCH)
    return None


MAX_EXPIRES = 7 * 24 * 3600  # SigV4's own limit on X-Amz-Expires
_QUERY_AUTH = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
               "X-Amz-SignedHeaders", "X-Amz-Signature")


def check_presigned(request: Request, secrets: Mapping[str, str], tokens: Mapping[str, str],
                    now: float, region: str | None = None,
                    service: str = "execute-api") -> Refusal | None:
    """A presigned URL (query-string SigV4, as on a WebSocket `$connect`): None when its
    signature verifies and it has not expired; else API Gateway's refusal."""
    path, _, query = request.raw_target.partition("?")
    params: dict[str, str] = {}
    for piece in query.split("&") if query else ():
        name, _, value = piece.partition("=")
        params.setdefault(_decode(name).decode("utf-8", "replace"),
                          _decode(value).decode("utf-8", "replace"))
    if not any(name in params for name in _QUERY_AUTH):
        return Refusal("MissingAuthenticationTokenException", "Missing Authentication Token")
    missing = [name for name in _QUERY_AUTH if name not in params]
    if missing:
        return Refusal("IncompleteSignatureException",
                       " ".join(f"AWS query-string parameters must include '{n}'."
                                for n in missing) + " Re-examine the query-string parameters.")
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        return Refusal("IncompleteSignatureException",
                       f"Unsupported AWS 'algorithm': '{params['X-Amz-Algorithm']}'")
    stamp = params["X-Amz-Date"]
    try:
        signed_at = _epoch(stamp)
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        return Refusal("IncompleteSignatureException",
                       "X-Amz-Date must be in ISO-8601 'basic format' and X-Amz-Expires a "
                       "number of seconds")
    if not 0 < expires <= MAX_EXPIRES:
        return Refusal("IncompleteSignatureException",
                       f"X-Amz-Expires must be between 1 and {MAX_EXPIRES} seconds")
    if now > signed_at + expires:
        return Refusal("InvalidSignatureException",
                       f"Signature expired: {stamp} is now earlier than "
                       f"{_fmt(now - expires)} ({_fmt(now)} - {expires} sec.)")
    if signed_at > now + SKEW:
        return _not_yet_current(stamp, now)
    scope = params["X-Amz-Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return Refusal("IncompleteSignatureException",
                       "Credential should be scoped with a valid terminator: 'aws4_request'")
    key_id, scope_date, scope_region, scope_service, _ = scope
    if scope_date != stamp[:8] or (region is not None and scope_region != region) \
            or scope_service != service:
        return Refusal("InvalidSignatureException",
                       f"Credential should be scoped to a valid region and service, and to "
                       f"the date of X-Amz-Date, not '{'/'.join(scope[1:])}'. ")
    secret = secrets.get(key_id)
    if secret is None or not _same(params.get("X-Amz-Security-Token"), tokens.get(key_id)):
        return Refusal("UnrecognizedClientException", BAD_TOKEN)
    names = params["X-Amz-SignedHeaders"].split(";")
    if "host" not in names:
        return Refusal("IncompleteSignatureException",
                       "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    unsigned_query = "&".join(piece for piece in query.split("&")
                              if _decode(piece.partition("=")[0]) != b"X-Amz-Signature")
    canonical = "\n".join([
        request.method.upper(), _canonical_path(path), _canonical_query(unsigned_query),
        "".join(f"{name}:{_header_values(request.headers, name)}\n" for name in names),
        params["X-Amz-SignedHeaders"], request.body_sha256])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, "/".join(scope[1:]),
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = ("AWS4" + secret).encode("utf-8")
    for part in (scope_date, scope_region, scope_service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        return Refusal("InvalidSignatureException", MISMATCH)
    return None


def _parse(authorization: str) -> tuple[dict[str, str], Refusal | None]:
    # API Gateway reads the first word as the algorithm and the rest as `key=value` pairs:
    # `Bearer abc` is refused for its pair `abc`, a bare JWT for missing parameters.
    algorithm, _, rest = authorization.strip().partition(" ")
    fields: dict[str, str] = {}
    for piece in rest.split(",") if rest.strip() else []:
        piece = piece.strip()
        name, eq, value = piece.partition("=")
        if not eq:
            return fields, Refusal(
                "IncompleteSignatureException",
                f"'{redact(piece)}' not a valid key=value pair (missing equal-sign) in "
                f"Authorization header: '{redact(authorization)}'.")
        fields[name] = value
    if algorithm != "AWS4-HMAC-SHA256":
        fields = {}  # no SigV4 fields were sent: reported as missing
    return fields, None


def _same(sent: str | None, wanted: str | None) -> bool:
    if sent is None or wanted is None:
        return sent is None and wanted is None
    return hmac.compare_digest(sent.encode(), wanted.encode())


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _header_values(headers: Sequence[tuple[str, str]], name: str) -> str:
    return ",".join(re.sub(r"\s+", " ", value).strip()
                    for key, value in headers if key.lower() == name)


def _canonical_path(path: str) -> str:
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            kept = kept[:-1]
        else:
            kept.append(segment)
    joined = "/" + "/".join(kept)
    if kept and path.endswith("/"):
        joined += "/"
    return _encode(joined.encode("utf-8", "surrogateescape"), keep=b"/")


def _canonical_query(query: str) -> str:
    if query == "":
        return ""
    pairs = []
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        pairs.append((_encode(_decode(name)), _encode(_decode(value))))
    return "&".join(name + "=" + value for name, value in sorted(pairs))


def _decode(text: str) -> bytes:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]),
                       text.replace("+", " ").encode("utf-8", "surrogateescape"))


def _encode(data: bytes, keep: bytes = b"") -> str:
    return "".join(chr(b) if b in _UNRESERVED or b in keep else f"%{b:02X}" for b in data)


def _not_yet_current(stamp: str, now: float) -> Refusal:
    return Refusal("InvalidSignatureException",
                   f"Signature not yet current: {stamp} is still later than "
                   f"{_fmt(now + SKEW)} ({_fmt(now)} + 5 min.)")


def _epoch(stamp: str) -> float:
    if len(stamp) != 16:
        raise ValueError(stamp)
    return float(calendar.timegm(time.strptime(stamp, _STAMP)))


def _fmt(epoch: float) -> str:
    return time.strftime(_STAMP, time.gmtime(epoch))
