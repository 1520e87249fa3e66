"""`token_cache` as a fleet sees it: several real `authproxy serve` processes sharing one real
redis-server, against the fake Cognito, Cognito Identity and API Gateway. Each point of the
SPEC's "Tokens shared by a fleet" section, and each fault: Redis down at start, hung mid-run
(SIGSTOP), restarted empty, the lock holder SIGKILLed mid-fetch, a member with the wrong
encryption key. No request fails or waits past the bounds; Redis never holds a secret in clear.
"""

from __future__ import annotations

import json
import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import BackgroundLoop, ServeProcess
from redis_fixtures import RedisServer, redis_fixture

from proxy.credentials.refresh import FETCH_LOCK_TTL, HOLDER_WAIT, JITTER, LOCK_RETRY
from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito
from proxy.fakes.cognito_identity import FakeCognitoIdentity, IssuedView

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(120)]
__all__ = ["redis_fixture"]
Serve = Callable[..., ServeProcess]

PASSWORD, PASSWORD_BOB = "Corr3ct-Horse-alice!", "Batt3ry-Staple-bob!"
CLIENT_SECRET, M2M_SECRET = "client-secret-0123456789abcdef", "m2m-secret-fedcba9876543210"
KEY = "fleet-encryption-key-0123456789abcdef"
TIMEOUT = 0.3  # token_cache.timeout in these tests
LIFETIME, MARGIN = 10, 3  # seconds: tokens and AWS credentials, refresh_margin


class World:
    def __init__(self, bg: BackgroundLoop, tmp: Path, serve: Serve, redis: RedisServer) -> None:
        self.bg, self.tmp, self.serve, self.redis = bg, tmp, serve, redis
        self.cognito = FakeCognito()
        self.cognito.token_lifetime = LIFETIME
        self.identity = FakeCognitoIdentity()
        self.identity.credentials_lifetime = LIFETIME
        bg.run(self.cognito.start())
        bg.run(self.identity.start())
        self.apigw = FakeApiGateway()
        self.signed = FakeApiGateway(iam=IssuedView(self.identity, "secret_access_key"),
                                     iam_tokens=IssuedView(self.identity, "session_token"),
                                     iam_region="us-east-1")
        bg.run(self.apigw.start())
        bg.run(self.signed.start())
        self.pool = self.cognito.add_pool()
        self.client = self.cognito.add_client(self.pool, secret=CLIENT_SECRET)
        self.m2m = self.cognito.add_client(self.pool, secret=M2M_SECRET, scopes=["orders/read"])
        self.cognito.add_user(self.pool, "alice", PASSWORD)
        self.cognito.add_user(self.pool, "bob", PASSWORD_BOB)
        self.identity_pool = self.identity.add_pool()
        self.members = 0

    def config(self, *, key: str | None = KEY, url: str | None = None, flow: str = "srp",
               everything: bool = False) -> str:
        def user(name: str, who: str, password: str) -> str:
            return f"""  {name}:
    type: cognito
    flow: {flow}
    user_pool_id: {self.pool}
    client_id: {self.client}
    client_secret: {CLIENT_SECRET}
    username: {who}
    password: "{password}"
    refresh_margin: {MARGIN}
    endpoint: {self.cognito.url}/
"""
        creds, eps = user("user", "alice", PASSWORD), [("api", "user", self.apigw)]
        if everything:
            creds += user("other", "bob", PASSWORD_BOB) + f"""  machine:
    type: cognito
    flow: client_credentials
    domain: {self.cognito.url}
    client_id: {self.m2m}
    client_secret: {M2M_SECRET}
    scopes: [orders/read]
    refresh_margin: {MARGIN}
  guest:
    type: iam
    source: identity_pool
    identity_pool_id: {self.identity_pool}
    endpoint: {self.identity.url}/
    refresh_margin: {MARGIN}
"""
            eps += [("bob", "other", self.apigw), ("m2m", "machine", self.apigw),
                    ("iam", "guest", self.signed)]
        endpoints = "".join(f'  - {{name: {n}, endpoint: "{up.url}/Development", auth: {a}}}\n'
                            for n, a, up in eps)
        secret = f"  encryption_key: {key}\n" if key else ""
        return (f"credentials:\n{creds}endpoints:\n{endpoints}"
                f"token_cache:\n  url: {url or self.redis.url}\n{secret}  timeout: {TIMEOUT}\n")

    def member(self, text: str, wait: bool = True) -> ServeProcess:
        """A member of the fleet: its own process and its own cache directory (as a pod has),
        so that nothing but Redis can carry a token from one to another."""
        self.members += 1
        return self.serve(text, env={"XDG_CACHE_HOME": str(self.tmp / f"m{self.members}")},
                          wait=wait)

    def close(self) -> None:
        for fake in (self.apigw, self.signed, self.identity, self.cognito):
            self.bg.run(fake.stop())


