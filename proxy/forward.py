"""Forward one request upstream and stream the answer back.

Knows nothing of auth or rules: the caller hands it the compiled `Upstream`, the rest of the raw
path and the headers to inject. Bodies stream both ways with bounded memory and are never
decoded; failures map to the SPEC's 502/504 answers, or, once the answer has started, to a closed
connection (a truncated body is the only honest signal left then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from multidict import CIMultiDict
from yarl import URL

from proxy.errors import error_response
from proxy.http.client_conn import Body, MalformedBody, Request, new_request_id, request_id
from proxy.http.respond import Relay, Response, bodiless
from proxy.http.spool import EMPTY_SHA256, BodyTooLarge, SpooledBody
from proxy.http.tunnel import Tunnel
from proxy.http.upstream import Answer, Pool, UpstreamError
from proxy.target import FRAMING, HOP_BY_HOP, Upstream, connection_tokens

log = logging.getLogger("authproxy.forward")

MAX_REPLAY_BODY = 1024 * 1024
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(slots=True)
class Exchange:
    """What happened to one request: filled in as it travels, read by logging and metrics."""

    request_id: str = ""
    status: int = 0
    up: Upstream | None = None
    target: tuple[str, str] = ("", "")  # rest of the path, query
    upstream_ms: float | None = None
    amzn_request_id: str | None = None
    error: str | None = None
    hint: str | None = None  # why API Gateway refused, when its answer says so
    replayed: bool = False  # a 401 made the credential refresh and the request go again
    bytes_out: int = 0  # body bytes sent back to the client
    websocket: bool = False  # a WebSocket handshake (switched or refused)
    tunnel: Tunnel | None = None  # a handshake that switched: its tunnel
    sent_headers: list[tuple[str, str]] = field(default_factory=list)
    response_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def upstream_url(self) -> URL | None:
        # Built only when someone looks (history, logs): a yarl URL costs microseconds.
        return self.up.url(*self.target, websocket=self.websocket) if self.up is not None \
            else None


Inject = tuple[tuple[str, str], ...]  # the credential's headers, one or more pairs
# replay(sent, body_sha256, headers): the credential's headers to send again with, or None;
# for a signed request the body's sha256 and the headers going upstream, to sign again over
Replay = Callable[[Inject, str | None, Sequence[tuple[str, str]]], Awaitable[Inject | None]]


class Sign(Protocol):
    """A credential that signs this request over its body's hash and the headers going
    upstream (its own aside): `now` when that needs no wait, else `later`."""

    def now(self, body_sha256: str, headers: Sequence[tuple[str, str]]) -> Inject | None: ...

    async def later(self, body_sha256: str, headers: Sequence[tuple[str, str]]) -> Inject: ...


HINT_BODY_LIMIT = 8192  # API Gateway's own error bodies are a few dozen bytes


class ClientStalled(Exception):
    """The client's body stopped moving for listen.header_timeout."""


async def _client_body(content: Body, stall: float) -> AsyncIterator[bytes]:
    """The client's body as it arrives. What is already buffered is taken without waiting;
    a wait longer than `stall` ends the exchange, so a client that stops mid-body cannot hold
    an upstream connection (and its own) for as long as it likes."""
    while True:
        chunk = content.read_nowait(-1)
        if not chunk:
            if content.at_eof():
                return
            try:
                async with asyncio.timeout(stall):
                    chunk = await content.readany()
            except TimeoutError:
                raise ClientStalled() from None
            if not chunk:
                return
        yield chunk


