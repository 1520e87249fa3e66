"""Big bodies through authproxy with bounded memory (issue 2, acceptance 4; issue 7 large bodies).

1. A 1 GiB upload (Content-Length), a 1 GiB upload (chunked) and a 1 GiB download, each through
   `authproxy serve` (static token), while the proxy's RSS (VmRSS from /proc/PID/status) is
   sampled every 20 ms. Reported: RSS before, peak and growth (must be < 50 MB), throughput,
   and integrity: the byte count and sha256 seen by the far side equal the sender's.
2. (issue 7) 10 MB answers over 10 connections with wrk: authproxy against a fully buffering
   aiohttp proxy (bench/buffering_proxy.py) and the naive streaming one, in the same run:
   throughput ratio (target >= 0.9x the buffering proxy) and peak RSS (target < 100 MB).

The proxy is pinned to core 0; this client, the upstream and wrk to core 1.
usage: .venv/bin/python bench/bigbody.py [--size-mib 1024] [--loop uvloop|asyncio] [--no-large]
Writes bench/results/bigbody-*.json; exit 1 when a hard requirement (RSS growth, integrity) fails.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    LOAD_CPU,
    Proc,
    add_nice_option,
    add_rev_option,
    apply_nice,
    authproxy_config,
    export_rev,
    have_uvloop,
    machine_info,
    make_token,
    need,
    raise_nofile,
    start_authproxy,
    start_script_proxy,
    start_upstream,
    table,
    write_result,
    wrk,
)
from upstream import BLOCK, pattern_chunks, pattern_sha256  # noqa: E402

MiB = 1024 * 1024
RSS_GROWTH_LIMIT_MB = 50.0  # issue 2
LARGE_RSS_LIMIT_MB = 100.0  # issue 7
LARGE_RATIO_TARGET = 0.9  # issue 7: >= 0.9x a fully buffering proxy's throughput


class RssSampler:
    """Samples a process's VmRSS (KiB) in a thread."""

    def __init__(self, proc: Proc, every: float = 0.02) -> None:
        self.proc, self.every = proc, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, self.proc.rss_kb()))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def peak_kb(self) -> int:
        return max(kb for _, kb in self.samples)

    def curve(self, points: int = 40) -> list[tuple[float, float]]:
        step = max(1, len(self.samples) // points)
        return [(round(t, 2), round(kb / 1024, 1)) for t, kb in self.samples[::step]]


def settled_rss_kb(proc: Proc) -> int:
    time.sleep(0.3)
    return sorted(proc.rss_kb() for _ in range(5))[2]


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str],
                    sink: Any | None) -> int:
    """Reads a Content-Length or chunked body, feeding `sink(chunk)`; returns the byte count."""
    n = 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return n
            left = size
            while left:
                chunk = await reader.read(min(left, 4 * MiB))
                if not chunk:
                    raise ConnectionError("body cut short")
                left -= len(chunk)
                n += len(chunk)
                if sink:
                    sink(chunk)
            await reader.readexactly(2)
    left = int(headers.get("content-length", "0"))
    while left:
        chunk = await reader.read(min(left, 4 * MiB))
        if not chunk:
            raise ConnectionError(f"body cut short: {n} bytes")
        left -= len(chunk)
        n += len(chunk)
        if sink:
            sink(chunk)
    return n