@pytest.fixture
def world(background: BackgroundLoop, tmp_path: Path, serve: Serve,
          redis_server: RedisServer) -> Iterator[World]:
    w = World(background, tmp_path, serve, redis_server)
    yield w
    w.close()


def get(sp: ServeProcess, path: str, bound: float) -> dict[str, Any]:
    """A request that must succeed within `bound` seconds; the upstream's echo."""
    started = time.monotonic()
    status, _, body = sp.get(path, timeout=bound + 5)
    took = time.monotonic() - started
    assert status == 200, (path, status, body, sp.log()[-3000:])
    assert took < bound, f"{path} took {took:.2f} s (bound {bound} s)"
    echo: dict[str, Any] = json.loads(body)
    return echo


def auth(echo: dict[str, Any]) -> str:
    return str(dict(echo["headers"])["Authorization"])


def readyz(sp: ServeProcess) -> dict[str, Any]:
    status, _, body = sp.get("/_authproxy/readyz")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


def sign_ins(cognito: FakeCognito) -> int:
    return cognito.count("InitiateAuth", "USER_SRP_AUTH") + cognito.count(
        "InitiateAuth", "USER_PASSWORD_AUTH")


# --- what is shared -----------------------------------------------------------------------------

def test_a_fleet_signs_in_once_refreshes_once_per_lifetime_and_redis_sees_no_secret(
        world: World) -> None:
    text = world.config(everything=True)
    first = world.member(text)
    echo = get(first, "/api/x", 5)
    t0 = time.monotonic()  # about when the fleet's first sign-in was made
    members = [first, world.member(text), world.member(text)]
    seen: list[dict[str, set[str]]] = [{} for _ in members]
    bound = 3.0  # no request waits on a fetch here: every member has a valid value in hand
    while time.monotonic() - t0 < 2 * LIFETIME - MARGIN:
        for i, sp in enumerate(members):
            for path in ("/api/x", "/bob/x", "/m2m/x", "/iam/x"):
                echo = get(sp, path, bound)
                seen[i].setdefault(path, set()).add(auth(echo))
        time.sleep(0.3)
    elapsed = time.monotonic() - t0

    # Each user signed in once for the whole fleet, and the pool handed out one guest.
    assert world.cognito.count("InitiateAuth", "USER_SRP_AUTH") == 2  # alice, bob
    assert world.identity.count("GetId") == 1
    # Refreshed once per lifetime by one member (the earliest of the jittered schedules),
    # not once per member: three members alone would make three times as many.
    least = max(math.floor(elapsed / (LIFETIME - MARGIN)) - 1, 1)
    most = math.floor(elapsed / (LIFETIME - MARGIN * (1 + JITTER))) + 1
    refreshes = world.cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH")
    assert 2 * least <= refreshes <= 2 * most, (refreshes, elapsed)
    assert least + 1 <= world.cognito.count("oauth2/token") <= most + 1
    assert least + 1 <= world.identity.count("GetCredentialsForIdentity") <= most + 1
    # Every member moved on to the fleet's refreshed values, and all of them were the fleet's:
    # as many distinct tokens went upstream as Cognito issued.
    for path in ("/api/x", "/m2m/x"):
        assert all(len(s[path]) >= 2 for s in seen), [len(s[path]) for s in seen]
    alice = set().union(*(s["/api/x"] for s in seen))
    bob = set().union(*(s["/bob/x"] for s in seen))
    assert len(alice) + len(bob) == 2 + refreshes and not alice & bob  # settings differ: apart
    keys = {re.search(r"Credential=(\w+)/", a).group(1)  # type: ignore[union-attr]
            for s in seen for a in s["/iam/x"]}
    assert len(keys) == world.identity.count("GetCredentialsForIdentity")
    assert {s.sigv4 for s in world.signed.seen} == {"verified"}

    for sp in members:
        state = readyz(sp)
        assert state["token_cache"]["state"] == "ok" and "degraded" not in state
    status, _, metrics = members[2].get("/_authproxy/metrics")
    text_metrics = metrics.decode()
    assert f'authproxy_token_cache_up{{url="{world.redis.url}"}} 1.0' in text_metrics
    hits = re.search(r'authproxy_token_cache_hits_total\{credential="user"\} (\d+)', text_metrics)
    assert hits and int(hits.group(1)) >= 2
    assert 'authproxy_token_cache_misses_total{credential="user"}' in text_metrics
    assert 'authproxy_token_cache_lock_waits_total{credential="user"}' in text_metrics
    assert 'authproxy_token_cache_errors_total{operation="get"} 0.0' in text_metrics

    # What Redis holds: nothing of a token, a refresh token, a password, a client secret or
    # an AWS secret key in clear; no user, pool or client name in a key.
    dump = world.redis.dump()
    assert len(dump) == 4  # alice, bob, machine, guest (the locks are gone)
    jwts = alice | bob | set().union(*(s["/m2m/x"] for s in seen))
    secrets = {PASSWORD, PASSWORD_BOB, CLIENT_SECRET, M2M_SECRET, KEY}
    secrets |= {t.removeprefix("Bearer ") for t in jwts}
    secrets |= {part for t in jwts for part in t.removeprefix("Bearer ").split(".")[:2]}
    secrets |= set(world.cognito._refresh)  # every refresh token the fake issued
    for issued in world.identity.issued.values():
        secrets |= {issued.secret_access_key, issued.session_token}
    names = {"alice", "bob", world.pool, world.pool.split("_")[1], world.client, world.m2m,
             world.identity_pool, world.identity_pool.split(":")[1],
             *(i.identity_id for i in world.identity.issued.values())}
    assert len(secrets) > 10
    for key, value in dump.items():
        assert key.startswith(b"authproxy:") and re.fullmatch(rb"authproxy:[0-9a-f]{32}", key)
        for secret in secrets:
            assert secret.encode() not in key and secret.encode() not in value
        for name in names:
            assert name.encode() not in key
    for sp in members:
        assert sp.stop() == 0
        for secret in (PASSWORD, CLIENT_SECRET, M2M_SECRET, KEY, *jwts):
            assert secret.removeprefix("Bearer ") not in sp.log()


