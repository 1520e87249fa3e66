"""`make_server(config)`: wires guard, admin, CORS, rules, credentials and forwarding into one
server (our own client-side protocol, proxy/http/client_conn.py) with one upstream connection
pool. Everything that depends on the
config lives in a `Runtime` built at start (or reload); a request only looks things up in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.config import Config, Listen
from proxy.cors import CorsPolicy
from proxy.credentials import (
    CredentialSource,
    CredentialsUnavailable,
    Outgoing,
    build_sources,
    open_token_cache,
)
from proxy.debug.admin import Admin, Metrics
from proxy.debug.hints import build_hinter
from proxy.debug.history import History
from proxy.errors import error_response
from proxy.forward import Exchange, Inject, forward, framing_problem, header_list
from proxy.guard import Guard
from proxy.http.client_conn import (
    SUPPORTED_VERSIONS,
    ProxyServer,
    Request,
    request_id,
    version_refusal,
)
from proxy.http.respond import Relay, Response
from proxy.http.tunnel import Tunnels
from proxy.http.upstream import Pool
from proxy.log import access as log_access
from proxy.log import access_log, redact_headers
from proxy.rules import RuleTable
from proxy.target import Upstream
from proxy.websocket import Handshake, handshake_problem, is_handshake, open_tunnel

if TYPE_CHECKING:
    import aiohttp

    from proxy.credentials.shared import SharedCache

log = logging.getLogger("authproxy")


@dataclass(frozen=True)
class Runtime:
    config: Config
    rules: RuleTable
    upstreams: dict[str, Upstream]  # by endpoint name
    sources: dict[str, CredentialSource]  # by credential name
    in_use: dict[str, CredentialSource]  # the sources some endpoint refers to
    guard: Guard
    cors: CorsPolicy
    admin_prefix: str
    handshakes: dict[str, Handshake]  # by endpoint name: how its credential goes on a WebSocket


def build_runtime(config: Config, keep: dict[str, CredentialSource] | None = None,
                  port: int | None = None, shared: SharedCache | None = None) -> Runtime:
    """`keep`: sources of a previous runtime, reused when their settings did not change;
    `shared`: the fleet's token cache the new ones keep their values in."""
    old = keep or {}
    sources = build_sources({n: c for n, c in config.credentials.items() if n not in old},
                            shared=shared, among=config.credentials)
    sources.update((n, s) for n, s in old.items() if n in config.credentials)
    for source in sources.values():
        source.link(sources)
    upstreams = {ep.name: Upstream.build(
        ep, sources[ep.auth].header_name if ep.auth else None,
        build_hinter(ep, sources[ep.auth].describe() if ep.auth else None),
        config.listen.header_timeout, sources[ep.auth].also_sets if ep.auth else frozenset())
        for ep in config.endpoints}
    guard = Guard(config.listen, config.cors)
    if port is not None:
        guard.set_port(port)
    return Runtime(config=config, rules=RuleTable(config.endpoints), upstreams=upstreams,
                   sources=sources,
                   in_use={ep.auth: sources[ep.auth] for ep in config.endpoints if ep.auth},
                   guard=guard, cors=CorsPolicy(config.cors), admin_prefix=config.admin.prefix,
                   handshakes={ep.name: Handshake(upstreams[ep.name],
                                                  sources[ep.auth] if ep.auth else None)
                               for ep in config.endpoints})


def target_problem(path: str) -> str | None:
    """Why a raw request path cannot be forwarded safely, or None."""
    if not path.startswith("/"):
        return "the request target must be a path (absolute-form and * are not proxied)"
    if "\\" in path or "#" in path:
        return "backslashes and fragments are not allowed in the path"
    for segment in path.split("/"):
        low = segment.lower().replace("%2e", ".")
        if "." in low and any(part in (".", "..") for part in
                              low.replace("%5c", "/").replace("%2f", "/").split("/")):
            return "'.' and '..' path segments (encoded or not) are not allowed"
    return None


