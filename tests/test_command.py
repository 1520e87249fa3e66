"""`type: command` (proxy/credentials/command.py): reading what a command prints, running it
(argv, no shell, its own process group, bounded output), and, through the real `authproxy
serve`, refresh before expiry, single flight, failures as 503s, the old value serving while
valid, the 401 rerun, and that no token, argument or output shows anywhere.

The commands are real executables: a Python script written to tmp_path that stands in for a
vault CLI, steered by files in its state directory (what to print, how to fail) and appending
one line per run to `runs`, so the tests count runs the way an operator would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cognito_fixtures import FakeClock
from conftest import AUTHPROXY, ServeProcess

from proxy.config import CommandCredential
from proxy.credentials import CredentialsUnavailable, Outgoing
from proxy.credentials.command import (
    MAX_STDOUT,
    STDERR_SHOWN,
    CommandSource,
    last_line,
    read_value,
)
from proxy.credentials.refresh import PERMANENT_HOLDOFF
from proxy.fakes.apigw import FakeApiGateway

NOW = 1_900_000_000.0
JWT_KEY = "k" * 64  # only signs test tokens; the proxy never verifies them
REQUEST = Outgoing(method="GET", host="x", raw_path="/", query="", headers=())

# Stands in for a vault CLI. argv[1] is its state directory: `out` is printed ({n}: the run's
# number), `mode` says how to misbehave, `delay` how long to think first.
VAULT = '''\
import os, pathlib, subprocess, sys, time
state = pathlib.Path(sys.argv[1])
with open(state / "runs", "a") as f:
    f.write(f"{os.getpid()} {sys.argv[2:]!r}\\n")
n = len((state / "runs").read_text().splitlines())
mode = (state / "mode").read_text().strip() if (state / "mode").exists() else "ok"
if (state / "delay").exists():
    time.sleep(float((state / "delay").read_text()))
if mode == "fail":
    print("vault: contacting https://vault.internal:8200", file=sys.stderr)
    print("Error reading secret/api: permission denied (403)", file=sys.stderr)
    sys.exit(2)
if mode == "hang":
    print("vault: waiting for the server...", file=sys.stderr, flush=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (state / "pids").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(600)
if mode == "empty":
    print("vault: no value at secret/api", file=sys.stderr)
    sys.exit(0)
sys.stdout.write((state / "out").read_text().replace("{n}", str(n)))
'''


class Vault:
    """One fake vault: its script, its state directory, and what the tests read back."""

    def __init__(self, tmp_path: Path, name: str = "vault", out: str = "tok-{n}-Zq9xW2") -> None:
        self.state = tmp_path / f"{name}-state"
        self.state.mkdir()
        self.path = tmp_path / f"{name}.py"
        write_script(self.path, VAULT)
        self.set(out=out)

    def argv(self, *extra: str) -> list[str]:
        return [str(self.path), str(self.state), *extra]

    def set(self, **files: str) -> None:
        for name, text in files.items():
            (self.state / name).write_text(text)

    def runs(self) -> int:
        path = self.state / "runs"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def pids(self) -> list[int]:
        path = self.state / "pids"
        return [int(p) for p in path.read_text().split()] if path.exists() else []


def write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def make_jwt(exp: float) -> str:
    return jwt.encode({"sub": "svc", "exp": int(exp)}, JWT_KEY, algorithm="HS256")


def alive(pid: int) -> bool:
    """Running (a zombie left for a non-reaping init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def cred_yaml(name: str, argv: list[str], **keys: object) -> str:
    lines = [f"  {name}:", "    type: command", f"    command: {json.dumps(argv)}"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def config(upstream: str, creds: dict[str, tuple[list[str], dict[str, object]]],
           extra: str = "") -> str:
    """One endpoint /<name> per credential."""
    text = "credentials:\n" + "".join(cred_yaml(n, a, **k) for n, (a, k) in creds.items())
    text += "endpoints:\n" + "".join(
        f'  - {{name: {n}, endpoint: "{upstream}/Development", auth: {n}}}\n' for n in creds)
    return text + extra


def sent_auth(body: bytes, header: str = "Authorization") -> str | None:
    return dict(json.loads(body)["headers"]).get(header)


def command_config(argv: list[str], **keys: Any) -> CommandCredential:
    return CommandCredential(name="vault", command=tuple(argv), **keys)


# --- what the command printed ----------------------------------------------------------------

def test_text_is_stdout_trimmed_and_kept_for_ttl() -> None:
    v = read_value("  s3cr3t-value \n", "text", 300, NOW)
    assert v.token.reveal() == "s3cr3t-value"
    assert (v.expires_at, v.expiry_from) == (NOW + 300, "ttl")
    assert "s3cr3t" not in repr(v)  # held as a Secret


def test_a_jwt_exp_counts_as_the_expiry() -> None:
    token = make_jwt(NOW + 1234)
    v = read_value(token + "\n", "text", 300, NOW)
    assert v.token.reveal() == token and (v.expires_at, v.expiry_from) == (NOW + 1234, "JWT exp")
    v = read_value(json.dumps({"token": token}), "json", 300, NOW)
    assert (v.expires_at, v.expiry_from) == (NOW + 1234, "JWT exp")


def test_kubernetes_exec_credential() -> None:
    doc = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
           "status": {"token": "k8s-token-abc", "expirationTimestamp": "2031-03-04T05:06:07Z"}}
    v = read_value(json.dumps(doc), "json", 300, NOW)
    assert v.token.reveal() == "k8s-token-abc"
    assert v.expires_at == dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC).timestamp()
    assert v.expiry_from == "status.expirationTimestamp"
    del doc["status"]["expirationTimestamp"]  # type: ignore[attr-defined]
    assert read_value(json.dumps(doc), "json", 300, NOW).expiry_from == "ttl"


