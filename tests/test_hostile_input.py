"""Bad input: request smuggling shapes, oversized headers, invalid methods and non-ASCII paths
over raw sockets, and hypothesis fuzzing of the config loader and the path join."""

from __future__ import annotations

import asyncio
import string

import pytest
from conftest import MakeProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_http import answer_while_sending

from proxy.app import target_problem
from proxy.config import ConfigError, Endpoint, parse_config
from proxy.fakes.apigw import FakeApiGateway
from proxy.rules import RuleTable
from proxy.target import Upstream

pytestmark = pytest.mark.timeout(120)


def config(url: str) -> str:
    return f"""
credentials:
  tok: {{type: static, value: tok-0123456789}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: tok}}
"""


async def send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


SMUGGLING = {
    "cl+te": b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\n"
             b"Host: 127.0.0.1\r\n\r\n",
    "two-cl": b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
              b"Content-Length: 40\r\n\r\nabcd",
    "obs-fold": b"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET /api/x HTTP/1.1\nHost: 127.0.0.1\nX-A: a\n\n",
    "te-obfuscated": b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Transfer-Encoding: xchunked\r\n\r\n",
    "space-before-colon": b"GET /api/x HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n",
    "huge-header": b"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70000
                   + b"\r\n\r\n",
    "bad-method": b"G\x00T /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "control-char-path": b"GET /api/x\x01y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_smuggling_shapes_get_a_clean_error_and_the_server_lives(
        name: str, apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    answer = await send_raw(client.port, SMUGGLING[name])
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
    assert status in (400, 431), answer[:200]
    assert not any(s.raw_path.endswith("/smuggled") for s in apigw.seen)
    assert not apigw.seen, [s.raw_path for s in apigw.seen]
    resp = await client.get("/_authproxy/healthz")
    assert resp.status == 200


async def test_a_chunked_body_that_breaks_midway_gets_400_and_never_completes_upstream(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    # The head was fine, so the request is already on its way when the bad chunk size comes:
    # its body fails, the client gets the JSON 400, the upstream never sees a whole request,
    # and nothing after the bad bytes is read as a request.
    client = await make_proxy(config(apigw.url))
    answer = await send_raw(client.port, b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n"
                            b"GET /api/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"X-Authproxy-Error: bad_request" in head and b"Connection: close" in head
    assert b"malformed request" in body
    assert answer.count(b"HTTP/1.1 ") == 1
    await asyncio.sleep(0.2)
    assert not apigw.seen, [s.raw_path for s in apigw.seen]
    resp = await client.get("/_authproxy/healthz")
    assert resp.status == 200


async def test_a_refusal_reaches_a_client_that_goes_on_sending(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    # A bad head followed at once by a megabyte the proxy will never parse: closing with those
    # bytes unread would make the kernel answer with a reset, and a reset can throw the 400
    # away before the client reads it. The proxy half-closes and drops what keeps coming.
    client = await make_proxy(config(apigw.url))
    for _ in range(5):
        answer = await answer_while_sending(
            client.port, b"GET /api/x HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n" + b"x" * 1_000_000)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"X-Authproxy-Error: bad_request" in answer
    assert not apigw.seen


async def test_unusual_but_valid_method_is_forwarded(apigw: FakeApiGateway,
                                                    make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    answer = await send_raw(client.port, b"PROPFIND /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                         b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert apigw.seen[-1].method == "PROPFIND"


async def test_non_ascii_path_is_percent_encoded_or_refused(apigw: FakeApiGateway,
                                                           make_proxy: MakeProxy) -> None:
    client = await make_proxy(config(apigw.url))
    answer = await send_raw(client.port, "GET /api/caf\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                         "Connection: close\r\n\r\n".encode())
    status = int(answer.split(b" ", 2)[1])
    assert status in (200, 400)
    if status == 200:
        assert apigw.seen[-1].raw_path.isascii()
    resp = await client.get("/_authproxy/healthz")
    assert resp.status == 200


# --- fuzzing ---------------------------------------------------------------------------------

yaml_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["listen", "port", "host", "credentials", "endpoints", "name",
                         "endpoint", "auth", "type", "value", "prefix", "cors", "admin",
                         "allow_origins", "timeout", "x"]) | st.text(max_size=8),
        children, max_size=5),
    max_leaves=20)


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=yaml_ish)
def test_config_loader_never_crashes(data: object) -> None:
    import yaml
    text = yaml.safe_dump(data)
    try:
        parse_config(text, "fuzz.yaml", {})
    except ConfigError as e:
        assert e.problems and all(p.message for p in e.problems)


@pytest.mark.fuzz
@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_config_loader_survives_arbitrary_text(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml", {})
    except ConfigError as e:
        assert e.problems


path_chars = st.sampled_from(list(string.ascii_letters + string.digits + "/.%@:?#\\-_~;,=+!$&'()*")
                             + ["%2e", "%2E", "%2f", "%5c", "..", "//", "@evil.example"])


_TABLES = {prefix: (RuleTable([ep]), Upstream.build(ep, None)) for prefix in ("/api", "/", "/a/b")
           for ep in [Endpoint("api", "https://up.example:8443/stage", prefix=prefix)]}


@pytest.mark.fuzz
@settings(max_examples=1000, deadline=None)
@given(parts=st.lists(path_chars, max_size=30), prefix=st.sampled_from(sorted(_TABLES)))
def test_path_join_never_changes_host_or_escapes_the_prefix(parts: list[str],
                                                            prefix: str) -> None:
    raw = "/" + "".join(parts)
    path = raw.partition("?")[0]
    if target_problem(path):
        return
    table, upstream = _TABLES[prefix]
    match = table.match("localhost", path)
    if match is None:
        assert prefix != "/"
        return
    url = upstream.url(match.rest, "")
    assert (url.scheme, url.host, url.port) == ("https", "up.example", 8443)
    assert url.raw_path == "/stage" or url.raw_path.startswith("/stage/")
    assert path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix == "/"
    decoded = url.raw_path.lower().replace("%2e", ".").replace("%2f", "/").replace("%5c", "/")
    assert "/../" not in decoded + "/" and "/./" not in decoded + "/"