async def upload(port: int, size: int, chunked: bool) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MiB)
    te = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    writer.write(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Content-Type: application/octet-stream\r\n{te}\r\n\r\n".encode())
    sent = 0
    for chunk in pattern_chunks(size, len(BLOCK)):
        if chunked:
            writer.write(b"%x\r\n" % len(chunk))
            writer.write(chunk)
            writer.write(b"\r\n")
        else:
            writer.write(chunk)
        sent += len(chunk)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    status, headers = await read_head(reader)
    body = bytearray()
    await read_body(reader, headers, body.extend)
    writer.close()
    got = json.loads(body) if status == 200 else {}
    return {"status": status, "sent": sent, "received": got.get("bytes"),
            "sha256_far": got.get("sha256")}


async def download(port: int, size: int, hash_it: bool) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MiB)
    writer.write(f"GET /bytes/{size} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    status, headers = await read_head(reader)
    digest = hashlib.sha256() if hash_it else None
    n = await read_body(reader, headers, digest.update if digest else None)
    writer.close()
    return {"status": status, "received": n, "sha256_far": digest.hexdigest() if digest else None,
            "framing": "chunked" if "transfer-encoding" in headers else "content-length"}


def transfer(name: str, proxy: Proc, port: int, size: int, expect_sha: str,
             hash_download: bool) -> dict[str, Any]:
    before = settled_rss_kb(proxy)
    cpu0 = proxy.cpu_seconds()
    t0 = time.monotonic()
    with RssSampler(proxy) as rss:
        if name == "download":
            res = asyncio.run(download(port, size, hash_download))
        else:
            res = asyncio.run(upload(port, size, chunked=name.endswith("chunked")))
    secs = time.monotonic() - t0
    after = settled_rss_kb(proxy)
    res |= {
        "transfer": name, "bytes": size, "seconds": round(secs, 2),
        "mb_per_s": round(size / secs / 1e6, 1),
        "proxy_cpu_pct": round(100 * (proxy.cpu_seconds() - cpu0) / secs, 1),
        "rss_before_mb": round(before / 1024, 1), "rss_peak_mb": round(rss.peak_kb / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "rss_growth_mb": round((rss.peak_kb - before) / 1024, 1),
        "rss_curve_mb": rss.curve(),
    }
    res["count_ok"] = res["received"] == size
    res["sha_ok"] = (res["sha256_far"] == expect_sha) if res["sha256_far"] else None
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--size-mib", type=int, default=1024, help="size of each transfer (1024)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"),
                    default="uvloop" if have_uvloop() else "asyncio")
    ap.add_argument("--no-download-hash", action="store_true",
                    help="count the downloaded bytes but skip the client-side sha256")
    ap.add_argument("--no-large", action="store_true",
                    help="skip the 10 MB x 10 connections comparison")
    ap.add_argument("--large-duration", type=int, default=6, help="seconds per wrk run (6)")
    ap.add_argument("--large-mib", type=int, default=10)
    ap.add_argument("--large-connections", type=int, default=10)
    add_nice_option(ap)
    add_rev_option(ap)
    args = ap.parse_args()
    apply_nice(args.nice)
    raise_nofile()
    size = args.size_mib * MiB
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="authproxy-bigbody-") as tmpname:
        tmp = Path(tmpname)
        try:
            return run(args, size, tmp, procs)
        finally:
            for p in reversed(procs):
                p.stop()


