"""Forward one request upstream and stream the answer back.

Knows nothing of auth or rules: the caller hands it the compiled `Upstream`, the rest of the raw
path and the headers to inject. Bodies stream both ways with bounded memory and are never
decoded; failures map to the SPEC's 502/504 answers, or, once the answer has started, to a closed
connection (a truncated body is the only honest signal left then).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.config import Endpoint
from proxy.errors import error_response

log = logging.getLogger("authproxy.forward")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Never sent upstream: Host is the upstream's own, the X-Forwarded-* are ours to set, and the
# shared secret guards this proxy only.
_REQUEST_DROP = HOP_BY_HOP | {"host", "x-authproxy-secret", "x-forwarded-for",
                              "x-forwarded-proto", "x-forwarded-host"}
# aiohttp would invent these; a proxy must send only what the client sent.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
MAX_REPLAY_BODY = 1024 * 1024


@dataclass(frozen=True)
class Upstream:
    """Everything about one endpoint's upstream that can be decided at start."""

    name: str
    scheme: str
    host: str
    port: int | None
    base_path: str  # raw, no trailing slash
    origin: str  # scheme://host[:port], to recognise redirects to the upstream
    local_prefix: str  # "" for "/", else the endpoint's prefix
    ssl: ssl.SSLContext | bool
    proxy: str | None  # from HTTPS_PROXY / HTTP_PROXY unless NO_PROXY says otherwise
    timeout: aiohttp.ClientTimeout
    drop: frozenset[str]  # lower-case request header names never forwarded
    set_headers: tuple[tuple[str, str], ...]
    auth_header: str | None  # the injected header name, lower-case
    keep_client_auth: bool
    hint: Hinter | None = None  # explains API Gateway's 401/403 answers

    @classmethod
    def build(cls, ep: Endpoint, auth_header: str | None,
              hint: Hinter | None = None) -> Upstream:
        url = URL(ep.endpoint, encoded=True)
        assert url.host is not None
        origin = f"{url.scheme}://{url.raw_authority}"
        return cls(
            name=ep.name, scheme=url.scheme, host=url.host, port=url.explicit_port,
            base_path=url.raw_path.rstrip("/"), origin=origin,
            local_prefix="" if ep.prefix == "/" else ep.prefix,
            ssl=_ssl_context(ep.tls_verify) if url.scheme == "https" else False,
            proxy=_env_proxy(url), timeout=aiohttp.ClientTimeout(
                total=ep.timeout, sock_connect=ep.connect_timeout),
            drop=_REQUEST_DROP | {h.lower() for h in ep.remove_headers}
            | {k.lower() for k, _ in ep.set_headers},
            set_headers=ep.set_headers, auth_header=auth_header.lower() if auth_header else None,
            keep_client_auth=ep.client_header == "keep", hint=hint)

    def url(self, rest: str, query: str) -> URL:
        # Built from parts, so nothing in the request can change scheme, host or port.
        return URL.build(scheme=self.scheme, host=self.host, port=self.port,
                         path=self.base_path + rest, query_string=query, encoded=True)


def _ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    if verify is False:
        return False
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    return ctx


