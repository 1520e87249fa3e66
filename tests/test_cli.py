"""The command line as a user runs it: real `authproxy` processes, exit codes, stdout/stderr."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import AUTHPROXY, ServeProcess, start_serve

from proxy.fakes.apigw import FakeApiGateway

TOKEN = "e2e-static-token-abcdef0123456789"


def run(*args: str, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTHPROXY, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, input=input)


def config(url: str, extra: str = "") -> str:
    return f"""
credentials:
  tok: {{type: static, value: "${{E2E_TOKEN:-{TOKEN}}}"}}
endpoints:
  - name: api
    endpoint: {url}/Development
    auth: tok
  - name: open
    endpoint: {url}/Development
{extra}"""


Serve = Callable[..., ServeProcess]


@pytest.mark.e2e
def test_serve_forwards_with_the_static_header_and_stops_cleanly(
        threaded_apigw: FakeApiGateway, serve: Serve) -> None:
    sp = serve(config(threaded_apigw.url))
    status, headers, body = sp.get("/api/items?x=1")
    assert status == 200
    echo = json.loads(body)
    assert echo["raw_path"] == "/Development/items?x=1"
    assert dict(echo["headers"])["Authorization"] == TOKEN
    status, _, body = sp.get("/open/items")
    assert status == 200 and "Authorization" not in dict(json.loads(body)["headers"])
    status, _, body = sp.get("/_authproxy/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert sp.stop(signal.SIGTERM) == 0
    log = sp.log()
    assert '"GET /api/items" api 200' in log and "stopped" in log
    assert TOKEN not in log and "Traceback" not in log


# Libraries `serve` must not import for a config of static values (issue 15: a cold start
# under 250 ms): aiohttp and PyJWT (Cognito), cryptography (token_cache), botocore (iam's
# `source: aws`), redis (token_cache), prometheus_client (until /metrics is scraped).
NOT_FOR_STATIC = ("aiohttp", "jwt", "cryptography", "botocore", "redis", "prometheus_client")


@pytest.mark.e2e
def test_serve_with_static_values_imports_none_of_the_heavy_libraries(
        threaded_apigw: FakeApiGateway, tmp_path: Path) -> None:
    # The CLI's own main, as the `authproxy` script runs it, with a hook that writes down
    # sys.modules as the process exits: after it served a proxied request and the admin
    # answers a probe reads, and after a clean stop, so what those import counts as well.
    modules = tmp_path / "modules.txt"
    launcher = [sys.executable, "-c",
                "import atexit, sys\n"
                f"atexit.register(lambda: open({str(modules)!r}, 'w').write("
                "'\\n'.join(sorted(sys.modules))))\n"
                "from proxy.cli import main\n"
                "sys.exit(main())\n"]
    path = tmp_path / "static.yaml"
    path.write_text(config(threaded_apigw.url))
    sp = start_serve(path, launcher=launcher)
    try:
        status, _, body = sp.get("/api/items")
        assert status == 200 and dict(json.loads(body)["headers"])["Authorization"] == TOKEN
        assert sp.get("/_authproxy/healthz")[0] == 200
        assert sp.get("/_authproxy/readyz")[0] == 200
    finally:
        assert sp.stop(signal.SIGTERM) == 0, sp.log()
    loaded = modules.read_text().split()
    assert "proxy.credentials.static" in loaded  # (the hook saw the server's modules)
    heavy = sorted({m.split(".")[0] for m in loaded} & set(NOT_FOR_STATIC))
    assert heavy == [], f"authproxy serve (static values only) imported {heavy}"


@pytest.mark.e2e
def test_serve_json_logs_and_env_overrides(threaded_apigw: FakeApiGateway, serve: Serve) -> None:
    sp = serve(config(threaded_apigw.url), env={"AUTHPROXY_LOG_FORMAT": "json"})
    sp.get("/api/x")
    sp.stop()
    lines = [json.loads(line) for line in sp.log().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "authproxy.access"]
    assert access and access[0]["endpoint"] == "api" and access[0]["status"] == 200


@pytest.mark.e2e
def test_serve_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("endpoints:\n  - name: api\n    endpoint: nope\n    auth: tok\n")
    result = run("serve", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:3: endpoints[0].endpoint: must be an http(s) URL" in result.stderr
    assert f"{path}:4: endpoints[0].auth: unknown credential 'tok'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_config_path_from_environment_and_missing_default(tmp_path: Path,
                                                          threaded_apigw: FakeApiGateway) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(config(threaded_apigw.url))
    result = run("check", env={"AUTHPROXY_CONFIG": str(path)})
    assert result.returncode == 0 and str(path) in result.stdout
    result = subprocess.run([AUTHPROXY, "check"], capture_output=True, text=True, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "AUTHPROXY_CONFIG"})
    assert result.returncode == 2 and "config/proxy.yaml" in result.stderr


@pytest.mark.e2e
def test_busy_port_is_a_clear_error(threaded_apigw: FakeApiGateway, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        path = tmp_path / "p.yaml"
        path.write_text(config(threaded_apigw.url))
        result = run("serve", "-c", str(path), "--port", str(s.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr and "--port" in result.stderr


@pytest.mark.e2e
def test_sigterm_drains_a_slow_request(threaded_apigw: FakeApiGateway, serve: Serve) -> None:
    sp = serve(config(threaded_apigw.url))
    result: dict[str, object] = {}

    def slow() -> None:
        result["status"], _, _ = sp.get("/api/slow", {"X-Fake-Delay": "2"})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.7)
    sp.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # no longer accepting: refused, not left hanging
        sp.get("/api/late", timeout=3)
    t.join(10)
    assert result["status"] == 200
    assert sp.proc.wait(10) == 0


@pytest.mark.e2e
def test_sighup_reload_applies_valid_and_rejects_invalid(threaded_apigw: FakeApiGateway,
                                                        serve: Serve, tmp_path: Path) -> None:
    sp = serve(config(threaded_apigw.url))
    path = Path(sp.proc.args[3])  # type: ignore[index]
    path.write_text(config(threaded_apigw.url, extra=f"""
  - name: added
    endpoint: {threaded_apigw.url}/Development
