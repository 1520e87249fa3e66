"""Flow authorization_code through the real processes: `authproxy login NAME --no-browser`
signs in on the fake managed login (in headless Chromium, or a scripted browser where the
browser is not the point), and `authproxy serve` refreshes that login against the fake API
Gateway. Everything listens on 127.0.0.1; the callback is http://localhost:<free port>."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import jwt
import pytest
from browser_fixtures import authproxy, browser_fixture  # noqa: F401  (the `browser` fixture)
from conftest import AUTHPROXY, BackgroundLoop, ServeProcess
from managed_login_fixtures import PASSWORD, SsoPool, follow, query, sign_in, sso_pool

from proxy.fakes.apigw import FakeApiGateway
from proxy.fakes.cognito import FakeCognito

if TYPE_CHECKING:
    from playwright.async_api import Browser

CLIENT_SECRET = "sso-client-secret-0123456789abcdef"


def config(p: SsoPool, upstream: str, extra: str = "") -> str:
    return (f"listen:\n  port: 0\ncredentials:\n{p.yaml(extra=extra)}endpoints:\n"
            f"  - {{name: api, endpoint: \"{upstream}/Development\", auth: sso}}\n")


def saved(cache: Path) -> list[Path]:
    where = cache / "authproxy"
    return sorted(where.iterdir()) if where.exists() else []


# --- the login process, driven from a test thread ---------------------------------------------

@dataclass
class Login:
    """`authproxy login -c FILE sso --no-browser` running; `url` is the authorize URL it
    printed."""
    proc: subprocess.Popen[str]
    url: str = ""
    stderr: list[str] = field(default_factory=list)
    _seen: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 30) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            out = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code, out, "\n".join(self.stderr)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if "/oauth2/authorize?" in line and not self.url:
                self.url = line.strip()
                self._seen.set()
        self._seen.set()

    def start(self) -> Login:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_login_left_behind() -> Iterator[None]:
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:  # a failed test: the login would wait out its 5 minutes
            proc.kill()
            proc.wait()


def start_login(cfg: Path, cache: Path, *args: str, env: dict[str, str] | None = None,
                want_url: bool = True) -> Login:
    proc = subprocess.Popen(
        [AUTHPROXY, "login", "-c", str(cfg), "sso", "--no-browser", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(cache), **(env or {})})
    _STARTED.append(proc)
    login = Login(proc).start()
    if want_url:
        assert login._seen.wait(30) and login.url, login.stderr
    return login


@pytest.fixture
def cognito(background: BackgroundLoop) -> Iterator[FakeCognito]:
    fake = FakeCognito()
    background.run(fake.start())
    yield fake
    background.run(fake.stop())


def browse(background: BackgroundLoop, url: str, action: str = "signin",
           tamper: Callable[[str], str] | None = None) -> tuple[str, tuple[int, str]]:
    """A scripted browser on the fakes' loop: sign in (or cancel), then follow the redirect
    to the callback (`tamper`ed first, if given). (Location, (status, page))."""
    async def go() -> tuple[str, tuple[int, str]]:
        async with aiohttp.ClientSession() as http:
            location = await sign_in(http, url, action=action)
            return location, await follow(http, tamper(location) if tamper else location)
    result: tuple[str, tuple[int, str]] = background.run(go())
    return result


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- the whole journey in Chromium ------------------------------------------------------------

@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeCognito, FakeApiGateway]]:
    cognito, apigw = FakeCognito(), FakeApiGateway()
    await cognito.start()
    await apigw.start()
    try:
        yield cognito, apigw
    finally:
        await apigw.stop()
        await cognito.stop()


async def _login_in_chromium(browser: Browser, cfg: Path, cache: Path, port: int,
                             button: str) -> tuple[int, str, str, str, str]:
    """Run the real login process; sign in (or cancel) on the page it printed, in Chromium.
    (exit code, stdout, stderr, the callback URL the browser reached, the page it showed)"""
    proc = await asyncio.create_subprocess_exec(
        AUTHPROXY, "login", "-c", str(cfg), "sso", "--no-browser",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert proc.stderr is not None and proc.stdout is not None
    printed: list[str] = []
    url = ""
    while not url:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, f"login exited before printing the URL: {printed}"
        printed.append(line.rstrip())
        if "/oauth2/authorize?" in line:
            url = line.strip()
    page = await browser.new_page()
    page.set_default_timeout(20_000)
    await page.goto(url)
    assert "/login?" in page.url  # the managed login's own sign-in page
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation(url=f"http://localhost:{port}/callback?**"):
        await page.click(f"#{button}")
    reached, shown = page.url, await page.inner_text("body")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return (proc.returncode, out.decode(), "\n".join(printed) + "\n" + err.decode(), reached,
            shown)


@pytest.mark.browser
@pytest.mark.e2e
async def test_login_in_chromium_then_serve_uses_it(
        browser: Browser, fakes: tuple[FakeCognito, FakeApiGateway], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cognito, apigw = fakes
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, apigw.url))

    code, out, err, reached, shown = await _login_in_chromium(browser, cfg, tmp_path, p.port,
                                                              "signin")
    assert code == 0, err
    assert "Sign in on the managed login page:" in err
    assert out.startswith("signed in as alice (alice@example.test) through the managed login "
                          f"at {cognito.url}; refresh token saved to ")
    assert "code=" in reached and query(reached)["state"]
    assert "Signed in as alice" in shown and "close this tab" in shown
    files = saved(tmp_path)
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    assert cognito.calls["oauth2/token/authorization_code"] == 1

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    async with authproxy(cfg.read_text(), tmp_path) as proxy, aiohttp.ClientSession() as http:
        async with http.get(proxy.url("/api/items")) as resp:
            assert resp.status == 200, await resp.text()
        sent = apigw.seen[-1].header("Authorization") or ""
        claims = jwt.decode(sent.removeprefix("Bearer "), options={"verify_signature": False})
        assert claims["token_use"] == "id" and claims["cognito:username"] == "alice"
        assert claims["aud"] == p.client
        async with http.get(proxy.url("/_authproxy/readyz")) as resp:
            ready = await resp.json()
        assert resp.status == 200
        state = ready["credentials"]["sso"]
        assert state["username"] == "alice" and state["domain"] == cognito.url
        # the inspector's credentials panel says where and as whom
        from playwright.async_api import expect
        inspector = await browser.new_page()
        await inspector.goto(proxy.url("/_authproxy/"))
        card = inspector.locator('[data-credential="sso"]')
        await expect(card).to_contain_text("ready")
        await expect(card).to_contain_text(f"Signs in at{cognito.url}")
        await expect(card).to_contain_text("Useralice")
    assert cognito.calls["oauth2/token/refresh_token"] == 1
    assert cognito.calls["oauth2/token/authorization_code"] == 1  # serve never re-exchanged


@pytest.mark.browser
@pytest.mark.e2e
async def test_cancel_in_chromium_ends_the_login_with_exit_1(
        browser: Browser, fakes: tuple[FakeCognito, FakeApiGateway], tmp_path: Path) -> None:
    cognito, apigw = fakes
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, apigw.url))
    code, out, err, reached, shown = await _login_in_chromium(browser, cfg, tmp_path, p.port,
                                                              "cancel")
    assert code == 1 and out == ""
    assert query(reached)["error"] == "access_denied"
    assert "authproxy login sso: login sso: the managed login answered access_denied" in err
    assert "Sign-in failed" in shown and "access_denied" in shown
    assert saved(tmp_path) == [] and cognito.count("oauth2/token") == 0


# --- serve ---------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_serve_without_a_login_answers_503_then_uses_a_later_login(
        cognito: FakeCognito, background: BackgroundLoop, threaded_apigw: FakeApiGateway,
        tmp_path: Path, serve: Callable[..., ServeProcess]) -> None:
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, threaded_apigw.url))
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    explained = subprocess.run([AUTHPROXY, "explain", "-c", str(cfg), "/api/x"],
                               capture_output=True, text=True, env={**os.environ, **env})
    assert "NO saved sign-in" in explained.stdout and "authproxy login sso" in explained.stdout
    checked = subprocess.run([AUTHPROXY, "check", "-c", str(cfg)], capture_output=True,
                             text=True, env={**os.environ, **env})
    assert checked.returncode == 0
    assert f"cognito authorization_code, id token as Authorization: Bearer <jwt>, managed " \
           f"login at {cognito.url}" in checked.stdout

    sp = serve(cfg.read_text(), env=env)
    status, headers, body = sp.get("/api/items")
    assert status == 503 and headers["X-Authproxy-Error"] == "credentials_unavailable"
    answer = json.loads(body)
    assert answer["error"] == "credentials_unavailable"
    assert "no saved sign-in: run `authproxy login sso`" in answer["message"]
    assert sp.get("/_authproxy/readyz")[0] == 503
    assert not threaded_apigw.seen

    login = start_login(cfg, tmp_path)
    browse(background, login.url)
    code, out, err = login.wait()
    assert code == 0, err
    # the running serve notices the new login at the next request
    status, _, body = sp.get("/api/items")
    assert status == 200, body
    assert sp.get("/_authproxy/readyz")[0] == 200
    assert cognito.calls["oauth2/token/refresh_token"] == 1
    assert sp.stop() == 0


@pytest.mark.e2e
def test_refresh_under_steady_load_uses_only_refresh_token_grants(
        cognito: FakeCognito, background: BackgroundLoop, threaded_apigw: FakeApiGateway,
        tmp_path: Path, serve: Callable[..., ServeProcess]) -> None:
    p = sso_pool(cognito, secret=CLIENT_SECRET)
    cognito.token_lifetime = 6  # seconds: refreshed about every 3 s below
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, threaded_apigw.url, extra="    refresh_margin: 3\n"))
    login = start_login(cfg, tmp_path)
    browse(background, login.url)
    assert login.wait()[0] == 0
    assert cognito.calls["oauth2/token/authorization_code"] == 1

    sp = serve(cfg.read_text(), env={"XDG_CACHE_HOME": str(tmp_path)})
    statuses: list[int] = []
    stop = time.monotonic() + 11

    def load() -> None:
        while time.monotonic() < stop:
            statuses.append(sp.get("/api/items")[0])
            time.sleep(0.02)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert len(statuses) > 100 and set(statuses) == {200}, [s for s in statuses if s != 200]
    tokens = {s.header("Authorization") for s in threaded_apigw.seen}
    refreshes = cognito.calls["oauth2/token/refresh_token"]
    assert refreshes >= 3 and len(tokens) >= 3  # several lifetimes went by
    assert refreshes <= 6  # one per refresh, not one per request
    assert cognito.calls["oauth2/token/authorization_code"] == 1  # only the login's exchange
    assert cognito.count("oauth2/token") == 1 + refreshes
    assert cognito.count("InitiateAuth") == 0
    assert sp.stop() == 0


# --- the login's error paths, through the real process -------------------------------------------

@pytest.mark.e2e
def test_a_callback_with_the_wrong_state_exits_1(cognito: FakeCognito,
                                                 background: BackgroundLoop,
                                                 tmp_path: Path) -> None:
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, "http://127.0.0.1:9"))
    login = start_login(cfg, tmp_path)
    status, page = get(f"http://localhost:{p.port}/callback?code=made-up&state=not-yours")
    code, out, err = login.wait()
    assert (code, out) == (1, "")
    assert "state does not match this login's" in err and "made-up" not in err
    assert status == 400 and "state does not match" in page
    assert cognito.count("oauth2/token") == 0 and saved(tmp_path) == []


@pytest.mark.e2e
def test_an_error_callback_exits_1_with_what_the_managed_login_said(
        cognito: FakeCognito, tmp_path: Path) -> None:
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, "http://127.0.0.1:9"))
    login = start_login(cfg, tmp_path)
    state = query(login.url)["state"]
    status, page = get(f"http://localhost:{p.port}/callback?error=server_error&"
                       f"error_description=IdP%20unreachable%1b%5b31m&state={state}")
    code, _, err = login.wait()
    assert code == 1 and status == 400
    assert "the managed login answered server_error: IdP unreachable?[31m; nothing was saved" \
        in err  # no terminal escape from the network reaches the terminal
    assert "\x1b" not in err and "IdP unreachable" in page


@pytest.mark.e2e
def test_no_callback_in_time_exits_1(cognito: FakeCognito, tmp_path: Path) -> None:
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, "http://127.0.0.1:9"))
    started = time.monotonic()
    login = start_login(cfg, tmp_path, env={"AUTHPROXY_LOGIN_TIMEOUT": "1.5"})
    code, out, err = login.wait()
    assert (code, out) == (1, "")
    assert f"no sign-in came back to http://localhost:{p.port}/callback within 1.5 s; " \
           "nothing was saved: run `authproxy login sso` again" in err
    assert time.monotonic() - started < 20
    bad = start_login(cfg, tmp_path, env={"AUTHPROXY_LOGIN_TIMEOUT": "soon"}, want_url=False)
    code, _, err = bad.wait()
    assert code == 1 and "AUTHPROXY_LOGIN_TIMEOUT must be a number of seconds" in err


@pytest.mark.e2e
def test_a_port_in_use_says_which_port_and_callback_url(cognito: FakeCognito,
                                                        tmp_path: Path) -> None:
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, "http://127.0.0.1:9"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", p.port))
        s.listen()
        login = start_login(cfg, tmp_path, want_url=False)
        code, out, err = login.wait()
    assert (code, out) == (1, "")
    assert f"port {p.port} on 127.0.0.1 is in use" in err
    assert f"must allow the callback URL http://localhost:<port>/callback (now " \
           f"http://localhost:{p.port}/callback)" in err
    assert "/oauth2/authorize" not in err  # no URL to a sign-in that could not come back


@pytest.mark.e2e
def test_a_code_used_before_the_login_exchanges_it_is_refused(
        cognito: FakeCognito, background: BackgroundLoop, tmp_path: Path) -> None:
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, "http://127.0.0.1:9"))
    login = start_login(cfg, tmp_path)

    async def steal_then_follow() -> tuple[int, tuple[int, str]]:
        async with aiohttp.ClientSession() as http:
            location = await sign_in(http, login.url)
            # someone redeems the code first, without the login's verifier
            async with http.post(cognito.url + "/oauth2/token", data={
                    "grant_type": "authorization_code", "client_id": p.client,
                    "code": query(location)["code"], "redirect_uri": p.callback,
                    "code_verifier": "x" * 50}) as resp:
                stolen = resp.status
            return stolen, await follow(http, location)

    stolen, (status, page) = background.run(steal_then_follow())
    assert stolen == 400
    code, _, err = login.wait()
    assert code == 1 and status == 400 and "invalid_grant" in page
    assert "invalid_grant" in err and "used already, or its PKCE verifier did not match" in err
    assert cognito.calls["oauth2/token/authorization_code"] == 2 and saved(tmp_path) == []


# --- nothing secret anywhere -------------------------------------------------------------------

@pytest.mark.e2e
def test_no_token_code_verifier_or_secret_in_logs_pages_or_errors(
        cognito: FakeCognito, background: BackgroundLoop, threaded_apigw: FakeApiGateway,
        tmp_path: Path, serve: Callable[..., ServeProcess]) -> None:
    p = sso_pool(cognito, secret=CLIENT_SECRET)
    cognito.token_lifetime = 8
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, threaded_apigw.url, extra="    refresh_margin: 4\n"))
    seen: list[str] = []

    login = start_login(cfg, tmp_path)
    _, (_, page) = browse(background, login.url)
    code, out, err = login.wait()
    assert code == 0, err
    seen += [out, err, page]
    # a failed login's words too: a code presented twice
    again = start_login(cfg, tmp_path / "other")

    def replay(location: str) -> str:
        old = cognito.managed.token_forms[0]["code"]
        seen.append(location)  # (the browser's own address bar: not ours to check)
        return location.replace(query(location)["code"], old)
    _, (_, failed_page) = browse(background, again.url, tamper=replay)
    seen.pop()
    code, out2, err2 = again.wait()
    assert code == 1 and "invalid_grant" in err2
    seen += [out2, err2, failed_page]

    sp = serve(cfg.read_text(), "--log-level", "debug",
               env={"XDG_CACHE_HOME": str(tmp_path)})
    for _ in range(3):
        assert sp.get("/api/items", headers={"Origin": sp.url})[0] == 200
        time.sleep(2.5)  # past a refresh or two
    for path in ("/_authproxy/readyz", "/_authproxy/metrics", "/_authproxy/api/credentials",
                 "/_authproxy/api/exchanges", "/_authproxy/"):
        status, _, body = sp.get(path)
        assert status == 200, path
        seen.append(body.decode())
    # and the words of a refusal: the refresh token revoked, the next refresh refused
    cognito.revoke_refresh_tokens()
    deadline = time.monotonic() + 15
    error = None
    while error is None and time.monotonic() < deadline:
        time.sleep(0.2)
        body = sp.get("/_authproxy/api/credentials")[2].decode()
        error = json.loads(body)["sso"]["last_error"]
    assert error and "saved sign-in was refused" in error, body
    seen.append(body)
    assert sp.stop() == 0
    log = sp.log()
    assert "oauth2/token refresh_token -> 200" in log  # debug logging was on
    seen.append(log)
    assert cognito.calls["oauth2/token/refresh_token"] >= 2

    secrets: dict[str, str] = {"client secret": CLIENT_SECRET}
    for i, form in enumerate(cognito.managed.token_forms):
        for key in ("code", "code_verifier", "refresh_token"):
            if form.get(key):
                secrets[f"{key} {i}"] = form[key]
    for i, issued in enumerate(cognito.managed.issued):
        for key in ("access_token", "id_token", "refresh_token"):
            if key in issued:
                secrets[f"{key} {i}"] = issued[key]
    assert any(k.startswith("code_verifier") for k in secrets)
    assert len([k for k in secrets if k.startswith("id_token")]) >= 3
    text = "\n".join(seen)
    for what, secret in secrets.items():
        assert secret not in text, what


def test_login_help_names_no_browser() -> None:
    result = subprocess.run([AUTHPROXY, "login", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--no-browser" in result.stdout


@pytest.mark.e2e
def test_without_no_browser_the_url_is_opened_with_webbrowser(
        cognito: FakeCognito, background: BackgroundLoop, tmp_path: Path) -> None:
    # `webbrowser` runs $BROWSER: here a script that records the URL it was given.
    p = sso_pool(cognito)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config(p, "http://127.0.0.1:9"))
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    script.chmod(0o755)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "BROWSER": f"{script} %s",
           "DISPLAY": ":0"}
    proc = subprocess.Popen([AUTHPROXY, "login", "-c", str(cfg), "sso"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    url = opened.read_text()
    assert url.startswith(f"{cognito.url}/oauth2/authorize?")
    browse(background, url)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert url in err and "signed in as alice" in out
    # without a display nothing is launched (no text browser takes over the terminal)
    opened.unlink()
    no_display = {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([AUTHPROXY, "login", "-c", str(cfg), "sso"],
                            env={**no_display, "AUTHPROXY_LOGIN_TIMEOUT": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "no display found" in err and not opened.exists()
