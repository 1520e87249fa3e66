"""AWS Signature Version 4 (`AWS4-HMAC-SHA256`) for requests to API Gateway (`execute-api`).

A pure module: no I/O, no aiohttp. It runs once per signed request, so everything that depends
only on the region and service is computed in `Signer.__init__` and the derived signing key is
cached per (secret key, UTC date).

The canonical request is the one botocore's `SigV4Auth` builds for every service but S3
(`botocore/auth.py`), applied to the request exactly as it goes upstream:

- URI: the raw path (its percent-encoding kept), with dot segments and empty segments removed
  (`botocore.utils.remove_dot_segments`), then URI-encoded once more with only `/` and `~` left
  as they are (`quote(path, safe='/~')`): `%2F` becomes `%252F`.
- Query: split on `&` and at the first `=` (a bare name becomes `name=`, an empty piece `=`),
  sorted by (name, value) as tuples, after each name and value is brought to its canonical
  form: percent-decoded, then encoded with only `A-Za-z0-9-_.~` unreserved (botocore's
  `quote(x, safe='-_.~')`). For a query that is already in that form, which is what botocore
  itself puts in URLs, this is botocore's own result; for anything else (`a,b`, `%7e`, raw
  UTF-8) it is what API Gateway recomputes. A literal `+` is read as a space (`%20`), as API
  Gateway reads it: see `_QUERY_PLUS`.
- Headers: `content-type` (when present), `host`, `x-amz-date`, `x-amz-security-token` (with a
  session token), each value trimmed with inner whitespace runs collapsed (`' '.join(v.split())`)
  and repeated values joined by `,`. Nothing else is signed: whatever an intermediary may add or
  rewrite would break the signature.
- Payload: the hex SHA-256 of the body, as given by the caller.

`presign` is the query-string form (botocore's `SigV4QueryAuth`), which API Gateway WebSocket
APIs with IAM authorization take on the `$connect` handshake, since a handshake is a GET whose
headers a browser cannot set: the client's query, then `X-Amz-Algorithm`, `X-Amz-Credential`,
`X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders=host` and `X-Amz-Security-Token` (with a
session token), all of them in the canonical query; only `host` is signed, over the hash of the
empty body; `X-Amz-Signature` is appended last.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from urllib.parse import quote, unquote_to_bytes

from proxy.credentials.aws_keys import AwsKeys

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Signing keys live a UTC day; a handful covers key rotation and the day boundary.
_KEY_CACHE_SIZE = 8

# API Gateway reads `+` in a query as a space: for a request sent as `?%24filter=id+eq+123` it
# answers that the canonical string should have been `%24filter=id%20eq%20123`
# (zirkelc/aws-signature-v4#4, fixed by signing URLSearchParams' decoded values, tested there
# against a real API Gateway). botocore never meets the case: it puts only canonical
# (`%2B`/`%20`) queries into its URLs and copies the URL's query into the canonical request as is.
_QUERY_PLUS = " "

_HOST_RE = re.compile(r"^[^.]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?(?::\d+)?$",
                      re.IGNORECASE)


def region_from_host(host: str) -> str | None:
    """`abc123.execute-api.eu-west-1.amazonaws.com[:443]` -> `eu-west-1`; None for any other host
    (a custom domain, 127.0.0.1), where the region must come from the config."""
    m = _HOST_RE.match(host.strip())
    return m.group(1).lower() if m else None


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    k = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        k = hmac.digest(k, part.encode(), "sha256")
    return k


# Paths and queries repeat (an app calls the same few resources): their canonical forms are
# pure functions of the raw text, cached. The query may hold a secret the client put there; it
# stays in this process's memory as it does in the request itself.
@functools.lru_cache(maxsize=4096)
def canonical_uri(raw_path: str) -> str:
    return quote(_remove_dot_segments(raw_path) or "/", safe="/~")


@functools.lru_cache(maxsize=4096)
def canonical_query(query: str) -> str:
    return _canonical_query(query)


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        pairs.append((_canonical_query_part(name), _canonical_query_part(value)))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def _canonical_query_part(part: str) -> str:
    if not part:
        return part
    # unquote_to_bytes keeps a malformed escape (`%zz`) as literal text, which then encodes as
    # `%25zz`; decoding to bytes (not str) keeps escapes of non-UTF-8 bytes exact.
    return quote(unquote_to_bytes(part.replace("+", _QUERY_PLUS)), safe="-_.~")


# The query-string signature's own parameters: a client's copies are dropped before presigning.
PRESIGN_PARAMS = frozenset({"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
                            "x-amz-signedheaders", "x-amz-security-token", "x-amz-signature"})


def _without_presign_params(query: str) -> list[str]:
    kept = []
    for piece in query.split("&") if query else ():
        name = piece.partition("=")[0]
        if unquote_to_bytes(name.replace("+", " ")).lower().decode("utf-8", "replace") \
                not in PRESIGN_PARAMS:
            kept.append(piece)
    return kept


def _remove_dot_segments(path: str) -> str:
    # botocore.utils.remove_dot_segments: RFC 3986 5.2.4, and empty segments dropped as well
    # ("AWS services require consecutive slashes to be removed").
    if not path:
        return ""
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


@functools.lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))


@functools.lru_cache(maxsize=64)
def _host_line(host: str) -> str:
    return f"host:{_trim(host)}\n"


def _trim(value: str) -> str:
    return " ".join(value.split())


class _Day:
    """Everything of a signature that depends only on the keys and the UTC date, made once a
    day per key instead of once per request: the signing key (as a keyed HMAC to copy), the
    credential scope, and the session token's canonical line."""

    __slots__ = ("date", "scope", "inner", "outer", "credential", "token", "token_line",
                 "signed")

    def __init__(self, keys: AwsKeys, date: str, region: str, service: str,
                 scope_tail: str) -> None:
        self.date = date
        self.scope = date + scope_tail
        # HMAC-SHA256 (RFC 2104) as two SHA-256 states primed with the padded key: copying
        # them costs less than an HMAC object's copy (0.7 us a request with OpenSSL 3).
        key = signing_key(keys.secret_access_key.reveal(), date, region, service)
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")))
        self.credential = f"{ALGORITHM} Credential={keys.access_key_id}/{self.scope}"
        token = keys.session_token
        self.token = token.reveal() if token else None
        # A session token is some 800 characters and the same for an hour: trimmed once.
        self.token_line = f"x-amz-security-token:{_trim(self.token)}\n" if self.token else ""
        self.signed = "host;x-amz-date;x-amz-security-token" if self.token else "host;x-amz-date"

    def signature(self, stamp: str, canonical_request: str) -> str:
        """HMAC-SHA256 of the string to sign, under this day's signing key, in hex."""
        string_to_sign = (f"{ALGORITHM}\n{stamp}\n{self.scope}\n"
                          f"{hashlib.sha256(canonical_request.encode()).hexdigest()}")
        inner = self.inner.copy()
        inner.update(string_to_sign.encode())
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def __repr__(self) -> str:
        return f"_Day({self.date})"