"""))
    sp.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "config reloaded" not in sp.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sp.get("/added/x")[0] == 200
    path.write_text("endpoints: [oops\n")
    sp.proc.send_signal(signal.SIGHUP)
    while "reload failed" not in sp.log() and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert "reload failed; the previous config keeps serving" in sp.log()
    assert sp.get("/added/x")[0] == 200
    assert sp.stop() == 0


def test_check_prints_a_redacted_summary(tmp_path: Path, threaded_apigw: FakeApiGateway) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(config(threaded_apigw.url))
    result = run("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "api" in result.stdout and "/Development" in result.stdout
    assert f"***({len(TOKEN)} chars)" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_check_reports_three_mistakes_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text("""\
listen:
  port: eighty
credentials:
  user: {type: static, value: x}
endpoints:
  - name: api
    endpoint: https://x.example
    auth: usr
    clientheader: keep
""")
    result = run("check", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:3] == [
        f"{path}:2: listen.port: must be an integer, got a string 'eighty'",
        f"{path}:8: endpoints[0].auth: unknown credential 'usr' (did you mean 'user'?)",
        f"{path}:9: endpoints[0].clientheader: unknown key (did you mean 'client_header'?)",
    ]
    assert "3 problems" in result.stderr


def test_check_format_json_gives_each_problem_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text("listen:\n  port: eighty\ncredentials:\n  user: {type: static, value: x}\n"
                    "endpoints:\n  - {name: api, endpoint: 'https://x.example', auth: usr}\n")
    result = run("check", "--format", "json", "-c", str(path))
    assert result.returncode == 2 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["file"] == str(path)
    assert doc["problems"] == [
        {"file": str(path), "line": 2, "path": "listen.port",
         "message": "must be an integer, got a string 'eighty'"},
        {"file": str(path), "line": 6, "path": "endpoints[0].auth",
         "message": "unknown credential 'usr' (did you mean 'user'?)"}]
    # the same problems as the text form, which names them file:line: path: message
    text = run("check", "-c", str(path)).stderr.splitlines()
    assert [f"{p['file']}:{p['line']}: {p['path']}: {p['message']}"
            for p in doc["problems"]] == text[:2]

    missing = run("check", "--format", "json", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    problem, = json.loads(missing.stdout)["problems"]
    assert problem["line"] is None and "cannot read config file" in problem["message"]


def test_check_format_json_describes_a_valid_file_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(f"credentials:\n  tok: {{type: static, value: {TOKEN}}}\n"
                    "endpoints:\n  - {name: api, endpoint: 'https://x.example/dev', auth: tok}\n"
                    "  - {name: open, endpoint: 'https://y.example'}\n"
                    "cors: {allow_origins: ['*']}\n")
    result = run("check", "--format", "json", "-c", str(path))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert [(e["name"], e["prefix"], e["auth"]) for e in doc["endpoints"]] == [
        ("api", "/api", "tok"), ("open", "/open", None)]
    cred, = doc["credentials"]
    assert cred["name"] == "tok" and cred["type"] == "static" and cred["used"] is True
    assert len(doc["warnings"]) == 1 and "*" in doc["warnings"][0]
    assert TOKEN not in result.stdout


def test_explain_shows_the_decision(tmp_path: Path, threaded_apigw: FakeApiGateway) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(config(threaded_apigw.url, extra="cors: {allow_origins: [http://app.test:3000]}\n"))
    result = run("explain", "-c", str(path), "-X", "POST", "-H", "Cookie: a=1",
                 "-H", "Origin: http://app.test:3000", "/api/items?x=1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "endpoint: api (matched by longest prefix /api)" in out
    assert f"upstream: POST {threaded_apigw.url}/Development/items?x=1" in out
    assert "+ Authorization: ***(" in out and TOKEN not in out
    assert "Origin http://app.test:3000 allowed" in out
    full = run("explain", "-c", str(path), "http://localhost:8080/open/x")
    assert full.returncode == 0 and "endpoint: open" in full.stdout
    assert "credential: none" in full.stdout
    miss = run("explain", "-c", str(path), "/nowhere")
    assert miss.returncode == 3 and "NO MATCH" in miss.stdout
    evil = run("explain", "-c", str(path), "-H", "Origin: http://evil.test", "/api/x")
    assert evil.returncode == 4 and "origin_not_allowed" in evil.stdout
    assert "endpoint: api" in evil.stdout and "fix: add 'http://evil.test'" in evil.stdout


def _jwt(claims: dict[str, object]) -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'RS256', 'kid': 'k1'})}.{b64(claims)}.c2lnbmF0dXJl"


def test_decode_prints_claims_with_human_times() -> None:
    now = int(time.time())
    token = _jwt({"sub": "abc", "token_use": "id", "iat": now - 60, "exp": now + 3000})
    result = run("decode", token)
    assert result.returncode == 0
    assert '"token_use": "id"' in result.stdout and '"kid": "k1"' in result.stdout
    assert "expires in 49m" in result.stdout and "UTC" in result.stdout
    assert "c2lnbmF0dXJl" not in result.stdout  # never the signature
    expired = run("decode", f"Bearer {_jwt({'exp': now - 7200})}")
    assert expired.returncode == 0 and "EXPIRED 2h ago" in expired.stdout
    bad = run("decode", "not-a-jwt")
    assert bad.returncode == 2 and "not a JWT" in bad.stderr


@pytest.mark.e2e
def test_demo_once_shows_each_strategy(tmp_path: Path) -> None:
    home = dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    first = run("demo", "--once", "--port", "0", env=home)
    assert first.returncode == 0, first.stderr
    result = run("demo", "--once", "--port", "0", env=home)
    assert result.returncode == 0, result.stderr
    # Each run keeps its token cache to itself: nothing of the first (its guest identity, made
    # by fakes that are gone) is seen by the second, nor left in the user's own cache.
    assert "refused" not in result.stdout + result.stderr
    assert not (tmp_path / "cache").exists()
    out = result.stdout
    assert "[static]" in out and "[public]" in out and "[cognito]" in out
    assert "Authorization: Bearer eyJhbGci…(" in out and "token_use=id" in out
    assert "/_authproxy/" in out
    assert "API Gateway saw GET /Development/hello?demo=1 with Authorization: ***(" in out
    assert "no Authorization header" in out
    # the managed login endpoint waits for a sign-in, and says how to do one
    assert "[sso]" in out and "no saved sign-in: run `authproxy login sso-user`" in out
    assert "(user sso-demo, password sso-demo-fake-password)" in out
    assert re.search(r"\$ XDG_CACHE_HOME=\S+ AUTHPROXY_DEMO_COGNITO=http://127\.0\.0\.1:\d+ "
                     r"authproxy login -c "
                     r"\S+demo\.yaml sso-user", out), out
    for secret in ("demo-static-token-not-a-real-secret", "Demo-Passw0rd-only-for-the-fake"):
        assert secret not in out + result.stderr


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("authproxy ")
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "check", "explain", "decode", "demo"):
        assert command in result.stdout


def test_explain_never_shows_query_or_header_secrets(tmp_path: Path,
                                                     threaded_apigw: FakeApiGateway) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(config(threaded_apigw.url))
    result = run("explain", "-c", str(path), "-H", "X-Session-Token: sess-S3CR3T-1",
                 "/api/items?access_token=qs-S3CR3T-2&page=2")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for secret in ("qs-S3CR3T-2", "sess-S3CR3T-1", TOKEN):
        assert secret not in out, out
    assert "/Development/items?access_token=***(11 chars)&page=2" in out
    # The client's own header goes upstream unchanged: not marked as replaced.
    assert "    X-Session-Token: ***(" in out and "~ X-Session-Token" not in out


def test_check_shows_the_token_cache_without_its_secrets(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("token_cache:\n  url: rediss://app:redis-pass-1@cache.internal:6380/0\n"
                    "  encryption_key: cache-key-0123456789abcdef\n")
    result = run("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "token_cache: rediss://app:***@cache.internal:6380/0" in result.stdout
    assert "encrypted with encryption_key" in result.stdout
    for secret in ("redis-pass-1", "cache-key-0123456789abcdef"):
        assert secret not in result.stdout + result.stderr