@pytest.mark.parametrize(("expires_at", "epoch"), [
    ("2031-03-04T05:06:07Z", dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.UTC).timestamp()),
    ("2031-03-04T07:06:07.250+02:00",
     dt.datetime(2031, 3, 4, 5, 6, 7, 250000, tzinfo=dt.UTC).timestamp()),
    (1_900_000_600, 1_900_000_600.0),
    (1_900_000_600.5, 1_900_000_600.5),
    ("1900000600", 1_900_000_600.0),
])
def test_token_with_expires_at(expires_at: object, epoch: float) -> None:
    v = read_value(json.dumps({"token": "t0ken", "expires_at": expires_at}), "json", 300, NOW)
    assert v.token.reveal() == "t0ken" and (v.expires_at, v.expiry_from) == (epoch, "expires_at")


def test_token_with_expires_in_and_the_earliest_expiry_wins() -> None:
    v = read_value('{"token": "t0ken", "expires_in": 90}', "json", 300, NOW)
    assert (v.expires_at, v.expiry_from) == (NOW + 90, "expires_in")
    token = make_jwt(NOW + 60)
    v = read_value(json.dumps({"token": token, "expires_in": 90}), "json", 300, NOW)
    assert (v.expires_at, v.expiry_from) == (NOW + 60, "JWT exp")


@pytest.mark.parametrize(("fmt", "out", "expected"), [
    ("text", " \n\n", "printed nothing"),
    ("json", "", "printed nothing"),
    ("text", "line-one-SECRET\nline-two-SECRET\n", "2 lines"),
    ("text", "tab\tinside-SECRET", "characters a header cannot carry"),
    ("text", "caf\u00e9-SECRET", "characters a header cannot carry"),
    ("json", '{"token": "SECRET", ', "invalid JSON (Expecting"),
    ("json", '["SECRET"]', "JSON that is a list"),
    ("json", '{"access_token": "SECRET"}', 'without a "token" string'),
    ("json", '{"kind": "ExecCredential", "status": {"clientCertificateData": "SECRET"}}',
     "without status.token"),
    ("json", '{"token": "SECRET", "expires_at": "2031-03-04T05:06:07"}', "without a time zone"),
    ("json", '{"token": "SECRET", "expires_at": "soon"}', "not an RFC 3339"),
    ("json", '{"token": "SECRET", "expires_at": 1900000600000}', "milliseconds"),
    ("json", '{"token": "SECRET", "expires_in": "90"}', "expires_in as a string"),
    ("json", '{"token": "SECRET", "expires_at": 1899999000}', "expired 16m 40s ago"),
    ("text", make_jwt(NOW - 10), "expired 10s ago (by its JWT exp)"),
])
def test_unusable_output_is_refused_without_quoting_it(fmt: str, out: str,
                                                       expected: str) -> None:
    with pytest.raises(ValueError) as e:
        read_value(out, fmt, 300, NOW)
    assert expected in str(e.value)
    assert "SECRET" not in str(e.value) and "eyJ" not in str(e.value)


