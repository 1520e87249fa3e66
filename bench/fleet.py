"""A fleet of sidecars signs in once: sign-ins and refreshes counted at the fake Cognito for
N `authproxy serve` processes sharing one redis-server (`token_cache`), against the same fleet
with each process on its own.

Runs a fake Cognito (tokens of `--lifetime` seconds) and a fake API Gateway in this process,
a real `redis-server` (Debian's) on a free loopback port, and `--members` proxies, each with two
credentials: a user signing in with SRP (`flow: srp`, then REFRESH_TOKEN_AUTH) and a machine
client (`flow: client_credentials`: every token request is billed by AWS). Each proxy gets light
load (`--rate` requests per second per credential) for `--lifetimes` token lifetimes; every
request must succeed.

    .venv/bin/python bench/fleet.py           # 20 members, 5 lifetimes of 20 s: ~4.5 min
    .venv/bin/python bench/fleet.py --members 5 --lifetime 12

Expected with the cache: about 1 sign-in and `lifetimes` refreshes for the whole fleet (and
1 + `lifetimes` client-credentials token requests); without it, `members` times as many. Not a
test: it prints a table, writes bench/results/fleet-*.json, and exits 1 when a request failed or
the shared run made more than 1.5 times the expected calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import free_port, machine_info, table, write_result  # noqa: E402

from proxy.fakes.apigw import FakeApiGateway  # noqa: E402
from proxy.fakes.cognito import FakeCognito  # noqa: E402

AUTHPROXY = str(Path(sys.executable).parent / "authproxy")
SECRET, M2M_SECRET, PASSWORD = "bench-client-secret", "bench-m2m-secret", "Bench-passw0rd!"
KEY = "bench-fleet-encryption-key-0123456789"


def config(cognito: FakeCognito, pool: str, client: str, m2m: str, upstream: str, port: int,
           margin: float, redis_url: str | None) -> str:
    shared = (f"token_cache:\n  url: {redis_url}\n  encryption_key: {KEY}\n"
              if redis_url else "")
    return f"""
listen: {{host: 127.0.0.1, port: {port}}}
credentials:
  user:
    type: cognito
    flow: srp
    user_pool_id: {pool}
    client_id: {client}
    client_secret: {SECRET}
    username: bench
    password: {PASSWORD}
    refresh_margin: {margin}
    endpoint: {cognito.url}/
  machine:
    type: cognito
    flow: client_credentials
    domain: {cognito.url}
    client_id: {m2m}
    client_secret: {M2M_SECRET}
    scopes: [orders/read]
    refresh_margin: {margin}