class Proxy:
    def __init__(self, config: Config) -> None:
        self.token_cache = open_token_cache(config.token_cache)  # for the process's lifetime
        self.rt = build_runtime(config, shared=self.token_cache)
        self.port: int | None = None
        # For the credentials' own calls (Cognito), made by the first source that uses_http.
        self.session: aiohttp.ClientSession | None = None
        self.pool = Pool(idle_timeout=30)  # for forwarding
        self.tunnels = Tunnels()  # open WebSocket tunnels
        self.metrics = Metrics(lambda: self.rt.in_use,
                               lambda: (self.pool.active, self.pool.idle_count),
                               lambda: self.token_cache, self.tunnels)
        admin = config.admin
        self.history = History(admin.history) if admin.inspector and admin.history else None
        self.admin = Admin(self.metrics, lambda: self.rt.in_use, self.history,
                           lambda: self.token_cache)

    def set_port(self, port: int) -> None:
        self.port = port
        self.rt.guard.set_port(port)

    async def start(self) -> None:
        session = self._session_for(self.rt.sources.values())
        if self.token_cache is not None:
            await self.token_cache.start()  # bounded by token_cache.timeout; never fails
        await asyncio.gather(*(s.start(session) for s in self.rt.sources.values()))

    def _session_for(self, sources: Iterable[CredentialSource]
                     ) -> aiohttp.ClientSession | None:
        """The app's one ClientSession, made when the first source that uses_http comes (at
        start or with a reload); None while none has. Static values, commands and fixed keys
        need none, and a config of those never loads aiohttp (~100 ms of a cold start)."""
        if self.session is None and any(s.uses_http for s in sources):
            import aiohttp

            # The credentials' own calls (Cognito), never forwarding: aiohttp's usual headers
            # and decompression stay on, since forwarding's skip_auto_headers would drop the
            # form's Content-Type and Cognito refuses a token request without it.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                # No cookie jar: one client's Set-Cookie must never ride along with another's
                # request.
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None))
        return self.session

    async def close(self) -> None:
        self.tunnels.abort_all("proxy")  # what a drain left open
        await asyncio.gather(*(s.close() for s in self.rt.sources.values()))
        if self.token_cache is not None:
            await self.token_cache.close()
        if self.session:
            await self.session.close()
        self.pool.close()

    async def reload(self, config: Config) -> None:
        """Swap in a new runtime. Credentials whose settings did not change keep their tokens;
        requests already running finish with the runtime they started with."""
        old = self.rt
        keep = {n: s for n, s in old.sources.items() if old.config.credentials.get(n)
                == config.credentials.get(n)}
        new = build_runtime(config, keep, self.port, self.token_cache)
        fresh = [s for n, s in new.sources.items() if n not in keep]
        session = self._session_for(fresh)
        await asyncio.gather(*(s.start(session) for s in fresh))
        self.rt = new
        await asyncio.gather(*(s.close() for n, s in old.sources.items() if n not in keep))
        if (config.listen.host, config.listen.port) != (old.config.listen.host,
                                                        old.config.listen.port):
            log.warning("listen.host/listen.port changed: restart authproxy to rebind")
        if config.token_cache != old.config.token_cache:
            log.warning("token_cache changed: restart authproxy to use the new settings")
        if (config.listen.header_timeout, config.listen.keepalive_timeout) != (
                old.config.listen.header_timeout, old.config.listen.keepalive_timeout):
            log.warning("listen.header_timeout/keepalive_timeout changed: connections keep the "
                        "old values for request heads and idling until authproxy restarts")

    async def handle(self, request: Request) -> Response:
        rt = self.rt
        started = time.perf_counter()
        if request.version not in SUPPORTED_VERSIONS:
            return self._done(request, version_refusal(request), "-", started, None)
        denied = rt.guard.check(request)
        if denied is not None:
            return self._done(request, denied, "-", started, None)
        path, _, query = request.raw_path.partition("?")
        prefix = rt.admin_prefix
        if path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in ("", "/"):
            answer = self.admin.handle(request, path[len(prefix):])
            answer.headers["X-Request-Id"] = request_id(request)
            return answer
        origin = request.headers.get("Origin")
        if rt.cors.is_preflight(request):
            return self._done(request, rt.cors.preflight(request), "-", started, None)
        problem = target_problem(path) or framing_problem(request)
        if problem:
            return self._done(request, error_response(400, "bad_request", problem), "-",
                              started, None, origin)
        match = rt.rules.match(request.headers.get("Host"), path)
        if match is None:
            known = ", ".join(ep.host or ep.prefix for ep in rt.config.endpoints) or "none"
            return self._done(request, error_response(
                404, "no_route", f"no endpoint matches {path} (endpoints: {known}); "
                f"try `authproxy explain {path}`"), "-", started, None, origin)
        ep = match.endpoint
        up = rt.upstreams[ep.name]
        if "Upgrade" in request.headers and is_handshake(request):
            return await self._websocket(request, rt, ep.name, match.rest, query, started,
                                         origin)
        inject = replay = sign = None
        injected = None
        body_limit = 0
        if ep.auth is not None:
            source = rt.sources[ep.auth]
            injected = source.header_name
            if source.requires_request_body:
                # Signed over the body, so signed in forward once the body is read; a client
                # that brings its own Authorization under client_header: keep goes unsigned.
                if not (up.keep_client_auth and source.header_name in request.headers):
                    sign = _Signing(source, request, up, match.rest, query)
                    body_limit = source.max_request_body
            else:
                # A lookup for static and bearer values; only a fetch awaits.
                inject = source.current()
                if inject is None:
                    try:
                        inject = await source.headers_for(
                            _outgoing(request, up, match.rest, query))
                    except CredentialsUnavailable as e:
                        return self._done(request, _unavailable(ep.auth, e), ep.name, started,
                                          None, origin)
            if source.refreshable and (sign is not None or inject is not None):
                replay = (sign or _Signing(source, request, up, match.rest, query)).replay
        expect = request.headers.get("Expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                return self._done(request, error_response(
                    417, "expectation_failed", f"unknown Expect: {expect}"), ep.name, started,
                    None, origin)
            if request.version >= (1, 1):
                # Only now, with a route and a credential, is the body worth sending.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        ex = Exchange()
        self.metrics.in_flight += 1
        try:
            resp = await forward(request, self.pool, up, match.rest, query, inject,
                                 rt.cors.response_headers(origin), ex, replay, sign, body_limit)
        except CredentialsUnavailable as e:  # only a signing credential fails this late
            assert ep.auth is not None
            resp = _unavailable(ep.auth, e)
            resp.force_close()
            ex.status, ex.error = 503, str(e)
        finally:
            self.metrics.in_flight -= 1
        return self._done(request, resp, ep.name, started, ex, None, injected)

    async def _websocket(self, request: Request, rt: Runtime, endpoint: str, rest: str,
                         query: str, started: float, origin: str | None) -> Response:
        """A WebSocket handshake: forwarded with the credential on it, then a tunnel until
        either side closes; logged (and counted) once it is over."""
        problem = handshake_problem(request)
        if problem:
            return self._done(request, error_response(400, "bad_request", problem), endpoint,
                              started, None, origin)
        hs = rt.handshakes[endpoint]
        injected = hs.source.header_name if hs.source is not None else None
        ex = Exchange()
        history, metrics = self.history, self.metrics
        handshaking = [True]  # an open tunnel is no request in flight: counted until the 101

        def opened(ex: Exchange) -> None:
            metrics.in_flight -= 1
            handshaking[0] = False
            if history is not None:
                history.add(request, ex, endpoint, 101,
                            (time.perf_counter() - started) * 1000, injected)
        metrics.in_flight += 1
        try:
            resp = await open_tunnel(request, self.pool, hs, rest, query, ex, self.tunnels,
                                     opened)
        finally:
            if handshaking[0]:
                metrics.in_flight -= 1
        return self._done(request, resp, endpoint, started, ex, origin, injected)

    def _done(self, request: Request, resp: Response, endpoint: str,
              started: float, ex: Exchange | None, origin: str | None = None,
              injected: str | None = None) -> Response:
        if not isinstance(resp, Relay) and not resp.prepared:
            # The proxy's own answer (an error, a preflight): it carries an id like any other.
            resp.headers["X-Request-Id"] = (ex.request_id if ex else "") or request_id(request)
            if origin:
                # Let an allowed page read the proxy's own errors too.
                resp.headers.extend(self.rt.cors.response_headers(origin))
            if "Upgrade" in request.headers:
                # What the client sent behind an upgrade it was refused was meant for another
                # protocol: it is never read as further requests.
                resp.force_close()
        status = ex.status if ex else resp.status
        total_ms = (time.perf_counter() - started) * 1000
        self.metrics.observe(endpoint, status, ex.upstream_ms if ex else None)
        if self.history is not None and (ex is None or ex.tunnel is None):
            # (a tunnel's record went in when it opened, and follows it until it closes)
            self.history.add(request, ex, endpoint, status, total_ms, injected, resp)
        if access_log.isEnabledFor(logging.INFO):
            self._log(request, endpoint, status, total_ms, ex, resp)
        return resp

    def _log(self, request: Request, endpoint: str, status: int, total_ms: float,
             ex: Exchange | None, resp: Response) -> None:
        method, path = request.method, request.raw_path.partition("?")[0]
        up_ms = ex.upstream_ms if ex else None
        # (the proxy's own error code, when it answered, else what went wrong on the way)
        error = (resp.headers.get("X-Authproxy-Error") if resp.headers else None) or (
            ex.error if ex else None)
        text = (f'"{method} {path}" {endpoint} {status} '
                f"upstream={_ms(up_ms)} total={total_ms:.1f}ms")
        tunnel = ex.tunnel if ex else None
        if tunnel is not None:
            text += (f" websocket up={tunnel.bytes_up}B down={tunnel.bytes_down}B "
                     f"closed_by={tunnel.closed_by}"
                     + (f" code={tunnel.close_code}" if tunnel.close_code else ""))
        if ex:
            text += f" id={ex.request_id}" + (f" amzn={ex.amzn_request_id}"
                                                if ex.amzn_request_id else "")
        if error:
            text += f" error={error!r}"
        shown: list[tuple[str, list[tuple[str, str]]]] = []
        if self.rt.config.logging.log_headers:
            injected = frozenset(s.header_name.lower() for s in self.rt.sources.values())
            shown.append(("request_headers", redact_headers(request.headers.items(), injected)))
            if ex:
                shown += (("sent_headers", redact_headers(ex.sent_headers, injected)),
                          ("response_headers", redact_headers(ex.response_headers)))
            text += "".join(f"\n  {k}: {v}" for k, v in shown if v)

        def extra() -> dict[str, Any]:
            # The JSON format's fields: made only when that format writes the line.
            out: dict[str, Any] = {
                "method": method, "path": path, "endpoint": endpoint, "status": status,
                "upstream_ms": round(up_ms, 1) if up_ms is not None else None,
                "total_ms": round(total_ms, 1)}
            if ex:
                out |= {"request_id": ex.request_id, "amzn_request_id": ex.amzn_request_id}
            if error:
                out["error"] = error
            if tunnel is not None:
                out["websocket"] = {"bytes_up": tunnel.bytes_up,
                                    "bytes_down": tunnel.bytes_down,
                                    "closed_by": tunnel.closed_by,
                                    "close_code": tunnel.close_code}
            out.update(shown)
            return out

        log_access(text, extra)


