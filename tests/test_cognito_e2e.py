"""Cognito end to end: `authproxy token`, `authproxy login` then `serve` without a password,
and the 401 replay, against the fake Cognito and fake API Gateway on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from conftest import AUTHPROXY, BackgroundLoop, MakeProxy, ServeProcess

from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito

TAMPER = "\r\nX-Injected: yes"  # a token that would add a header line upstream
PASSWORD = "Correct-Horse-Battery-9"
CLIENT_SECRET = "client-secret-value-0123456789abcdef"


@dataclass
class Pool:
    fake: FakeCognito
    pool: str
    client: str

    def config(self, upstream: str, flow: str = "srp", password: bool = True,
               extra: str = "") -> str:
        pw = f"    password: {PASSWORD}\n" if password else ""
        return f"""
credentials:
  user:
    type: cognito
    flow: {flow}
    user_pool_id: {self.pool}
    client_id: {self.client}
    client_secret: {CLIENT_SECRET}
    username: alice
{pw}    endpoint: {self.fake.url}/
{extra}
endpoints:
  - {{name: api, endpoint: "{upstream}/Development", auth: user}}
"""


def make_pool(fake: FakeCognito, challenge: str | None = None) -> Pool:
    pool = fake.add_pool()
    client = fake.add_client(pool, secret=CLIENT_SECRET)
    fake.add_user(pool, "alice", PASSWORD, email="alice@example.test", challenge=challenge,
                  mfa_code="246810")
    return Pool(fake, pool, client)


@pytest.fixture
def cognito(background: BackgroundLoop) -> Iterator[FakeCognito]:
    fake = FakeCognito()
    background.run(fake.start())
    yield fake
    background.run(fake.stop())


def run(*args: str, cache: Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([AUTHPROXY, *args], capture_output=True, text=True, timeout=60,
                          env=env, input=input)


@pytest.mark.e2e
def test_token_prints_the_header_value(cognito: FakeCognito, tmp_path: Path) -> None:
    p = make_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(p.config("http://127.0.0.1:9"))
    result = run("token", "-c", str(cfg), "user", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    value = result.stdout.strip()
    assert value.startswith("Bearer eyJ")
    claims = jwt.decode(value[7:], options={"verify_signature": False})
    assert claims["token_use"] == "id" and claims["cognito:username"] == "alice"
    raw = run("token", "-c", str(cfg), "user", "--raw", cache=tmp_path)
    assert raw.stdout.strip().startswith("eyJ")
    shown = run("token", "-c", str(cfg), "user", "--claims", cache=tmp_path)
    assert shown.returncode == 0 and '"token_use": "id"' in shown.stdout
    assert "expires in" in shown.stdout
    missing = run("token", "-c", str(cfg), "usr", cache=tmp_path)
    assert missing.returncode == 2 and "did you mean 'user'" in missing.stderr


@pytest.mark.e2e
def test_token_with_a_wrong_password_fails_clearly(cognito: FakeCognito, tmp_path: Path) -> None:
    p = make_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(p.config("http://127.0.0.1:9").replace(PASSWORD, "Wrong-Password-1"))
    result = run("token", "-c", str(cfg), "user", cache=tmp_path)
    assert result.returncode == 1
    assert "password" in result.stderr.lower()
    for secret in ("Wrong-Password-1", CLIENT_SECRET):
        assert secret not in result.stdout + result.stderr


@pytest.mark.e2e
def test_login_with_mfa_then_serve_without_a_password(
        cognito: FakeCognito, threaded_apigw: FakeApiGateway, tmp_path: Path,
        serve: Callable[..., ServeProcess]) -> None:
    p = make_pool(cognito, challenge="SOFTWARE_TOKEN_MFA")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(p.config(threaded_apigw.url, password=False))
    before = run("explain", "-c", str(cfg), "/api/x", cache=tmp_path)
    assert "no saved sign-in" in before.stdout and "authproxy login user" in before.stdout
    result = run("login", "-c", str(cfg), "user", cache=tmp_path,
                 input=f"{PASSWORD}\n246810\n")
    assert result.returncode == 0, result.stderr
    assert "signed in as alice" in result.stdout and "SOFTWARE_TOKEN_MFA" in result.stdout
    saved = list((tmp_path / "authproxy").iterdir())
    assert len(saved) == 1
    assert stat.S_IMODE(saved[0].stat().st_mode) == 0o600
    for secret in (PASSWORD, CLIENT_SECRET):
        assert secret not in result.stdout + result.stderr + saved[0].name
    sign_ins = cognito.count("InitiateAuth", "USER_SRP_AUTH")
    after = run("explain", "-c", str(cfg), "/api/x", cache=tmp_path)
    assert "saved sign-in from `authproxy login`" in after.stdout

    sp = serve(cfg.read_text(), env={"XDG_CACHE_HOME": str(tmp_path)})
    status, _, body = sp.get("/api/items")
    assert status == 200, body
    sent = dict(json.loads(body)["headers"])["Authorization"]
    assert jwt.decode(sent[7:], options={"verify_signature": False})["token_use"] == "id"
    assert cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH") >= 1
    assert cognito.count("InitiateAuth", "USER_SRP_AUTH") == sign_ins  # no new sign-in
    status, _, body = sp.get("/_authproxy/readyz")
    assert status == 200 and json.loads(body)["credentials"]["user"]["ready"] is True
    assert sp.stop() == 0
    assert sent[7:] not in sp.log() and PASSWORD not in sp.log()


@pytest.mark.e2e
def test_login_wrong_password_exits_1(cognito: FakeCognito, tmp_path: Path) -> None:
    p = make_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(p.config("http://127.0.0.1:9", password=False))
    result = run("login", "-c", str(cfg), "user", cache=tmp_path, input="nope-nope-1\n")
    assert result.returncode == 1 and "nope-nope-1" not in result.stdout + result.stderr
    assert not (tmp_path / "authproxy").exists() or not list((tmp_path / "authproxy").iterdir())


async def test_upstream_401_refreshes_once_and_replays_the_body(
        apigw: FakeApiGateway, make_proxy: MakeProxy, tmp_path: Path) -> None:
    fake = FakeCognito()
    await fake.start()
    try:
        p = make_pool(fake)
        client = await make_proxy(p.config(apigw.url), env={"XDG_CACHE_HOME": str(tmp_path)})
        resp = await client.get("/api/first")
        assert resp.status == 200
        first = apigw.seen[-1].header("Authorization")
        assert first is not None
        apigw.reject.add(first)  # as if API Gateway now found it expired or revoked
        body = json.dumps({"order": list(range(1000))}).encode()
        resp = await client.post("/api/orders", data=body)
        assert resp.status == 200
        echo: dict[str, Any] = await resp.json()
        assert echo["body_length"] == len(body)
        tries = [s for s in apigw.seen if s.raw_path == "/Development/orders"]
        assert len(tries) == 2 and tries[0].header("Authorization") == first
        assert tries[1].header("Authorization") not in (None, first)

        # A body over 1 MiB was not kept: the 401 goes back to the client.
        apigw.reject.add(tries[1].header("Authorization") or "")
        big = io.BytesIO(b"x" * (1024 * 1024 + 1))
        resp = await client.post("/api/big", data=big)
        assert resp.status == 401
        assert len([s for s in apigw.seen if s.raw_path == "/Development/big"]) == 1
    finally:
        await fake.stop()


@pytest.mark.e2e
def test_reload_keeps_tokens_of_unchanged_credentials(
        cognito: FakeCognito, threaded_apigw: FakeApiGateway, tmp_path: Path,
        serve: Callable[..., ServeProcess]) -> None:
    p = make_pool(cognito)
    text = p.config(threaded_apigw.url)
    sp = serve(text, env={"XDG_CACHE_HOME": str(tmp_path)})
    path = Path(str(sp.proc.args[3]))  # type: ignore[index]
    assert sp.get("/api/one")[0] == 200
    sign_ins = cognito.count("InitiateAuth")

    def reload(new_text: str, times: int) -> None:
        path.write_text(new_text)
        sp.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sp.log().count("config reloaded") < times and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sp.log().count("config reloaded") == times, sp.log()

    # An endpoint added, the credential untouched: no new sign-in, the new route works.
    reload(text + f'  - {{name: more, endpoint: "{threaded_apigw.url}/Development", '
                  f'auth: user}}\n', 1)
    assert sp.get("/more/x")[0] == 200 and sp.get("/api/two")[0] == 200
    assert cognito.count("InitiateAuth") == sign_ins
    # The credential changed: it signs in again.
    reload(p.config(threaded_apigw.url, extra="    refresh_margin: 120"), 2)
    assert sp.get("/api/three")[0] == 200
    assert cognito.count("InitiateAuth") > sign_ins
    assert sp.stop() == 0


async def test_a_token_with_a_line_break_is_never_injected(
        apigw: FakeApiGateway, make_proxy: MakeProxy, tmp_path: Path) -> None:
    # An IdP (or something between) answering with a "token" that would add a header line.
    fake = FakeCognito()
    await fake.start()
    good = make_pool(fake)
    from aiohttp import web

    async def tampered(request: web.Request) -> web.Response:
        async with aiohttp.ClientSession() as s:
            async with s.post(fake.url + "/", data=await request.read(),
                              headers=dict(request.headers)) as r:
                body = await r.json(content_type=None)
        result = body.get("AuthenticationResult")
        if result:
            result["IdToken"] += TAMPER
        return web.json_response(body, content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", tampered)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        text = good.config(apigw.url, flow="password").replace(fake.url, f"http://127.0.0.1:{port}")
        client = await make_proxy(text, env={"XDG_CACHE_HOME": str(tmp_path)})
        resp = await client.get("/api/x")
        assert resp.status == 503
        assert not apigw.seen
    finally:
        await runner.cleanup()
        await fake.stop()


@pytest.mark.e2e
def test_serve_gets_a_client_credentials_token_and_injects_it(
        cognito: FakeCognito, threaded_apigw: FakeApiGateway, tmp_path: Path,
        serve: Callable[..., ServeProcess]) -> None:
    # The M2M flow through the real serve process: its token request goes out on the proxy's
    # own aiohttp session, which must send the form's Content-Type (Cognito refuses the POST
    # without it, and so does the fake); `authproxy token` uses another session.
    pool = cognito.add_pool()
    client = cognito.add_client(pool, secret=CLIENT_SECRET, scopes=["orders/read"])
    sp = serve(f"""
credentials:
  machine:
    type: cognito
    flow: client_credentials
    domain: {cognito.url}
    client_id: {client}
    client_secret: {CLIENT_SECRET}
    scopes: [orders/read]
endpoints:
  - {{name: api, endpoint: "{threaded_apigw.url}/Development", auth: machine}}
""", env={"XDG_CACHE_HOME": str(tmp_path)})
    status, _, body = sp.get("/api/items")
    assert status == 200, (body, sp.log())
    sent = dict(json.loads(body)["headers"])["Authorization"]
    claims = jwt.decode(sent.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["client_id"] == client and claims["scope"] == "orders/read"
    assert cognito.count("oauth2/token") == 1
    assert sp.stop() == 0
    assert CLIENT_SECRET not in sp.log()
