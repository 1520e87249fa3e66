"""Recent exchanges kept in memory for the inspector and `/api/exchanges`, secrets redacted.

A record says what arrived, what went upstream (headers marked: injected, added, replaced,
dropped), what came back, the hint, and the injected token's decoded claims. The token itself,
its signature, every secret header value and the secret values in query strings (the path, the
upstream URL, URLs in headers, the curl) are redacted in every record handed out.

Adding an exchange only keeps references (a few microseconds on the request path); the record
is built, redacted, the first time someone asks for it, after which the raw headers are let go.
Most of the time nobody has the inspector open, and then nothing is built at all.
"""

from __future__ import annotations

import functools
import json
import shlex
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.forward import Exchange
from proxy.http.client_conn import Request
from proxy.http.respond import Response
from proxy.http.tunnel import Tunnel
from proxy.jwt import describe_time, parse
from proxy.log import SENSITIVE, redact_headers
from proxy.redaction import redact_queries, redact_target
from proxy.secret import redact
from proxy.target import HOP_BY_HOP

# Claims worth showing; the rest (jti, origin_jti, event_id, ...) says nothing to a debugger.
CLAIMS = ("token_use", "sub", "username", "cognito:username", "client_id", "aud", "scope",
          "cognito:groups", "iss", "auth_time", "iat", "exp")
TIME_CLAIMS = ("auth_time", "iat", "exp")
_NOT_IN_CURL = HOP_BY_HOP | {"host", "content-length", "x-request-id", "accept-encoding"}
SECRET_HEADER = "x-authproxy-secret"

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class _Entry:
    id: int
    time: float  # when the request arrived
    method: str
    path: str  # raw, with the query
    scheme: str
    body: bool  # the request had a body
    endpoint: str
    status: int
    total_ms: float
    injected: str | None  # the injected header's name
    received: Mapping[str, str] | None  # the request's own (immutable) headers until built
    ex: Exchange | None
    resp: Response | None  # the proxy's own answer, when there was no exchange
    record: dict[str, Any] | None = None
    text: str | None = None  # lower-case, for ?q=
    tunnel: Tunnel | None = None  # a WebSocket: its tunnel, followed while it is open

    def json(self) -> dict[str, Any]:
        if self.record is None:
            self.record = _build(self)
            self.received = self.ex = self.resp = None  # raw values go; redacted ones stay
        if self.tunnel is not None:
            live = self.record.get("websocket")
            if live is None or live["open"]:  # numbers move until it closes, then stay
                self.record["websocket"] = _websocket(self.tunnel)
                self.record["total_ms"] = round(
                    ((self.tunnel.ended or time.time()) - self.time) * 1000, 2)
        return self.record

    def haystack(self) -> str:
        if self.text is None:
            self.text = _haystack(self.json())
        return self.text