class _Signing:
    """One request's view of its credential, for forward: signing it once the body's hash and
    the headers going upstream are known, and asking again after a refusal. One small object
    per such request, made only for credentials that sign or can be refreshed."""

    __slots__ = ("source", "request", "up", "rest", "query")

    def __init__(self, source: CredentialSource, request: Request, up: Upstream,
                 rest: str, query: str) -> None:
        self.source, self.request, self.up, self.rest, self.query = (
            source, request, up, rest, query)

    def outgoing(self, body_sha256: str | None, headers: Sequence[tuple[str, str]]) -> Outgoing:
        return Outgoing(self.request.method, self.up.host_header, self.up.base_path + self.rest,
                        self.query, headers, body_sha256)

    def now(self, body_sha256: str, headers: Sequence[tuple[str, str]]) -> Inject | None:
        return self.source.current_for(self.outgoing(body_sha256, headers))

    async def later(self, body_sha256: str, headers: Sequence[tuple[str, str]]) -> Inject:
        return await self.source.headers_for(self.outgoing(body_sha256, headers))

    async def replay(self, sent: Inject, body_sha256: str | None,
                     headers: Sequence[tuple[str, str]]) -> Inject | None:
        if not await self.source.rejected(sent):
            return None
        out = self.outgoing(body_sha256, headers)
        return self.source.current_for(out) or await self.source.headers_for(out)


def _outgoing(request: Request, up: Upstream, rest: str, query: str) -> Outgoing:
    """The request as it goes upstream, for a bearer credential that must fetch first."""
    return Outgoing(method=request.method, host=up.host_header, raw_path=up.base_path + rest,
                    query=query, headers=header_list(request, up, None, Exchange()))


def _unavailable(name: str, e: CredentialsUnavailable) -> Response:
    return error_response(503, "credentials_unavailable", f"credential {name!r}: {e}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def make_server(config: Config) -> tuple[ProxyServer, Proxy]:
    """The server making client connections that hand each request to `Proxy.handle`, which
    routes by itself. The caller starts and closes the Proxy."""
    proxy = Proxy(config)
    return server_for(proxy, config.listen), proxy


def server_for(proxy: Proxy, listen: Listen) -> ProxyServer:
    return ProxyServer(proxy.handle, header_timeout=listen.header_timeout,
                       keepalive_timeout=listen.keepalive_timeout)
