"""Admin answers: healthz, readyz and Prometheus metrics, as a monitoring system reads them."""

from __future__ import annotations

import time
from typing import Any

import prometheus_client.metrics
import pytest
from conftest import MakeProxy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from proxy.debug.admin import Metrics
from proxy.fakes.apigw import FakeApiGateway
from proxy.http.tunnel import Tunnels


def config(url: str) -> str:
    return f"""
credentials:
  tok: {{type: static, value: tok-abcdefghijkl}}
  unused: {{type: static, value: unused-1234567}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: tok}}
  - {{name: open, endpoint: "{url}/Development"}}
"""


async def test_healthz_and_readyz(apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    resp = await client.get("/_authproxy/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/_authproxy/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready"
    assert set(body["credentials"]) == {"tok"}  # only credentials some endpoint uses
    assert body["credentials"]["tok"]["ready"] is True
    assert "tok-abcdefghijkl" not in await resp.text()
    resp = await client.post("/_authproxy/healthz")
    assert resp.status == 405


async def test_metrics_count_requests_by_endpoint_and_status(apigw: FakeApiGateway,
                                                            make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    for _ in range(3):
        await client.get("/api/x")
    await client.get("/open/x", headers={"X-Fake-Status": "503"})
    await client.get("/nowhere")
    resp = await client.get("/_authproxy/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(await resp.text()) for s in f.samples}
    assert samples[("authproxy_requests_total", (("endpoint", "api"), ("status", "200")))] == 3
    assert samples[("authproxy_requests_total", (("endpoint", "open"), ("status", "503")))] == 1
    assert samples[("authproxy_requests_total", (("endpoint", "-"), ("status", "404")))] == 1
    assert samples[("authproxy_upstream_seconds_count", (("endpoint", "api"),))] == 3
    assert samples[("authproxy_credential_ready", (("credential", "tok"),))] == 1
    assert samples[("authproxy_in_flight_requests", ())] == 0
    # Admin requests themselves are not counted as proxied traffic.
    assert sum(v for (name, _), v in samples.items() if name == "authproxy_requests_total") == 5


async def test_metrics_carry_token_fetches_and_expiry(apigw: FakeApiGateway,
                                                     make_proxy: MakeProxy, tmp_path: Any) -> None:
    # A refreshing credential's own series, as Prometheus text: fetches by outcome (all three
    # outcomes present from the start, so a rate() has a baseline) and seconds to expiry.
    from proxy.fakes.cognito import FakeCognito

    fake = FakeCognito()
    await fake.start()
    try:
        pool = fake.add_pool()
        app_client = fake.add_client(pool)
        fake.add_user(pool, "alice", "Passw0rd!")
        client = await make_proxy(f"""
credentials:
  tok: {{type: static, value: tok-abcdefghijkl}}
  user:
    type: cognito
    flow: password
    user_pool_id: {pool}
    client_id: {app_client}
    username: alice
    password: Passw0rd!
    endpoint: {fake.url}
endpoints:
  - {{name: api, endpoint: "{apigw.url}/Development", auth: tok}}
  - {{name: user, endpoint: "{apigw.url}/Development", auth: user}}
""", env={"XDG_CACHE_HOME": str(tmp_path)})
        assert (await client.get("/user/x")).status == 200
        text = await (await client.get("/_authproxy/metrics")).text()
    finally:
        await fake.stop()
    assert "# TYPE authproxy_token_fetches_total counter" in text
    assert "# TYPE authproxy_token_expiry_seconds gauge" in text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    fetches = {outcome: samples.get(("authproxy_token_fetches_total",
                                     (("credential", "user"), ("outcome", outcome))))
               for outcome in ("success", "transient_error", "permanent_error")}
    assert fetches == {"success": 1, "transient_error": 0, "permanent_error": 0}
    expiry = samples[("authproxy_token_expiry_seconds", (("credential", "user"),))]
    assert 3000 < expiry <= 3600
    # static credentials have no expiry series
    assert ("authproxy_token_expiry_seconds", (("credential", "tok"),)) not in samples


@pytest.mark.parametrize("created", [True, False], ids=["created", "no_created"])
def test_request_metrics_are_what_prometheus_clients_own_metrics_make(
        monkeypatch: pytest.MonkeyPatch, created: bool) -> None:
    # Requests are counted in plain numbers and turned into Prometheus families at scrape
    # time (prometheus_client is not imported at start): the families must be, sample for
    # sample, what the library's Counter, Histogram and Gauge made of the same requests, in the
    # same place among the other families, with or without PROMETHEUS_DISABLE_CREATED_SERIES.
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", created)
    before = time.time()
    ours = Metrics(lambda: {}, lambda: (2, 3), tunnels=Tunnels())
    reference = CollectorRegistry()
    requests = Counter("authproxy_requests", "Requests by endpoint and status",
                       ["endpoint", "status"], registry=reference)
    upstream = Histogram("authproxy_upstream_seconds",
                         "Time until the upstream's response headers", ["endpoint"],
                         registry=reference,
                         buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
    Gauge("authproxy_in_flight_requests", "Requests being handled",
          registry=reference).set_function(lambda: ours.in_flight)
    # on a bound, between bounds, above the last one, zero, and requests with no upstream time
    for endpoint, status, upstream_ms in [
            ("api", 200, 5.0), ("api", 200, 7.5), ("api", 503, None), ("-", 404, None),
            ("b", 200, 40_000.0), ("api", 200, 30_000.0), ("b", 502, 0.0), ("api", 200, 1.0)]:
        ours.observe(endpoint, status, upstream_ms)
        requests.labels(endpoint, str(status)).inc()
        if upstream_ms is not None:
            upstream.labels(endpoint).observe(upstream_ms / 1000)
    ours.in_flight = 2

    def families(registry: CollectorRegistry) -> list[Any]:
        out = []
        for family in registry.collect():
            for s in family.samples:
                if s.name.endswith("_created"):
                    assert before <= s.value <= time.time()
            family.samples = [s._replace(value=0.0) if s.name.endswith("_created") else s
                              for s in family.samples]
            out.append(family)
        return out

    theirs = families(reference)
    got = families(ours.registry)
    names = [f.name for f in got]
    assert names == ["authproxy_upstream_connections", "authproxy_websocket_tunnels_open",
                     "authproxy_websocket_tunnels", "authproxy_websocket_bytes",
                     "authproxy_requests", "authproxy_upstream_seconds",
                     "authproxy_in_flight_requests", "authproxy_token_fetches",
                     "authproxy_token_expiry_seconds", "authproxy_credential_ready"]
    assert got[4:7] == theirs
    assert any(s.name.endswith("_created") for f in theirs for s in f.samples) == created
