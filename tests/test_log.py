"""Logging: one access line per request in text and JSON, redacted header logging, and client
disconnects that do not become tracebacks."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from conftest import MakeProxy

from proxy import log
from proxy.fakes.apigw import FakeApiGateway
from proxy.secret import Secret, redact

TOKEN = "static-secret-token-0123456789"


def config(url: str, log_headers: bool = False) -> str:
    return f"""
credentials:
  tok: {{type: static, header: X-Custom-Auth, value: {TOKEN}}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: tok}}
logging: {{log_headers: {str(log_headers).lower()}}}
"""


def test_secret_type_never_formats_its_value() -> None:
    s = Secret("hunter2-hunter2")
    for text in (str(s), repr(s), f"{s}", f"{s!r}", f"{s:>30}", json.dumps({"x": str(s)})):
        assert "hunter2" not in text
    assert s.reveal() == "hunter2-hunter2"
    jwt = "eyJhbGciOiJSUzI1NiJ9." + "a" * 500 + ".sig"
    assert redact(jwt) == f"eyJhbGci…({len(jwt)} chars)"
    assert redact(f"Bearer {jwt}") == f"Bearer eyJhbGci…({len(jwt)} chars)"


async def test_access_line_text(apigw: FakeApiGateway, make_proxy: MakeProxy,
                                caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy(config(apigw.url))
    with caplog.at_level(logging.INFO, "authproxy.access"):
        await client.get("/api/items?token=in-query", headers={"X-Request-Id": "rid-1"})
    (record,) = [r for r in caplog.records if r.name == "authproxy.access"]
    line = record.getMessage()
    assert line.startswith('"GET /api/items" api 200 upstream=')
    assert "total=" in line and "id=rid-1" in line and "amzn=" in line
    assert "in-query" not in line  # query strings can hold secrets


async def test_access_line_json_with_redacted_headers(apigw: FakeApiGateway,
                                                     make_proxy: MakeProxy,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy(config(apigw.url, log_headers=True))
    with caplog.at_level(logging.DEBUG):
        await client.get("/api/x", headers={"Authorization": "Bearer client-own-secret-value",
                                            "X-Custom-Auth": "client-sent-value"})
    (record,) = [r for r in caplog.records if r.name == "authproxy.access"]
    out = json.loads(log.JsonFormatter().format(record))
    assert out["method"] == "GET" and out["path"] == "/api/x" and out["endpoint"] == "api"
    assert out["status"] == 200 and out["upstream_ms"] >= 0 and out["total_ms"] >= 0
    sent = dict(out["sent_headers"])
    assert sent["X-Custom-Auth"] == f"***({len(TOKEN)} chars)"
    received = dict(out["request_headers"])
    assert received["Authorization"].startswith("Bearer ***(")
    everything = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str)
                           for r in caplog.records)
    for secret in (TOKEN, "client-own-secret-value", "client-sent-value"):
        assert secret not in everything


async def test_client_disconnect_mid_download_is_not_a_traceback(
        apigw: FakeApiGateway, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy(config(apigw.url))
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"GET /api/big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"X-Fake-Body-Bytes: 50000000\r\n\r\n")
        await reader.readexactly(100_000)
        writer.transport.abort()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any(r.name == "authproxy.access" for r in caplog.records):
                break
    assert not [r for r in caplog.records if r.exc_info]
    (record,) = [r for r in caplog.records if r.name == "authproxy.access"]
    assert "client disconnected" in record.getMessage()
    resp = await client.get("/_authproxy/healthz")
    assert resp.status == 200


@pytest.mark.parametrize("formatter", [log.TextFormatter(), log.JsonFormatter()])
def test_direct_access_line_equals_the_formatted_record(formatter: logging.Formatter) -> None:
    extra = {"method": "GET", "path": "/x", "status": 200, "upstream_ms": 1.5, "error": None}
    record = log.access_log.makeRecord(log.access_log.name, logging.INFO, "", 0,
                                       '"GET /x" api 200', None, None, extra=extra)
    direct = formatter.access(record.created, '"GET /x" api 200', extra)  # type: ignore[attr-defined]
    assert direct == formatter.format(record)


def test_access_lines_reach_the_configured_stream(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        log.configure("info", "text")
        log.access('"GET /y" api 200', {"status": 200})
        logging.getLogger().handlers[0].flush()
        assert 'INFO    authproxy.access: "GET /y" api 200' in capfd.readouterr().err
    finally:
        root.handlers[:], root.level = saved, level