def test_stderr_last_line_is_bounded_printable_and_blanks_arguments_and_output() -> None:
    tail = b"first\nError: login as alice failed with --password=arg-secret-1234 for " \
           b"stdout-secret-5678 \x1b[31mred\n\n"
    line = last_line(tail, ["read", "--password=arg-secret-1234", "stdout-secret-5678"])
    assert line == "Error: login as alice failed with *** for *** ?[31mred"
    assert last_line(b"\n  \n", []) is None
    long = last_line(b"x" * 10_000, [])
    assert long is not None and len(long) == STDERR_SHOWN + 1 and long.endswith("…")


# --- running it, in process ------------------------------------------------------------------

async def get(source: CommandSource) -> str:
    headers = source.current() or await source.headers_for(REQUEST)
    return dict(headers)[source.header_name]


async def unavailable(source: CommandSource) -> str:
    with pytest.raises(CredentialsUnavailable) as e:
        await source.headers_for(REQUEST)
    return str(e.value)


async def test_stdin_is_dev_null_and_the_value_becomes_the_header(tmp_path: Path) -> None:
    # A command that reads stdin (a prompt) must get EOF at once, not hang on the proxy's stdin.
    script = write_script(tmp_path / "stdin.py", '''\
import os, sys
sys.stdin.read()
same = os.path.samestat(os.fstat(0), os.stat("/dev/null"))
print("tok-devnull" if same else "tok-inherited")
''')
    src = CommandSource(command_config([str(script)], prefix="Bearer ", header="X-Token",
                                       timeout=5))
    # Our own stdin made a pipe that never ends, whatever pytest was started with: a command
    # that inherited it would hang until its timeout.
    saved, (read_end, write_end) = os.dup(0), os.pipe()
    os.dup2(read_end, 0)
    try:
        await src.start(None)  # it needs no HTTP session
        assert await get(src) == "Bearer tok-devnull"
        first = src.current()
        assert first is not None and src.current() is first  # a lookup, built once
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
        await src.close()


async def test_killed_by_a_signal_is_named(tmp_path: Path) -> None:
    script = write_script(tmp_path / "die.py", "import os, signal\n"
                          "os.kill(os.getpid(), signal.SIGTERM)\n")
    src = CommandSource(command_config([str(script), "x"]))
    await src.start(None)
    try:
        message = await unavailable(src)
        assert f"command {script} (+1 arg) was killed by SIGTERM; stderr was empty" in message
    finally:
        await src.close()


async def test_output_over_the_bound_is_refused_and_the_command_killed(tmp_path: Path) -> None:
    script = write_script(tmp_path / "flood.py", f'''\
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
sys.stdout.write("A" * {MAX_STDOUT + 10})
sys.stdout.flush()
time.sleep(600)
''')
    pid_file = tmp_path / "pid"
    src = CommandSource(command_config([str(script), str(pid_file)], timeout=30))
    started = time.monotonic()
    await src.start(None)
    try:
        message = await unavailable(src)
        assert "printed more than 1024 KiB on stdout (killed)" in message
        assert time.monotonic() - started < 10  # not left to run into its timeout
        assert not alive(int(pid_file.read_text()))
        assert "AAAA" not in message
    finally:
        await src.close()


