"""Token refresh under steady load: does any request wait on a refresh, or fail across one?

Runs a fake Cognito (10 s tokens, a realistic 200 ms per call) and a fake API Gateway in this
process, the real `authproxy serve` as a child process with `refresh_margin: 5`, and a steady
stream of requests through it for 60 s. Every request's latency is classified as inside a
refresh window (it started while a REFRESH_TOKEN_AUTH call was in flight at Cognito) or outside,
and the token that reached API Gateway is checked against its own `exp`.

    .venv/bin/python bench/token_refresh.py                 # through authproxy serve
    .venv/bin/python bench/token_refresh.py --direct        # CognitoSource.current()/headers_for()
    .venv/bin/python bench/token_refresh.py --seconds 20 --rate 500

Not a test: it prints a report and exits 1 when a request failed, a request saw an expired token,
or a refresh used anything but REFRESH_TOKEN_AUTH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.config import CognitoCredential  # noqa: E402
from proxy.credentials import Outgoing  # noqa: E402
from proxy.credentials.cognito import CognitoSource  # noqa: E402
from proxy.fakes.apigw import FakeApiGateway  # noqa: E402
from proxy.fakes.cognito import FakeCognito  # noqa: E402
from proxy.secret import Secret  # noqa: E402

LIFETIME, MARGIN = 10, 5
REQUEST = Outgoing(method="GET", host="bench", raw_path="/", query="", headers=())


@dataclass
class Sample:
    start: float  # time.monotonic(), shared by every process on the machine
    latency: float
    ok: bool
    fresh: bool  # the token upstream received had not expired


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_yaml(cognito: FakeCognito, pool: str, client: str, upstream: str, port: int) -> str:
    return f"""
listen: {{host: 127.0.0.1, port: {port}}}
credentials:
  user:
    type: cognito
    flow: srp
    user_pool_id: {pool}
    client_id: {client}
    client_secret: bench-client-secret
    username: bench
    password: bench-password
    refresh_margin: {MARGIN}
    endpoint: {cognito.url}
endpoints:
  - name: api
    endpoint: {upstream}/Development
    auth: user