class _KeptBody:
    """Streams the client's body upstream while keeping a copy of up to MAX_REPLAY_BODY bytes,
    so that a request refused with 401 can be sent again after a token refresh."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        self.content = content
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    async def stream(self) -> AsyncIterator[bytes]:
        async for chunk in self.content:
            self.size += len(chunk)
            if self.size <= MAX_REPLAY_BODY:
                self.chunks.append(chunk)
            else:
                self.chunks.clear()
            yield chunk
        self.complete = self.size <= MAX_REPLAY_BODY

    def replayable(self) -> bytes | None:
        return b"".join(self.chunks) if self.complete else None


def framing_problem(request: Request) -> str | None:
    """Why the client's hop-by-hop headers cannot be honoured, or None. A Connection header
    naming Content-Length, Transfer-Encoding or Host asks the proxy to drop the very headers
    that frame the request: honouring it would let the body run into the next request on a
    pooled upstream connection (and another client's credential into this one's answer)."""
    conn = request.headers.getall("Connection", ())
    if conn and FRAMING & (tokens := connection_tokens(conn)):
        named = ", ".join(sorted(FRAMING & tokens))
        return f"the Connection header may not name {named}: framing is the proxy's own"
    return None


def header_list(request: Request, up: Upstream, inject: Inject | None,
                ex: Exchange, signing: bool = False) -> list[tuple[str, str]]:
    """The headers sent upstream (Host and framing aside), in the client's order, ours
    appended. `signing`: the credential's headers come later, over these; the client's copies
    of all of them are dropped now."""
    h = request.headers
    out: list[tuple[str, str]] = []
    conn = h.getall("Connection", ())
    listed = connection_tokens(conn) if conn else frozenset()
    drop, auth = up.drop_signing if signing else up.drop, up.auth_header
    client_has_auth = False
    for name, value in h.items():
        low = name.lower()
        if low in drop or low in listed or low.startswith("proxy-"):
            continue
        if low == auth:
            client_has_auth = True
            if not up.keep_client_auth:
                continue
        out.append((name, value))
    if inject is not None and not (client_has_auth and up.keep_client_auth):
        out.extend(inject)
    out.extend(up.set_headers)
    ex.request_id = rid = h.get("X-Request-Id") or new_request_id()
    prior = h.get("X-Forwarded-For")
    peer = request.remote or ""
    out += (("X-Request-Id", rid), ("X-Forwarded-For", f"{prior}, {peer}" if prior else peer),
            ("X-Forwarded-Proto", request.scheme), ("X-Forwarded-Host", h.get("Host", "")))
    return out


def upstream_headers(request: Request, up: Upstream,
                     inject: Inject | None, ex: Exchange) -> CIMultiDict[str]:
    return CIMultiDict(header_list(request, up, inject, ex))


def response_headers(up: Upstream, headers: Iterable[tuple[str, str]], request: Request,
                     extra: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    listed: list[str] | None = None  # the upstream's Connection values: hop-by-hop names too
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP or low.startswith(("proxy-", "access-control-")):
            # CORS is answered by the proxy alone (`extra`), never twice
            if low == "connection":
                listed = [*(listed or ()), value]
            continue
        if low == "location":
            value = _local_location(up, value, request)
        out.append((name, value))
    if listed is not None:
        named = connection_tokens(listed)
        out = [(n, v) for n, v in out if n.lower() not in named]
    out.extend(extra)
    return out


def _local_location(up: Upstream, location: str, request: Request) -> str:
    """A redirect to a place under the upstream base points back through the proxy."""
    if location.startswith("//"):
        # Scheme-relative: another site unless it names the upstream itself.
        location = f"{up.scheme}:{location}" if _under(
            f"{up.scheme}:{location}", up.origin + up.base_path) else location
    absolute = up.origin + up.base_path
    if _under(location, absolute):
        host = request.headers.get("Host", "localhost")
        return f"{request.scheme}://{host}{up.local_prefix}{location[len(absolute):] or '/'}"
    if location.startswith("/") and not location.startswith("//") \
            and _under(location, up.base_path):
        return f"{up.local_prefix}{location[len(up.base_path):]}" or "/"
    return location


def _under(location: str, base: str) -> bool:
    return location.startswith(base) and location[len(base):len(base) + 1] in ("", "/", "?")


def request_head(method: str, up: Upstream, rest: str, query: str,
                 headers: list[tuple[str, str]], chunked: bool) -> bytes:
    target = up.base_path + rest + ("?" + query if query else "")
    # The client connection decoded the client's bytes with surrogateescape: this gives them back.
    return (f"{method} {up.target_prefix}{target} HTTP/1.1\r\nHost: {up.host_header}\r\n"
            f"{up.proxy_line}"
            + "\r\n".join(map(": ".join, headers))
            + ("\r\nTransfer-Encoding: chunked\r\n\r\n" if chunked else "\r\n\r\n")
            ).encode("utf-8", "surrogateescape")


async def forward(request: Request, pool: Pool, up: Upstream,
                  rest: str, query: str, inject: Inject | None,
                  cors_headers: Iterable[tuple[str, str]], ex: Exchange,
                  replay: Replay | None = None, sign: Sign | None = None,
                  body_limit: int = 0) -> Response:
    """`replay`, for credentials that can be refreshed: called when the upstream refuses the
    credential (401; for a signed request also a 403 about its security token); it returns new
    headers to send the request again with, or None to pass the refusal back.
    `sign`, for a credential that must hash the body (SigV4): the body is read whole first (at
    most `body_limit` bytes, else 413 and nothing is sent), and `sign` gives the headers in
    place of `inject`."""
    ex.up, ex.target = up, (rest, query)
    method = request.method
    spooled: SpooledBody | None = None
    if sign is not None and not request.body_exists:
        # The common signed GET: nothing to read or spool, the hash of nothing.
        headers = ex.sent_headers = header_list(request, up, None, ex, signing=True)
        inject = sign.now(EMPTY_SHA256, headers) or await sign.later(EMPTY_SHA256, headers)
        headers.extend(inject)
    elif sign is not None:
        spooled = SpooledBody(body_limit)
        try:
            await spooled.fill(_client_body(request.content, up.client_timeout))
            headers = ex.sent_headers = header_list(request, up, None, ex, signing=True)
            # Signed over the headers as they go (the credential's own aside), then added.
            sha = spooled.sha256
            inject = sign.now(sha, headers) or await sign.later(sha, headers)
        except BaseException as e:
            spooled.close()
            if isinstance(e, BodyTooLarge):
                return _too_large(request, ex, body_limit)
            if isinstance(e, ClientStalled):
                return _stalled(request, ex, up)
            if isinstance(e, MalformedBody):
                return _fail(request, None, ex, 400, "bad_request", f"malformed request: {e}")
            if isinstance(e, ConnectionResetError | asyncio.CancelledError) \
                    and client_gone(request):
                return _gone(None, ex)
            raise
        headers.extend(inject)
    else:
        headers = ex.sent_headers = header_list(request, up, inject, ex)
    kept: _KeptBody | None = None
    data: Any = None
    chunked = False
    if spooled is not None:
        data = spooled.payload()
        if data is not None or method not in _NO_BODY_METHODS:
            headers.append(("Content-Length", str(spooled.size)))
    elif request.body_exists:
        # The framing is ours, from what the parser read (the client's own framing
        # headers are never copied): a length when it had one, else chunked.
        length = request.content_length
        chunked = length is None
        if length is not None:
            headers.append(("Content-Length", str(length)))
        data = _client_body(request.content, up.client_timeout)
        if replay is not None:
            kept = _KeptBody(data)
            data = kept.stream()
    elif method not in _NO_BODY_METHODS:
        # As aiohttp's client did: some servers answer a bodiless POST without it with 411.
        headers.append(("Content-Length", "0"))
    started = time.perf_counter()
    deadline = pool.loop.time() + up.timeout
    assert up.endpoint is not None
    resp: Response | None = None
    answer: Answer | None = None
    first = b""  # a refusal's body, when it was read to judge it
    try:
        answer = await pool.request(up.endpoint, method, request_head(
            method, up, rest, query, headers, chunked), data, chunked, deadline)
        refused = answer.status == 401
        if answer.status == 403 and sign is not None and replay is not None \
                and small_answer(answer):
            while chunk := await answer.read():
                first += chunk
            refused = token_refused(first)
        if refused and replay is not None:
            body = spooled.payload() if spooled is not None else (
                kept.replayable() if kept else None)
            if spooled is not None or kept is None or body is not None:
                try:
                    fresh = await replay(inject or (), spooled.sha256 if spooled else None,
                                         headers)
                except BaseException:
                    answer.close()
                    raise
                if fresh is not None:
                    answer.close()
                    first = b""
                    low = {name.lower() for name, _ in fresh}
                    headers = [h for h in headers if h[0].lower() not in low] + list(fresh)
                    ex.sent_headers, ex.replayed = headers, True
                    answer = None
                    answer = await pool.request(
                        up.endpoint, method,
                        request_head(method, up, rest, query, headers, chunked),
                        body, chunked, deadline)
        ex.upstream_ms = (time.perf_counter() - started) * 1000
        status = ex.status = answer.status
        out = ex.response_headers = response_headers(up, answer.headers, request, cors_headers)
        out.append(("X-Request-Id", ex.request_id))
        for name, value in answer.headers:
            if len(name) == 16 and name.lower() == "x-amzn-requestid":
                ex.amzn_request_id = value
                break
        if status in (401, 403):  # the only answers with a hint: no coroutine for the rest
            first = await read_hint(answer, up, ex, out, first)
        if answer.done and answer.error is None:
            # All of it is here already: one write for headers and body.
            body = first + b"".join(answer.chunks)
            ex.bytes_out = len(body) if not bodiless(method, status) else 0
            return Relay(request, status, answer.reason, out, body=body)
        relay = resp = Relay(request, status, answer.reason, out, length=declared_length(answer))
        await stream(request, relay, answer, first, ex)
        return relay
    except UpstreamError as e:
        if e.kind in ("reset", "broken") and client_gone(request):
            return _gone(resp, ex)
        return _fail(request, resp, ex, 502, "upstream_unreachable", error_message(up, e))
    except ClientStalled:
        if resp is not None and resp.prepared:
            return _fail(request, resp, ex, 408, "request_timeout", _stall_message(up))
        return _stalled(request, ex, up)
    except TimeoutError:
        return _fail(request, resp, ex, 504, "upstream_timeout",
                     f"{up.origin} did not answer within {up.timeout:g} s "
                     f"(endpoints[{up.name}].timeout)")
    except MalformedBody as e:
        return _fail(request, resp, ex, 400, "bad_request", f"malformed request: {e}")
    except (ConnectionResetError, asyncio.CancelledError) as e:
        if client_gone(request):
            return _gone(resp, ex)
        if isinstance(e, asyncio.CancelledError):
            raise
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"upstream {up.origin} reset the connection")
    except OSError as e:
        if client_gone(request):
            return _gone(resp, ex)
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"broken answer from {up.origin}: {str(e) or type(e).__name__}")
    finally:
        if answer is not None:
            answer.close()
        if spooled is not None:
            spooled.close()


async def read_hint(answer: Answer, up: Upstream, ex: Exchange, out: list[tuple[str, str]],
                    first: bytes) -> bytes:
    """For a small 401/403 on an endpoint with a hinter: the body read whole (after `first`,
    what was read of it already) and why API Gateway refused added as X-Authproxy-Hint.
    Returns what has been read of the body."""
    if answer.status in (401, 403) and up.hint is not None and (first or small_answer(answer)):
        while chunk := await answer.read():
            first += chunk
        ex.hint = up.hint(answer.status, first, ex.sent_headers)
        if ex.hint:
            out.append(("X-Authproxy-Hint", ex.hint))
    return first


async def stream(request: Request, relay: Relay, answer: Answer, first: bytes,
                 ex: Exchange) -> None:
    """Send the answer's head, what was read of its body (`first`) and the rest as it comes."""
    await relay.prepare(request)
    await relay.send(first)
    while chunks := await answer.read_pieces():
        await relay.send_pieces(chunks)
    await relay.finish()
    ex.bytes_out = relay.bytes_sent


