"""Admin answers under `admin.prefix`: health, readiness, Prometheus metrics, the exchange
history and credential state as JSON, and the inspector page (proxy.debug.inspector)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.credentials import CredentialSource
from proxy.debug.har import har
from proxy.debug.history import History, StatusFilter, token_info
from proxy.debug.inspector import Inspector
from proxy.errors import error_response
from proxy.http.client_conn import Request
from proxy.http.respond import Response
from proxy.http.tunnel import Tunnels

if TYPE_CHECKING:
    from proxy.credentials.shared import SharedCache


class Metrics:
    """One registry per app, so tests and reloads never share counters by accident."""

    def __init__(self, sources: Callable[[], Mapping[str, CredentialSource]],
                 connections: Callable[[], tuple[int, int]],
                 token_cache: Callable[[], SharedCache | None] = lambda: None,
                 tunnels: Tunnels | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ConnectionCollector(connections))
        self.registry.register(_TokenCacheCollector(token_cache))
        if tunnels is not None:
            self.registry.register(_TunnelCollector(tunnels))
        self.requests = Counter("authproxy_requests", "Requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.upstream_seconds = Histogram(
            "authproxy_upstream_seconds", "Time until the upstream's response headers",
            ["endpoint"], registry=self.registry,
            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        # A plain int read at scrape time: a Gauge's inc()/dec() take a lock twice per request.
        self.in_flight = 0
        Gauge("authproxy_in_flight_requests", "Requests being handled",
              registry=self.registry).set_function(lambda: self.in_flight)
        self.registry.register(_CredentialCollector(sources))
        # labels() costs a few microseconds per call: children are looked up once.
        self._children: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, endpoint: str, status: int, upstream_ms: float | None) -> None:
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = self.requests.labels(endpoint,
                                                                              str(status))
        child.inc()
        if upstream_ms is not None:
            hist = self._histograms.get(endpoint)
            if hist is None:
                hist = self._histograms[endpoint] = self.upstream_seconds.labels(endpoint)
            hist.observe(upstream_ms / 1000)


class _ConnectionCollector(Collector):
    """Upstream connections in use and idle in the pool: a leak shows as `active` that never
    returns to zero once traffic stops."""

    def __init__(self, connections: Callable[[], tuple[int, int]]) -> None:
        self.connections = connections  # (active, idle) of the upstream pool

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("authproxy_upstream_connections",
                                   "Upstream connections by state", labels=["state"])
        active, idle = self.connections()
        family.add_metric(["active"], active)
        family.add_metric(["idle"], idle)
        yield family


class _TokenCacheCollector(Collector):
    """The fleet's shared cache (token_cache): whether Redis answers, and how the credentials
    used it. Nothing is reported when token_cache is not set."""

    def __init__(self, cache: Callable[[], SharedCache | None]) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Any]:
        cache = self.cache()
        if cache is None:
            return
        status = cache.status()
        up = GaugeMetricFamily("authproxy_token_cache_up",
                               "1 while the shared token cache (Redis) answers", labels=["url"])
        up.add_metric([status["url"]], 1.0 if status["state"] == "ok" else 0.0)
        errors = CounterMetricFamily("authproxy_token_cache_errors",
                                     "Shared token cache calls that failed or timed out",
                                     labels=["operation"])
        for op, count in status["errors"].items():
            errors.add_metric([op], count)
        families = {
            "hits": "Reads of the shared token cache that found an entry which opened",
            "misses": "Reads of the shared token cache that found no entry",
            "undecryptable": "Shared entries ignored: they did not decrypt or parse",
            "lock_waits": "Fetches that found another process holding the fleet's lock"}
        per = {k: CounterMetricFamily(f"authproxy_token_cache_{k}", text, labels=["credential"])
               for k, text in families.items()}
        for name, counts in status["credentials"].items():
            for k, family in per.items():
                family.add_metric([name], counts.get(k, 0))
        yield from (up, errors, *per.values())


class _TunnelCollector(Collector):
    """WebSocket tunnels: open now, opened so far, bytes each way. Read at scrape time from
    the tunnels' own counters, so the tunnel's hot path updates nothing global."""

    def __init__(self, tunnels: Tunnels) -> None:
        self.tunnels = tunnels

    def collect(self) -> Iterator[Any]:
        t = self.tunnels
        open_now = GaugeMetricFamily("authproxy_websocket_tunnels_open",
                                     "WebSocket tunnels open now")
        open_now.add_metric([], len(t.open))
        yield open_now
        yield CounterMetricFamily("authproxy_websocket_tunnels",
                                  "WebSocket tunnels opened (101 passed on)", value=t.total)
        up, down = t.bytes()
        moved = CounterMetricFamily("authproxy_websocket_bytes",
                                    "Bytes through WebSocket tunnels, by direction",
                                    labels=["direction"])
        moved.add_metric(["client_to_upstream"], up)
        moved.add_metric(["upstream_to_client"], down)
        yield moved


class _CredentialCollector(Collector):
    def __init__(self, sources: Callable[[], Mapping[str, CredentialSource]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Any]:
        fetches = CounterMetricFamily("authproxy_token_fetches", "Token fetches by outcome",
                                      labels=["credential", "outcome"])
        expiry = GaugeMetricFamily("authproxy_token_expiry_seconds",
                                   "Seconds until the cached token expires",
                                   labels=["credential"])
        ready = GaugeMetricFamily("authproxy_credential_ready",
                                  "1 when the credential can supply a header now",
                                  labels=["credential"])
        for name, source in self.sources().items():
            status = source.status()
            for outcome, count in (status.get("fetches") or {}).items():
                fetches.add_metric([name, outcome], count)
            if status.get("expires_in") is not None:
                expiry.add_metric([name], status["expires_in"])
            ready.add_metric([name], 1.0 if source.ready() else 0.0)
        yield from (fetches, expiry, ready)


class Admin:
    def __init__(self, metrics: Metrics,
                 sources_in_use: Callable[[], Mapping[str, CredentialSource]],
                 history: History | None,
                 token_cache: Callable[[], SharedCache | None] = lambda: None) -> None:
        self.metrics = metrics
        self.sources_in_use = sources_in_use
        self.token_cache = token_cache
        self.history = history
        self.routes: dict[str, Callable[[Request], Response]] = {
            "/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.prometheus,
            "/api/credentials": self.credentials}
        if history is not None:
            self.routes["/api/exchanges"] = self.exchanges
            self.routes["/api/exchanges.har"] = self.exchanges_har
            self.routes["/api/websockets"] = self.websockets
            self.routes.update(Inspector().routes())

    def handle(self, request: Request, sub: str) -> Response:
        route = self.routes.get(sub)
        if route is None:
            return error_response(404, "no_route", f"no admin page {sub!r}")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", "admin pages answer GET only",
                                  {"Allow": "GET, HEAD"})
        return route(request)

    def healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    def readyz(self, request: Request) -> Response:
        creds = {name: s.status() | {"ready": s.ready()}
                 for name, s in self.sources_in_use().items()}
        ok = all(c["ready"] for c in creds.values())
        not_ready = [n for n, c in creds.items() if not c["ready"]]
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "credentials": creds}
        if not_ready:
            body["reason"] = "; ".join(
                f"{n}: {creds[n].get('last_error') or creds[n].get('state', 'not ready')}"
                for n in not_ready)
        cache = self.token_cache()
        if cache is not None:
            # Degraded, not down: each process serves from its own cache meanwhile, so the
            # answer stays what the credentials make it.
            shared = body["token_cache"] = cache.status()
            if shared["state"] == "degraded":
                body["degraded"] = [f"token_cache: {shared['url']} {shared['last_error']}; "
                                    "each process uses its own cache"]
        return _json(200 if ok else 503, body)

    def credentials(self, request: Request) -> Response:
        now, out = time.time(), {}
        for name, source in self.sources_in_use().items():
            low = source.header_name.lower()
            value = next((v for k, v in source.current() or () if k.lower() == low), None)
            out[name] = source.status() | {
                "ready": source.ready(),
                "token": token_info(source.header_name, value, now) if value else None}
        return _json(200, out)

    def exchanges(self, request: Request) -> Response:
        """?since=ID (newer only, for polling) &limit=N &endpoint=a,b &status=401,5xx &q=text"""
        assert self.history is not None
        found = self._query(request)
        if isinstance(found, Response):
            return found
        return _json(200, {"exchanges": found, "last_id": self.history.counter,
                           "capacity": self.history.capacity,
                           "endpoints": self.history.endpoints()})

    def exchanges_har(self, request: Request) -> Response:
        """The same exchanges (same filters) as a HAR 1.2 file, to download."""
        found = self._query(request)
        if isinstance(found, Response):
            return found
        origin = f"{request.scheme}://{request.headers.get('Host', 'localhost')}"
        resp = _json(200, har(found, origin))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        resp.headers["Content-Disposition"] = f'attachment; filename="authproxy-{stamp}.har"'
        return resp

    def _query(self, request: Request) -> list[dict[str, Any]] | Response:
        assert self.history is not None
        q = request.query
        try:
            since, limit = int(q.get("since", "0")), int(q.get("limit", "0"))
        except ValueError:
            return error_response(400, "bad_request", "since and limit must be whole numbers")
        try:
            statuses = StatusFilter.parse(q["status"]) if q.get("status") else None
        except ValueError as e:
            return error_response(400, "bad_request", str(e))
        names = {n.strip() for v in q.getall("endpoint", []) for n in v.split(",") if n.strip()}
        return self.history.query(since=since, endpoints=frozenset(names) if names else None,
                                  statuses=statuses, text=q.get("q") or None,
                                  limit=limit if limit > 0 else None)

    def websockets(self, request: Request) -> Response:
        """Open WebSocket tunnels (live byte counts) and the recently closed ones."""
        assert self.history is not None
        return _json(200, self.history.websockets())

    def prometheus(self, request: Request) -> Response:
        resp = Response(body=generate_latest(self.metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


def _json(status: int, body: Any) -> Response:
    return Response(status=status, text=json.dumps(body, default=str),
                        content_type="application/json",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
