"""`Upstream`: everything about one endpoint's upstream that can be decided at start (URL
parts, TLS context, HTTPS_PROXY/NO_PROXY, header sets, where the pool connects)."""

from __future__ import annotations

import base64
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from yarl import URL

from proxy.config import Endpoint
from proxy.http.upstream import Endpoint as PoolEndpoint

Hinter = Callable[[int, bytes, list[tuple[str, str]]], str | None]

# Proxy-* names are hop-by-hop too, any of them (forward.py drops them by prefix).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# The headers that frame a message. Only the proxy sets them: a client's Connection header
# naming one is refused, and the config may neither set nor remove them.
FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
# Never sent upstream: Host and the framing are the proxy's own, the X-Forwarded-* and
# X-Request-Id are ours to set (appended last), and the shared secret guards this proxy only.
REQUEST_DROP = HOP_BY_HOP | FRAMING | {"x-authproxy-secret", "x-forwarded-for",
                                       "x-forwarded-proto", "x-forwarded-host", "x-request-id"}


def connection_tokens(values: list[str]) -> frozenset[str]:
    """The lower-case names listed in every Connection header of a message."""
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


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
    timeout: float  # total seconds per exchange
    connect_timeout: float
    drop: frozenset[str]  # lower-case request header names never forwarded
    # `drop` when the credential signs: the client's copies of the other headers it sets too
    drop_signing: frozenset[str]
    set_headers: tuple[tuple[str, str], ...]
    auth_header: str | None  # the injected header name, lower-case
    keep_client_auth: bool
    hint: Hinter | None = None  # explains API Gateway's 401/403 answers
    # where the pool connects: TLS context, and HTTPS_PROXY/HTTP_PROXY unless NO_PROXY says not
    endpoint: PoolEndpoint | None = None
    host_header: str = ""
    target_prefix: str = ""  # the origin when talking to a plain HTTP proxy (absolute-form)
    proxy_line: str = ""  # its Proxy-Authorization header line, when the proxy URL has one
    client_timeout: float = 10.0  # listen.header_timeout: how long a client body may stall
    idle_timeout: float = 600.0  # WebSocket tunnels: seconds of silence before one is closed
    token_query: str | None = None  # WebSocket handshakes: the credential goes in this parameter

    @classmethod
    def build(cls, ep: Endpoint, auth_header: str | None,
              hint: Hinter | None = None, client_timeout: float = 10.0,
              also_sets: frozenset[str] = frozenset()) -> Upstream:
        url = URL(ep.endpoint, encoded=True)
        assert url.host is not None and url.port is not None
        origin = f"{url.scheme}://{url.raw_authority}"
        tls = _ssl_context(ep.tls_verify) if url.scheme == "https" else False
        proxy = _env_proxy(url)
        host = f"[{url.raw_host}]" if ":" in (url.raw_host or "") else url.raw_host or ""
        host_header = host if url.is_default_port() else f"{host}:{url.port}"
        pool_ep = _pool_endpoint(url, tls, proxy, ep.connect_timeout)
        plain = proxy is not None and url.scheme == "http"  # absolute-form through the proxy
        drop = REQUEST_DROP | {h.lower() for h in ep.remove_headers} | {
            k.lower() for k, _ in ep.set_headers}
        return cls(
            name=ep.name, scheme=url.scheme, host=url.host, port=url.explicit_port,
            base_path=url.raw_path.rstrip("/"), origin=origin,
            local_prefix="" if ep.prefix == "/" else ep.prefix,
            timeout=ep.timeout, connect_timeout=ep.connect_timeout,
            drop=drop, drop_signing=drop | also_sets,
            set_headers=ep.set_headers, auth_header=auth_header.lower() if auth_header else None,
            keep_client_auth=ep.client_header == "keep", hint=hint,
            endpoint=pool_ep,
            host_header=host_header, target_prefix=f"http://{host_header}" if plain else "",
            proxy_line=f"Proxy-Authorization: {pool_ep.proxy_auth}\r\n"
            if plain and pool_ep.proxy_auth else "", client_timeout=client_timeout,
            idle_timeout=ep.idle_timeout, token_query=ep.token_query)

    def url(self, rest: str, query: str, websocket: bool = False) -> URL:
        # Built from parts, so nothing in the request can change scheme, host or port.
        scheme = self.scheme if not websocket else "wss" if self.scheme == "https" else "ws"
        return URL.build(scheme=scheme, host=self.host, port=self.port,
                         path=self.base_path + rest, query_string=query, encoded=True)


def _pool_endpoint(url: URL, tls: ssl.SSLContext | bool, proxy: str | None,
                   connect_timeout: float) -> PoolEndpoint:
    proxy_at = proxy_auth = None
    if proxy:
        p = URL(proxy)
        proxy_at = (p.host or "", p.port or 80)
        if p.user is not None:
            proxy_auth = "Basic " + base64.b64encode(
                f"{p.user}:{p.password or ''}".encode()).decode()
    assert url.port is not None
    return PoolEndpoint(url.host or "", url.port, tls if isinstance(tls, ssl.SSLContext) else None,
                        proxy_at, proxy_auth, connect_timeout)


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _env_proxy(url: URL) -> str | None:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY as curl reads them, decided once per endpoint."""
    proxies = urllib.request.getproxies_environment()
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxies or bypass(url.host or "", proxies):
        return None
    return proxies.get(url.scheme)
