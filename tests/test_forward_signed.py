"""Bodies of requests whose credential must hash them (SigV4): read whole before the headers
go, in memory up to 1 MiB and spooled to an unlinked temporary file beyond, 413 past the limit
with nothing sent, the same bytes replayed after a refused security token. Driven with a
test credential that puts the body's SHA-256 in its header, checked by the upstream's own hash."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import tempfile
from typing import Any, ClassVar

import pytest
from conftest import PROXIES, MakeProxy
from raw_http import answer_while_sending

from proxy.credentials.base import CredentialSource, Description, Headers, Outgoing
from proxy.fakes.apigw import FakeApiGateway

pytestmark = pytest.mark.timeout(60)


class BodyHashing(CredentialSource):
    """Stands in for a signer: its header is computed from the request and the body's hash."""

    requires_request_body: ClassVar[bool] = True
    refreshable: ClassVar[bool] = True
    also_sets: ClassVar[frozenset[str]] = frozenset({"x-amz-date"})

    def __init__(self, limit: int) -> None:
        self.name, self.header_name, self.max_request_body = "tok", "Authorization", limit
        self.generation = 0
        self.seen: list[Outgoing] = []

    async def headers_for(self, request: Outgoing) -> Headers:
        self.seen.append(request)
        return (("Authorization", f"Sig{self.generation} {request.body_sha256}"),
                ("X-Amz-Date", "20260101T000000Z"))

    async def rejected(self, sent: Headers) -> bool:
        self.generation += 1
        return True

    def describe(self) -> Description:
        return Description(name=self.name, type="test", header=self.header_name, summary="",
                           how="", headers=())

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "ready": True}


CONFIG = """
credentials:
  tok: {{type: static, value: unused-static-value}}
endpoints:
  - {{name: api, endpoint: "{url}/Development", auth: tok{extra}}}
"""


async def _proxy(make_proxy: MakeProxy, apigw: FakeApiGateway, limit: int = 10 * 2 ** 20,
                 extra: str = "") -> tuple[Any, BodyHashing]:
    client = await make_proxy(CONFIG.format(url=apigw.url, extra=extra))
    source = BodyHashing(limit)
    rt = PROXIES[client].rt
    rt.sources["tok"] = rt.in_use["tok"] = source
    up = rt.upstreams["api"]  # built for the static stand-in: made again for this source
    rt.upstreams["api"] = dataclasses.replace(up, drop_signing=up.drop | source.also_sets)
    return client, source


_BASELINE: set[str] = set()


@pytest.fixture(autouse=True)
def _baseline() -> None:
    # pytest's own output capture holds unlinked temporary files too: only new ones count.
    _BASELINE.clear()
    _BASELINE.update(_open_unlinked())


def _spool_fds() -> set[str]:
    return _open_unlinked() - _BASELINE


def _open_unlinked() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        # Unlinked at creation: shows as "/tmp/#123 (deleted)" or "/tmp/authproxy-body-x (deleted)"
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            out.add(target)
    return out


