"""`authproxy login NAME` for `flow: authorization_code`: the user signs in on Cognito's
managed login page (Hosted UI, or a federated SAML/OIDC/Google IdP behind it) in a browser,
and the refresh token is saved where `serve` and `token` find it, as every other login does.

The OAuth 2.0 authorization code flow for a native app (RFC 8252): a PKCE S256 verifier
(RFC 7636), a `state` bound to this login and an OpenID Connect `nonce` bound to the ID token;
the browser is sent to `<domain>/oauth2/authorize`, and a one-shot listener on
127.0.0.1:<redirect_port> receives the redirect to `http://localhost:<port>/callback`. Its page
tells the user how it went once the code is exchanged, so the tab never claims a success the
terminal does not see.

The listener is a few lines of asyncio rather than aiohttp.web: credentials stay below the
serving layer, and it answers one GET. Without argv, print or exit: the CLI's `prompt` is
given the URL to show and open (kind "browser").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import html
import inspect
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import jwt

from proxy.config import CognitoCredential
from proxy.credentials import token_store
from proxy.credentials.base import CredentialsUnavailable, LoginResult, Prompt
from proxy.credentials.cognito_api import CognitoApi, CognitoError

log = logging.getLogger("authproxy.cognito")

CALLBACK_TIMEOUT = 300.0  # seconds the user has to sign in (the SPEC's five minutes)
CALLBACK_PATH = "/callback"
MAX_HEAD = 16 * 1024  # a browser's GET with a code and a state fits many times over
HEAD_TIMEOUT = 10.0  # seconds a connection has to send its request head
PAGE_TIMEOUT = 5.0  # seconds to hand the browser its page before the login returns
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1"})


@dataclass(frozen=True)
class ManagedLogin(LoginResult):
    credential: str
    username: str  # Cognito's username (`cognito:username`: Google_1234... for federated users)
    email: str | None
    domain: str
    cache_file: Path

    def __str__(self) -> str:
        who = f"{self.username} ({self.email})" if self.email and \
            self.email != self.username else self.username
        return (f"signed in as {who} through the managed login at {self.domain}; refresh token "
                f"saved to {self.cache_file}; `authproxy serve` and `authproxy token "
                f"{self.credential}` now use it")


def new_pkce() -> tuple[str, str]:
    """(verifier, S256 challenge): 64 random bytes as 86 URL-safe characters (RFC 7636 wants
    43 to 128)."""
    verifier = secrets.token_urlsafe(64)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """PKCE's S256 challenge: the unpadded base64url of the verifier's SHA-256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def redirect_uri(config: CognitoCredential) -> str:
    # `localhost`, as Cognito has long allowed for callback URLs; the listener is on 127.0.0.1.
    return f"http://localhost:{config.redirect_port}{CALLBACK_PATH}"