def run(args: argparse.Namespace, size: int, tmp: Path, procs: list[Proc]) -> int:
    token_file = tmp / "token"
    make_token(token_file)
    up, up_port = start_upstream(tmp)
    procs.append(up)
    config = authproxy_config(tmp / "authproxy.yaml", up_port, token_file)
    proxy, port = start_authproxy(tmp, config, args.loop,
                                  src=export_rev(args.rev, tmp / "src"))
    procs.append(proxy)
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this client shares core 1 with the upstream
    print(f"authproxy ({args.loop}) pid {proxy.pid} on core 0; upstream and this client on core "
          f"{LOAD_CPU}; computing the expected sha256 of {size // MiB} MiB ...", flush=True)
    expect = pattern_sha256(size)
    # Warm up: the first requests allocate what the proxy keeps for its lifetime.
    for name in ("upload", "upload-chunked", "download"):
        transfer(name, proxy, port, 16 * MiB, pattern_sha256(16 * MiB), True)

    failures: list[str] = []
    results = []
    for name in ("upload", "upload-chunked", "download"):
        res = transfer(name, proxy, port, size, expect, not args.no_download_hash)
        results.append(res)
        print(f"  {name:15s} {res['mb_per_s']:7.0f} MB/s  RSS {res['rss_before_mb']:.0f} -> "
              f"peak {res['rss_peak_mb']:.0f} MB (+{res['rss_growth_mb']:.1f})  "
              f"bytes {'ok' if res['count_ok'] else 'WRONG'}  sha256 "
              f"{ {True: 'ok', False: 'WRONG', None: 'not checked'}[res['sha_ok']] }", flush=True)
        if res["status"] != 200:
            failures.append(f"{name}: status {res['status']}")
        if not res["count_ok"]:
            failures.append(f"{name}: {res['received']} bytes arrived, {size} sent")
        if res["sha_ok"] is False:
            failures.append(f"{name}: sha256 differs")
        if res["rss_growth_mb"] >= RSS_GROWTH_LIMIT_MB:
            failures.append(f"{name}: RSS grew {res['rss_growth_mb']} MB "
                            f"(limit {RSS_GROWTH_LIMIT_MB:g})")
    print()
    print(table([[r["transfer"], f"{r['bytes'] // MiB} MiB", f"{r['seconds']:.1f}",
                  f"{r['mb_per_s']:.0f}", f"{r['proxy_cpu_pct']:.0f}%",
                  f"{r['rss_before_mb']:.1f}", f"{r['rss_peak_mb']:.1f}",
                  f"{r['rss_growth_mb']:+.1f}", f"{r['rss_after_mb']:.1f}",
                  "ok" if r["count_ok"] else "WRONG",
                  {True: "ok", False: "WRONG", None: "-"}[r["sha_ok"]]] for r in results],
                ["transfer", "size", "s", "MB/s", "proxy CPU", "RSS before", "RSS peak",
                 "growth MB", "RSS after", "bytes", "sha256"]))
    print(f"(limit: growth < {RSS_GROWTH_LIMIT_MB:g} MB; RSS in MB; the download's sha256 is "
          "computed by this client, the uploads' by the upstream)")

    large: dict[str, Any] = {}
    misses: list[str] = []
    if not args.no_large:
        need("wrk")
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        url_path = f"/bytes/{args.large_mib * MiB}"
        others: dict[str, tuple[Proc, int]] = {"authproxy": (proxy, port)}
        for name, script in (("buffering", "buffering_proxy.py"), ("naive", "naive_proxy.py")):
            p, pport = start_script_proxy(tmp, f"{name}-{args.loop}", script, up_port,
                                          token_file, args.loop)
            procs.append(p)
            others[name] = (p, pport)
        print(f"\n{args.large_mib} MB answers, {args.large_connections} connections, "
              f"{args.large_duration} s each, loop {args.loop}")
        for _, pport in others.values():
            wrk(f"http://127.0.0.1:{pport}{url_path}", args.large_connections, 1, tmp)
        for name, (p, pport) in others.items():
            res = wrk(f"http://127.0.0.1:{pport}{url_path}", args.large_connections,
                      args.large_duration, tmp, timeout="30s", watch=[up, p])
            res["proxy_cpu_pct"] = res["cpu_pct"][p.name]
            res["proxy_rss_peak_mb"] = res["rss_peak_mb"][p.name]
            large[name] = res
            print(f"  {name:10s} {res['mb_per_s']:7.0f} MB/s  {res['rps']:6.1f} answers/s  "
                  f"p99 {res['p99_ms']:.0f} ms  RSS peak {res['proxy_rss_peak_mb']:.0f} MB  "
                  f"errors {res['errors']}", flush=True)
        ratio = large["authproxy"]["mb_per_s"] / large["buffering"]["mb_per_s"]
        large["ratio_authproxy_buffering"] = round(ratio, 3)
        large["ratio_authproxy_naive"] = round(
            large["authproxy"]["mb_per_s"] / large["naive"]["mb_per_s"], 3)
        print(table([[n, f"{r['mb_per_s']:.0f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                      f"{r['proxy_cpu_pct']:.0f}%", f"{r['proxy_rss_peak_mb']:.0f}",
                      r["errors"], f"{r['foreign_cpu_pct']:.0f}%"]
                     for n, r in large.items() if isinstance(r, dict)],
                    ["proxy", "MB/s", "p50 ms", "p99 ms", "proxy CPU", "RSS peak MB", "errors",
                     "noise"]))
        print(f"authproxy / buffering = {ratio:.2f}x (issue 7 target >= {LARGE_RATIO_TARGET}); "
              f"authproxy / naive = {large['ratio_authproxy_naive']:.2f}x")
        if ratio < LARGE_RATIO_TARGET:
            misses.append(f"large answers: authproxy/buffering = {ratio:.2f} < "
                          f"{LARGE_RATIO_TARGET}")
        if large["authproxy"]["proxy_rss_peak_mb"] >= LARGE_RSS_LIMIT_MB:
            misses.append(f"large answers: authproxy RSS peak "
                          f"{large['authproxy']['proxy_rss_peak_mb']} MB >= 100")
        if large["authproxy"]["errors"]:
            failures.append(f"large answers: authproxy had {large['authproxy']['errors']} errors")

    path = write_result("bigbody", {
        "kind": "bigbody", "machine": machine_info(), "params": vars(args), "transfers": results,
        "large_answers": large, "failures": failures, "target_misses": misses})
    print(f"\nresult: {path.relative_to(path.parents[2])}")
    for m in misses:
        print("TARGET MISSED", m)
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
