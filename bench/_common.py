"""Shared pieces of the benchmark scripts: starting pinned processes, configs, wrk, /proc sampling.

Layout on a 2-core machine: the proxy under test on core 0 (`taskset -c 0`), the load generator
and the upstream on core 1. Every figure that matters is a ratio against a baseline measured in
the same run, because absolute numbers on these machines drift by 10-20 % from one minute to the
next.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PY = sys.executable
PROXY_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)
    if not path:
        sys.exit(f"{tool} not found: install it with `apt-get install -y wrk nginx-light`")
    return path


def pin(cpu: str) -> list[str]:
    """taskset prefix; empty on a single core (figures then mean little)."""
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", cpu]


def add_nice_option(ap: Any) -> None:
    ap.add_argument("--nice", type=int, default=0,
                    help="run the proxies, upstream and wrk at this nice value (e.g. -10 when "
                         "other work shares the machine; needs root); default 0")


def apply_nice(value: int) -> None:
    """Sets this process's nice value; every process it starts inherits it.

    With the kernel's autogroup scheduling (on by default), CPU is shared between sessions
    first and nice only counts inside one; so the script re-runs itself in a new session and
    sets that session's autogroup nice too (/proc/self/autogroup), leaving the caller's alone.
    """
    if not value:
        return
    if os.getsid(0) != os.getpid():  # not a session leader yet: re-run as one
        child = subprocess.Popen([sys.executable, *sys.argv], start_new_session=True)
        while True:
            try:
                sys.exit(child.wait())
            except KeyboardInterrupt:
                child.send_signal(signal.SIGINT)
    os.setpriority(os.PRIO_PROCESS, 0, value)
    try:
        Path("/proc/self/autogroup").write_text(str(value))
    except OSError:
        pass


class Proc:
    """A child process (pinned), its log file, and its CPU time and RSS from /proc."""

    def __init__(self, name: str, cmd: list[str], cpu: str, logdir: Path,
                 env: dict[str, str] | None = None, stdout: int | None = None) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self._logf = open(self.log, "wb")
        self.p = subprocess.Popen(pin(cpu) + cmd, stdout=stdout or self._logf,
                                  stderr=self._logf, env=env, cwd=ROOT)
        self.pid = self.p.pid

    def pids(self) -> list[int]:
        """This process and its children (nginx's worker)."""
        out = [self.pid]
        try:
            for task in os.listdir(f"/proc/{self.pid}/task"):
                kids = Path(f"/proc/{self.pid}/task/{task}/children").read_text().split()
                out += [int(k) for k in kids]
        except OSError:
            pass
        return out

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def rss_kb(self) -> int:
        """VmRSS of this process (and children), in KiB."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._logf.close()


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url: str, proc: Proc, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (rc={proc.p.returncode}):\n{proc.tail()}")
        try:
            status, _ = http_get(url, timeout=2)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url}: {last}\n{proc.tail()}")


def make_token(path: Path, size: int = 1024) -> str:
    """A JWT-shaped bearer value of exactly `size` characters (header value, 'Bearer ' included)."""
    body = secrets.token_urlsafe(size)
    value = "Bearer eyJhbGciOiJSUzI1NiJ9." + body
    value = value[:size - 44] + "." + secrets.token_urlsafe(32)[:43]
    value = value[:size]
    assert len(value) == size
    path.write_text(value + "\n")
    return value


def authproxy_config(path: Path, upstream_port: int, token_file: Path,
                     level: str = "warning") -> Path:
    path.write_text(
        "credentials:\n"
        f"  tok: {{type: static, value_file: {token_file}}}\n"
        "endpoints:\n"
        f'  - {{name: api, endpoint: "http://127.0.0.1:{upstream_port}", auth: tok, prefix: /,'
        " timeout: 600}\n"
        f"logging: {{level: {level}}}\n")
    return path


def iam_config(path: Path, upstream_port: int, level: str = "warning") -> Path:
    """authproxy_config's twin signing every request with SigV4 (fixed keys with an 800 B
    session token, as an identity pool gives): what signing costs, next to the static token."""
    path.write_text(
        "credentials:\n  keys:\n    type: iam\n    source: keys\n"
        "    access_key_id: ASIABENCHKEY00000001\n"
        "    secret_access_key: bench-secret-key-not-a-real-one-0123456789\n"
        f"    session_token: {'s' * 800}\n    region: us-east-1\n"
        "endpoints:\n"
        f'  - {{name: api, endpoint: "http://127.0.0.1:{upstream_port}", auth: keys, prefix: /,'
        f" timeout: 600}}\nlogging: {{level: {level}}}\n")
    return path


def start_upstream(logdir: Path, loop: str = "uvloop", headers: str = "apigw") -> tuple[Proc, int]:
    proc = Proc("upstream", [PY, str(BENCH / "upstream.py"), "--loop", loop,
                             "--headers", headers], LOAD_CPU, logdir, stdout=subprocess.PIPE)
    assert proc.p.stdout is not None
    line = proc.p.stdout.readline().decode()
    if not line.startswith("READY "):
        raise RuntimeError(f"upstream did not start:\n{proc.tail()}")
    return proc, int(line.split()[1])


def add_rev_option(ap: Any) -> None:
    ap.add_argument("--rev", help="benchmark authproxy as committed at this git revision "
                    "(exported to a temp dir), or from a directory holding a proxy/ package, "
                    "instead of the working tree")


def export_rev(rev: str | None, dest: Path) -> Path | None:
    """`git archive REV proxy` into dest; returns the directory to put on PYTHONPATH.
    A directory holding a proxy/ package is used as it is (for trying out a patched copy)."""
    if not rev:
        return None
    if (Path(rev) / "proxy" / "__init__.py").exists():
        return Path(rev).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "proxy"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_authproxy(logdir: Path, config: Path, loop: str, name: str | None = None,
                    cpu: str = PROXY_CPU, src: Path | None = None) -> tuple[Proc, int]:
    """`authproxy serve` on `loop`; from `src` (an exported revision) when given."""
    port = free_port()
    name = name or f"authproxy-{loop}"
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
    proc = Proc(name, [PY, str(BENCH / "_launch.py"), loop, "authproxy", "serve", "-c",
                       str(config), "--port", str(port)], cpu, logdir, env=env)
    wait_http(f"http://127.0.0.1:{port}/_authproxy/healthz", proc)
    return proc, port


def start_naive(logdir: Path, upstream_port: int, token_file: Path, loop: str,
                cpu: str = PROXY_CPU) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(f"naive-{loop}", [PY, str(BENCH / "_launch.py"), loop, "script",
                                  str(BENCH / "naive_proxy.py"), str(port),
                                  f"http://127.0.0.1:{upstream_port}", str(token_file)],
                cpu, logdir)
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc, port


def start_script_proxy(logdir: Path, name: str, script: str, upstream_port: int,
                       token_file: Path, loop: str, cpu: str = PROXY_CPU) -> tuple[Proc, int]:
    """A bench/ proxy with naive_proxy.py's command line (PORT UPSTREAM TOKEN_FILE)."""
    port = free_port()
    proc = Proc(name, [PY, str(BENCH / "_launch.py"), loop, "script", str(BENCH / script),
                       str(port), f"http://127.0.0.1:{upstream_port}", str(token_file)],
                cpu, logdir)
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc, port


