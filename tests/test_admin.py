"""Admin answers: healthz, readyz and Prometheus metrics, as a monitoring system reads them."""

from __future__ import annotations

from typing import Any

from conftest import MakeProxy
from prometheus_client.parser import text_string_to_metric_families

from proxy.fakes.apigw import FakeApiGateway


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