@pytest.mark.parametrize("size", [0, 1000, 3 * 2 ** 20])
async def test_the_body_is_hashed_whole_then_sent(size: int, apigw: FakeApiGateway,
                                                  make_proxy: MakeProxy) -> None:
    client, source = await _proxy(make_proxy, apigw)
    body = os.urandom(size)
    resp = await client.post("/api/up?x=1", data=io.BytesIO(body),
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 200, await resp.text()
    seen = apigw.seen[-1]
    assert seen.body_length == size
    assert seen.header("Authorization") == f"Sig0 {seen.body_sha256}"
    assert seen.header("Content-Length") == str(size)
    assert seen.header("Transfer-Encoding") is None
    (out,) = source.seen
    assert (out.raw_path, out.query) == ("/Development/up", "x=1")
    assert ("Content-Type", "application/octet-stream") in out.headers
    assert not _spool_fds()


async def test_a_chunked_upload_is_sent_with_its_length(apigw: FakeApiGateway,
                                                        make_proxy: MakeProxy) -> None:
    client, _ = await _proxy(make_proxy, apigw)

    async def pieces() -> Any:
        for _ in range(40):
            yield b"z" * 65536
    resp = await client.put("/api/up", data=pieces())
    assert resp.status == 200
    seen = apigw.seen[-1]
    assert seen.body_length == 40 * 65536
    assert seen.header("Content-Length") == str(40 * 65536)
    assert seen.header("Authorization") == f"Sig0 {seen.body_sha256}"


async def test_a_body_over_the_limit_is_413_and_nothing_goes_upstream(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client, source = await _proxy(make_proxy, apigw, limit=2 * 2 ** 20)
    resp = await client.post("/api/up", data=io.BytesIO(b"x" * (2 * 2 ** 20 + 1)))
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "body_too_large" and "max_signed_body" in body["message"]
    assert resp.headers["X-Request-Id"]
    assert not apigw.seen and not source.seen
    assert not _spool_fds()


async def test_a_client_gone_mid_body_leaves_no_temporary_file(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client, source = await _proxy(make_proxy, apigw)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /api/up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000\r\n\r\n"
                 + b"y" * 2_000_000)
    await writer.drain()
    for _ in range(50):
        if _spool_fds():
            break
        await asyncio.sleep(0.02)
    assert _spool_fds(), "the body should be spooled by now"
    writer.transport.abort()
    for _ in range(100):
        if not _spool_fds():
            break
        await asyncio.sleep(0.02)
    assert not _spool_fds()
    assert not apigw.seen and not source.seen


async def test_a_refused_security_token_is_re_signed_and_the_same_body_sent_again(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client, source = await _proxy(make_proxy, apigw)
    body = os.urandom(1500 * 1024)  # spooled: the replay reads the file again
    first: list[bool] = []

    original = apigw._handle

    async def expired_once(request: Any) -> Any:
        if not first:
            first.append(True)
            await request.read()
            from aiohttp import web
            return web.Response(status=403, text='{"message":"The security token included in '
                                'the request is expired"}', content_type="application/json")
        return await original(request)
    apigw._handle = expired_once  # type: ignore[method-assign]
    await apigw.stop()
    await apigw.start(port=apigw.port)
    resp = await client.post("/api/up", data=io.BytesIO(body))
    assert resp.status == 200, await resp.text()
    seen = apigw.seen[-1]
    assert seen.body_length == len(body)
    assert seen.header("Authorization") == f"Sig1 {seen.body_sha256}"
    assert len(source.seen) == 2 and source.seen[1].body_sha256 == seen.body_sha256


async def test_keep_with_the_clients_own_authorization_goes_unsigned(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    client, source = await _proxy(make_proxy, apigw, extra=", client_header: keep")
    resp = await client.post("/api/up", data=b"abc", headers={"Authorization": "Mine 123"})
    assert resp.status == 200
    assert apigw.seen[-1].header("Authorization") == "Mine 123"
    assert apigw.seen[-1].header("X-Amz-Date") is None
    assert not source.seen


@pytest.mark.parametrize("body", [None, b"abc"])
async def test_the_clients_own_signing_headers_give_way_to_the_credentials(
        apigw: FakeApiGateway, make_proxy: MakeProxy, body: bytes | None) -> None:
    client, _ = await _proxy(make_proxy, apigw)
    resp = await client.request("GET" if body is None else "POST", "/api/x", data=body,
                                headers={"X-Amz-Date": "19990101T000000Z",
                                         "x-amz-date": "19990101T000001Z",
                                         "Authorization": "theirs"})
    assert resp.status == 200
    seen = apigw.seen[-1]
    assert [v for k, v in seen.headers if k.lower() == "x-amz-date"] == ["20260101T000000Z"]
    assert [v for k, v in seen.headers if k.lower() == "authorization"] == [
        f"Sig0 {seen.body_sha256}"]


async def test_a_413_reaches_a_client_still_sending_its_body(
        apigw: FakeApiGateway, make_proxy: MakeProxy) -> None:
    # The answer comes while most of the body is still on its way: closing with those bytes
    # unread would make the kernel reset the connection, and the reset can throw the 413
    # away before the client reads it.
    client, source = await _proxy(make_proxy, apigw, limit=2 ** 20)
    for _ in range(5):
        answer = await answer_while_sending(
            client.port, b"POST /api/up HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 8000000\r\n\r\n" + b"z" * 8_000_000, settle=0.3, timeout=10)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"body_too_large" in answer
    assert not apigw.seen and not source.seen