class Signer:
    """Signs requests for one region and service. `sign` returns the headers to add; the caller
    sends every other header unchanged (and must drop any client-sent `Authorization`,
    `X-Amz-Date` or `X-Amz-Security-Token` first)."""

    __slots__ = ("region", "service", "_scope_tail", "_keys", "_last")

    def __init__(self, region: str, service: str = "execute-api") -> None:
        self.region = region
        self.service = service
        self._scope_tail = f"/{region}/{service}/aws4_request"
        # (keys, yyyymmdd) -> what signing with them that day needs. A repr of this dict shows
        # no secret: AwsKeys and _Day redact theirs.
        self._keys: dict[tuple[AwsKeys, str], _Day] = {}
        self._last: tuple[AwsKeys | None, _Day | None] = (None, None)  # skips hashing the keys

    def __repr__(self) -> str:
        return f"Signer(region={self.region!r}, service={self.service!r})"

    def signed_header_names(self, headers: Sequence[tuple[str, str]],
                            keys: AwsKeys) -> list[str]:
        names = ["host", "x-amz-date"]
        if _content_type(headers) is not None:
            names.insert(0, "content-type")
        if keys.session_token:
            names.append("x-amz-security-token")
        return names

    def sign(self, keys: AwsKeys, method: str, host: str, raw_path: str, query: str,
             headers: Sequence[tuple[str, str]], payload_sha256: str,
             now: float | None = None) -> tuple[tuple[str, str], ...]:
        # Once per request on the proxy's hot path: one f-string per piece of the algorithm,
        # the rest made once a day (_Day) or cached (_stamp, canonical_uri, canonical_query).
        stamp = _stamp(int(time.time() if now is None else now))
        day = self._day(keys, stamp)
        # Sorted by name: content-type < host < x-amz-date < x-amz-security-token.
        content_type = _content_type(headers)
        if content_type is None:
            signed, type_line = day.signed, ""
        else:
            signed, type_line = "content-type;" + day.signed, f"content-type:{content_type}\n"
        canonical_request = (
            f"{method.upper()}\n{canonical_uri(raw_path)}\n{canonical_query(query)}\n"
            f"{type_line}{_host_line(host)}x-amz-date:{stamp}\n{day.token_line}\n"
            f"{signed}\n{payload_sha256}")
        authorization = (f"{day.credential}, SignedHeaders={signed}, "
                         f"Signature={day.signature(stamp, canonical_request)}")
        if day.token is None:
            return (("Authorization", authorization), ("X-Amz-Date", stamp))
        return (("Authorization", authorization), ("X-Amz-Date", stamp),
                ("X-Amz-Security-Token", day.token))

    def presign(self, keys: AwsKeys, method: str, host: str, raw_path: str, query: str,
                expires: int, now: float | None = None) -> str:
        """The query string of a presigned URL for this request (without `?`): the client's
        parameters as sent (bar copies of the signature's own), then the signature's."""
        stamp = _stamp(int(time.time() if now is None else now))
        day = self._day(keys, stamp)
        params = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{keys.access_key_id}/{day.scope}"),
            ("X-Amz-Date", stamp), ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", "host")]
        if day.token is not None:
            params.append(("X-Amz-Security-Token", day.token))
        auth = "&".join(f"{n}={quote(v, safe='-_.~')}" for n, v in params)
        full = "&".join([*_without_presign_params(query), auth])
        # Not the cached canonical_query: this query is new every second and holds the token.
        canonical_request = (
            f"{method.upper()}\n{canonical_uri(raw_path)}\n{_canonical_query(full)}\n"
            f"{_host_line(host)}\nhost\n{EMPTY_SHA256}")
        return f"{full}&X-Amz-Signature={day.signature(stamp, canonical_request)}"

    def _day(self, keys: AwsKeys, stamp: str) -> _Day:
        last_keys, day = self._last
        if last_keys is keys and day is not None and day.date == stamp[:8]:
            return day  # the common case: the same keys as the request before, the same day
        date = stamp[:8]
        cache_key = (keys, date)
        day = self._keys.get(cache_key)
        if day is None:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                del self._keys[next(iter(self._keys))]  # the oldest: insertion order
            day = self._keys[cache_key] = _Day(keys, date, self.region, self.service,
                                               self._scope_tail)
        self._last = (keys, day)
        return day


def _content_type(headers: Sequence[tuple[str, str]]) -> str | None:
    # The length test first: it turns away nearly every header without lowering its name.
    values = [_trim(v) for k, v in headers if len(k) == 12 and k.lower() == "content-type"]
    return ",".join(values) if values else None