def start_command(logdir: Path, name: str, template: str, upstream_port: int, token_file: Path,
                  token: str, cpu: str = PROXY_CPU) -> tuple[Proc, int]:
    """Any proxy given as a command template: {port} {upstream} {upstream_port} {token_file}
    {token} {python} {bench} {launch} (= python bench/_launch.py) are filled in."""
    port = free_port()
    cmd = template.format(port=port, upstream=f"http://127.0.0.1:{upstream_port}",
                          upstream_port=upstream_port, token_file=token_file, token=token,
                          python=PY, bench=BENCH, launch=f"{PY} {BENCH / '_launch.py'}")
    proc = Proc(name, shlex.split(cmd), cpu, logdir)
    wait_http(f"http://127.0.0.1:{port}/", proc, timeout=30)
    return proc, port


def find_mitmdump() -> str | None:
    """mitmdump on PATH, or in a venv of its own beside the project's (its pins clash with
    ours): `python3 -m venv .venv-mitm && .venv-mitm/bin/pip install mitmproxy`."""
    local = ROOT / ".venv-mitm" / "bin" / "mitmdump"
    return shutil.which("mitmdump") or (str(local) if local.exists() else None)


def start_mitmproxy(logdir: Path, upstream_port: int, token_file: Path,
                    cpu: str = PROXY_CPU) -> tuple[Proc, int] | str:
    """mitmdump in reverse mode with a header-setting addon; or why it cannot run."""
    mitmdump = find_mitmdump()
    if mitmdump is None:
        return ("mitmdump not found (python3 -m venv .venv-mitm && "
                ".venv-mitm/bin/pip install mitmproxy)")
    port = free_port()
    env = dict(os.environ, AUTHPROXY_BENCH_TOKEN_FILE=str(token_file))
    proc = Proc("mitmproxy", [mitmdump, "-q", "--mode", f"reverse:http://127.0.0.1:{upstream_port}",
                              "--listen-host", "127.0.0.1", "--listen-port", str(port),
                              "--set", "flow_detail=0", "-s", str(BENCH / "mitm_addon.py")],
                cpu, logdir, env=env)
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc, port


