"""Admin answers under `admin.prefix`: health, readiness, Prometheus metrics, the exchange
history and credential state as JSON, and the inspector page (proxy.debug.inspector).

prometheus_client is imported at the first scrape of /metrics, not at start (it is ~20 ms and
~4 MB of a cold start, with the HTTP servers and clients of its exposition module): requests are
counted here in plain numbers, and the registry reads them when it is built."""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from proxy.credentials import CredentialSource
from proxy.debug.history import History, StatusFilter, token_info
from proxy.debug.inspector import Inspector
from proxy.errors import error_response
from proxy.http.client_conn import Request
from proxy.http.respond import Response
from proxy.http.tunnel import Tunnels

if TYPE_CHECKING:
    from proxy.credentials.shared import SharedCache

# authproxy_upstream_seconds' upper bounds; +Inf last, as prometheus_client's Histogram adds it
UPSTREAM_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, float("inf"))


class _Count:
    """One labelled child of a counter: its value and when it was first counted (`_created`,
    as prometheus_client's Counter stamps a child when it is made)."""

    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class _Histogram:
    """One labelled child of a histogram, kept as prometheus_client's Histogram keeps it: a
    count per bucket (the first bound at or above the value), cumulated only when scraped."""

    __slots__ = ("counts", "sum", "created")

    def __init__(self) -> None:
        self.counts = [0.0] * len(UPSTREAM_BUCKETS)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.sum += value
        self.counts[bisect.bisect_left(UPSTREAM_BUCKETS, value)] += 1


class Metrics:
    """One registry per app, so tests and reloads never share counters by accident. Counting a
    request touches two dicts and takes no lock (prometheus_client's Counter and Histogram
    take one per call): every count is made and read on the event loop's thread."""

    def __init__(self, sources: Callable[[], Mapping[str, CredentialSource]],
                 connections: Callable[[], tuple[int, int]],
                 token_cache: Callable[[], SharedCache | None] = lambda: None,
                 tunnels: Tunnels | None = None) -> None:
        self._sources, self._connections = sources, connections
        self._token_cache, self._tunnels = token_cache, tunnels
        self.in_flight = 0  # read at scrape time
        self.requests: dict[tuple[str, int], _Count] = {}  # by (endpoint, status)
        self.upstream: dict[str, _Histogram] = {}  # by endpoint
        self._registry: Any = None

    @property
    def registry(self) -> Any:
        """The prometheus_client CollectorRegistry, made (and the library imported) on first
        use; its families are in the order they always had."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            registry.register(_ConnectionCollector(self._connections))
            registry.register(_TokenCacheCollector(self._token_cache))
            if self._tunnels is not None:
                registry.register(_TunnelCollector(self._tunnels))
            registry.register(_RequestCollector(self))
            registry.register(_CredentialCollector(self._sources))
            self._registry = registry
        return self._registry

    def observe(self, endpoint: str, status: int, upstream_ms: float | None) -> None:
        count = self.requests.get((endpoint, status))
        if count is None:
            count = self.requests[(endpoint, status)] = _Count()
        count.value += 1
        if upstream_ms is not None:
            hist = self.upstream.get(endpoint)
            if hist is None:
                hist = self.upstream[endpoint] = _Histogram()
            hist.observe(upstream_ms / 1000)


class _RequestCollector:
    """authproxy_requests (a counter), authproxy_upstream_seconds (a histogram) and
    authproxy_in_flight_requests (a gauge), sample for sample what prometheus_client's
    Counter, Histogram and Gauge.set_function made of the same counts (tests/test_admin.py
    compares the two)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client import metrics as client_metrics
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        # PROMETHEUS_DISABLE_CREATED_SERIES, as the library's own metrics read it
        created = client_metrics._use_created
        m = self.metrics
        requests = Metric("authproxy_requests", "Requests by endpoint and status", "counter")
        for (endpoint, status), count in list(m.requests.items()):
            labels = {"endpoint": endpoint, "status": str(status)}
            requests.add_sample("authproxy_requests_total", labels, count.value)
            if created:
                requests.add_sample("authproxy_requests_created", labels, count.created)
        yield requests
        upstream = Metric("authproxy_upstream_seconds",
                          "Time until the upstream's response headers", "histogram")
        # the `le` labels as the library writes them (0.005 ... 30.0, +Inf); its util is untyped
        les = [floatToGoString(b) for b in UPSTREAM_BUCKETS]  # type: ignore[no-untyped-call]
        for endpoint, hist in list(m.upstream.items()):
            acc = 0.0
            for le, n in zip(les, hist.counts, strict=True):
                acc += n
                upstream.add_sample("authproxy_upstream_seconds_bucket",
                                    {"endpoint": endpoint, "le": le}, acc)
            upstream.add_sample("authproxy_upstream_seconds_count", {"endpoint": endpoint}, acc)
            upstream.add_sample("authproxy_upstream_seconds_sum", {"endpoint": endpoint},
                                hist.sum)
            if created:
                upstream.add_sample("authproxy_upstream_seconds_created",
                                    {"endpoint": endpoint}, hist.created)
        yield upstream
        in_flight = Metric("authproxy_in_flight_requests", "Requests being handled", "gauge")
        in_flight.add_sample("authproxy_in_flight_requests", {}, float(m.in_flight))
        yield in_flight


class _ConnectionCollector:
    """Upstream connections in use and idle in the pool: a leak shows as `active` that never
    returns to zero once traffic stops."""

    def __init__(self, connections: Callable[[], tuple[int, int]]) -> None:
        self.connections = connections  # (active, idle) of the upstream pool

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("authproxy_upstream_connections",
                                   "Upstream connections by state", labels=["state"])
        active, idle = self.connections()
        family.add_metric(["active"], active)
        family.add_metric(["idle"], idle)
        yield family


class _TokenCacheCollector:
    """The fleet's shared cache (token_cache): whether Redis answers, and how the credentials
    used it. Nothing is reported when token_cache is not set."""

    def __init__(self, cache: Callable[[], SharedCache | None]) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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


class _TunnelCollector:
    """WebSocket tunnels: open now, opened so far, bytes each way. Read at scrape time from
    the tunnels' own counters, so the tunnel's hot path updates nothing global."""

    def __init__(self, tunnels: Tunnels) -> None:
        self.tunnels = tunnels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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


class _CredentialCollector:
    def __init__(self, sources: Callable[[], Mapping[str, CredentialSource]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        from proxy.debug.har import har  # only an export needs it

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
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        resp = Response(body=generate_latest(self.metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


def _json(status: int, body: Any) -> Response:
    return Response(status=status, text=json.dumps(body, default=str),
                        content_type="application/json",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