def authorize_url(config: CognitoCredential, *, state: str, nonce: str, challenge: str) -> str:
    params = {"response_type": "code", "client_id": config.client_id,
              "redirect_uri": redirect_uri(config), "scope": " ".join(config.scopes),
              "state": state, "nonce": nonce, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    if config.identity_provider:
        params["identity_provider"] = config.identity_provider
    return f"{config.domain.rstrip('/')}/oauth2/authorize?{urlencode(params)}"


async def login(config: CognitoCredential, prompt: Prompt, http: aiohttp.ClientSession,
                cache_dir: Path, timeout: float = CALLBACK_TIMEOUT) -> ManagedLogin:
    """Sign in through the managed login page and save the refresh token. Raises
    CredentialsUnavailable with a message that names no code, token or verifier."""
    name = config.name
    verifier, challenge = new_pkce()
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    url = authorize_url(config, state=state, nonce=nonce, challenge=challenge)
    async with Callback(config) as callback:
        log.debug("login %s: waiting up to %.0f s for the callback on 127.0.0.1:%d", name,
                  timeout, config.redirect_port)
        shown = prompt("browser", url, False)
        if inspect.isawaitable(shown):
            await shown
        try:
            result = await _complete(config, http, cache_dir, callback, timeout,
                                     state=state, nonce=nonce, verifier=verifier)
        except CredentialsUnavailable as e:
            await callback.answer(False, str(e))
            raise
        except BaseException:
            await callback.answer(False, "the login was interrupted; see the terminal")
            raise
        await callback.answer(True, f"Signed in as {result.username}. authproxy saved the "
                              "sign-in; you can close this tab.")
        return result


async def _complete(config: CognitoCredential, http: aiohttp.ClientSession, cache_dir: Path,
                    callback: Callback, timeout: float, *, state: str, nonce: str,
                    verifier: str) -> ManagedLogin:
    name, uri = config.name, redirect_uri(config)
    try:
        params = await asyncio.wait_for(callback.received(), timeout)
    except TimeoutError:
        raise CredentialsUnavailable(
            f"login {name}: no sign-in came back to {uri} within {_duration(timeout)}; "
            f"nothing was saved: run `authproxy login {name}` again") from None
    if not secrets.compare_digest(params.get("state", "").encode(), state.encode()):
        raise CredentialsUnavailable(
            f"login {name}: the callback's state does not match this login's (a tab left from "
            "an earlier login, or a request this login did not start); nothing was saved: "
            f"run `authproxy login {name}` again")
    if "error" in params:
        error = _printable(params["error"], 60)
        described = _printable(params.get("error_description", ""), 200)
        why = " (the sign-in was cancelled or access was denied)" \
            if error == "access_denied" else ""
        raise CredentialsUnavailable(
            f"login {name}: the managed login answered {error}"
            + (f": {described}" if described else "") + f"{why}; nothing was saved")
    code = params.get("code", "")
    if not code:
        raise CredentialsUnavailable(f"login {name}: the callback carried neither a code nor "
                                     "an error; nothing was saved")
    try:
        tokens = await CognitoApi(http, config).authorization_code(code, verifier, uri)
    except CognitoError as e:
        raise CredentialsUnavailable(f"login {name}: {_exchange_advice(e, config)}") from None
    claims = _id_claims(config, tokens.id_token, nonce)
    if not tokens.refresh_token:
        raise CredentialsUnavailable(f"login {name}: Cognito returned no refresh token; "
                                     "nothing was saved")
    username = str(claims.get("cognito:username") or claims.get("sub") or "")
    path = token_store.path_for(config, cache_dir)
    token_store.save(path, tokens.refresh_token, username)
    email = claims.get("email")
    return ManagedLogin(name, username, str(email) if email else None, config.domain, path)


def _id_claims(config: CognitoCredential, id_token: str | None, nonce: str) -> dict[str, Any]:
    """The ID token's claims, once it is shown to be for this login. Its signature is not
    checked: it came straight from the token endpoint over the connection we opened (OpenID
    Connect Core 3.1.3.7 allows TLS to stand in); the nonce proves it answers our request."""
    name = config.name
    if not id_token:
        raise CredentialsUnavailable(f"login {name}: Cognito returned no ID token (is openid "
                                     "among the app client's allowed scopes?); nothing was saved")
    try:
        claims: dict[str, Any] = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise CredentialsUnavailable(f"login {name}: the ID token is not a JWT; nothing was "
                                     "saved") from None
    aud = claims.get("aud")
    if config.client_id not in (aud if isinstance(aud, list) else [aud]):
        raise CredentialsUnavailable(f"login {name}: the ID token is for another app client "
                                     f"(aud {aud!r}); nothing was saved")
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not secrets.compare_digest(sent.encode(), nonce.encode()):
        raise CredentialsUnavailable(f"login {name}: the ID token's nonce does not match this "
                                     "login's (a replayed or substituted token); nothing was "
                                     "saved")
    return claims


def _exchange_advice(e: CognitoError, config: CognitoCredential) -> str:
    at = f"the code exchange at {config.domain}/oauth2/token failed ({e.kind}: {e.message})"
    if e.transient:
        return f"{at}; Cognito is unavailable, try again shortly"
    if e.kind == "invalid_grant":
        return (f"{at}: the code expired or was used already, or its PKCE verifier did not "
                "match; run login again")
    if e.kind == "invalid_client":
        return (f"{at}: Cognito did not accept the app client: check credentials."
                f"{config.name}.client_id and client_secret (a confidential client needs it)")
    if e.kind == "unauthorized_client":
        return f"{at}: enable the authorization code grant on app client {config.client_id}"
    return at


def _printable(text: str, limit: int) -> str:
    # The callback's words come from the network and go to a terminal: no escape sequences.
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes > 1 else ''}"
    return f"{seconds:g} s"


