"""WebSocket handshakes: forwarded upstream with the credential on them, then, after `101
Switching Protocols`, a byte tunnel (proxy/http/tunnel.py) between the two sockets.

A handshake is an upgrade the client connection's parser stopped at (`Connection: upgrade`,
`Upgrade: websocket`), a GET without a body in HTTP/1.1. Anything else asking for an upgrade is
either a plain request (its `Upgrade` dropped as hop-by-hop: h2c never passes) or refused, and a
refused or failed handshake always ends its connection: what the client sent behind it was meant
for a WebSocket, never to be read as further requests.

The credential goes where API Gateway's `$connect` authorizers read it: a header, as for any
request; the endpoint's `token_query` parameter (the bare value, percent-encoded, in place of
the client's own parameter of that name); or, for a credential that `signs_url` (iam), a
presigned handshake URL. An upstream that refuses the handshake has its answer passed back as
it came (status, headers, body, plus X-Request-Id and the usual hint); a credential that can be
refreshed is refreshed once on a 401 and the handshake sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote, unquote_plus

from proxy.credentials import CredentialSource, CredentialsUnavailable, Outgoing
from proxy.errors import error_response
from proxy.forward import (
    Exchange,
    Inject,
    client_gone,
    declared_length,
    error_message,
    header_list,
    read_hint,
    request_head,
    response_headers,
    small_answer,
    stream,
    token_refused,
)
from proxy.http.client_conn import ClientConnection, Request
from proxy.http.respond import Relay, Response
from proxy.http.tunnel import Tunnel, Tunnels
from proxy.http.upstream import Answer, Pool, UpstreamError
from proxy.target import Upstream

PRESIGN_EXPIRES = 300  # seconds a presigned handshake URL is valid: it is used at once


def is_handshake(request: Request) -> bool:
    """Asks for a WebSocket (the caller has seen an `Upgrade` header: the cheap test on the
    hot path). Decided as llhttp decides an upgrade, so that what the client sent behind the head
    is exactly what the connection kept aside."""
    value = request.headers.get("Upgrade", "")
    if not (value.isascii() and value.lower() == "websocket"):
        return False
    return "upgrade" in {t.strip().lower() for v in request.headers.getall("Connection", ())
                         for t in v.split(",")}


def handshake_problem(request: Request) -> str | None:
    """Why this upgrade request cannot be a WebSocket handshake through the proxy, or None."""
    if request.method != "GET":
        return f"a WebSocket handshake is a GET, not {request.method}"
    if request.body_exists:
        return "a WebSocket handshake has no body"
    if request.version < (1, 1):
        return "a WebSocket handshake needs HTTP/1.1"
    protocol = request.protocol
    if not isinstance(protocol, ClientConnection) or not protocol.can_take_over():
        return "this connection cannot be switched to WebSocket"
    return None


def _name(piece: str) -> str:
    """A query parameter's name as the server reads it (`%74oken` is `token`)."""
    raw = piece.partition("=")[0]
    return unquote_plus(raw) if "%" in raw or "+" in raw else raw


def _has_param(query: str, name: str) -> bool:
    return any(_name(piece) == name for piece in query.split("&")) if query else False


def with_token(query: str, name: str, value: str) -> str:
    """`query` with parameter `name` set to `value` (percent-encoded): in place of the
    client's first one (any copies dropped, however their names were encoded), else last."""
    encoded = f"{name}={quote(value, safe='-_.~')}"
    out, placed = [], False
    for piece in query.split("&") if query else ():
        if _name(piece) == name:
            if not placed:
                out.append(encoded)
                placed = True
            continue
        out.append(piece)
    if not placed:
        out.append(encoded)
    return "&".join(out)


class Handshake:
    """How one endpoint's credential goes on a handshake, decided from the config at start."""

    def __init__(self, up: Upstream, source: CredentialSource | None) -> None:
        self.up = up
        self.source = source
        self.presigned = source is not None and source.signs_url
        self.query_name = up.token_query if source is not None else None
        # The bare value for token_query: the header value without the strategy's prefix.
        self.prefix = source.describe().prefix if source is not None and self.query_name \
            else ""

    async def credential(self, request: Request, rest: str, query: str,
                         ex: Exchange) -> tuple[str, list[tuple[str, str]], Inject]:
        """(query string, headers to send, what was sent for `rejected`)."""
        up, source = self.up, self.source
        if source is None or (up.keep_client_auth and (
                source.header_name in request.headers if self.query_name is None
                else _has_param(query, self.query_name))):
            # No credential, or client_header: keep and the client brought its own: the
            # handshake goes as the client sent it.
            return query, _handshake_headers(request, up, None, ex), ()
        if self.presigned:
            headers = _handshake_headers(request, up, None, ex, signing=True)
            signed, sent = await source.presign(Outgoing(
                "GET", up.host_header, up.base_path + rest, query, headers), PRESIGN_EXPIRES)
            return signed, headers, sent
        inject = source.current() or await source.headers_for(Outgoing(
            "GET", up.host_header, up.base_path + rest, query,
            header_list(request, up, None, Exchange())))
        if self.query_name is None:
            return query, _handshake_headers(request, up, inject, ex), inject
        low = source.header_name.lower()
        value = next((v for k, v in inject if k.lower() == low), "")
        if self.prefix and value.startswith(self.prefix):
            value = value[len(self.prefix):]
        return (with_token(query, self.query_name, value),
                _handshake_headers(request, up, None, ex), inject)


def _handshake_headers(request: Request, up: Upstream, inject: Inject | None,
                       ex: Exchange, signing: bool = False) -> list[tuple[str, str]]:
    # The client's Sec-WebSocket-* pass as they came; Connection and Upgrade are hop-by-hop,
    # so header_list drops the client's and the handshake's own go last.
    headers = header_list(request, up, inject, ex, signing=signing)
    headers += (("Upgrade", "websocket"), ("Connection", "Upgrade"))
    return headers