def token_refused(body: bytes) -> bool:
    """API Gateway's 403 for temporary credentials that lapsed or were revoked."""
    low = body.lower()
    return b"security token" in low and (b"invalid" in low or b"expired" in low)


def _stall_message(up: Upstream) -> str:
    return f"the request body stopped for {up.client_timeout:g} s (listen.header_timeout)"


def _stalled(request: Request, ex: Exchange, up: Upstream) -> Response:
    ex.error, ex.status = _stall_message(up), 408
    stalled = error_response(408, "request_timeout", ex.error)
    stalled.headers["X-Request-Id"] = ex.request_id or request_id(request)
    stalled.force_close()  # not lingering to read the rest of a body that is not coming
    return stalled


def _too_large(request: Request, ex: Exchange, limit: int) -> Response:
    ex.error, ex.status = (f"the request body is over {limit} bytes, the most a signed request "
                           "may carry (max_signed_body)"), 413
    resp = error_response(413, "body_too_large", ex.error)
    resp.force_close()  # the rest of the body is not read
    return resp


def declared_length(answer: Answer) -> int | None:
    """The body length the upstream declared, if it framed the body by one."""
    for name, value in answer.headers:
        if name.lower() == "content-length":
            return int(value) if value.isdigit() else None
    return None


def small_answer(answer: Answer) -> bool:
    if answer.done:
        return True
    for name, value in answer.headers:
        if name.lower() == "content-length":
            return value.isdigit() and int(value) <= HINT_BODY_LIMIT
    return False


