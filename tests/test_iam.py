"""`type: iam` through the real `authproxy serve`: requests signed with SigV4 and checked by the
fake API Gateway's own verifier, with credentials from a fake Cognito identity pool (guest and
signed in), from fixed keys; the identity id kept across restarts, refresh before expiry, the
identity service failing while credentials are cached, 413, replays, `token --format`, and no
secret anywhere it could leak."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import AUTHPROXY, BackgroundLoop, ServeProcess

from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito
from proxy.fakes.cognito_identity import FakeCognitoIdentity, IssuedView, user_pool_provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
Serve = Callable[..., ServeProcess]
PASSWORD = "Corr3ct-Horse!"


class World:
    def __init__(self, bg: BackgroundLoop) -> None:
        self.bg = bg
        self.identity = FakeCognitoIdentity()
        self.cognito = FakeCognito()
        bg.run(self.identity.start())
        bg.run(self.cognito.start())
        self.secrets = IssuedView(self.identity, "secret_access_key")
        self.tokens = IssuedView(self.identity, "session_token")
        self.apigw = FakeApiGateway(iam=self.secrets, iam_tokens=self.tokens,
                                    iam_region="us-east-1")
        bg.run(self.apigw.start())
        self.user_pool = self.cognito.add_pool()
        self.client = self.cognito.add_client(self.user_pool)
        self.cognito.add_user(self.user_pool, "alice", PASSWORD)
        self.pool = self.identity.add_pool(providers=user_pool_provider(
            self.cognito, self.user_pool, self.client))

    def config(self, *, login: bool = False, extra: str = "", cred_extra: str = "") -> str:
        user = f"""
  user:
    type: cognito
    flow: password
    user_pool_id: {self.user_pool}
    client_id: {self.client}
    username: alice
    password: "{PASSWORD}"
    endpoint: {self.cognito.url}/
""" if login else ""
        return f"""
