"""Shared by the managed login tests: an app client set up for the code grant with a loopback
callback URL, and a scripted "browser" (plain aiohttp, nothing from proxy.credentials) that
follows the authorize URL, submits the sign-in form as a browser would and returns the redirect
the managed login answered with. The real-browser tests use Chromium instead."""

from __future__ import annotations

import html
import re
import socket
from dataclasses import dataclass
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

from proxy.fakes.cognito import FakeCognito

PASSWORD = "Corr3ct-Horse-Battery"
SCOPES = ("openid", "email", "profile")


def free_port() -> int:
    """A port nothing listens on now (the login's redirect_port: never the default 8976,
    which a developer's own login may hold)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SsoPool:
    fake: FakeCognito
    pool: str
    client: str
    port: int
    secret: str | None = None

    @property
    def callback(self) -> str:
        return f"http://localhost:{self.port}/callback"

    def yaml(self, name: str = "sso", extra: str = "") -> str:
        secret = f"    client_secret: {self.secret}\n" if self.secret else ""
        return (f"  {name}:\n    type: cognito\n    flow: authorization_code\n"
                f"    domain: {self.fake.url}\n    client_id: {self.client}\n{secret}"
                f"    scopes: [{', '.join(SCOPES)}]\n    redirect_port: {self.port}\n{extra}")


def sso_pool(fake: FakeCognito, *, secret: str | None = None, port: int | None = None,
             **client: object) -> SsoPool:
    port = port or free_port()
    pool = fake.add_pool()
    client_id = fake.add_client(pool, secret=secret, scopes=SCOPES, oauth_flows=["code"],
                                callback_urls=[f"http://localhost:{port}/callback"],
                                **client)  # type: ignore[arg-type]
    fake.add_user(pool, "alice", PASSWORD, email="alice@example.test", groups=["developers"])
    return SsoPool(fake, pool, client_id, port, secret)


def form_fields(page: str) -> dict[str, str]:
    """The hidden inputs of the sign-in form, as a browser would post them back."""
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)}


async def sign_in(http: aiohttp.ClientSession, authorize: str, username: str = "alice",
                  password: str = PASSWORD, action: str = "signin") -> str:
    """Open the authorize URL, fill in the form, submit it: the Location the managed login
    redirects to (the callback URL with its code or error). Raises on an error page."""
    async with http.get(authorize, allow_redirects=True) as resp:
        page, at = await resp.text(), str(resp.url)
        assert resp.status == 200, page
    fields = {**form_fields(page), "username": username, "password": password,
              "action": action}
    async with http.post(urljoin(at, "/login"), data=fields, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]


async def follow(http: aiohttp.ClientSession, location: str) -> tuple[int, str]:
    """The browser following the redirect to the loopback callback: the page it shows."""
    async with http.get(location, allow_redirects=False) as resp:
        return resp.status, await resp.text()


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