class History:
    def __init__(self, size: int, now: Callable[[], float] = time.time) -> None:
        self._entries: deque[_Entry] = deque(maxlen=size)
        # Added since anyone last looked: _Entry's fields as a tuple (or, for a WebSocket,
        # the _Entry itself), made into entries on the first look. A tuple is a fraction of
        # the cost of the dataclass, and the request path pays it for every request.
        self._raw: deque[tuple[Any, ...] | _Entry] = deque(maxlen=size)
        self.counter = 0
        self.now = now
        # WebSockets, apart from the exchanges: open ones are kept however many exchanges
        # come after them, closed ones as many as exchanges are.
        self._open_ws: dict[int, _Entry] = {}
        self._closed_ws: deque[_Entry] = deque(maxlen=size)

    @property
    def capacity(self) -> int:
        return self._entries.maxlen or 0

    @property
    def entries(self) -> deque[_Entry]:
        """Oldest first, at most `capacity`."""
        raw, entries = self._raw, self._entries
        for item in raw:
            entries.append(item if isinstance(item, _Entry) else _Entry(*item))
        raw.clear()
        return entries

    def add(self, request: Request, ex: Exchange | None, endpoint: str, status: int,
            total_ms: float, injected: str | None,
            resp: Response | None = None) -> None:
        """`resp`: the answer, for the proxy's own (error, preflight) headers and message."""
        self.counter += 1
        fields = (self.counter, self.now() - total_ms / 1000, request.method, request.raw_path,
                  request.scheme, request.body_exists, endpoint, status, total_ms, injected,
                  request.headers, ex, None if ex else resp)
        if ex is not None and ex.tunnel is not None:
            entry = _Entry(*fields, tunnel=ex.tunnel)
            self._raw.append(entry)
            self._open_ws[entry.id] = entry
        else:
            self._raw.append(fields)

    def websockets(self) -> dict[str, list[dict[str, Any]]]:
        """{"open": [...], "recent": [...]}, newest first, handshake headers redacted."""
        for key, entry in list(self._open_ws.items()):
            if entry.tunnel is not None and entry.tunnel.done.done():
                del self._open_ws[key]
                self._closed_ws.append(entry)
        return {"open": [e.json() for e in reversed(self._open_ws.values())],
                "recent": [e.json() for e in reversed(self._closed_ws)]}

    def query(self, since: int = 0, endpoints: frozenset[str] | None = None,
              statuses: StatusFilter | None = None, text: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first. `since`: only records with a larger id (for polling)."""
        needle = text.lower() if text else None
        out: list[dict[str, Any]] = []
        for entry in reversed(self.entries):
            if entry.id <= since:
                break
            if endpoints is not None and entry.endpoint not in endpoints:
                continue
            if statuses is not None and not statuses.matches(entry.status):
                continue
            if needle is not None and needle not in entry.haystack():
                continue
            out.append(entry.json())
            if limit is not None and len(out) >= limit:
                break
        return out

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.query(limit=limit)

    def endpoints(self) -> list[str]:
        return sorted({e.endpoint for e in self.entries})


def _build(e: _Entry) -> dict[str, Any]:
    ex, resp = e.ex, e.resp
    received = list(e.received.items()) if e.received else []
    sent = _sent_headers(ex)
    also = frozenset([e.injected.lower()]) if e.injected else frozenset()
    value = _header(sent, e.injected) if e.injected else None
    # An endpoint's token_query parameter holds the credential, whatever its name looks like.
    query_also = frozenset([ex.up.token_query]) if ex and ex.up and ex.up.token_query \
        else frozenset()
    answered = ex.response_headers if ex else list(resp.headers.items()) if resp else []
    return {
        "id": e.id,
        "time": e.time,
        "method": e.method,
        "path": redact_target(e.path, query_also),
        "endpoint": e.endpoint,
        "status": e.status,
        "total_ms": round(e.total_ms, 2),
        "upstream_ms": round(ex.upstream_ms, 2) if ex and ex.upstream_ms is not None else None,
        "upstream_url": redact_target(str(ex.upstream_url), query_also)
        if ex and ex.upstream_url else None,
        "request_id": ex.request_id if ex else None,
        "amzn_request_id": ex.amzn_request_id if ex else None,
        "bytes": ex.bytes_out if ex else _length(resp),
        "error": ex.error if ex else _own_error(resp),
        "hint": ex.hint if ex else None,
        "replayed": ex.replayed if ex else False,
        "injected_header": e.injected,
        "request_headers": _marked(received, _received_mark(sent) if ex else _no_mark, also),
        "sent_headers": _marked(sent, _sent_mark(received, e.injected), also),
        "response_headers": _marked(answered, _no_mark),
        "token": token_info(e.injected, value, e.time) if e.injected and value else None,
        "curl": curl(e, received, query_also),
    }


@dataclass(frozen=True)
class StatusFilter:
    """`401`, `4xx`, or a comma-separated mix: `401,403,5xx`."""

    codes: frozenset[int]
    classes: frozenset[int]  # 4 for 4xx

    @classmethod
    def parse(cls, text: str) -> StatusFilter:
        codes, classes = set(), set()
        for part in (p.strip().lower() for p in text.split(",")):
            if len(part) == 3 and part[0] in "12345" and part[1:] == "xx":
                classes.add(int(part[0]))
            elif part.isdigit() and 100 <= int(part) <= 599:
                codes.add(int(part))
            else:
                raise ValueError(f"status {part!r}: use a code (401) or a class (4xx)")
        return cls(frozenset(codes), frozenset(classes))

    def matches(self, status: int) -> bool:
        return status in self.codes or status // 100 in self.classes


def token_info(header: str, value: str, now: float) -> dict[str, Any] | None:
    """The decoded claims of an injected JWT with human times; None when it is not a JWT."""
    decoded = _decode(value)
    if decoded is None:
        return None
    alg, items = decoded
    claims = dict(items)
    return {"header": header, "value": redact(value), "alg": alg, "claims": claims,
            "times": {c: describe_time(c, claims[c], now) for c in TIME_CLAIMS if c in claims},
            "expires_in": round(claims["exp"] - now, 1)
            if isinstance(claims.get("exp"), int | float) else None}


@functools.lru_cache(maxsize=64)
def _decode(value: str) -> tuple[str | None, tuple[tuple[str, Any], ...]] | None:
    # A credential sends the same token for an hour: decode it once, not per request.
    try:
        head, claims = parse(value)
    except ValueError:
        return None
    alg = head.get("alg")
    return (alg if isinstance(alg, str) else None,
            tuple((k, claims[k]) for k in CLAIMS if k in claims))


def curl(e: _Entry, received: Headers, also: frozenset[str] = frozenset()) -> str:
    """The same request through the proxy: the proxy injects the credential again, so the
    command holds no secret. Secret headers the client sent are left out and named; secret
    query values (in the URL or a header's URL) are redacted and named."""
    host = next((v for k, v in received if k.lower() == "host"), "localhost")
    words = ["curl", "-sS"]
    if e.method == "HEAD":
        words.append("--head")
    elif e.method != "GET":
        words += ["-X", e.method]
    target = redact_target(e.path, also)
    words.append(shlex.quote(f"{e.scheme}://{host}{target}"))
    redacted = ["the URL"] if target != e.path else []
    left_out = []
    for name, value in received:
        low = name.lower()
        if low == SECRET_HEADER:
            words += ["-H", f'"{name}: $AUTHPROXY_SECRET"']
        elif low == "accept-encoding":
            words.append("--compressed")
        elif low in _NOT_IN_CURL or low == (e.injected or "").lower():
            continue
        elif low in SENSITIVE:
            left_out.append(name)
        else:
            shown = redact_queries(value)
            if shown != value:
                redacted.append(name)
            words += ["-H", shlex.quote(f"{name}: {shown}")]
    if e.body:
        words += ["--data-binary", "@body"]
    command = " ".join(words)
    notes = []
    if e.body:
        notes.append("the body is not kept: save it as ./body")
    if left_out:
        notes.append("left out (secret): " + ", ".join(left_out))
    if redacted:
        notes.append("secret values redacted (***): " + ", ".join(redacted))
    return command + (f"  # {'; '.join(notes)}" if notes else "")


def _websocket(t: Tunnel) -> dict[str, Any]:
    return {"open": not t.done.done(), "bytes_up": t.bytes_up, "bytes_down": t.bytes_down,
            "closed_by": t.closed_by, "close_code": t.close_code, "error": t.error,
            "opened_at": t.started,
            "closed_at": t.ended}


def _sent_headers(ex: Exchange | None) -> Headers:
    if ex is None:
        return []
    url = ex.upstream_url
    sent = list(ex.sent_headers)
    if url is not None and url.host:
        # aiohttp adds Host itself; show it, since it is one of the headers the proxy replaces.
        host = url.host if url.explicit_port is None else f"{url.host}:{url.explicit_port}"
        sent.insert(0, ("Host", host))
    return sent


def _header(headers: Headers, name: str) -> str | None:
    low = name.lower()
    return next((v for k, v in headers if k.lower() == low), None)


def _values(headers: Headers) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for k, v in headers:
        out.setdefault(k.lower(), set()).add(v)
    return out


def _received_mark(sent: Headers) -> Callable[[str, str], str | None]:
    went = _values(sent)

    def mark(name: str, value: str) -> str | None:
        values = went.get(name.lower())
        if values is None:
            return "dropped"
        return None if value in values else "replaced"
    return mark


def _sent_mark(received: Headers, injected: str | None) -> Callable[[str, str], str | None]:
    came = _values(received)
    inj = (injected or "").lower()

    def mark(name: str, value: str) -> str | None:
        low = name.lower()
        values = came.get(low)
        if values is not None and value in values:
            return None  # forwarded as the client sent it
        if low == inj:
            return "injected"
        return "added" if values is None else "replaced"
    return mark


def _no_mark(name: str, value: str) -> None:
    return None


def _marked(headers: Headers, mark: Callable[[str, str], str | None],
            also: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    marks = [mark(k, v) for k, v in headers]
    return [{"name": k, "value": v, "mark": m}
            for (k, v), m in zip(redact_headers(headers, also), marks, strict=True)]


def _length(resp: Response | None) -> int | None:
    if isinstance(resp, Response) and isinstance(resp.body, bytes):
        return len(resp.body)
    return None


def _own_error(resp: Response | None) -> str | None:
    """`no_route: no endpoint matches /x ...` for the proxy's own JSON errors."""
    if resp is None or "X-Authproxy-Error" not in resp.headers:
        return None
    code = resp.headers["X-Authproxy-Error"]
    try:
        body = resp.body if isinstance(resp, Response) else None
        message = json.loads(body)["message"] if isinstance(body, bytes) else None
    except (ValueError, KeyError, TypeError):
        message = None
    return f"{code}: {message}" if message else code


def _haystack(entry: dict[str, Any]) -> str:
    parts: Iterable[Any] = (
        entry["method"], entry["path"], entry["endpoint"], entry["status"],
        entry["upstream_url"], entry["request_id"], entry["amzn_request_id"], entry["error"],
        entry["hint"], *(f"{h['name']}: {h['value']}" for key in (
            "request_headers", "sent_headers", "response_headers") for h in entry[key]),
        json.dumps(entry["token"]["claims"]) if entry["token"] else None)
    return "\n".join(str(p) for p in parts if p is not None).lower()