def test_a_fleet_runs_a_command_once_per_lifetime_and_redis_holds_its_output_sealed(
        world: World) -> None:
    runs = world.tmp / "runs"
    script = world.tmp / "vault.py"
    # A vault CLI stand-in: a fresh token each run, LIFETIME seconds long; each run noted.
    script.write_text(f"""#!/usr/bin/env python3
import json, secrets
with open({str(runs)!r}, "a") as f:
    f.write("run\\n")
print(json.dumps({{"token": "vault-" + secrets.token_hex(16), "expires_in": {LIFETIME}}}))
""")
    script.chmod(0o755)
    text = (f"credentials:\n  vault:\n    type: command\n    command: [{script}]\n"
            f"    format: json\n    prefix: 'Bearer '\n    refresh_margin: {MARGIN}\n"
            f'endpoints:\n  - {{name: api, endpoint: "{world.apigw.url}/Development", '
            "auth: vault}\n"
            f"token_cache:\n  url: {world.redis.url}\n  encryption_key: {KEY}\n"
            f"  timeout: {TIMEOUT}\n")
    first = world.member(text)
    get(first, "/api/x", 5)
    t0 = time.monotonic()
    members = [first, world.member(text), world.member(text)]
    tokens: set[str] = set()
    while time.monotonic() - t0 < 2 * LIFETIME - MARGIN:
        for sp in members:
            tokens.add(auth(get(sp, "/api/x", 3.0)))
        time.sleep(0.3)
    elapsed = time.monotonic() - t0
    ran = len(runs.read_text().splitlines())
    # Once at the start for the three of them, then about once per lifetime for the fleet.
    most = math.floor(elapsed / (LIFETIME - MARGIN * (1 + JITTER))) + 1
    assert 1 < ran <= most + 1, (ran, elapsed)
    assert len(tokens) == ran  # every value that went upstream was the fleet's one
    dump = world.redis.dump()
    assert len(dump) == 1
    for value in dump.values():
        for token in tokens:
            assert token.removeprefix("Bearer ").encode() not in value
    for sp in members:
        assert sp.stop() == 0
        assert not any(t.removeprefix("Bearer ") in sp.log() for t in tokens)


