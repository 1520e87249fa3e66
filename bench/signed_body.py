"""Signed (SigV4) uploads with bounded memory (issue 11, acceptance 4).

A signed request's body must be hashed before its headers go, so authproxy reads it whole: in
memory up to 1 MiB, spooled to an unlinked temporary file beyond. Through `authproxy serve` with
a `type: iam` credential (fixed keys) in front of bench/upstream.py:

1. a 9 MiB signed upload: the proxy's RSS (sampled every 20 ms) must grow by less than 15 MB,
   and the upstream must count and hash exactly the bytes sent;
2. a body one byte over `max_signed_body`: 413 body_too_large, and the upstream sees nothing.

The proxy is pinned to core 0; this client and the upstream to core 1.
usage: .venv/bin/python bench/signed_body.py [--size-mib 9] [--rounds 3]
Writes bench/results/signed_body-*.json; exit 1 when a requirement fails.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, start_authproxy, start_upstream, table, write_result  # noqa: E402
from bigbody import RssSampler, settled_rss_kb  # noqa: E402

MiB = 1024 * 1024
RSS_GROWTH_LIMIT_MB = 15.0
MAX_SIGNED_BODY = 10 * MiB


def config(path: Path, upstream_port: int) -> Path:
    path.write_text(
        "credentials:\n  keys:\n    type: iam\n    source: keys\n"
        "    access_key_id: AKIABENCHKEY00000002\n"
        "    secret_access_key: bench-secret-key-not-a-real-one-0123456789\n"
        f"    region: us-east-1\n    max_signed_body: {MAX_SIGNED_BODY}\n"
        "endpoints:\n"
        f'  - {{name: api, endpoint: "http://127.0.0.1:{upstream_port}", auth: keys, prefix: /,'
        " timeout: 600}\nlogging: {level: warning}\n")
    return path


def upload(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/upload", body=body,
                     headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (BrokenPipeError, ConnectionResetError):
        # The proxy may answer 413 and close before taking the whole body.
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=float, default=9.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    failures: list[str] = []
    rows: list[list[object]] = []
    results: dict[str, object] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="authproxy-bench-") as d:
        tmp = Path(d)
        up, up_port = start_upstream(tmp)
        proxy, port = start_authproxy(tmp, config(tmp / "iam.yaml", up_port), "uvloop",
                                      name="authproxy-iam")
        try:
            body = os.urandom(int(args.size_mib * MiB))
            digest = hashlib.sha256(body).hexdigest()
            upload(port, b"warm-up")
            before = settled_rss_kb(proxy)
            peaks = []
            for i in range(args.rounds):
                with RssSampler(proxy) as rss:
                    status, answer = upload(port, body)
                peaks.append(rss.peak_kb)
                got = json.loads(answer) if status == 200 else {}
                ok = status == 200 and got.get("bytes") == len(body) and \
                    got.get("sha256") == digest
                if not ok:
                    failures.append(f"round {i + 1}: status {status}, upstream got {got}")
            growth = (max(peaks) - before) / 1024
            rows.append([f"{args.size_mib:g} MiB signed upload x{args.rounds}",
                         f"{before / 1024:.1f}", f"{max(peaks) / 1024:.1f}", f"{growth:.1f}",
                         "yes" if not failures else "NO"])
            if growth >= RSS_GROWTH_LIMIT_MB:
                failures.append(f"RSS grew {growth:.1f} MB (limit {RSS_GROWTH_LIMIT_MB})")
            results["upload"] = {"size": len(body), "rss_before_mb": before / 1024,
                                 "rss_peak_mb": max(peaks) / 1024, "growth_mb": growth}

            log_before = up.log.read_text(errors="replace").count("\n")
            status, answer = upload(port, b"z" * (MAX_SIGNED_BODY + 1))
            error = json.loads(answer).get("error") if answer.startswith(b"{") else None
            log_after = up.log.read_text(errors="replace").count("\n")
            upstream_saw = log_after - log_before
            rows.append([f"{MAX_SIGNED_BODY + 1} B (limit + 1)", "-", "-", "-",
                         f"{status} {error}, upstream uploads seen: {upstream_saw}"])
            if status != 413 or error != "body_too_large" or upstream_saw:
                failures.append(f"over the limit: {status} {error}, upstream saw {upstream_saw}")
            results["over_limit"] = {"status": status, "error": error,
                                     "upstream_requests": upstream_saw}
        finally:
            proxy.stop()
            up.stop()
    print(table(rows, ["case", "RSS before MB", "peak MB", "growth MB", "integrity / answer"]))
    results["failures"] = failures
    print(f"result: {write_result('signed_body', results)}")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