async def open_tunnel(request: Request, pool: Pool, hs: Handshake, rest: str,
                      query: str, ex: Exchange, tunnels: Tunnels,
                      opened: Callable[[Exchange], None] | None = None) -> Response:
    """Forwards the handshake; after a 101, tunnels until either side closes (`opened` is
    told when it switched). Returns the answer for the client connection (already sent, and the
    connection to be closed after it)."""
    up = hs.up
    ex.up, ex.websocket = up, True
    ex.target = (rest, query)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + up.timeout  # `timeout` bounds the handshake only
    assert up.endpoint is not None
    started = time.perf_counter()
    answer: Answer | None = None
    try:
        target, headers, sent = await hs.credential(request, rest, query, ex)
        for attempt in (1, 2):
            ex.target, ex.sent_headers = (rest, target), headers
            answer = await pool.request(up.endpoint, "GET", request_head(
                "GET", up, rest, target, headers, False), None, False, deadline, upgrade=True)
            if attempt == 2 or hs.source is None or not hs.source.refreshable \
                    or not await _refused(answer, hs):
                break
            if not await hs.source.rejected(sent):
                break
            answer.close()
            answer = None
            ex.replayed = True
            target, headers, sent = await hs.credential(request, rest, query, Exchange())
        assert answer is not None
        ex.upstream_ms = (time.perf_counter() - started) * 1000
        ex.status = answer.status
        for name, value in answer.headers:
            if name.lower() == "x-amzn-requestid":
                ex.amzn_request_id = value
                break
        if answer.status != 101:
            return await _refusal(request, answer, hs, ex)
        return await _switch(request, pool, answer, up, ex, tunnels, opened)
    except CredentialsUnavailable as e:
        return _closing(ex, error_response(503, "credentials_unavailable",
                                           f"credential {hs.source.name if hs.source else ''!r}"
                                           f": {e}"), str(e))
    except UpstreamError as e:
        return _closing(ex, error_response(502, "upstream_unreachable", error_message(up, e)))
    except TimeoutError:
        return _closing(ex, error_response(
            504, "upstream_timeout", f"{up.origin} did not answer the WebSocket handshake "
            f"within {up.timeout:g} s (endpoints[{up.name}].timeout)"))
    except (ConnectionResetError, OSError) as e:
        if client_gone(request):
            ex.error, ex.status = "client disconnected", ex.status or 499
            return Response(status=499)
        return _closing(ex, error_response(502, "upstream_unreachable",
                                           f"upstream {up.origin}: {e}"))
    finally:
        if answer is not None and ex.tunnel is None:
            answer.close()


async def _refused(answer: Answer, hs: Handshake) -> bool:
    """The upstream refused the credential: 401, or for a signature a 403 about its token."""
    if answer.status == 401:
        return True
    if answer.status != 403 or not hs.presigned or not small_answer(answer):
        return False
    body = b""
    while chunk := await answer.read():
        body += chunk
    answer.chunks = [body]  # the whole answer is in (small_answer): _refusal reads it again
    return token_refused(body)


async def _refusal(request: Request, answer: Answer, hs: Handshake,
                   ex: Exchange) -> Response:
    """The upstream's answer, as it came, and then the connection closes."""
    up = hs.up
    out = ex.response_headers = response_headers(up, answer.headers, request, ())
    out.append(("X-Request-Id", ex.request_id))
    first = await read_hint(answer, up, ex, out, b"")
    if answer.done and answer.error is None:
        body = first + b"".join(answer.chunks)
        ex.bytes_out = len(body)
        return Relay(request, answer.status, answer.reason, out, body=body, close=True)
    relay = Relay(request, answer.status, answer.reason, out, length=declared_length(answer),
                  close=True)
    await stream(request, relay, answer, first, ex)
    return relay


async def _switch(request: Request, pool: Pool, answer: Answer, up: Upstream,
                  ex: Exchange, tunnels: Tunnels,
                  opened: Callable[[Exchange], None] | None) -> Response:
    protocol = request.protocol
    client = request.transport
    if client is None or client.is_closing() or not isinstance(protocol, ClientConnection):
        ex.error, ex.status = "client disconnected before the switch", 499
        return Response(status=499)
    upstream, upstream_tail = pool.detach(answer)
    client_tail = protocol.take_over()
    if client_tail is None:  # checked before the handshake went: cannot happen unless gone
        upstream.abort()
        ex.error, ex.status = "client connection could not be switched", 499
        return Response(status=499)
    out = ex.response_headers = response_headers(up, answer.headers, request, ())
    out += (("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("X-Request-Id", ex.request_id))
    client.write(_head(answer.reason, out))
    tunnel = ex.tunnel = Tunnel(client, protocol, upstream, up.idle_timeout, tunnels, ex)
    tunnel.start(client_tail, upstream_tail)
    if opened is not None:
        opened(ex)
    try:
        await asyncio.shield(tunnel.done)
    except asyncio.CancelledError:
        tunnel.abort("proxy")
        raise
    ex.error = tunnel.error
    return Switched()


def _head(reason: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 101 {reason}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _closing(ex: Exchange, resp: Response, error: str | None = None) -> Response:
    ex.status = resp.status
    ex.error = error or resp.headers.get("X-Authproxy-Error")
    resp.force_close()
    return resp


class Switched(Response):
    """What the connection gets back once a tunnel is over: the 101 went long ago and the
    connection is closed; nothing is left to send."""

    def __init__(self) -> None:
        super().__init__(101)
        self._sent = True
        self.force_close()
