"""Admin answers under `admin.prefix`: health, readiness and Prometheus metrics."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web
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
from proxy.errors import error_response
from proxy.history import History


class Metrics:
    """One registry per app, so tests and reloads never share counters by accident."""

    def __init__(self, sources: Callable[[], Mapping[str, CredentialSource]],
                 connector: Callable[[], aiohttp.BaseConnector | None]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ConnectionCollector(connector))
        self.requests = Counter("authproxy_requests", "Requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.upstream_seconds = Histogram(
            "authproxy_upstream_seconds", "Time until the upstream's response headers",
            ["endpoint"], registry=self.registry,
            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.in_flight = Gauge("authproxy_in_flight_requests", "Requests being handled",
                               registry=self.registry)
        self.registry.register(_CredentialCollector(sources))
        self._children: dict[tuple[str, int], Any] = {}

    def observe(self, endpoint: str, status: int, upstream_ms: float | None) -> None:
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = self.requests.labels(endpoint,
                                                                              str(status))
        child.inc()
        if upstream_ms is not None:
            self.upstream_seconds.labels(endpoint).observe(upstream_ms / 1000)


class _ConnectionCollector(Collector):
    """Upstream connections in use and idle in the pool: a leak shows as `active` that never
    returns to zero once traffic stops."""

    def __init__(self, connector: Callable[[], aiohttp.BaseConnector | None]) -> None:
        self.connector = connector

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("authproxy_upstream_connections",
                                   "Upstream connections by state", labels=["state"])
        conn = self.connector()
        # aiohttp exposes no public counts; these two attributes have been stable for years.
        active = len(getattr(conn, "_acquired", ()))
        idle = sum(len(v) for v in getattr(conn, "_conns", {}).values())
        family.add_metric(["active"], active)
        family.add_metric(["idle"], idle)
        yield family


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
                 history: History | None) -> None:
        self.metrics = metrics
        self.sources_in_use = sources_in_use
        self.history = history
        self.routes: dict[str, Callable[[web.Request], web.StreamResponse]] = {
            "/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.prometheus,
            "/api/credentials": self.credentials}
        if history is not None:
            self.routes["/api/exchanges"] = self.exchanges

    def handle(self, request: web.Request, sub: str) -> web.StreamResponse:
        route = self.routes.get(sub)
        if route is None:
            return error_response(404, "no_route", f"no admin page {sub!r}")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", "admin pages answer GET only",
                                  {"Allow": "GET, HEAD"})
        return route(request)

    def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    def readyz(self, request: web.Request) -> web.Response:
        creds = {name: s.status() | {"ready": s.ready()}
                 for name, s in self.sources_in_use().items()}
        ok = all(c["ready"] for c in creds.values())
        not_ready = [n for n, c in creds.items() if not c["ready"]]
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "credentials": creds}
        if not_ready:
            body["reason"] = "; ".join(
                f"{n}: {creds[n].get('last_error') or creds[n].get('state', 'not ready')}"
                for n in not_ready)
        return _json(200 if ok else 503, body)

    def credentials(self, request: web.Request) -> web.Response:
        return _json(200, {name: s.status() | {"ready": s.ready()}
                           for name, s in self.sources_in_use().items()})

    def exchanges(self, request: web.Request) -> web.Response:
        assert self.history is not None
        try:
            limit = int(request.query.get("limit", "0")) or None
        except ValueError:
            return error_response(400, "bad_request", "limit must be a number")
        return _json(200, self.history.recent(limit))

    def prometheus(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, default=str),
                        content_type="application/json",
                        headers={"Cache-Control": "no-store"})