def _env_proxy(url: URL) -> str | None:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY as curl reads them, decided once per endpoint."""
    proxies = urllib.request.getproxies_environment()
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxies or bypass(url.host or "", proxies):
        return None
    return proxies.get(url.scheme)


@dataclass(slots=True)
class Exchange:
    """What happened to one request: filled in as it travels, read by logging and metrics."""

    request_id: str = ""
    status: int = 0
    upstream_url: URL | None = None
    upstream_ms: float | None = None
    amzn_request_id: str | None = None
    error: str | None = None
    hint: str | None = None  # why API Gateway refused, when its answer says so
    replayed: bool = False  # a 401 made the credential refresh and the request go again
    bytes_out: int = 0  # body bytes sent back to the client
    sent_headers: list[tuple[str, str]] = field(default_factory=list)
    response_headers: list[tuple[str, str]] = field(default_factory=list)


Replay = Callable[[], Awaitable[tuple[str, str] | None]]
Hinter = Callable[[int, bytes, list[tuple[str, str]]], str | None]
HINT_BODY_LIMIT = 8192  # API Gateway's own error bodies are a few dozen bytes


class _KeptBody:
    """Streams the client's body upstream while keeping a copy of up to MAX_REPLAY_BODY bytes,
    so that a request refused with 401 can be sent again after a token refresh."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    async def stream(self) -> AsyncIterator[bytes]:
        async for chunk in self.content.iter_any():
            self.size += len(chunk)
            if self.size <= MAX_REPLAY_BODY:
                self.chunks.append(chunk)
            else:
                self.chunks.clear()
            yield chunk
        self.complete = self.size <= MAX_REPLAY_BODY

    def replayable(self) -> bytes | None:
        return b"".join(self.chunks) if self.complete else None


def upstream_headers(request: web.Request, up: Upstream,
                     inject: tuple[str, str] | None, ex: Exchange) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    h = request.headers
    connection_listed = (
        {t.strip().lower() for t in h.get("Connection", "").split(",")} if "Connection" in h
        else ())
    client_has_auth = False
    for name, value in h.items():
        low = name.lower()
        if low in up.drop or low in connection_listed:
            continue
        if low == up.auth_header:
            client_has_auth = True
            if not up.keep_client_auth:
                continue
        headers.add(name, value)
    if inject is not None and not (client_has_auth and up.keep_client_auth):
        headers[inject[0]] = inject[1]
    for name, value in up.set_headers:
        headers[name] = value
    ex.request_id = h.get("X-Request-Id") or uuid.uuid4().hex
    headers["X-Request-Id"] = ex.request_id
    peer = request.remote or ""
    prior = h.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = h.get("Host", "")
    return headers