endpoints:
  - {{name: api, endpoint: "{upstream}/Development", auth: user}}
  - {{name: m2m, endpoint: "{upstream}/Development", auth: machine}}
{shared}logging: {{level: warning}}
"""


class Redis:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            sys.exit("redis-server not found: apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        log = (workdir / "redis.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)

    async def wait(self) -> None:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        sys.exit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def run_fleet(args: argparse.Namespace, cognito: FakeCognito, ids: tuple[str, str, str],
                    upstream: str, workdir: Path, redis_url: str | None) -> dict[str, Any]:
    pool, client, m2m = ids
    cognito.calls.clear()
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    env = dict(os.environ)
    started = time.monotonic()
    for i in range(args.members):
        port = free_port()
        cfg = workdir / f"{'shared' if redis_url else 'alone'}-{i}.yaml"
        cfg.write_text(config(cognito, pool, client, m2m, upstream, port, args.margin,
                              redis_url))
        cache = workdir / f"cache-{'s' if redis_url else 'a'}{i}"  # each member its own disk
        log = (workdir / f"{cfg.stem}.log").open("wb")
        procs.append(subprocess.Popen([AUTHPROXY, "serve", "-c", str(cfg)], stdout=log,
                                      stderr=subprocess.STDOUT,
                                      env=env | {"XDG_CACHE_HOME": str(cache)}))
        urls.append(f"http://127.0.0.1:{port}")
    ok = failed = 0
    latencies: list[float] = []
    failures: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for url, proc in zip(urls, procs, strict=True):
                await wait_healthy(http, url, proc)
            up = time.monotonic() - started
            seconds = args.lifetimes * args.lifetime
            end = time.monotonic() + seconds

            async def member(url: str, offset: float) -> None:
                nonlocal ok, failed
                next_at = time.monotonic() + offset
                while next_at < end:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    for path in ("/api/x", "/m2m/x"):
                        t = time.monotonic()
                        try:
                            async with http.get(url + path) as resp:
                                await resp.read()
                                good = resp.status == 200
                                why = f"{path} {resp.status}"
                        except (aiohttp.ClientError, TimeoutError) as e:
                            good, why = False, f"{path} {type(e).__name__}"
                        latencies.append(time.monotonic() - t)
                        if good:
                            ok += 1
                        else:
                            failed += 1
                            failures.append(why)
                    next_at += 1 / args.rate

            await asyncio.gather(*(member(u, i / len(urls) / args.rate)
                                   for i, u in enumerate(urls)))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    latencies.sort()
    return {
        "token_cache": bool(redis_url), "members": args.members, "startup_s": round(up, 1),
        "load_s": seconds,
        "sign_ins": cognito.count("InitiateAuth", "USER_SRP_AUTH"),
        "refreshes": cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH"),
        "client_credentials_requests": cognito.count("oauth2/token"),
        "requests_ok": ok, "requests_failed": failed, "failures": failures[:20],
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
    }


async def wait_healthy(http: aiohttp.ClientSession, url: str,
                       proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"authproxy serve exited with {proc.returncode}")
        try:
            async with http.get(f"{url}/_authproxy/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    sys.exit(f"authproxy serve at {url} did not start in 60 s")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--lifetime", type=float, default=20.0, help="token lifetime, seconds")
    ap.add_argument("--lifetimes", type=int, default=5)
    ap.add_argument("--margin", type=float, default=None,
                    help="refresh_margin (default: a tenth of the lifetime)")
    ap.add_argument("--rate", type=float, default=1.0,
                    help="requests per second per member and credential")
    args = ap.parse_args()
    if args.margin is None:
        args.margin = args.lifetime / 10
    cognito = FakeCognito()
    cognito.token_lifetime = int(args.lifetime)
    await cognito.start()
    pool = cognito.add_pool()
    client = cognito.add_client(pool, secret=SECRET)
    m2m = cognito.add_client(pool, secret=M2M_SECRET, scopes=["orders/read"])
    cognito.add_user(pool, "bench", PASSWORD)
    apigw = FakeApiGateway()
    upstream = await apigw.start()
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="authproxy-fleet-") as tmp:
        workdir = Path(tmp)
        redis = Redis(workdir)
        try:
            await redis.wait()
            for url in (redis.url, None):
                r = await run_fleet(args, cognito, (pool, client, m2m), upstream, workdir, url)
                results.append(r)
                rows.append(["shared (token_cache)" if url else "each on its own",
                             r["members"], r["sign_ins"], r["refreshes"],
                             r["client_credentials_requests"], r["requests_ok"],
                             r["requests_failed"], r["p50_ms"], r["max_ms"]])
        finally:
            redis.stop()
            await apigw.stop()
            await cognito.stop()
    print(f"\n{args.members} members, tokens of {args.lifetime:g} s (refresh_margin "
          f"{args.margin:g} s), {args.lifetimes} lifetimes of load at {args.rate:g} req/s per "
          "member and credential\n")
    print(table(rows, ["fleet", "members", "sign-ins (SRP)", "refreshes", "client-credentials "
                       "token requests", "requests ok", "failed", "p50 ms", "max ms"]))
    shared, alone = results
    expected_refreshes = args.lifetimes
    path = write_result("fleet", {"args": vars(args), "machine": machine_info(),
                                  "results": results})
    print(f"\nexpected: shared ~1 sign-in, ~{expected_refreshes} refreshes, "
          f"~{1 + expected_refreshes} token requests; alone ~{args.members}x those\n"
          f"results in {path}")
    problems = []
    if shared["requests_failed"] or alone["requests_failed"]:
        problems.append("requests failed: " + ", ".join(shared["failures"] + alone["failures"]))
    if shared["sign_ins"] > 1 or shared["refreshes"] > 1.5 * expected_refreshes or \
            shared["client_credentials_requests"] > 1.5 * (1 + expected_refreshes):
        problems.append("the shared fleet made more Cognito calls than expected")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
