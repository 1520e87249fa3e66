"""Answers passed through exactly, checked with real clients (curl, requests, httpx, node's
fetch) against a real upstream (gunicorn), not only our own fakes and raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import requests
from raw_http import port_of, served

pytestmark = [pytest.mark.timeout(90), pytest.mark.clients]
HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gunicorn() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--chdir", str(HERE), "--log-level", "warning",
         "real_upstream_app:app"], env={**os.environ, "PYTHONPATH": str(HERE)})
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def proxy(gunicorn: str) -> AsyncIterator[str]:
    text = f"""
credentials:
  tok: {{type: static, value: "Bearer tok-0123456789"}}
endpoints:
  - {{name: api, endpoint: "{gunicorn}", auth: tok}}
"""
    async with served(text) as running:
        yield f"http://127.0.0.1:{port_of(running)}"


async def _curl(*args: str) -> str:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed for this test (apt-get install curl)")
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode("latin-1")


async def test_curl_follows_a_scheme_relative_redirect_to_the_upstream(
        proxy: str, gunicorn: str) -> None:
    upstream_authority = gunicorn.removeprefix("http:")
    out = await _curl("-L", "-i", f"{proxy}/api/redirect?to={upstream_authority}/landed")
    assert out.rstrip().endswith('{"path": "/landed", "method": "GET"}'), out
    assert "Location: " + proxy + "/api/landed" in out


@pytest.mark.parametrize("location", ["//other.example/x", "https://other.example/x"])
async def test_a_redirect_to_another_site_is_passed_unchanged(proxy: str,
                                                              location: str) -> None:
    for resp in await asyncio.gather(
            asyncio.to_thread(requests.get, f"{proxy}/api/redirect", params={"to": location},
                              allow_redirects=False, timeout=10),
            _httpx_get(f"{proxy}/api/redirect?to={location}")):
        assert resp.status_code == 302
        assert resp.headers["Location"] == location


async def _httpx_get(url: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        return await client.get(url, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("curl_args", [[], ["--http1.0"], ["-H", "Connection: close"]],
                         ids=["1.1", "1.0", "close"])
async def test_no_content_type_is_invented_and_header_bytes_pass(proxy: str,
                                                                 curl_args: list[str]) -> None:
    teapot = await _curl("-i", *curl_args, f"{proxy}/api/teapot")
    head, _, body = teapot.partition("\r\n\r\n")
    assert head.split(" ", 2)[1] == "418" and body == "I'm a teapot"
    assert "content-type" not in head.lower(), head
    latin = await _curl("-i", *curl_args, f"{proxy}/api/latin")
    assert "X-Latin: caf\xe9\r\n" in latin, latin
    head_only = await _curl("-I", *curl_args, f"{proxy}/api/latin")
    assert "X-Latin: caf\xe9\r\n" in head_only, head_only


async def test_python_clients_see_what_the_upstream_sent(proxy: str) -> None:
    r = await asyncio.to_thread(requests.get, f"{proxy}/api/teapot", timeout=10)
    assert r.status_code == 418 and "Content-Type" not in r.headers and r.text == "I'm a teapot"
    r = await asyncio.to_thread(requests.get, f"{proxy}/api/latin", timeout=10)
    assert r.headers["X-Latin"] == "caf\xe9"  # requests reads header bytes as latin-1
    x = await _httpx_get(f"{proxy}/api/latin")
    assert {k.lower(): v for k, v in x.headers.raw}[b"x-latin"] == b"caf\xe9"
    x = await _httpx_get(f"{proxy}/api/teapot")
    assert x.status_code == 418 and "content-type" not in x.headers


async def test_node_fetch_sees_what_the_upstream_sent(proxy: str) -> None:
    if shutil.which("node") is None:
        pytest.fail("node is needed for this test")
    script = f"""
const t = await fetch("{proxy}/api/teapot");
const l = await fetch("{proxy}/api/latin");
const r = await fetch("{proxy}/api/redirect?to=//other.example/x", {{redirect: "manual"}});
console.log(JSON.stringify({{status: t.status, type: t.headers.get("content-type"),
  body: await t.text(), latin: [...l.headers.get("x-latin")].map(c => c.charCodeAt(0)),
  location: r.headers.get("location")}}));
"""
    proc = await asyncio.create_subprocess_exec(
        "node", "--input-type=module", "-e", script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    got = json.loads(out)
    assert got == {"status": 418, "type": None, "body": "I'm a teapot",
                   "latin": [99, 97, 102, 0xE9], "location": "//other.example/x"}
