"""Logging: one access line per request in text and JSON, redacted header logging, and client
disconnects that do not become tracebacks."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

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
    direct = formatter.access(record.created, '"GET /x" api 200', lambda: extra)  # type: ignore[attr-defined]
    assert direct == formatter.format(record)


def test_access_lines_reach_the_configured_stream(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        log.configure("info", "text")
        log.access('"GET /y" api 200', lambda: {"status": 200})
        logging.getLogger().handlers[0].flush()
        assert 'INFO    authproxy.access: "GET /y" api 200' in capfd.readouterr().err
    finally:
        root.handlers[:], root.level = saved, level


async def test_access_lines_are_written_within_the_flush_delay(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        handler = log.BatchingHandler(stream)
        handler.setFormatter(log.TextFormatter())
        handler.write_line("one")
        handler.write_line("two")
        assert path.read_text() == ""  # waiting: one write for many lines
        await asyncio.sleep(log.FLUSH_DELAY * 4)
        assert path.read_text() == "one\ntwo\n"
        handler.write_line("three")
        handler.emit(logging.LogRecord("authproxy", logging.WARNING, "", 0, "a problem", None,
                                       None))
        text = path.read_text()  # a warning goes out at once, with what waited before it
        assert text.startswith("one\ntwo\nthree\n") and text.endswith("a problem\n")


def test_a_line_written_after_its_loop_stopped_is_not_left_waiting(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        handler = log.BatchingHandler(stream)

        async def in_loop() -> None:
            handler.write_line("in the loop")
        asyncio.run(in_loop())  # the loop ends before its flush is due
        handler.write_line("after it")
        assert path.read_text() == "in the loop\nafter it\n"


# --- what looks secret: the SPEC's name rule, for query parameters and headers ------------------

@pytest.mark.parametrize(("query", "shown"), [
    # Only the values of secret-looking names change; everything else stays byte for byte.
    ("a=1&access_token=s3cr3t&b=2", "a=1&access_token=***(6 chars)&b=2"),
    ("id_token=x&Code=abc&PASSWORD=pw&client_secret=cs&api_key=k&sig=s",
     "id_token=***(1 chars)&Code=***(3 chars)&PASSWORD=***(2 chars)"
     "&client_secret=***(2 chars)&api_key=***(1 chars)&sig=s"),
    # A presigned (query-string SigV4) URL: the signature, credential and session token go;
    # algorithm, date, expiry and signed headers stay readable.
    ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240101%2Fus-east-1"
     "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=300&X-Amz-Security-Token=FQoGZXIvYXdz"
     "&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd",
     "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***(30 chars)"
     "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=300&X-Amz-Security-Token=***(12 chars)"
     "&X-Amz-SignedHeaders=host&X-Amz-Signature=***(8 chars)"),
    ("token=a&token=bb&other=c&token=ccc",  # repeated names: every value
     "token=***(1 chars)&token=***(2 chars)&other=c&token=***(3 chars)"),
    ("token=&code&&keep=1&", "token=&code&&keep=1&"),  # empty and missing values: nothing to hide
    # Names are compared decoded (as the server reads them) but shown as sent.
    ("%61ccess_token=enc&%41PI%5fKEY=k2&access+token=sp&q=a+b%2Fc",
     "%61ccess_token=***(3 chars)&%41PI%5fKEY=***(2 chars)&access+token=***(2 chars)"
     "&q=a+b%2Fc"),
    # The length is the decoded value's; a space in it is no `Bearer` scheme word to show.
    ("password=hunter+two%21", "password=***(11 chars)"),
    ("id_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
     "id_token=eyJhbGci…(41 chars)"),  # a JWT shows as tokens do everywhere
    ("author=me&keyword=x&monkey=y",  # over-matching on purpose (see proxy.redaction)
     "author=***(2 chars)&keyword=***(1 chars)&monkey=***(1 chars)"),
    ("", ""),
    ("page=2&sort=-date&q=%E2%9C%93", "page=2&sort=-date&q=%E2%9C%93"),
])
def test_query_values_with_secret_looking_names_are_redacted(query: str, shown: str) -> None:
    from proxy.redaction import redact_query

    assert redact_query(query) == shown


def test_extra_always_secret_query_names() -> None:
    # An endpoint's `token_query: NAME` parameter holds the credential whatever NAME is.
    from proxy.redaction import redact_query, redact_target

    assert redact_query("ws_ticket=t-123&room=1") == "ws_ticket=t-123&room=1"
    also = frozenset({"ws_ticket"})
    assert redact_query("ws_ticket=t-123&room=1&WS_Ticket=x", also) == (
        "ws_ticket=***(5 chars)&room=1&WS_Ticket=***(1 chars)")
    assert redact_target("/chat?room=1&ws_ticket=t-123", also) == (
        "/chat?room=1&ws_ticket=***(5 chars)")


def test_paths_urls_and_header_values_keep_everything_but_query_secrets() -> None:
    from proxy.redaction import redact_queries, redact_target

    assert redact_target("/a/b") == "/a/b" and redact_target("/a?") == "/a?"
    assert redact_target("/cb?code=c0de&state=xyz") == "/cb?code=***(4 chars)&state=xyz"
    assert redact_target("https://h.example/s/x?X-Amz-Signature=ab&v=1") == (
        "https://h.example/s/x?X-Amz-Signature=***(2 chars)&v=1")
    # In a header value every URL's query is looked at (a Link can hold several). A query ends
    # at whitespace only, so a malformed `?a=>&token=x` cannot hide a secret behind a `>`; the
    # price is a `>;` hidden along with a secret's value.
    assert redact_queries("<https://a/?x=1>; rel=a, <https://b/?token=22>; rel=b") == (
        "<https://a/?x=1>; rel=a, <https://b/?token=***(4 chars) rel=b")
    assert redact_queries('"/x?a=>&token=22"') == '"/x?a=>&token=***(3 chars)'
    assert redact_queries("/x?token=a#frag b?code=c") == (
        "/x?token=***(1 chars)#frag b?code=***(1 chars)")
    assert redact_queries("why? no=query here") == "why? no=query here"


def test_header_names_follow_the_same_rule() -> None:
    values = [(name, "the-value") for name in (
        "Authorization", "Proxy-Authorization", "X-Api-Key", "X-Amz-Security-Token",
        "X-Session-Token", "X-Client-Secret", "X-User-Password", "X-Amz-Signature",
        "X-Amz-Credential", "X-Custom-Auth", "x-auth-code", "Cookie", "Set-Cookie",
        "X-Authproxy-Secret", "X-Authproxy-Token")]
    assert all(v == "***(9 chars)" for _, v in log.redact_headers(values))
    plain = [(name, "the-value") for name in (
        "Content-Type", "Accept-Encoding", "X-Amz-Date", "X-Amzn-Trace-Id", "X-Request-Id",
        "X-Amz-SignedHeaders", "Content-Encoding", "X-Authproxy-Error")]
    assert log.redact_headers(plain) == plain
    # Headers whose values are by definition no credential stay readable: the CORS flag is
    # `true` or absent, and a challenge says how to authenticate, not with what.
    flags = [("Access-Control-Allow-Credentials", "true"),
             ("WWW-Authenticate", 'Bearer error="invalid_token"')]
    assert log.redact_headers(flags) == flags
    assert log.redact_headers([("X-Plain", "v")], frozenset({"x-plain"})) == [
        ("X-Plain", "***(1 chars)")]
    assert "x-session-token" in log.SENSITIVE and "content-type" not in log.SENSITIVE


def test_urls_in_header_values_lose_their_query_secrets() -> None:
    headers = [("Location", "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab12&x=1"),
               ("Referer", "http://app.test/callback?code=c0de-1&state=s"),
               ("X-Note", "what?a=b")]
    assert log.redact_headers(headers) == [
        ("Location", "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=***(4 chars)&x=1"),
        ("Referer", "http://app.test/callback?code=***(6 chars)&state=s"),
        ("X-Note", "what?a=b")]


async def test_logged_headers_hide_query_secrets_and_secret_looking_headers(
        apigw: FakeApiGateway, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy(config(apigw.url, log_headers=True))
    presigned = ("https://bucket.s3.amazonaws.com/report.csv?X-Amz-Credential=ASIAEXAMPLE"
                 "&X-Amz-Security-Token=session-token-77&X-Amz-Signature=sig-88&X-Amz-Expires=60")
    with caplog.at_level(logging.DEBUG):
        resp = await client.get("/api/report?access_token=query-secret-66&format=csv",
                                allow_redirects=False, headers={
                                    "Referer": "http://app.test/callback?code=auth-code-55&s=1",
                                    "X-Session-Token": "session-header-44",
                                    "X-Fake-Location": presigned})
    assert resp.status == 302 and resp.headers["Location"] == presigned  # forwarded as is
    (record,) = [r for r in caplog.records if r.name == "authproxy.access"]
    out = json.loads(log.JsonFormatter().format(record))
    assert dict(out["response_headers"])["Location"] == (
        "https://bucket.s3.amazonaws.com/report.csv?X-Amz-Credential=***(11 chars)"
        "&X-Amz-Security-Token=***(16 chars)&X-Amz-Signature=***(6 chars)&X-Amz-Expires=60")
    received = dict(out["request_headers"])
    assert received["Referer"] == "http://app.test/callback?code=***(12 chars)&s=1"
    assert received["X-Session-Token"] == "***(17 chars)"
    everything = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str)
                           for r in caplog.records)
    for secret in ("query-secret-66", "auth-code-55", "session-header-44", "session-token-77",
                   "sig-88", "ASIAEXAMPLE"):
        assert secret not in everything, secret