def error_message(up: Upstream, e: UpstreamError) -> str:
    kind, origin = e.kind, up.origin
    if kind == "cert":
        return (f"TLS certificate of {origin} not trusted ({e}); if it is signed by a private "
                f"CA, set tls_verify: /path/to/ca-bundle.pem")
    if kind == "tls":
        return f"TLS handshake with {origin} failed: {e}"
    if kind == "connect_timeout":
        return f"could not connect to {origin} within {up.connect_timeout:g} s"
    if kind == "connect":
        return f"cannot connect to {origin}: {e}"
    if kind == "reset":
        return f"upstream {origin} reset the connection"
    return f"broken answer from {origin}: {e}"


def client_gone(request: Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _gone(resp: Response | None, ex: Exchange) -> Response:
    ex.error = "client disconnected"
    ex.status = ex.status or 499
    if isinstance(resp, Relay):
        ex.bytes_out = resp.bytes_sent
    return resp or Response(499)


def _fail(request: Request, resp: Response | None, ex: Exchange, status: int,
          code: str, message: str) -> Response:
    ex.error = message
    if isinstance(resp, Relay):
        ex.bytes_out = resp.bytes_sent
    if resp is not None and resp.prepared:
        # The status line is gone; cutting the connection is the only way left to say "broken".
        if request.transport is not None:
            request.transport.close()
        return resp
    ex.status = status
    return error_response(status, code, message)