def start_node_proxy(logdir: Path, upstream_port: int, token_file: Path,
                     cpu: str = PROXY_CPU) -> tuple[Proc, int] | str:
    """node's http-proxy (bench/node_proxy.js); or why it cannot run."""
    modules = BENCH / "node" / "node_modules"
    node = shutil.which("node")
    if node is None or not (modules / "http-proxy").exists():
        return ("node or http-proxy missing (apt-get install nodejs npm; "
                "npm install --prefix bench/node http-proxy)")
    port = free_port()
    proc = Proc("node-http-proxy", [node, str(BENCH / "node_proxy.js"), str(port),
                                    f"http://127.0.0.1:{upstream_port}", str(token_file)],
                cpu, logdir, env=dict(os.environ, NODE_PATH=str(modules)))
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc, port


CADDYFILE = """\
{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    reverse_proxy 127.0.0.1:{upstream_port} {{
        header_up Authorization "{token}"
    }}
{log}}}
"""


def start_caddy(logdir: Path, upstream_port: int, token_file: Path, access_log: bool = False,
                cpu: str = PROXY_CPU) -> tuple[Proc, int] | str:
    """Debian's caddy (`reverse_proxy` with `header_up Authorization`), its access log (JSON,
    to a file) on or off; or why it cannot run. Pinned to one core, Go schedules on that one."""
    caddy = shutil.which("caddy")
    if caddy is None:
        return "caddy not found (apt-get install caddy)"
    port = free_port()
    name = "caddy-log" if access_log else "caddy"
    conf = logdir / f"{name}.Caddyfile"
    log = f"    log {{\n        output file {logdir / (name + '-access.log')}\n    }}\n" \
        if access_log else ""
    conf.write_text(CADDYFILE.format(port=port, upstream_port=upstream_port,
                                     token=token_file.read_text().strip(), log=log))
    proc = Proc(name, [caddy, "run", "--config", str(conf), "--adapter", "caddyfile"], cpu,
                logdir, env=dict(os.environ, HOME=str(logdir), XDG_DATA_HOME=str(logdir),
                                 XDG_CONFIG_HOME=str(logdir)))
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc, port


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream api {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header Authorization "{token}";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def start_nginx(logdir: Path, upstream_port: int, token: str,
                cpu: str = PROXY_CPU) -> tuple[Proc, int]:
    """Debian nginx, 1 worker, upstream keepalive, same injected header; foreground, temp dir."""
    nginx = need("nginx")
    port = free_port()
    tmp = logdir / "nginx"
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, upstream_port=upstream_port, port=port,
                                      token=token))
    proc = Proc("nginx", [nginx, "-p", str(tmp), "-c", str(conf)], cpu, logdir)
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc, port


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listening socket on `port` (the
    rx_queue of a LISTEN entry in /proc/net/tcp): a server slow to accept shows here."""
    want = f":{port:04X}"
    total = 0
    for table_ in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table_).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 4 and f[3] == "0A" and f[1].endswith(want):
                total += int(f[4].split(":")[1], 16)
    return total


WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,'
    .. '"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def wrk(url: str, connections: int, duration: float, logdir: Path, timeout: str = "10s",
        threads: int = 1, watch: list[Proc] | None = None,
        pace_ms: float = 0) -> dict[str, Any]:
    """Run wrk pinned to the load core; returns req/s, latency percentiles (ms), errors, the
    CPU seconds each watched process used during the run and the largest accept queue seen.
    `pace_ms`: each connection waits this long after each answer (wrk's Lua `delay`), so
    the offered rate is about connections / (latency + pace) instead of all a proxy can take."""
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    queue_peak = 0
    lua = logdir / (f"report-pace{pace_ms:g}.lua" if pace_ms else "report.lua")
    if not lua.exists():
        lua.write_text(WRK_LUA + (f"delay = function() return {pace_ms:g} end\n"
                                  if pace_ms else ""))
    cmd = pin(LOAD_CPU) + [need("wrk"), f"-t{threads}", f"-c{connections}",
                           f"-d{max(1, round(duration))}s", f"--timeout={timeout}",
                           "-s", str(lua), url]
    before = {p.name: p.cpu_seconds() for p in watch or []}
    busy0 = cpu_busy_seconds()
    rss_peak = {p.name: p.rss_kb() for p in watch or []}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while True:  # wait4, not poll: its rusage is wrk's own CPU time
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        for p in watch or []:
            rss_peak[p.name] = max(rss_peak[p.name], p.rss_kb())
        queue_peak = max(queue_peak, accept_queue(port))
        time.sleep(0.25)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    wall = time.monotonic() - t0
    busy = cpu_busy_seconds() - busy0
    m = re.search(r"WRKJSON (\{.*\})", out)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{out}")
    raw = json.loads(m.group(1))
    secs = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + raw["status"]
    res: dict[str, Any] = {
        "connections": connections, "duration_s": round(secs, 2),
        "requests": raw["requests"], "rps": round(raw["requests"] / secs, 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000, "mean_ms": round(raw["mean_us"] / 1000, 3),
        "errors": errors,
        "error_detail": {k: raw[k] for k in ("connect", "read", "write", "timeout", "status")
                         if raw[k]},
        "mb_per_s": round(raw["bytes"] / secs / 1e6, 1),
        "accept_queue_peak": queue_peak,
    }
    res["cpu_pct_wrk"] = round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1)
    ours = usage.ru_utime + usage.ru_stime
    if watch:
        res["cpu_s"] = {p.name: round(p.cpu_seconds() - before[p.name], 2) for p in watch}
        ours += sum(res["cpu_s"].values())
        res["cpu_pct"] = {n: round(100 * v / wall, 1) for n, v in res["cpu_s"].items()}
        res["rss_peak_mb"] = {n: round(v / 1024, 1) for n, v in rss_peak.items()}
    # CPU that other processes on the machine used meanwhile (out of 100 % per core): noise.
    res["foreign_cpu_pct"] = round(max(0.0, 100 * (busy - ours) / wall), 1)
    return res


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_quiet(max_wait: float, threshold_pct: float = 10.0, window: float = 0.5) -> float:
    """Waits (up to `max_wait` s) until the machine's CPU use over `window` is under
    `threshold_pct` of one core (our idle processes use ~0); returns the busy % last seen."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = cpu_busy_seconds()
        time.sleep(window)
        pct = 100 * (cpu_busy_seconds() - b0) / window
        if pct < threshold_pct or time.monotonic() >= deadline:
            return round(pct, 1)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _version_of(tool: str) -> str:
    """What `tool -v` says (nginx says it on stderr), or "" when the tool is not installed:
    a script that does not run it must not need it."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)
    if path is None:
        return ""
    done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    return ((done.stdout or done.stderr).strip().splitlines() or [""])[0]


def machine_info() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    import aiohttp
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__, "uvloop": have_uvloop(),
            "nginx": _version_of("nginx"),
            "wrk": _version_of("wrk"),
            "git": run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
            "git_dirty": bool(run("git", "-C", str(ROOT), "status", "--porcelain", "proxy"))}


def write_result(kind: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