async def test_a_missing_program_is_not_retried_until_it_appears(tmp_path: Path) -> None:
    clock = FakeClock()
    later = tmp_path / "later.py"
    src = CommandSource(command_config([str(later)]), clock=clock)
    assert "NOT FOUND on PATH" in src.describe().summary
    await src.start(None)
    try:
        assert "failed: not found (is it installed" in await unavailable(src)
        runs = src.runs
        assert src.status()["fetches"]["permanent_error"] == 1
        for _ in range(3):  # every request in the hold-off gets the error, nothing is run
            assert "not found" in await unavailable(src)
        assert src.runs == runs
        later.write_text("print('tok-1')\n")  # there, but not executable: still refused
        assert "permission denied (is it executable?)" in await unavailable(src)
        runs = src.runs
        assert "permission denied" in await unavailable(src) and src.runs == runs
        later.chmod(0o755)  # a script without #!: ENOEXEC, also not a loop
        assert "not a program the system can run" in await unavailable(src)
        runs = src.runs
        assert "not a program" in await unavailable(src) and src.runs == runs
        write_script(later, "print('tok-1')\n")  # fixed: the next request runs it at once
        os.utime(later, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        assert clock.now < 1000 + PERMANENT_HOLDOFF  # long before the hold-off would end
        assert await get(src) == "tok-1"
        assert "NOT FOUND" not in src.describe().summary
    finally:
        await src.close()


async def test_closing_kills_a_run_in_flight(tmp_path: Path) -> None:
    vault = Vault(tmp_path)
    vault.set(mode="hang")
    src = CommandSource(command_config(vault.argv(), timeout=60))
    await src.start(None)
    pids = await asyncio.to_thread(wait_until, lambda: len(vault.pids()) == 2 and vault.pids())
    assert all(alive(p) for p in pids)
    await src.close()
    await asyncio.to_thread(wait_until, lambda: not any(alive(p) for p in pids), 5)


async def test_describe_and_status_name_the_program_never_the_arguments(tmp_path: Path) -> None:
    vault = Vault(tmp_path, out='{"token": "tok-{n}-Zq9xW2", "expires_in": 600}')
    src = CommandSource(command_config(vault.argv("--password=arg-secret-0123456789"),
                                       format="json", prefix="Bearer "))
    described = src.describe()
    assert described.type == "command" and described.refreshed and described.prefix == "Bearer "
    assert f"command {vault.path} (+2 args), json output as Authorization: Bearer <value>" \
        in described.summary
    assert described.headers == (("Authorization", f"Bearer <output of {vault.path}>"),)
    await src.start(None)
    try:
        await get(src)
        status = src.status()
        assert status["command"] == str(vault.path) and status["args"] == 2
        assert status["state"] == "ready" and status["runs"] == 1 and status["last_exit"] == 0
        assert status["expiry_from"] == "expires_in" and 590 < status["expires_in"] <= 600
        assert status["last_run_at"] and status["last_run_seconds"] is not None
        shown = json.dumps(status) + repr(described)
        for secret in ("arg-secret-0123456789", str(vault.state), "Zq9xW2"):
            assert secret not in shown
    finally:
        await src.close()


# --- through the real `authproxy serve` ------------------------------------------------------

@pytest.mark.e2e
def test_every_output_shape_through_serve(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    now = time.time()
    exp_jwt = make_jwt(now + 1000)
    at = dt.datetime.fromtimestamp(int(now) + 2000, dt.UTC)
    shapes: dict[str, tuple[str, str, dict[str, object], str, float]] = {
        # name: (stdout, the header expected upstream, keys, expiry_from, expires_in)
        "text": ("  tok-text-1  \n", "Bearer tok-text-1", {"prefix": "Bearer "}, "ttl", 300),
        "textjwt": (exp_jwt + "\n", exp_jwt, {}, "JWT exp", 1000),
        "exec": (json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
                             "kind": "ExecCredential", "status": {
                                 "token": "tok-k8s", "expirationTimestamp":
                                     at.strftime("%Y-%m-%dT%H:%M:%SZ")}}),
                 "tok-k8s", {"format": "json"}, "status.expirationTimestamp", 2000),
        "atz": (json.dumps({"token": "tok-z", "expires_at": at.isoformat()}), "tok-z",
                {"format": "json"}, "expires_at", 2000),
        "atoffset": (json.dumps({"token": "tok-o", "expires_at": at.astimezone(
            dt.timezone(dt.timedelta(hours=-5))).isoformat()}), "tok-o",
            {"format": "json"}, "expires_at", 2000),
        "atepoch": (json.dumps({"token": "tok-e", "expires_at": int(now) + 2000}), "tok-e",
                    {"format": "json"}, "expires_at", 2000),
        "expiresin": ('{"token": "tok-i", "expires_in": 1500}', "tok-i", {"format": "json"},
                      "expires_in", 1500),
        "jsonttl": ('{"token": "tok-t"}', "tok-t", {"format": "json", "ttl": 700}, "ttl", 700),
        "jsonjwt": (json.dumps({"token": exp_jwt, "expires_in": 5000}), exp_jwt,
                    {"format": "json"}, "JWT exp", 1000),
        "header": ("tok-h", "tok-h", {"header": "X-Vault-Token"}, "ttl", 300),
    }
    creds = {}
    for name, (out, _, keys, _, _) in shapes.items():
        vault = Vault(tmp_path, name, out)
        creds[name] = (vault.argv(), keys)
    sp = serve(config(threaded_apigw.url, creds))
    for name, (_, expected, keys, _, _) in shapes.items():
        status, _, body = sp.get(f"/{name}/items")
        assert status == 200, (name, body)
        assert sent_auth(body, str(keys.get("header", "Authorization"))) == expected, name
    status, _, body = sp.get("/_authproxy/readyz")
    assert status == 200, body
    ready = json.loads(body)["credentials"]
    for name, (_, _, _, origin, expires_in) in shapes.items():
        assert ready[name]["expiry_from"] == origin, name
        assert expires_in - 30 < ready[name]["expires_in"] <= expires_in, name
    assert sp.stop() == 0


