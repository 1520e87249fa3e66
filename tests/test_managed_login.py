"""proxy/credentials/managed_login.py (and flow authorization_code in CognitoSource) against the
fake managed login, in process: the prompt given the URL plays the browser with plain aiohttp.
The real `authproxy login` / `serve` processes and Chromium are in test_managed_login_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cognito_fixtures import (  # noqa: F401
    FakeClock,
    fake_fixture,
    header,
    http_fixture,
)
from managed_login_fixtures import SCOPES, SsoPool, follow, query, sign_in, sso_pool

from proxy.config import CognitoCredential
from proxy.credentials import CredentialsUnavailable, token_store
from proxy.credentials.cognito import CognitoSource
from proxy.credentials.managed_login import authorize_url, new_pkce, s256
from proxy.fakes.cognito import FakeCognito
from proxy.login import login, token
from proxy.secret import Secret


def cred(p: SsoPool, **kw: Any) -> CognitoCredential:
    values: dict[str, Any] = {"name": "sso", "flow": "authorization_code", "client_id": p.client,
                              "domain": p.fake.url, "scopes": SCOPES, "redirect_port": p.port,
                              "refresh_margin": 30.0}
    if p.secret:
        values["client_secret"] = Secret(p.secret)
    values.update(kw)
    return CognitoCredential(**values)


Act = Callable[[aiohttp.ClientSession, str], Awaitable[Any]]


class Browser:
    """The login's prompt: given the authorize URL, it acts on it (by default: sign in as
    alice and follow the redirect to the callback) in the background, as a browser would."""

    def __init__(self, act: Act | None = None) -> None:
        self.act = act or self.sign_in
        self.urls: list[str] = []
        self.pages: list[tuple[int, str]] = []
        self.locations: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def sign_in(self, http: aiohttp.ClientSession, url: str) -> None:
        location = await sign_in(http, url)
        self.locations.append(location)
        self.pages.append(await follow(http, location))

    def __call__(self, kind: str, message: str, secret: bool) -> str:
        assert (kind, secret) == ("browser", False)
        self.urls.append(message)

        async def run() -> None:
            async with aiohttp.ClientSession() as http:
                await self.act(http, message)
        self.tasks.append(asyncio.get_running_loop().create_task(run()))
        return ""

    async def done(self) -> None:
        await asyncio.gather(*self.tasks)


async def test_pkce_is_rfc_7636_s256() -> None:
    # RFC 7636 appendix B
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    verifier, challenge = new_pkce()
    assert 43 <= len(verifier) <= 128 and set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert challenge == s256(verifier) and new_pkce()[0] != verifier


def test_authorize_url_asks_for_what_the_spec_says(fake: FakeCognito) -> None:
    p = sso_pool(fake)
    url = authorize_url(cred(p, identity_provider="Google"), state="s", nonce="n",
                        challenge="c")
    assert url.startswith(f"{fake.url}/oauth2/authorize?")
    assert query(url) == {"response_type": "code", "client_id": p.client,
                          "redirect_uri": f"http://localhost:{p.port}/callback",
                          "scope": "openid email profile", "state": "s", "nonce": "n",
                          "code_challenge": "c", "code_challenge_method": "S256",
                          "identity_provider": "Google"}
    assert "identity_provider" not in query(authorize_url(cred(p), state="s", nonce="n",
                                                          challenge="c"))


async def test_login_saves_the_refresh_token_and_serve_refreshes_with_it(
        fake: FakeCognito, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    p = sso_pool(fake)
    config = cred(p)
    browser = Browser()
    result = await login(config, browser, session=http, cache_dir=tmp_path, timeout=10)
    await browser.done()
    sent = query(browser.urls[0])
    assert sent["code_challenge_method"] == "S256" and len(sent["state"]) >= 32
    assert len(sent["nonce"]) >= 32 and sent["state"] != sent["nonce"]
    assert browser.pages == [(200, browser.pages[0][1])]
    assert "Signed in as alice" in browser.pages[0][1] and "close this tab" in browser.pages[0][1]
    assert str(result).startswith(f"signed in as alice (alice@example.test) through the "
                                  f"managed login at {fake.url}; refresh token saved to ")

    path = result.cache_file  # type: ignore[attr-defined]
    assert path == token_store.path_for(config, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [f.name for f in tmp_path.iterdir()] == [path.name]  # no temporary file left
    saved = json.loads(path.read_text())
    assert saved["username"] == "alice" and fake.refresh_record(saved["refresh_token"])
    assert fake.calls["oauth2/token/authorization_code"] == 1

    # serve: a source with that config refreshes at <domain>/oauth2/token
    source = CognitoSource(config, cache_dir=tmp_path, clock=FakeClock(), rng=random.Random(1))
    await source.start(http)
    try:
        value = await header(source)
        assert value.startswith("Bearer eyJ")
        status = source.status()
        assert status["username"] == "alice" and status["domain"] == fake.url
        assert status["claims"]["token_use"] == "id" and status["methods"] == {
            "refresh_token": 1}
    finally:
        await source.close()
    assert fake.calls["oauth2/token/refresh_token"] == 1
    assert fake.count("InitiateAuth") == 0
    assert (await token(config, session=http, cache_dir=tmp_path)).startswith("Bearer eyJ")
    assert fake.calls["oauth2/token/authorization_code"] == 1  # never again


async def test_confidential_client_uses_basic_auth_and_access_token(
        fake: FakeCognito, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    p = sso_pool(fake, secret="app-client-secret")
    config = cred(p, token="access", prefix="")
    await login(config, Browser(), session=http, cache_dir=tmp_path, timeout=10)
    value = await token(config, session=http, cache_dir=tmp_path)
    assert value.startswith("eyJ")
    # without the secret the fake refuses the code, and the user is told why
    no_secret = dataclasses.replace(config, client_secret=None)
    browser = Browser()
    with pytest.raises(CredentialsUnavailable, match="invalid_client.*client_secret"):
        await login(no_secret, browser, session=http, cache_dir=tmp_path / "b", timeout=10)
    await browser.done()
    assert browser.pages[0][0] == 400 and "invalid_client" in browser.pages[0][1]


async def test_a_cancelled_sign_in_ends_the_login(fake: FakeCognito,
                                                  http: aiohttp.ClientSession,
                                                  tmp_path: Path) -> None:
    p = sso_pool(fake)
    pages: list[tuple[int, str]] = []

    async def cancel(http: aiohttp.ClientSession, url: str) -> None:
        pages.append(await follow(http, await sign_in(http, url, action="cancel")))

    with pytest.raises(CredentialsUnavailable, match=(
            r"login sso: the managed login answered access_denied: The user cancelled the "
            r"sign-in \(the sign-in was cancelled or access was denied\); nothing was saved")):
        await login(cred(p), browser := Browser(cancel), session=http, cache_dir=tmp_path,
                    timeout=10)
    await browser.done()
    assert pages[0][0] == 400 and "access_denied" in pages[0][1]
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
    assert fake.count("oauth2/token") == 0


async def test_wrong_state_is_refused_and_the_code_not_exchanged(
        fake: FakeCognito, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    p = sso_pool(fake)
    pages: list[tuple[int, str]] = []

    async def forged(http: aiohttp.ClientSession, url: str) -> None:
        location = await sign_in(http, url)
        pages.append(await follow(http, location.replace("state=", "state=x")))

    with pytest.raises(CredentialsUnavailable, match="state does not match"):
        await login(cred(p), browser := Browser(forged), session=http, cache_dir=tmp_path,
                    timeout=10)
    await browser.done()
    assert pages[0][0] == 400 and "state does not match" in pages[0][1]
    assert fake.count("oauth2/token") == 0


async def test_the_id_tokens_nonce_must_be_this_logins(fake: FakeCognito,
                                                       http: aiohttp.ClientSession,
                                                       tmp_path: Path) -> None:
    p = sso_pool(fake)

    async def substituted(http: aiohttp.ClientSession, url: str) -> None:
        location = await sign_in(http, url)
        code = query(location)["code"]
        # as if the code had been issued for another login's request
        fake.managed.codes[code] = dataclasses.replace(fake.managed.codes[code],
                                                       nonce="another-login")
        await follow(http, location)

    with pytest.raises(CredentialsUnavailable, match="nonce does not match"):
        await login(cred(p), Browser(substituted), session=http, cache_dir=tmp_path,
                    timeout=10)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


async def test_no_callback_in_time(fake: FakeCognito, http: aiohttp.ClientSession,
                                   tmp_path: Path) -> None:
    p = sso_pool(fake)

    async def walk_away(http: aiohttp.ClientSession, url: str) -> None:
        return None

    started = asyncio.get_running_loop().time()
    with pytest.raises(CredentialsUnavailable, match=(
            rf"no sign-in came back to http://localhost:{p.port}/callback within 0.5 s")):
        await login(cred(p), Browser(walk_away), session=http, cache_dir=tmp_path, timeout=0.5)
    assert asyncio.get_running_loop().time() - started < 5
    # and the port is free again
    with socket.socket() as s:
        s.bind(("127.0.0.1", p.port))


async def test_port_in_use_names_the_port_and_the_callback_url(
        fake: FakeCognito, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    p = sso_pool(fake)
    with socket.socket() as s:
        s.bind(("127.0.0.1", p.port))
        s.listen()
        browser = Browser()
        with pytest.raises(CredentialsUnavailable) as e:
            await login(cred(p), browser, session=http, cache_dir=tmp_path, timeout=10)
    message = str(e.value)
    assert f"port {p.port} on 127.0.0.1 is in use" in message
    assert "credentials.sso.redirect_port" in message
    assert f"http://localhost:{p.port}/callback" in message and p.client in message
    assert browser.urls == []  # the browser is not sent anywhere that cannot answer


async def test_the_listener_answers_only_its_callback(fake: FakeCognito,
                                                      http: aiohttp.ClientSession,
                                                      tmp_path: Path) -> None:
    p = sso_pool(fake)
    seen: dict[str, tuple[int, str]] = {}

    async def poke_then_sign_in(http: aiohttp.ClientSession, url: str) -> None:
        base = f"http://127.0.0.1:{p.port}"
        # a browser's speculative connection that never sends a thing must not hold it up
        _, idle = await asyncio.open_connection("127.0.0.1", p.port)
        seen["favicon"] = await follow(http, base + "/favicon.ico")
        async with http.post(base + "/callback?code=x&state=y") as r:
            seen["post"] = r.status, await r.text()
        async with http.get(base + "/callback?code=x&state=y",
                            headers={"Host": f"rebind.test:{p.port}"}) as r:
            seen["rebound"] = r.status, await r.text()
        location = await sign_in(http, url)
        fake.delay = 0.5  # the exchange takes a while: a second callback arrives meanwhile
        first = asyncio.create_task(follow(http, location))
        while not fake.calls["oauth2/token/authorization_code"]:
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as other:
            seen["again"] = await follow(other, location.replace("code=", "code=x"))
        seen["callback"] = await first
        idle.close()

    result = await login(cred(p), Browser(poke_then_sign_in), session=http,
                         cache_dir=tmp_path, timeout=10)
    assert "signed in as alice" in str(result)
    assert seen["favicon"][0] == 404 and seen["post"][0] == 405 and seen["rebound"][0] == 400
    assert seen["again"][0] == 409 and "already" in seen["again"][1]
    assert seen["callback"][0] == 200 and "Signed in as alice" in seen["callback"][1]
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener is gone after the login
        await follow(http, f"http://127.0.0.1:{p.port}/callback")


async def test_serve_without_a_login_tells_the_user_to_log_in_then_picks_it_up(
        fake: FakeCognito, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    p = sso_pool(fake)
    config = cred(p)
    source = CognitoSource(config, cache_dir=tmp_path, clock=FakeClock(),
                           rng=random.Random(1))
    assert "NO saved sign-in" in source.describe().how and "authproxy login sso" in \
        source.describe().how
    await source.start(http)
    try:
        with pytest.raises(CredentialsUnavailable, match=(
                r"^no saved sign-in: run `authproxy login sso` to sign in on the "
                r"managed login page at http://127\.0\.0\.1:\d+$")):
            await header(source)
        assert source.status()["state"] == "failed"
        assert fake.count("oauth2/token") == 0
        await login(config, Browser(), session=http, cache_dir=tmp_path, timeout=10)
        # the hold-off after a refusal ends as soon as a new login is saved
        assert (await header(source)).startswith("Bearer eyJ")
        how = source.describe().how
        assert "sign-in of alice saved by `authproxy login`" in how and fake.url in how

        # a revoked refresh token: a refusal, not a loop; the old token serves while valid
        fake.revoke_refresh_tokens()
        sent = source.current()
        assert sent is not None
        assert await source.rejected(sent) is False
        assert source.current() == sent
        status = source.status()
        assert status["last_error"].startswith("the saved sign-in was refused")
        assert "run `authproxy login sso`" in status["last_error"]
        refreshes = fake.calls["oauth2/token/refresh_token"]
        assert await source.rejected(sent) is False
        assert fake.calls["oauth2/token/refresh_token"] == refreshes == 2
    finally:
        await source.close()


async def test_a_revoked_login_asks_for_a_new_one(fake: FakeCognito,
                                                  http: aiohttp.ClientSession,
                                                  tmp_path: Path) -> None:
    p = sso_pool(fake)
    config = cred(p)
    await login(config, Browser(), session=http, cache_dir=tmp_path, timeout=10)
    fake.revoke_refresh_tokens()
    with pytest.raises(CredentialsUnavailable, match=(
            "the saved sign-in was refused \\(refresh token expired or revoked\\): run "
            "`authproxy login sso`")):
        await token(config, session=http, cache_dir=tmp_path)
    assert fake.calls["oauth2/token/refresh_token"] == 1


async def test_nothing_secret_in_debug_logs_results_status_or_pages(
        fake: FakeCognito, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = sso_pool(fake, secret="the-app-client-secret-42")
    config = cred(p)
    browser = Browser()
    result = await login(config, browser, session=http, cache_dir=tmp_path, timeout=10)
    source = CognitoSource(config, cache_dir=tmp_path, clock=FakeClock(), rng=random.Random(1))
    await source.start(http)
    try:
        value = await header(source)
        shown = json.dumps([source.status(), dataclasses.asdict(source.describe())],
                           default=str)
    finally:
        await source.close()
    exchanged = fake.managed.token_forms[0]
    saved = json.loads(token_store.path_for(config, tmp_path).read_text())
    secrets = {"code": exchanged["code"], "verifier": exchanged["code_verifier"],
               "refresh token": saved["refresh_token"], "token": value.removeprefix("Bearer "),
               "client secret": "the-app-client-secret-42"}
    assert len(secrets["verifier"]) >= 43
    text = "\n".join([caplog.text, str(result), repr(result), shown,
                      *(page for _, page in browser.pages)])
    assert "oauth2/token authorization_code -> 200" in caplog.text  # the wire log is there
    for what, secret in secrets.items():
        assert secret not in text, what