def response_headers(up: Upstream, resp: aiohttp.ClientResponse, request: web.Request,
                     extra: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in resp.headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low.startswith("access-control-"):
            continue  # CORS is answered by the proxy alone (`extra`), never twice
        if low == "location":
            value = _local_location(up, value, request)
        out.add(name, value)
    out.extend(extra)
    return out


def _local_location(up: Upstream, location: str, request: web.Request) -> str:
    """A redirect to a place under the upstream base points back through the proxy."""
    absolute = up.origin + up.base_path
    if _under(location, absolute):
        host = request.headers.get("Host", "localhost")
        return f"{request.scheme}://{host}{up.local_prefix}{location[len(absolute):] or '/'}"
    if location.startswith("/") and _under(location, up.base_path):
        return f"{up.local_prefix}{location[len(up.base_path):]}" or "/"
    return location


def _under(location: str, base: str) -> bool:
    return location.startswith(base) and location[len(base):len(base) + 1] in ("", "/", "?")


async def forward(request: web.Request, session: aiohttp.ClientSession, up: Upstream,
                  rest: str, query: str, inject: tuple[str, str] | None,
                  cors_headers: Iterable[tuple[str, str]], ex: Exchange,
                  replay: Replay | None = None) -> web.StreamResponse:
    """`replay`, for credentials that can be refreshed: called when the upstream answers 401;
    it returns a new header to send the request again with, or None to pass the 401 back."""
    headers = upstream_headers(request, up, inject, ex)
    ex.sent_headers = list(headers.items())
    url = ex.upstream_url = up.url(rest, query)
    kept: _KeptBody | None = None
    data: Any = None
    if request.body_exists:
        if replay is not None:
            kept = _KeptBody(request.content)
            data = kept.stream()
        else:
            data = request.content
    started = time.perf_counter()
    resp: web.StreamResponse | None = None
    try:
        upstream = await _send(session, request.method, url, headers, data, up)
        if upstream.status == 401 and replay is not None:
            body = kept.replayable() if kept else None
            if kept is None or body is not None:
                try:
                    fresh = await replay()
                except BaseException:
                    upstream.release()
                    raise
                if fresh is not None:
                    upstream.release()
                    headers[fresh[0]] = fresh[1]
                    ex.sent_headers, ex.replayed = list(headers.items()), True
                    upstream = await _send(session, request.method, url, headers, body, up)
        async with upstream:
            ex.upstream_ms = (time.perf_counter() - started) * 1000
            ex.amzn_request_id = upstream.headers.get("x-amzn-RequestId")
            out = response_headers(up, upstream, request, cors_headers)
            out["X-Request-Id"] = ex.request_id
            ex.status = upstream.status
            first = b""
            if (ex.status in (401, 403) and up.hint is not None
                    and (upstream.content_length or HINT_BODY_LIMIT + 1) <= HINT_BODY_LIMIT):
                first = await upstream.read()
                ex.hint = up.hint(ex.status, first, ex.sent_headers)
                if ex.hint:
                    out["X-Authproxy-Hint"] = ex.hint
            ex.response_headers = list(out.items())
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=out)
            await resp.prepare(request)
            if first:
                await resp.write(first)
                ex.bytes_out += len(first)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
                ex.bytes_out += len(chunk)
            await resp.write_eof()
            return resp
    except (ConnectionResetError, asyncio.CancelledError) as e:
        if _client_gone(request):
            ex.error = "client disconnected"
            ex.status = ex.status or 499
            return resp or web.Response(status=499)
        if isinstance(e, asyncio.CancelledError):
            raise
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"upstream {up.origin} reset the connection")
    except aiohttp.ClientConnectorCertificateError as e:
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"TLS certificate of {up.origin} not trusted ({e.certificate_error}); if it "
                     f"is signed by a private CA, set tls_verify: /path/to/ca-bundle.pem")
    except aiohttp.ClientSSLError as e:
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"TLS handshake with {up.origin} failed: {_reason(e)}")
    except aiohttp.ConnectionTimeoutError:
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"could not connect to {up.origin} within {up.timeout.sock_connect:g} s")
    except TimeoutError:
        return _fail(request, resp, ex, 504, "upstream_timeout",
                     f"{up.origin} did not answer within {up.timeout.total:g} s "
                     f"(endpoints[{up.name}].timeout)")
    except aiohttp.ClientConnectorError as e:
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"cannot connect to {up.origin}: {_reason(e)}")
    except (aiohttp.ClientError, OSError) as e:
        if _client_gone(request):
            ex.error = "client disconnected"
            ex.status = ex.status or 499
            return resp or web.Response(status=499)
        return _fail(request, resp, ex, 502, "upstream_unreachable",
                     f"broken answer from {up.origin}: {_reason(e)}")


async def _send(session: aiohttp.ClientSession, method: str, url: URL,
                headers: CIMultiDict[str], data: Any, up: Upstream) -> aiohttp.ClientResponse:
    return await session.request(
        method, url, headers=headers, data=data, allow_redirects=False, ssl=up.ssl,
        proxy=up.proxy, timeout=up.timeout, skip_auto_headers=SKIP_AUTO_HEADERS,
        auto_decompress=False)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _reason(e: BaseException) -> str:
    if isinstance(e, aiohttp.ClientConnectorError):
        return e.os_error.strerror or str(e.os_error) or type(e).__name__
    return str(e) or type(e).__name__


def _fail(request: web.Request, resp: web.StreamResponse | None, ex: Exchange, status: int,
          code: str, message: str) -> web.StreamResponse:
    ex.error = message
    if resp is not None and resp.prepared:
        # The status line is gone; cutting the connection is the only way left to say "broken".
        if request.transport is not None:
            request.transport.close()
        return resp
    ex.status = status
    return error_response(status, code, message)