logging: {{level: warning}}
"""


async def wait_ready(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"authproxy serve exited with {proc.returncode}")
        try:
            async with http.get(f"{url}/_authproxy/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("authproxy serve did not become ready in 20 s")


def token_fresh(auth: str | None, at_wall: float) -> bool:
    if not auth:
        return False
    claims = jwt.decode(auth.removeprefix("Bearer "), options={"verify_signature": False})
    return bool(claims["exp"] > at_wall)


async def load_proxy(http: aiohttp.ClientSession, url: str, seconds: float,
                     rate: float, workers: int) -> list[Sample]:
    samples: list[Sample] = []
    end = time.monotonic() + seconds
    interval = workers / rate

    async def worker(i: int) -> None:
        next_at = time.monotonic() + interval * i / workers
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.monotonic()
            ok = fresh = False
            try:
                async with http.get(f"{url}/api/items?w={i}") as resp:
                    body = await resp.read()
                    ok = resp.status == 200
                if ok:
                    headers = json.loads(body)["headers"]
                    auth = next((v for k, v in headers if k.lower() == "authorization"), None)
                    fresh = token_fresh(auth, time.time())
            except aiohttp.ClientError:
                pass
            samples.append(Sample(started, time.monotonic() - started, ok, fresh))
            next_at += interval

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return samples


async def load_direct(source: CognitoSource, seconds: float, rate: float,
                      workers: int) -> list[Sample]:
    """What a request does in the proxy: current(), and headers_for() only when that is None."""
    samples: list[Sample] = []
    end, interval = time.monotonic() + seconds, workers / rate

    async def worker(i: int) -> None:
        next_at = time.monotonic() + interval * i / workers
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.monotonic()
            try:
                value = (source.current() or await source.headers_for(REQUEST))[0][1]
                ok, fresh = True, token_fresh(value, time.time())
            except Exception:  # noqa: BLE001 - a failed request is what we count
                ok = fresh = False
            samples.append(Sample(started, time.monotonic() - started, ok, fresh))
            next_at += interval

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return samples


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report(samples: list[Sample], cognito: FakeCognito, extra: dict[str, Any]) -> int:
    windows = [(s, e) for s, e, name in cognito.events if name.endswith("REFRESH_TOKEN_AUTH")]
    inside = [x for x in samples if any(s <= x.start <= e for s, e in windows)]
    outside = [x for x in samples if not any(s <= x.start <= e for s, e in windows)]
    failed = [x for x in samples if not x.ok]
    stale = [x for x in samples if x.ok and not x.fresh]
    signins = {k: n for k, n in cognito.calls.items() if "REFRESH" not in k}
    refreshes = cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH")

    def line(name: str, group: list[Sample]) -> str:
        ms = [x.latency * 1000 for x in group]
        mean = statistics.fmean(ms) if ms else float("nan")
        return (f"  {name:<26} n={len(group):>6}  p50={pct(ms, 50):7.2f} ms  "
                f"p99={pct(ms, 99):7.2f} ms  max={max(ms, default=float('nan')):7.2f} ms  "
                f"mean={mean:6.2f} ms")

    print(f"\n{len(samples)} requests, {len(failed)} failed, {len(stale)} with an expired token")
    print(f"Cognito calls: sign-in {signins}, REFRESH_TOKEN_AUTH {refreshes} "
          f"(windows of {statistics.fmean([e - s for s, e in windows]) * 1000:.0f} ms each)"
          if windows else "Cognito calls: no refresh happened")
    print(line("inside refresh windows", inside))
    print(line("outside refresh windows", outside))
    # A request that waited on a refresh takes at least as long as Cognito does; slow requests
    # outside the windows show the machine's own noise (other processes, GC) for comparison.
    slow = cognito.delay
    print(f"  requests slower than Cognito's {slow * 1000:.0f} ms: "
          f"{sum(x.latency >= slow for x in inside)} inside windows, "
          f"{sum(x.latency >= slow for x in outside)} outside")
    for k, v in extra.items():
        print(f"  {k}: {v}")
    problems = []
    if failed:
        problems.append(f"{len(failed)} requests failed")
    if stale:
        problems.append(f"{len(stale)} requests carried an expired token")
    if not windows:
        problems.append("no refresh happened")
    if sum(signins.values()) > 2:  # SRP sign-in = InitiateAuth + RespondToAuthChallenge, once
        problems.append(f"refreshes signed in again: {signins}")
    print("FAIL: " + "; ".join(problems) if problems else "OK: every request succeeded with a "
          "valid token; every refresh used REFRESH_TOKEN_AUTH")
    return 1 if problems else 0


async def main(args: argparse.Namespace) -> int:
    cognito = FakeCognito()
    cognito.token_lifetime, cognito.delay = LIFETIME, args.cognito_latency
    await cognito.start()
    pool = cognito.add_pool()
    client = cognito.add_client(pool, secret="bench-client-secret")
    cognito.add_user(pool, "bench", "bench-password")
    upstream = FakeApiGateway()
    await upstream.start()
    print(f"{LIFETIME} s tokens, refresh_margin {MARGIN} s, Cognito answering in "
          f"{args.cognito_latency * 1000:.0f} ms, {args.rate:.0f} req/s for {args.seconds:.0f} s "
          f"({'CognitoSource directly' if args.direct else 'through authproxy serve'})")
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            if args.direct:
                source = CognitoSource(CognitoCredential(
                    name="user", flow="srp", client_id=client, user_pool_id=pool,
                    region="us-east-1", client_secret=Secret("bench-client-secret"),
                    username="bench", password=Secret("bench-password"),
                    refresh_margin=MARGIN, endpoint=cognito.url),
                    cache_dir=Path(tempfile.mkdtemp()))
                await source.start(http)
                await source.headers_for(REQUEST)
                samples = await load_direct(source, args.seconds, args.rate, args.workers)
                extra = {"status": {k: source.status()[k] for k in ("fetches", "methods")}}
                await source.close()
            else:
                samples, extra = await through_serve(http, cognito, pool, client, upstream, args)
    finally:
        await upstream.stop()
        await cognito.stop()
    return report(samples, cognito, extra)


async def through_serve(http: aiohttp.ClientSession, cognito: FakeCognito, pool: str,
                        client: str, upstream: FakeApiGateway,
                        args: argparse.Namespace) -> tuple[list[Sample], dict[str, Any]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "proxy.yaml"
        cfg.write_text(config_yaml(cognito, pool, client, upstream.url, port))
        env = dict(os.environ, XDG_CACHE_HOME=tmp)
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "-c", str(cfg)],
                                cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(http, url, proc)
            samples = await load_proxy(http, url, args.seconds, args.rate, args.workers)
            async with http.get(f"{url}/_authproxy/api/credentials") as resp:
                creds = await resp.json()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    user = creds.get("user", creds) if isinstance(creds, dict) else creds
    return samples, {"proxy credential status": json.dumps(user)[:400]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--cognito-latency", type=float, default=0.2)
    parser.add_argument("--direct", action="store_true",
                        help="drive CognitoSource.current()/headers_for() without the proxy")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