@pytest.mark.e2e
def test_the_proxy_environment_is_passed_and_shell_syntax_runs_nothing(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    script = write_script(tmp_path / "args.py", '''\
import json, os, sys
open(sys.argv[1], "w").write(json.dumps(sys.argv[2:]))
print(os.environ["VAULT_TOKEN_FOR_TEST"])
''')
    hostile = [f"; touch {tmp_path}/PWNED1", f"$(touch {tmp_path}/PWNED2)",
               f"`touch {tmp_path}/PWNED3`", f"| touch {tmp_path}/PWNED4",
               f"&& touch {tmp_path}/PWNED5", "*", "$HOME"]
    argv_file = tmp_path / "argv.json"
    sp = serve(config(threaded_apigw.url, {"cmd": ([str(script), str(argv_file), *hostile],
                                                   {})}),
               env={"VAULT_TOKEN_FOR_TEST": "env-token-4711"})
    status, _, body = sp.get("/cmd/items")
    assert status == 200, body
    assert sent_auth(body) == "env-token-4711"
    assert json.loads(argv_file.read_text()) == hostile  # each argument arrived as written
    assert not list(tmp_path.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    assert sp.stop() == 0


@pytest.mark.e2e
def test_cold_start_100_concurrent_requests_run_the_command_once(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    vault = Vault(tmp_path)
    vault.set(delay="1.5")  # long enough for every request to arrive while it runs
    sp = serve(config(threaded_apigw.url, {"vault": (vault.argv(), {"timeout": 20})}))
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda _: sp.get("/vault/items", timeout=20), range(100)))
    assert [status for status, _, _ in results] == [200] * 100
    assert {sent_auth(body) for _, _, body in results} == {"tok-1-Zq9xW2"}
    assert vault.runs() == 1
    assert sp.stop() == 0


@pytest.mark.e2e
def test_a_short_lived_value_is_renewed_before_it_expires_under_steady_load(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    ttl, margin, duration = 3.0, 1.5, 9.0
    vault = Vault(tmp_path)
    sp = serve(config(threaded_apigw.url, {"vault": (vault.argv(), {
        "ttl": ttl, "refresh_margin": margin})}))
    started = time.monotonic()
    seen: dict[str, list[float]] = {}  # token -> when it was used (first, last)
    failures = []
    while time.monotonic() - started < duration:
        status, _, body = sp.get("/vault/items")
        if status != 200:
            failures.append((status, body))
            continue
        token = sent_auth(body)
        assert token is not None
        at = time.monotonic() - started
        seen.setdefault(token, [at, at])[1] = at
        time.sleep(0.01)
    assert not failures, failures
    # A new value every ttl - margin seconds (once per lifetime, early), give or take the run.
    expected = 1 + duration / (ttl - margin)
    assert expected - 2 <= vault.runs() <= expected + 1, vault.runs()
    assert len(seen) >= vault.runs() - 1  # each new value was used
    for token, (first, last) in seen.items():
        assert last - first < ttl, (token, first, last)  # never sent after its lifetime
    assert sp.stop() == 0
    assert "more than half the lifetime" not in sp.log()


@pytest.mark.e2e
def test_a_failing_refresh_serves_the_old_value_until_it_expires_then_503(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    vault = Vault(tmp_path)
    sp = serve(config(threaded_apigw.url, {"vault": (vault.argv(), {
        "ttl": 4, "refresh_margin": 3})}))
    status, _, body = sp.get("/vault/items")
    assert status == 200 and sent_auth(body) == "tok-1-Zq9xW2"
    ready = json.loads(sp.get("/_authproxy/readyz")[2])["credentials"]["vault"]
    expires = time.monotonic() + ready["expires_in"]
    vault.set(mode="fail")

    def refresh_failed() -> bool:
        return bool(json.loads(sp.get("/_authproxy/api/credentials")[2])["vault"]["last_error"])
    wait_until(refresh_failed, 5)
    answers = []
    while True:
        status, headers, body = sp.get("/vault/items")
        answers.append((time.monotonic(), status))
        if status != 200:
            break
        assert sent_auth(body) == "tok-1-Zq9xW2"  # the old value, while valid
        assert time.monotonic() < expires + 1
        time.sleep(0.05)
    assert len(answers) > 1  # served after the refresh had failed
    assert answers[-1][0] > expires - 1.5  # the 503s start only as the value runs out
    assert status == 503 and headers["X-Authproxy-Error"] == "credentials_unavailable"
    message = json.loads(body)["message"]
    assert f"command {vault.path} (+1 arg) exited with status 2" in message
    assert "stderr: Error reading secret/api: permission denied (403)" in message
    ready_body = sp.get("/_authproxy/readyz")
    assert ready_body[0] == 503 and "permission denied" in json.loads(ready_body[2])["reason"]
    # Transient: once the vault works again the backoff brings the credential back.
    vault.set(mode="ok")
    wait_until(lambda: sp.get("/vault/items")[0] == 200, 40)
    assert sp.stop() == 0


@pytest.mark.e2e
def test_failing_hanging_and_empty_commands_answer_503_within_timeout(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    vaults = {name: Vault(tmp_path, name) for name in ("fail", "hang", "empty")}
    for name, vault in vaults.items():
        vault.set(mode=name)
    timeout = 1.5
    sp = serve(config(threaded_apigw.url, {n: (v.argv(), {"timeout": timeout})
                                           for n, v in vaults.items()}))
    expected = {
        "fail": "exited with status 2; stderr: Error reading secret/api: permission denied",
        "hang": f"timed out after {timeout:g} s (its process group was killed); "
                "stderr: vault: waiting for the server...",
        "empty": "printed nothing on stdout; stderr: vault: no value at secret/api",
    }
    for name, vault in vaults.items():
        for _ in range(2):  # the first joins the run at start, the second finds the backoff
            started = time.monotonic()
            status, headers, body = sp.get(f"/{name}/items", timeout=timeout + 10)
            assert time.monotonic() - started < timeout + 1.5, name
            assert status == 503 and headers["X-Authproxy-Error"] == "credentials_unavailable"
            message = json.loads(body)["message"]
            assert f"command {vault.path} (+1 arg) {expected[name]}" in message, message
    pids = vaults["hang"].pids()
    assert len(pids) == 2  # the script and the child it started
    wait_until(lambda: not any(alive(p) for p in pids), 5)
    assert sp.get("/_authproxy/healthz")[0] == 200 and sp.proc.poll() is None
    assert sp.stop() == 0


@pytest.mark.e2e
def test_an_upstream_401_reruns_the_command_once(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    vault = Vault(tmp_path)
    sp = serve(config(threaded_apigw.url, {"vault": (vault.argv(), {"prefix": "Bearer "})}))
    assert sent_auth(sp.get("/vault/a")[2]) == "Bearer tok-1-Zq9xW2"
    threaded_apigw.reject.add("Bearer tok-1-Zq9xW2")  # as if it had been revoked
    status, _, body = sp.get("/vault/b")
    assert status == 200 and sent_auth(body) == "Bearer tok-2-Zq9xW2"
    assert vault.runs() == 2
    tries = [s.header("Authorization") for s in threaded_apigw.seen
             if s.raw_path == "/Development/b"]
    assert tries == ["Bearer tok-1-Zq9xW2", "Bearer tok-2-Zq9xW2"]
    # Refused again at once: no second rerun (the API refuses fresh values), the 401 goes back.
    threaded_apigw.reject.add("Bearer tok-2-Zq9xW2")
    assert sp.get("/vault/c")[0] == 401
    assert vault.runs() == 2
    assert sp.stop() == 0


@pytest.mark.e2e
def test_no_token_argument_or_output_shows_anywhere(
        tmp_path: Path, threaded_apigw: FakeApiGateway,
        serve: Callable[..., ServeProcess]) -> None:
    arg_secret, out_secret = "arg-secret-0123456789", "stdout-secret-9876543210"
    token = "tok-very-secret-value-31337"
    jwt_token = make_jwt(time.time() + 900)
    good = Vault(tmp_path, "good", token)
    jwt_vault = Vault(tmp_path, "jwt", jwt_token)
    leaky = write_script(tmp_path / "leaky.py", f'''\
import sys
print("{out_secret}")
print("partial {out_secret} output")
print("vault: login failed for --password={arg_secret} ({out_secret})", file=sys.stderr)
sys.exit(1)
''')
    text = config(threaded_apigw.url, {
        "good": (good.argv(f"--password={arg_secret}"), {"prefix": "Bearer "}),
        "jwt": (jwt_vault.argv(), {}),
        "leaky": ([str(leaky), f"--password={arg_secret}"], {}),
    }, extra="logging:\n  log_headers: true\n")
    sp = serve(text, "--log-level", "debug")
    shown: list[str] = []
    for path in ("/good/items?x=1", "/jwt/items", "/leaky/items"):
        status, headers, body = sp.get(path)
        shown.append(json.dumps(headers) + (body.decode() if status != 200 else ""))
        assert status == (503 if path.startswith("/leaky") else 200), body
    leaked = shown[-1]
    # the argument and stdout's line blanked out of the stderr line that quoted them
    assert f"command {leaky} (+1 arg) exited with status 1; stderr: vault: login failed for " \
           "*** (***)" in leaked
    for page in ("readyz", "metrics", "api/credentials", "api/exchanges", ""):
        status, _, body = sp.get(f"/_authproxy/{page}")
        assert status in (200, 503), page
        shown.append(body.decode())
    credentials = json.loads(shown[-3])
    assert credentials["good"]["command"] == str(good.path) and credentials["good"]["args"] == 2
    assert credentials["jwt"]["token"]["claims"]["sub"] == "svc"  # claims, not the token
    cfg = Path(str(sp.proc.args[3]))  # type: ignore[index]
    for args in (["check"], ["explain", "/good/x"], ["explain", "/leaky/x"]):
        result = subprocess.run([AUTHPROXY, *args, "-c", str(cfg)], capture_output=True,
                                text=True, timeout=30)
        shown.append(result.stdout + result.stderr)
    assert sp.stop() == 0
    shown.append(sp.log())
    assert "running command" in sp.log() and "DEBUG" in sp.log().upper()  # debug was on
    everything = "\n".join(shown)
    for secret in (token, arg_secret, out_secret, jwt_token, jwt_token.split(".")[2],
                   str(good.state)):
        assert secret not in everything, secret


# --- the fake vault itself -------------------------------------------------------------------

def test_the_fake_vault_counts_runs_and_fails_as_told(tmp_path: Path) -> None:
    vault = Vault(tmp_path)
    ok = subprocess.run(vault.argv(), capture_output=True, text=True, timeout=30)
    assert ok.stdout == "tok-1-Zq9xW2" and vault.runs() == 1
    vault.set(mode="fail")
    failed = subprocess.run(vault.argv(), capture_output=True, text=True, timeout=30)
    assert failed.returncode == 2 and failed.stdout == "" and vault.runs() == 2



@pytest.mark.e2e
def test_the_demo_shows_a_command_credential() -> None:
    result = subprocess.run([AUTHPROXY, "demo", "--once", "--port", "0"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = result.stdout.partition("[command]")[2].partition("\n\n")[0]
    assert "API Gateway saw GET /Development/hello?demo=1 with Authorization: Bearer ***(" in shown
    assert "demo-command-token-not-a-real-secret" not in result.stdout + result.stderr