class Callback:
    """The one-shot listener: the first GET of /callback is the answer the login waits for;
    its page is sent once the login knows how it went (`answer`). Anything else (a favicon, a
    second callback, another Host) gets a small error page and changes nothing."""

    def __init__(self, config: CognitoCredential) -> None:
        self._cfg = config
        self._server: asyncio.Server | None = None
        self._params: asyncio.Future[dict[str, str]] = \
            asyncio.get_running_loop().create_future()
        self._page: asyncio.Future[tuple[bool, str]] = \
            asyncio.get_running_loop().create_future()
        self._sent = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Callback:
        port, name = self._cfg.redirect_port, self._cfg.name
        try:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", port,
                                                      limit=MAX_HEAD)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise CredentialsUnavailable(f"login {name}: cannot listen on 127.0.0.1:{port}"
                                             f" for the sign-in callback ({e.strerror})"
                                             ) from None
            raise CredentialsUnavailable(
                f"login {name}: port {port} on 127.0.0.1 is in use, so the sign-in callback "
                "cannot be received: stop what listens there, or set credentials."
                f"{name}.redirect_port to a free port; the app client {self._cfg.client_id} "
                f"must allow the callback URL http://localhost:<port>/callback (now "
                f"{redirect_uri(self._cfg)})") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._page.done():
            self._page.set_result((False, "the login ended; see the terminal"))
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def received(self) -> dict[str, str]:
        return await asyncio.shield(self._params)

    async def answer(self, ok: bool, message: str) -> None:
        """Give the browser its page, and wait (briefly) until it went out."""
        if not self._page.done():
            self._page.set_result((ok, message))
        if self._params.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent.wait(), PAGE_TIMEOUT)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError):
            pass  # a browser's speculative connection, or garbage: nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        host = next((v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
                     if k.strip().lower() == "host"), "")
        url = urlsplit(target)
        if method != "GET":
            return await _send(writer, 405, "Not allowed", "This address only takes the "
                               "browser's redirect from the sign-in page.")
        if urlsplit(f"//{host}").hostname not in _LOOPBACK_HOSTS:
            # DNS rebinding: a page on another name that resolves here is not the sign-in.
            return await _send(writer, 400, "Wrong address", "Open the sign-in at "
                               "http://localhost only.")
        if url.path != CALLBACK_PATH:
            return await _send(writer, 404, "Not found", "authproxy login waits for "
                               f"{CALLBACK_PATH} only.")
        if self._params.done():
            return await _send(writer, 409, "Already answered", "This login has received its "
                               "callback already; see the terminal.")
        self._params.set_result(dict(parse_qsl(url.query, keep_blank_values=True)))
        ok, message = await self._page
        await _send(writer, 200 if ok else 400, "Signed in" if ok else "Sign-in failed",
                    message)
        self._sent.set()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict"}


async def _send(writer: asyncio.StreamWriter, status: int, title: str, message: str) -> None:
    page = (f"<!doctype html><html lang=en><meta charset=utf-8><title>authproxy: "
            f"{html.escape(title)}</title><body style=\"font-family: sans-serif; margin: 3em\">"
            f"<h1>authproxy: {html.escape(title)}</h1><p>{html.escape(message)}</p>"
            + ("" if status == 200 else "<p>You can close this tab and return to the "
               "terminal.</p>") + "</body></html>").encode()
    # no-store and no-referrer: the address held a single-use code, which no cache or next
    # page needs to see.
    writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/html; "
                 f"charset=utf-8\r\nContent-Length: {len(page)}\r\nCache-Control: no-store\r\n"
                 "Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n".encode() + page)
    await writer.drain()
