"""Cold start to ready, and idle memory, of `authproxy serve`, with baselines from the same run.

Each round starts `authproxy serve` (static token, the usual config; pinned to the proxy's
core) and times it from exec to the first 200 from /_authproxy/healthz, then reads its RSS
once it has been idle for a moment (after one proxied request, so that what a first request
loads counts too). Baselines, measured the same way in the same rounds: `python -c pass` (the
interpreter alone) and `python -c 'import aiohttp'` (the framework alone); their RSS is their
peak (VmHWM).

The proxy runs from a byte-compiled copy of the working tree's proxy/ (or of --rev's), as an
installed authproxy (pip, the container image) has its bytecode: with PYTHONDONTWRITEBYTECODE=1
and no __pycache__, every start would otherwise compile its ~7000 lines anew (some 50 ms here),
while the libraries next to it have theirs. --no-compile measures that case.

usage: .venv/bin/python bench/startup.py [--rounds 15] [--loop uvloop|asyncio] [--rev REV]
                                         [--no-compile]
Writes bench/results/startup-*.json. Goals (issue 15): ready < 250 ms, idle RSS < 40 MB.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH,
    PROXY_CPU,
    PY,
    ROOT,
    authproxy_config,
    export_rev,
    have_uvloop,
    machine_info,
    make_token,
    median,
    pin,
    start_upstream,
    table,
    write_result,
)

READY_GOAL_MS = 250.0
RSS_GOAL_MB = 40.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:
        resp.read()
        return int(resp.status)


def prepare(src: Path | None, dest: Path, compile_: bool) -> Path:
    """A copy of proxy/ (the working tree's, or an exported revision's) in `dest`, byte-
    compiled unless not `compile_`; the directory to put on PYTHONPATH (it comes before the
    editable install's finder)."""
    dest.mkdir(parents=True)
    shutil.copytree((src or ROOT) / "proxy", dest / "proxy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if compile_ and not compileall.compile_dir(dest / "proxy", quiet=1):
        raise RuntimeError(f"byte-compiling {dest / 'proxy'} failed")
    return dest


def start_once(config: Path, loop: str, src: Path) -> tuple[float, float]:
    """(ms from exec to the first healthz 200, idle RSS in MB after one request)."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    proc = subprocess.Popen(pin(PROXY_CPU) + [PY, str(BENCH / "_launch.py"), loop, "authproxy",
                                              "serve", "-c", str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/_authproxy/healthz") == 200:
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"authproxy exited: {proc.stderr.read().decode()}"
                                       if proc.stderr else "authproxy exited") from None
                time.sleep(0.002)
        ready = (time.perf_counter() - t0) * 1000
        _get(f"http://127.0.0.1:{port}/echo")
        time.sleep(1.0)
        return ready, _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_once(code: str) -> tuple[float, float]:
    """A bare interpreter running `code`: (ms to exit, peak RSS in MB). The peak is VmHWM,
    which exec resets: getrusage's ru_maxrss would carry over this script's own RSS from
    the fork (some 25 MB), whatever the child used."""
    t0 = time.perf_counter()
    out = subprocess.run(pin(PROXY_CPU) + [PY, "-c", code + "\nfrom pathlib import Path\n"
                         "print(next(line.split()[1] for line in Path('/proc/self/status')"
                         ".read_text().splitlines() if line.startswith('VmHWM:')))"],
                         capture_output=True, text=True, check=True)
    return (time.perf_counter() - t0) * 1000, int(out.stdout.split()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"),
                    default="uvloop" if have_uvloop() else "asyncio")
    ap.add_argument("--rev", help="also measure authproxy as committed at this git revision "
                    "(or from a directory holding a proxy/ package), in the same rounds")
    ap.add_argument("--no-compile", action="store_true",
                    help="run the proxy's sources without their bytecode: each start compiles "
                         "them (as with PYTHONDONTWRITEBYTECODE=1 and no __pycache__)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="authproxy-startup-") as tmpname:
        tmp = Path(tmpname)
        token = tmp / "token"
        make_token(token)
        builds = {"authproxy serve": prepare(None, tmp / "tree", not args.no_compile)}
        if args.rev:
            exported = export_rev(args.rev, tmp / "rev")
            builds[f"authproxy serve ({args.rev})"] = prepare(exported, tmp / "rev-copy",
                                                              not args.no_compile)
        up, up_port = start_upstream(tmp)
        try:
            config = authproxy_config(tmp / "authproxy.yaml", up_port, token)
            rows: dict[str, list[tuple[float, float]]] = {
                "python -c pass": [], "python -c 'import aiohttp'": [],
                **{name: [] for name in builds}}
            for _ in range(args.rounds):
                rows["python -c pass"].append(run_once("pass"))
                rows["python -c 'import aiohttp'"].append(run_once("import aiohttp"))
                for name, src in builds.items():
                    rows[name].append(start_once(config, args.loop, src))
        finally:
            up.stop()
    summary = {name: {"ms": round(median([r[0] for r in rs]), 1),
                      "ms_min": round(min(r[0] for r in rs), 1),
                      "rss_mb": round(median([r[1] for r in rs]), 1)}
               for name, rs in rows.items()}
    print(f"{args.rounds} rounds, pinned to core {PROXY_CPU}, {args.loop}, authproxy "
          f"{'compiling its sources at each start' if args.no_compile else 'byte-compiled'}; "
          "medians")
    print(table([[n, f"{s['ms']:.0f}", f"{s['ms_min']:.0f}", f"{s['rss_mb']:.1f}"]
                 for n, s in summary.items()],
                ["process", "ms to ready/exit", "fastest", "RSS MB"]))
    serve = summary["authproxy serve"]
    misses = []
    if serve["ms"] >= READY_GOAL_MS:
        misses.append(f"cold start {serve['ms']:.0f} ms >= {READY_GOAL_MS:g} ms (issue 15)")
    if serve["rss_mb"] >= RSS_GOAL_MB:
        misses.append(f"idle RSS {serve['rss_mb']:.1f} MB >= {RSS_GOAL_MB:g} MB (issue 15)")
    path = write_result("startup", {"kind": "startup", "machine": machine_info(),
                                    "params": vars(args), "summary": summary,
                                    "target_misses": misses})
    print(f"\nresult: {path.relative_to(path.parents[2])}")
    for m in misses:
        print("TARGET MISSED", m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
