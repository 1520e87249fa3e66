"""`authproxy explain` in process: the whole decision for one request, offline, and its exit
code (0 matched and allowed, 3 no match, 4 matched but refused)."""

from __future__ import annotations

import pytest

from proxy.commands.explain import explain
from proxy.config import Config, parse_config

TOKEN = "explain-static-token-0123456789"


def _config(listen: str = "{port: 8080}") -> Config:
    return parse_config(f"""
listen: {listen}
credentials:
  tok: {{type: static, value: {TOKEN}}}
endpoints:
  - {{name: api, endpoint: https://abc.execute-api.us-east-1.amazonaws.com/Development,
      auth: tok}}
cors: {{allow_origins: ["http://app.test:3000"]}}
""")


def _run(capsys: pytest.CaptureFixture[str], config: Config, target: str,
         *headers: str, method: str = "GET") -> tuple[int, str]:
    code = explain(config, method, list(headers), target)
    out = capsys.readouterr().out
    assert TOKEN not in out
    return code, out


def test_allowed_request_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, _config(), "/api/x", "Origin: http://app.test:3000")
    assert code == 0
    assert "endpoint: api (matched by longest prefix /api)" in out
    assert "REFUSED" not in out


def test_refused_origin_is_explained_in_full_and_exits_4(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, _config(), "/api/items?x=1", "Origin: http://evil.test",
                     method="POST")
    assert code == 4
    assert "guard: REFUSED 403 origin_not_allowed" in out
    assert "endpoint: api (matched by longest prefix /api)" in out
    assert ("upstream: POST https://abc.execute-api.us-east-1.amazonaws.com/Development/items"
            "?x=1") in out
    assert "credential: tok (static value)" in out
    assert "+ Authorization: ***(" in out
    assert "fix: add 'http://evil.test' to cors.allow_origins" in out
    # the verdict and its fix come last, so a reader of the whole decision ends on them
    verdict, fix = out.rstrip().splitlines()[-2:]
    assert verdict.startswith("verdict: REFUSED 403 origin_not_allowed") and fix.startswith("fix:")


def test_refused_host_names_allowed_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, _config(), "/api/x", "Host: evil.example:8080")
    assert code == 4
    assert "guard: REFUSED 403 host_not_allowed" in out
    assert "endpoint: api" in out and "headers sent upstream:" in out
    assert "fix: add 'evil.example' to listen.allowed_hosts" in out


def test_missing_shared_secret_exits_4_and_says_which_header(
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config("{port: 8080, shared_secret: s3cr3t-value}")
    code, out = _run(capsys, config, "/api/x")
    assert code == 4 and "s3cr3t-value" not in out
    assert "guard: REFUSED 401 secret_required" in out
    assert "endpoint: api" in out
    assert "fix: send X-Authproxy-Secret: <listen.shared_secret>" in out


def test_refused_and_no_match_stays_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, _config(), "/nowhere", "Origin: http://evil.test")
    assert code == 3
    assert "guard: REFUSED 403 origin_not_allowed" in out and "NO MATCH" in out


def test_refused_preflight_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, _config(), "/api/x", "Origin: http://evil.test",
                     "Access-Control-Request-Method: POST", method="OPTIONS")
    assert code == 4
    assert "cors: preflight answered by the proxy" in out
