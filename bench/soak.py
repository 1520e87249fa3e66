"""Soak: minutes of mixed load through the real `authproxy serve`, with a Cognito token that
expires every 30 s (so a refresh happens every ~30 s), sampling the proxy's RSS and open file
descriptors. Passes when no request fails unexpectedly and RSS and fds stay flat.

The mix, per worker loop: GETs on a static, a Cognito and a no-auth endpoint; JSON POSTs; 1 MB
downloads; a 404; a 502 (an endpoint whose upstream refuses); a client that hangs up
mid-download. Expected failures (404, 502, the hang-ups) are counted apart from errors.

usage: .venv/bin/python bench/soak.py [--minutes 5] [--workers 8] [--sample 5]
Writes bench/results/soak-*.json with the RSS/fd curve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PAGE, machine_info, table, write_result  # noqa: E402

from proxy.fakes.apigw import FakeApiGateway  # noqa: E402
from proxy.fakes.cognito import FakeCognito  # noqa: E402

AUTHPROXY = str(Path(sys.executable).parent / "authproxy")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def worker(base: str, stop: float, counts: dict[str, int], n: int) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        i = 0
        while time.monotonic() < stop:
            i += 1
            kind = ("static", "cognito", "open", "post", "big", "404", "502", "hangup")[
                (i + n) % 8]
            try:
                if kind == "post":
                    async with s.post(f"{base}/cognito/orders", json={"n": i}) as r:
                        await r.read()
                        ok = r.status == 200
                elif kind == "big":
                    async with s.get(f"{base}/static/big",
                                     headers={"X-Fake-Body-Bytes": "1000000"}) as r:
                        ok = r.status == 200 and len(await r.read()) == 1_000_000
                elif kind == "404":
                    async with s.get(f"{base}/nowhere") as r:
                        await r.read()
                        ok = r.status == 404
                elif kind == "502":
                    async with s.get(f"{base}/dead/x") as r:
                        await r.read()
                        ok = r.status == 502
                elif kind == "hangup":
                    reader, writer = await asyncio.open_connection(
                        base.split("//")[1].split(":")[0], int(base.rsplit(":", 1)[1]))
                    writer.write(b"GET /static/big HTTP/1.1\r\nHost: localhost\r\n"
                                 b"X-Fake-Body-Bytes: 5000000\r\n\r\n")
                    await reader.readexactly(200_000)
                    writer.transport.abort()
                    ok = True
                else:
                    async with s.get(f"{base}/{kind}/item/{i}") as r:
                        await r.read()
                        ok = r.status == 200
            except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as e:
                ok = False
                counts[f"exception {type(e).__name__}"] = counts.get(
                    f"exception {type(e).__name__}", 0) + 1
            counts["requests"] += 1
            if not ok:
                counts["errors"] += 1
                counts[f"error {kind}"] = counts.get(f"error {kind}", 0) + 1


async def run(args: argparse.Namespace) -> int:
    apigw = FakeApiGateway()
    await apigw.start()
    cognito = FakeCognito()
    await cognito.start()
    cognito.token_lifetime = 40  # with refresh_margin 10: a refresh every 30 s
    pool = cognito.add_pool()
    client = cognito.add_client(pool)
    cognito.add_user(pool, "soak", "Soak-Passw0rd-1")
    tmp = Path(tempfile.mkdtemp(prefix="authproxy-soak-"))
    cfg = tmp / "soak.yaml"
    cfg.write_text(f"""
credentials:
  tok: {{type: static, value: soak-static-token-0123456789}}
  user:
    type: cognito
    flow: srp
    user_pool_id: {pool}
    client_id: {client}
    username: soak
    password: Soak-Passw0rd-1
    refresh_margin: 10
    endpoint: {cognito.url}/
endpoints:
  - {{name: static, endpoint: "{apigw.url}/Development", auth: tok}}
  - {{name: cognito, endpoint: "{apigw.url}/Development", auth: user}}
  - {{name: open, endpoint: "{apigw.url}/Development"}}
  - {{name: dead, endpoint: "http://127.0.0.1:{dead_port()}", connect_timeout: 1}}
logging: {{level: warning}}
admin: {{history: 200}}
""")
    port = dead_port()
    proc = subprocess.Popen([AUTHPROXY, "serve", "-c", str(cfg), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            try:
                async with s.get(f"{base}/_authproxy/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    counts: dict[str, int] = {"requests": 0, "errors": 0}
    curve: list[dict[str, float]] = []
    started = time.monotonic()
    stop = started + args.minutes * 60
    workers = [asyncio.create_task(worker(base, stop, counts, n)) for n in range(args.workers)]
    while time.monotonic() < stop:
        curve.append({"t": round(time.monotonic() - started, 1), "rss_mb": round(rss_mb(
            proc.pid), 1), "fds": fds(proc.pid), "requests": counts["requests"],
            "refreshes": cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH")})
        print(f"  t={curve[-1]['t']:>6}s rss={curve[-1]['rss_mb']:>6} MB fds={curve[-1]['fds']:>4}"
              f" requests={counts['requests']:>7} errors={counts['errors']}"
              f" refreshes={curve[-1]['refreshes']}", flush=True)
        await asyncio.sleep(args.sample)
    await asyncio.gather(*workers)
    await asyncio.sleep(1)
    curve.append({"t": round(time.monotonic() - started, 1), "rss_mb": round(rss_mb(proc.pid), 1),
                  "fds": fds(proc.pid), "requests": counts["requests"],
                  "refreshes": cognito.count("InitiateAuth", "REFRESH_TOKEN_AUTH")})
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(15)
    await cognito.stop()
    await apigw.stop()

    # Flat: after the first minute of warm-up, RSS grows < 10 MB and fds by < 20.
    warm = [c for c in curve if c["t"] >= min(60, args.minutes * 30)] or curve
    rss_growth = max(c["rss_mb"] for c in warm) - warm[0]["rss_mb"]
    fd_growth = max(c["fds"] for c in warm) - warm[0]["fds"]
    sign_ins = cognito.count("InitiateAuth", "USER_SRP_AUTH")
    result = {"params": vars(args), "counts": counts, "curve": curve, "exit_code": code,
              "rss_growth_after_warmup_mb": round(rss_growth, 1),
              "fd_growth_after_warmup": fd_growth, "sign_ins": sign_ins,
              "machine": machine_info()}
    path = write_result("soak", result)
    print(table([[k, v] for k, v in counts.items()], ["what", "count"]))
    print(f"RSS growth after warm-up {rss_growth:.1f} MB, fd growth {fd_growth}, "
          f"refreshes {curve[-1]['refreshes']}, sign-ins {sign_ins}, exit code {code}")
    print(f"wrote {path}")
    ok = (counts["errors"] == 0 and rss_growth < 10 and fd_growth < 20 and code == 0
          and curve[-1]["refreshes"] >= args.minutes * 60 // 30 - 1)
    print("PASS" if ok else "FAIL")
    print(json.dumps({"errors": counts["errors"]}))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--sample", type=float, default=5, help="seconds between RSS/fd samples")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