# --- single flight across the fleet -----------------------------------------------------------

def test_the_lock_is_renewed_while_a_slow_fetch_runs_and_the_others_wait_for_it(
        world: World) -> None:
    world.cognito.delay = FETCH_LOCK_TTL + 1.5  # longer than the lock lives unrenewed
    world.cognito.token_lifetime = 60  # (the fake dates a token from when it was asked for)
    text = world.config(flow="password")
    holder = world.member(text)
    wait_for(lambda: any(k.endswith(b":lock") for k in world.redis.client().keys()), 10,
             "the first member takes the lock")
    waiter = world.member(text)
    started = time.monotonic()
    got = get(waiter, "/api/x", HOLDER_WAIT)
    assert time.monotonic() - started > 1  # it did wait for the holder
    assert sign_ins(world.cognito) == 1  # the lock outlived its TTL: the waiter never took it
    assert auth(got) == auth(get(holder, "/api/x", 2))


def test_a_lock_holder_killed_mid_fetch_holds_the_fleet_up_no_longer_than_the_lock_ttl(
        world: World) -> None:
    world.cognito.delay = 30  # the holder's sign-in never comes back
    world.cognito.token_lifetime = 60
    text = world.config(flow="password")
    holder = world.member(text)
    wait_for(lambda: any(k.endswith(b":lock") for k in world.redis.client().keys()), 10,
             "the first member takes the lock")
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(5)
    killed_at = time.monotonic()
    world.cognito.delay = 0
    before = sign_ins(world.cognito)
    others = [world.member(text), world.member(text)]
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def ask(sp: ServeProcess) -> None:
        try:
            results.append(get(sp, "/api/x", FETCH_LOCK_TTL + LOCK_RETRY + 3))
        except BaseException as e:  # noqa: B036 - handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(sp,)) for sp in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert time.monotonic() - killed_at < FETCH_LOCK_TTL + LOCK_RETRY + 5
    assert sign_ins(world.cognito) - before == 1  # one of them took over; the other waited
    assert auth(results[0]) == auth(results[1])


# --- faults -------------------------------------------------------------------------------------