credentials:
  guest:
    type: iam
    source: identity_pool
    identity_pool_id: {self.pool}
    endpoint: {self.identity.url}/
{"    login: user" if login else ""}
{cred_extra}{user}
endpoints:
  - {{name: api, endpoint: "{self.apigw.url}/Development", auth: guest}}
{extra}
logging: {{level: debug, log_headers: true}}
"""

    def close(self) -> None:
        self.bg.run(self.apigw.stop())
        self.bg.run(self.identity.stop())
        self.bg.run(self.cognito.stop())


@pytest.fixture
def world(background: BackgroundLoop) -> Iterator[World]:
    w = World(background)
    yield w
    w.close()


def _env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def _post(sp: ServeProcess, path: str, body: bytes,
          content_type: str = "application/json") -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(sp.url + path, data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_a_guest_signs_gets_and_posts_and_keeps_its_identity_over_a_restart(
        world: World, serve: Serve, tmp_path: Path) -> None:
    env = _env(tmp_path)
    sp = serve(world.config(), env=env)
    status, _, body = sp.get("/api/items?b=2&a=1&a=0")
    assert status == 200, (body, sp.log())
    status, body, _ = _post(sp, "/api/items/%2Fodd%20path~+", b'{"n": 1}')
    assert status == 200, body
    assert [s.sigv4 for s in world.apigw.seen] == ["verified", "verified"]
    assert all(s.header("X-Amz-Security-Token") for s in world.apigw.seen)
    assert world.identity.count("GetId") == 1
    assert world.identity.count("GetCredentialsForIdentity") == 1
    (kept,) = (tmp_path / "cache" / "authproxy").glob("identity.*.json")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    identity_id = json.loads(kept.read_text())["identity_id"]
    issued = next(iter(world.identity.issued.values()))
    assert issued.identity_id == identity_id and not issued.authenticated
    assert sp.stop() == 0

    again = serve(world.config(), env=env)
    assert again.get("/api/x")[0] == 200
    assert world.identity.count("GetId") == 1  # the same guest, as Amplify's local storage
    assert world.identity.count("GetCredentialsForIdentity") == 2
    ids = {k.identity_id for k in world.identity.issued.values()}
    assert ids == {identity_id}
    status, _, ready = again.get("/_authproxy/readyz")
    assert status == 200
    state = json.loads(ready)["credentials"]
    guest = state["guest"] if isinstance(state, dict) else next(
        c for c in state if c["name"] == "guest")
    assert guest["identity_id"] == identity_id and guest["expires_at"]
    assert guest["access_key_id"].startswith("ASIA") and len(guest["access_key_id"]) == 5


def test_a_signed_in_user_buys_the_authenticated_role(world: World, serve: Serve,
                                                      tmp_path: Path) -> None:
    sp = serve(world.config(login=True), env=_env(tmp_path))
    status, _, body = sp.get("/api/me")
    assert status == 200, body
    (issued,) = world.identity.issued.values()
    assert issued.authenticated
    assert world.apigw.seen[-1].sigv4 == "verified"
    assert not list((tmp_path / "cache" / "authproxy").glob("identity.*.json"))


def test_200_concurrent_requests_on_a_cold_start_make_one_of_each_call(
        world: World, serve: Serve, tmp_path: Path) -> None:
    world.identity.delay = 0.3  # all 200 arrive while the first fetch is still out
    sp = serve(world.config(), env=_env(tmp_path))

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as http:
            async def one(i: int) -> int:
                async with http.post(f"{sp.url}/api/n/{i}", data=b"x" * i) as resp:
                    await resp.read()
                    return resp.status
            return await asyncio.gather(*(one(i) for i in range(200)))
    assert asyncio.run(burst()) == [200] * 200
    assert world.identity.count("GetId") == 1
    assert world.identity.count("GetCredentialsForIdentity") == 1
    assert {s.sigv4 for s in world.apigw.seen} == {"verified"}


def test_short_lived_credentials_refresh_ahead_and_outages_fail_nothing(
        world: World, serve: Serve, tmp_path: Path) -> None:
    world.identity.credentials_lifetime = 12
    sp = serve(world.config(cred_extra="    refresh_margin: 8\n"), env=_env(tmp_path))
    statuses = []
    deadline = time.monotonic() + 16
    outage = False
    while time.monotonic() < deadline:
        if not outage and time.monotonic() > deadline - 13:
            # The service fails three times in a row (backoff up to 1 + 2 + 4 s); the cached
            # credentials, still good for 8 s, carry every request through.
            world.identity.fail_next(1, 500)
            world.identity.fail_next(1, "throttle")
            world.identity.fail_next(1, "down")
            outage = True
        statuses.append(sp.get("/api/tick")[0])
        time.sleep(0.05)
    assert set(statuses) == {200}, statuses
    fetched = world.identity.count("GetCredentialsForIdentity")
    assert 4 <= fetched <= 10, fetched  # about once per (lifetime - margin), plus the retries
    assert "refresh_margin" in sp.log()  # 3 s of a 6 s lifetime is over half: warned once


def test_a_body_over_max_signed_body_is_413_and_never_sent(world: World, serve: Serve,
                                                            tmp_path: Path) -> None:
    sp = serve(world.config(cred_extra="    max_signed_body: 2000000\n"), env=_env(tmp_path))
    status, body, headers = _post(sp, "/api/up", b"z" * 2_000_001, "application/octet-stream")
    assert status == 413 and json.loads(body)["error"] == "body_too_large"
    assert not world.apigw.seen
    status, body, _ = _post(sp, "/api/up", b"z" * 1_999_999, "application/octet-stream")
    assert status == 200 and world.apigw.seen[-1].body_length == 1_999_999
    assert world.apigw.seen[-1].sigv4 == "verified"


def test_a_revoked_session_token_is_replaced_and_the_request_replayed(
        world: World, serve: Serve, tmp_path: Path) -> None:
    sp = serve(world.config(), env=_env(tmp_path))
    assert sp.get("/api/one")[0] == 200
    world.secrets.revoked.update(world.identity.issued)
    world.tokens.revoked.update(world.identity.issued)
    status, body, _ = _post(sp, "/api/two", b'{"again": true}')
    assert status == 200, body
    assert world.identity.count("GetCredentialsForIdentity") == 2
    assert [s.sigv4 for s in world.apigw.seen][-2:] == ["UnrecognizedClientException",
                                                          "verified"]
    assert world.apigw.seen[-1].body_length == len(b'{"again": true}')


def test_a_wrong_secret_gets_a_hint(world: World, serve: Serve, tmp_path: Path) -> None:
    keys = ("keys:\n    type: iam\n    source: keys\n    access_key_id: AKIAEXAMPLE0000001\n"
            "    secret_access_key: not-the-right-secret\n    region: us-east-1\n")
    world.apigw.iam = {"AKIAEXAMPLE0000001": "the-real-secret"}
    world.apigw.iam_tokens = {}
    text = world.config().replace("credentials:\n", f"credentials:\n  {keys}").replace(
        "auth: guest", "auth: keys")
    sp = serve(text, env=_env(tmp_path))
    status, headers, body = sp.get("/api/x")
    assert status == 403 and b"signature we calculated does not match" in body
    hint = headers.get("X-Authproxy-Hint", "")
    assert "region us-east-1" in hint and "credentials.keys.region" in hint, hint
    assert "not-the-right-secret" not in sp.log()


def test_fixed_keys_sign_and_token_prints_them_for_sdks(world: World, serve: Serve,
                                                        tmp_path: Path) -> None:
    world.apigw.iam = {"AKIAEXAMPLE0000002": "fixed-S3CR3T-key"}
    world.apigw.iam_tokens = {"AKIAEXAMPLE0000002": "fixed-session-T0KEN"}
    text = world.config().replace("credentials:\n", (
        "credentials:\n  keys:\n    type: iam\n    source: keys\n"
        "    access_key_id: AKIAEXAMPLE0000002\n    secret_access_key: fixed-S3CR3T-key\n"
        "    session_token: fixed-session-T0KEN\n    region: us-east-1\n")).replace(
        "auth: guest", "auth: keys")
    sp = serve(text, env=_env(tmp_path))
    assert sp.get("/api/x")[0] == 200
    assert world.apigw.seen[-1].sigv4 == "verified"
    cfg = tmp_path / "keys.yaml"
    cfg.write_text(text)
    env = {**os.environ, **_env(tmp_path)}
    out = subprocess.run([AUTHPROXY, "token", "-c", str(cfg), "keys"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "export AWS_ACCESS_KEY_ID=AKIAEXAMPLE0000002",
        "export AWS_SECRET_ACCESS_KEY=fixed-S3CR3T-key",
        "export AWS_SESSION_TOKEN=fixed-session-T0KEN"]


def test_token_gives_identity_pool_credentials_as_credential_process_json(
        world: World, tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(world.config())
    env = {**os.environ, **_env(tmp_path)}
    out = subprocess.run([AUTHPROXY, "token", "-c", str(cfg), "--format", "credential-process",
                          "guest"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    (key_id, issued), = world.identity.issued.items()
    assert got == {"Version": 1, "AccessKeyId": key_id,
                   "SecretAccessKey": issued.secret_access_key,
                   "SessionToken": issued.session_token,
                   "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(int(issued.expiration)))}


def test_no_secret_key_token_or_signature_leaks(world: World, serve: Serve,
                                                tmp_path: Path) -> None:
    sp = serve(world.config(), env=_env(tmp_path))
    assert sp.get("/api/x")[0] == 200
    assert _post(sp, "/api/y", b"{}")[0] == 200
    pages = [sp.get(p)[2].decode() for p in ("/_authproxy/readyz", "/_authproxy/metrics",
                                             "/_authproxy/api/exchanges",
                                             "/_authproxy/api/credentials")]
    cfg = tmp_path / "p.yaml"
    cfg.write_text(world.config())
    env = {**os.environ, **_env(tmp_path)}
    tools = [subprocess.run([AUTHPROXY, *args, "-c", str(cfg), *rest], capture_output=True,
                            text=True, timeout=60, env=env)
             for args, rest in ((["check"], []), (["explain"], ["-X", "POST", "/api/x"]))]
    assert tools[1].returncode == 0, tools[1].stdout + tools[1].stderr
    explained = tools[1].stdout
    assert "SigV4" in explained and "us-east-1" in explained and "x-amz-date" in explained
    sp.stop()
    everything = "\n".join(pages + [t.stdout + t.stderr for t in tools] + [sp.log()])
    (issued,) = world.identity.issued.values()
    assert issued.secret_access_key not in everything
    assert issued.session_token not in everything
    assert issued.session_token[:40] not in everything
    for seen in world.apigw.seen:
        auth = seen.header("Authorization") or ""
        signature = auth.rpartition("Signature=")[2]
        assert len(signature) == 64 and signature not in everything


def test_a_skewed_clock_is_named_with_its_offset(world: World, serve: Serve,
                                                 tmp_path: Path) -> None:
    world.apigw.iam = {"AKIAEXAMPLE0000003": "skew-secret"}
    world.apigw.iam_tokens = {}
    world.apigw.clock = lambda: time.time() + 600  # AWS's clock: 10 minutes ahead of ours
    text = world.config().replace("credentials:\n", (
        "credentials:\n  keys:\n    type: iam\n    source: keys\n"
        "    access_key_id: AKIAEXAMPLE0000003\n    secret_access_key: skew-secret\n"
        "    region: us-east-1\n")).replace("auth: guest", "auth: keys")
    sp = serve(text, env=_env(tmp_path))
    status, headers, body = sp.get("/api/x")
    assert status == 403 and b"Signature expired" in body
    hint = headers.get("X-Authproxy-Hint", "")
    assert "10m behind AWS's" in hint, hint


def test_the_aws_credential_chain_signs(world: World, serve: Serve, tmp_path: Path) -> None:
    world.apigw.iam = {"AKIAEXAMPLE0000004": "chain-S3CR3T"}
    world.apigw.iam_tokens = {"AKIAEXAMPLE0000004": "chain-T0KEN"}
    text = world.config().replace("credentials:\n", (
        "credentials:\n  dev:\n    type: iam\n    source: aws\n    region: us-east-1\n")
    ).replace("auth: guest", "auth: dev")
    hermetic = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**hermetic, **_env(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE0000004",
           "AWS_SECRET_ACCESS_KEY": "chain-S3CR3T", "AWS_SESSION_TOKEN": "chain-T0KEN"}
    sp = serve(text, env=env)
    status, _, body = sp.get("/api/x")
    assert status == 200, body
    assert world.apigw.seen[-1].sigv4 == "verified"
    sp.stop()
    assert "chain-S3CR3T" not in sp.log() and "chain-T0KEN" not in sp.log()


def test_keep_and_the_clients_own_authorization_go_unsigned(world: World, serve: Serve,
                                                            tmp_path: Path) -> None:
    text = world.config().replace("auth: guest}", "auth: guest, client_header: keep}")
    sp = serve(text, env=_env(tmp_path))
    status, _, _ = sp.get("/api/x", headers={"Authorization": "AWS4-HMAC-SHA256 mine"})
    assert status == 403  # the fake's verifier refuses the client's own signature, as AWS would
    seen = world.apigw.seen[-1]
    assert seen.header("Authorization") == "AWS4-HMAC-SHA256 mine"
    assert seen.header("X-Amz-Date") is None and seen.header("X-Amz-Security-Token") is None
    assert sp.get("/api/y")[0] == 200  # without one, signed as usual
