"""Profile authproxy under the small-request load with py-spy and summarise the hot spots.

Starts the upstream and `authproxy serve` (static 1 KB token, access log off) like load.py, drives
it with wrk (50 connections) and samples it with `py-spy record --format raw`. Prints the share of
samples by package (self time), the hottest functions (self and inclusive) and the proxy/ code's
own functions, and keeps the collapsed stacks under bench/results/ (feed them to any flame graph
tool, e.g. `flamegraph.pl` or speedscope).

usage: .venv/bin/python bench/profile.py [--seconds 15] [--loop uvloop|asyncio] [--native]
Needs py-spy (`.venv/bin/pip install py-spy`) and root or ptrace permission.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    LOAD_CPU,
    RESULTS,
    Proc,
    add_nice_option,
    add_rev_option,
    apply_nice,
    authproxy_config,
    export_rev,
    have_uvloop,
    iam_config,
    make_token,
    pin,
    raise_nofile,
    start_authproxy,
    start_naive,
    start_upstream,
    table,
    wrk,
)

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def package(file: str) -> str:
    if "/proxy/" in file or file.startswith("proxy/"):
        return "proxy (authproxy)"
    for pkg in ("aiohttp", "multidict", "yarl", "uvloop", "prometheus_client", "propcache"):
        if f"/{pkg}/" in file or file.startswith(f"{pkg}/"):
            return pkg
    if "asyncio" in file:
        return "asyncio"
    if "/lib/python3" in file or file.startswith("<frozen"):
        return "stdlib"
    return "other"


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        for marker in ("/proxy/", "/bench/"):
            if marker in file:
                file = file[file.rindex(marker) + 1:]
                break
    return f"{m['func']} ({file}{':' + m['line'] if m['line'] else ''})"


def summarise(raw: Path, top: int, us_per_req: float | None = None) -> dict[str, object]:
    """Tables of the collapsed stacks; with `us_per_req` (the process's CPU time per request)
    each share is also shown as microseconds of CPU per request."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    incl_func: collections.Counter[str] = collections.Counter()
    by_pkg: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("process ") or frames and frames[0].startswith(
                "thread "):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        self_t[short(leaf)] += n
        m = FRAME.match(leaf)
        by_pkg[package(m["file"]) if m else "other"] += n
        seen = set()
        seen_func = set()
        for f in frames:
            s = short(f)
            if s not in seen:
                seen.add(s)
                incl[s] += n
            m = FRAME.match(f)
            key = re.sub(r":\d+\)$", ")", s)
            if m and key not in seen_func:
                seen_func.add(key)
                incl_func[key] += n

    def pct(n: int) -> str:
        share = n / max(total, 1)
        if us_per_req is None:
            return f"{100 * share:.1f}%"
        return f"{100 * share:5.1f}% {share * us_per_req:6.1f} us/req"

    print(f"\n{total} samples")
    print("\nself time by package")
    print(table([[k, pct(v)] for k, v in by_pkg.most_common()], ["package", "self"]))
    print(f"\ntop {top} functions by self time (line of the leaf frame)")
    print(table([[k, pct(v)] for k, v in self_t.most_common(top)], ["frame", "self"]))
    proxy_funcs = [(k, v) for k, v in incl_func.most_common()
                   if "(proxy/" in k or "(bench/" in k or "naive_proxy.py" in k]
    print("\nthe proxy's own functions, inclusive (time in them and what they call)")
    print(table([[k, pct(v)] for k, v in proxy_funcs[:top]], ["function", "inclusive"]))
    print(f"\ntop {top} functions by inclusive time (all code)")
    print(table([[k, pct(v)] for k, v in incl_func.most_common(top)],
                ["function", "inclusive"]))
    return {"samples": total,
            "by_package": {k: round(100 * v / total, 2) for k, v in by_pkg.most_common()},
            "self": [(k, round(100 * v / total, 2)) for k, v in self_t.most_common(60)],
            "inclusive": [(k, round(100 * v / total, 2)) for k, v in incl_func.most_common(80)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"),
                    default="uvloop" if have_uvloop() else "asyncio")
    ap.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--access-log", action="store_true",
                    help="with the access log on (logging.level info), as by default")
    ap.add_argument("--raw", type=Path, help="only summarise an existing collapsed-stack file")
    ap.add_argument("--target", choices=("authproxy", "iam", "naive"),
                    default="authproxy",
                    help="the proxy to profile (iam: authproxy signing with SigV4; naive: "
                    "bench/naive_proxy.py, for comparison)")
    add_nice_option(ap)
    add_rev_option(ap)
    args = ap.parse_args()
    apply_nice(args.nice)
    if args.raw:
        summarise(args.raw, args.top)
        return 0
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    raise_nofile()
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{args.target}-{args.loop}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="authproxy-profile-") as tmpname:
        tmp = Path(tmpname)
        try:
            token_file = tmp / "token"
            make_token(token_file)
            up, up_port = start_upstream(tmp)
            procs.append(up)
            if args.target == "naive":
                proxy, port = start_naive(tmp, up_port, token_file, args.loop)
            else:
                level = "info" if args.access_log else "warning"
                config = (iam_config(tmp / "authproxy.yaml", up_port, level)
                          if args.target == "iam" else
                          authproxy_config(tmp / "authproxy.yaml", up_port, token_file, level))
                proxy, port = start_authproxy(tmp, config, args.loop,
                                              src=export_rev(args.rev, tmp / "src"))
            procs.append(proxy)
            url = f"http://127.0.0.1:{port}/"
            wrk(url, args.connections, 2, tmp)
            cmd = pin(LOAD_CPU) + [pyspy, "record", "--pid", str(proxy.pid), "--format", "raw",
                                   "--rate", str(args.rate), "--duration", str(args.seconds + 1),
                                   "--output", str(raw)]
            if args.native:
                cmd.append("--native")
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            res = wrk(url, args.connections, args.seconds, tmp, watch=[proxy])
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0 or not raw.exists():
                sys.exit(f"py-spy failed: {err.decode(errors='replace')}")
            us = res["cpu_s"][proxy.name] * 1e6 / max(res["requests"], 1)
            print(f"{proxy.name} under wrk -c{args.connections}: {res['rps']:.0f} req/s while "
                  f"sampled, proxy CPU {res['cpu_pct'][proxy.name]:.0f}%, {us:.0f} us of CPU "
                  "per request (py-spy's pauses included)")
        finally:
            for p in reversed(procs):
                p.stop()
    summarise(raw, args.top, us)
    print(f"\ncollapsed stacks: {raw.relative_to(raw.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