def test_redis_down_at_start_each_member_serves_then_the_fleet_shares_when_it_is_back(
        world: World) -> None:
    world.redis.kill()
    text = world.config()
    members = [world.member(text), world.member(text)]
    for sp in members:
        get(sp, "/api/x", 3)
        state = readyz(sp)
        assert state["status"] == "ready" and state["token_cache"]["state"] == "degraded"
        assert state["degraded"][0].startswith(f"token_cache: {world.redis.url} is unreachable")
    assert world.cognito.count("InitiateAuth", "USER_SRP_AUTH") == 2  # each on its own
    world.redis.start()
    for sp in members:
        wait_for(lambda sp=sp: readyz(sp)["token_cache"]["state"] == "ok", 8,  # type: ignore
                 "recovery")
    # Shared again: a refresh one member makes lands in Redis, and the other finds it there.
    world.apigw.reject.add(auth(get(members[0], "/api/x", 3)))
    get(members[0], "/api/x", 3)
    assert len(world.redis.dump()) == 1


def test_redis_hung_mid_run_costs_at_most_the_timeout_and_is_back_by_itself(
        world: World) -> None:
    text = world.config()
    members = [world.member(text), world.member(text)]
    token = auth(get(members[0], "/api/x", 5))
    assert auth(get(members[1], "/api/x", 2)) == token and sign_ins(world.cognito) == 1
    world.redis.pause()
    try:
        # The upstream refuses the token: each member refreshes (its lock call hangs for the
        # timeout, then it fetches alone) and replays; the request still succeeds in time.
        world.apigw.reject.add(token)
        for sp in members:
            assert auth(get(sp, "/api/x", TIMEOUT * 3 + 2)) != token
            state = readyz(sp)
            assert state["status"] == "ready" and "did not answer within 0.3 s" in \
                state["degraded"][0]
    finally:
        world.redis.resume()
    for sp in members:
        wait_for(lambda sp=sp: readyz(sp)["token_cache"]["state"] == "ok", 8,  # type: ignore
                 "recovery")
        get(sp, "/api/x", 2)


def test_redis_restarted_empty_the_fleet_carries_on_and_fills_it_again(world: World) -> None:
    text = world.config()
    members = [world.member(text), world.member(text)]
    token = auth(get(members[0], "/api/x", 5))
    get(members[1], "/api/x", 2)
    world.redis.restart()
    assert world.redis.dump() == {}
    refreshes = world.cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH")
    world.apigw.reject.add(token)
    # The refused token makes the first member refresh; its stale connection is replaced at
    # once, so the new token lands in the restarted Redis, and the second member, refused
    # too, takes it from there instead of refreshing again.
    fresh = auth(get(members[0], "/api/x", TIMEOUT * 3 + 2))
    assert fresh != token and len(world.redis.dump()) == 1
    assert auth(get(members[1], "/api/x", TIMEOUT * 3 + 2)) == fresh
    assert world.cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH") == refreshes + 1
    for sp in members:
        assert readyz(sp)["token_cache"]["state"] == "ok"


def test_a_member_with_the_wrong_encryption_key_ignores_the_entry_logs_once_and_serves(
        world: World) -> None:
    good = world.config()
    members = [world.member(good), world.member(good)]
    token = auth(get(members[0], "/api/x", 5))
    assert auth(get(members[1], "/api/x", 2)) == token
    wrong = world.member(world.config(key="another-encryption-key-9876543210"))
    other = auth(get(wrong, "/api/x", 5))
    assert other != token and sign_ins(world.cognito) == 2  # it fetched its own
    get(wrong, "/api/x", 2)
    assert wrong.log().count("does not decrypt") == 1, wrong.log()
    assert "every member have the same token_cache.encryption_key" in wrong.log()
    _, _, metrics = wrong.get("/_authproxy/metrics")
    m = re.search(rb'authproxy_token_cache_undecryptable_total\{credential="user"\} (\d+)',
                  metrics)
    assert m and int(m.group(1)) >= 1
    assert readyz(wrong)["status"] == "ready"
    claims = jwt.decode(other.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["cognito:username"] == "alice"
