"""Cold start and `--help` times (issue 7: ready under 0.5 s, --help under 0.3 s).

Ready = from spawning `authproxy serve` (static token, one endpoint) until /_authproxy/healthz
answers 200, polled every 5 ms. Each figure is the median of --runs runs (the first of which
also pays for a cold page cache, so it is shown too).

usage: .venv/bin/python bench/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, authproxy_config, free_port, make_token  # noqa: E402

AUTHPROXY = str(Path(sys.executable).parent / "authproxy")


def ready_seconds(config: Path) -> float:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([AUTHPROXY, "serve", "-c", str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_authproxy/healthz",
                                            timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("authproxy serve exited") from None
            if time.perf_counter() - t0 > 10:
                raise RuntimeError("not ready after 10 s")
            time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(10)


def help_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([AUTHPROXY, "--help"], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    token = tmp / "token"
    make_token(token)
    config = authproxy_config(tmp / "authproxy.yaml", free_port(), token)
    ready = [ready_seconds(config) for _ in range(args.runs)]
    helps = [help_seconds() for _ in range(args.runs)]
    ok = statistics.median(ready) < 0.5 and statistics.median(helps) < 0.3
    print(f"ready:  median {statistics.median(ready) * 1000:.0f} ms  first "
          f"{ready[0] * 1000:.0f} ms  max {max(ready) * 1000:.0f} ms  (target < 500 ms)")
    print(f"--help: median {statistics.median(helps) * 1000:.0f} ms  first "
          f"{helps[0] * 1000:.0f} ms  max {max(helps) * 1000:.0f} ms  (target < 300 ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
