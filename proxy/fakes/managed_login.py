"""The fake Cognito's managed login (Hosted UI): the pages a browser signs in on and the two
OAuth2 grants that go with them at /oauth2/token. Part of `FakeCognito`, sharing its pools,
users, app clients, refresh tokens, clock and call counters.

    pool = fake.add_pool()
    client = fake.add_client(pool, oauth_flows=["code"], scopes=["openid", "email"],
                             callback_urls=["http://localhost:8976/callback"])
    fake.add_user(pool, "alice", "Passw0rd!")
    # a browser opens  <fake.url>/oauth2/authorize?response_type=code&client_id=...&...

As in Cognito: `/oauth2/authorize` checks the request and sends the browser on to `/login`,
a real HTML form; the username and password are checked against the pool's users (with the
pool's lockout); the redirect URI must be one of the client's callback URLs, exactly, or no
redirect happens at all (an error page instead); the client needs the `code` grant; the
scopes must be among its allowed ones; PKCE is S256 only. Codes are single use (a second
presentation, right or wrong, finds nothing), bound to the client and the redirect URI, and
expire after five minutes; the verifier is checked with this module's own hashing, which shares
no code with the client under test. Cancel redirects with `error=access_denied`. A refresh at
/oauth2/token gives new ID and access tokens and no new refresh token.

The fake asks no MFA or new-password questions on these pages: a user who has such a challenge
pending is told so rather than signed in. A federated provider listed on the client
(`identity_providers`) is stood in for by the same form, labelled with its name.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from proxy.fakes.aws_json import JsonFault
from proxy.fakes.cognito_pool import FakeClient, user_tokens

if TYPE_CHECKING:
    from multidict import MultiDictProxy, MultiMapping

    from proxy.fakes.cognito import FakeCognito

FORM = "application/x-www-form-urlencoded"
CODE_LIFETIME = 300.0  # seconds; Cognito's authorization codes last five minutes
# RFC 7636 4.1: 43 to 128 unreserved characters; S256 challenges are 43 base64url characters
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# The authorize request's parameters the sign-in form carries along to its POST
_CARRIED = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
            "code_challenge", "code_challenge_method", "identity_provider")


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect_uri: str
    pool_id: str
    username: str
    scopes: tuple[str, ...]
    nonce: str | None
    challenge: str | None
    expires: float  # wall time, on the fake's clock
    auth_time: int


@dataclass(frozen=True)
class _Authorize:
    """An authorize request that checked out."""
    client: FakeClient
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    challenge: str | None
    provider: str
    carried: dict[str, str]


class _Refused(Exception):
    """An authorize request refused: back to the redirect URI with `error=` when that URI is
    the client's (`redirect`), else an error page, since the redirect cannot be trusted."""

    def __init__(self, error: str, description: str, redirect: str | None = None,
                 state: str | None = None) -> None:
        super().__init__(description)
        self.error, self.description, self.redirect, self.state = (error, description,
                                                                   redirect, state)

    def response(self) -> web.Response:
        if self.redirect is None:
            return _page(400, "Something went wrong", f"{self.error}: {self.description}")
        return _redirect(self.redirect, {"error": self.error,
                                         "error_description": self.description,
                                         **({"state": self.state} if self.state else {})})


class ManagedLogin:
    def __init__(self, cognito: FakeCognito) -> None:
        self.cognito = cognito
        self.codes: dict[str, _Code] = {}
        # every form the token endpoint took for these grants and every answer it gave, as
        # they were (codes, verifiers, tokens), so a test can look for each where none may be
        self.token_forms: list[dict[str, str]] = []
        self.issued: list[dict[str, Any]] = []

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/oauth2/authorize", self._authorize)
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)

    # --- the browser's side -----------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        self.cognito.calls["oauth2/authorize"] += 1
        try:
            asked = self._check(request.query)
        except _Refused as r:
            return r.response()
        # As Cognito does: the chooser / sign-in page lives at /login, with the same query.
        return web.Response(status=302, headers={"Location": "/login?" + urlencode(
            asked.carried)})

    async def _login_page(self, request: web.Request) -> web.Response:
        try:
            asked = self._check(request.query)
        except _Refused as r:
            return r.response()
        return self._form(asked)

    async def _login(self, request: web.Request) -> web.Response:
        self.cognito.calls["login"] += 1
        if request.content_type != FORM:
            return _page(400, "Something went wrong", "invalid_request: the sign-in form is "
                         f"posted as {FORM}")
        form = await request.post()
        try:
            asked = self._check(form)
        except _Refused as r:
            return r.response()
        if form.get("action") == "cancel":
            return _redirect(asked.redirect_uri, {
                "error": "access_denied", "error_description": "The user cancelled the sign-in",
                **({"state": asked.state} if asked.state else {})})
        pool = self.cognito.pools[asked.client.pool_id]
        typed, password = str(form.get("username", "")), str(form.get("password", ""))
        try:
            user = self.cognito.check_password(pool, typed, password)
        except JsonFault as f:
            # The page never says whether the user exists.
            shown = "Incorrect username or password." if f.kind == "UserNotFoundException" \
                else f.message
            return self._form(asked, error=shown, username=typed)
        if user.challenges:
            return self._form(asked, error=f"This fake managed login does not answer "
                              f"{', '.join(user.challenges)}; sign in with a user without "
                              "pending challenges.", username=typed)
        code = str(uuid.uuid4())
        self.codes[code] = _Code(asked.client.client_id, asked.redirect_uri, pool.pool_id,
                                 user.username, asked.scopes, asked.nonce, asked.challenge,
                                 self.cognito.clock() + CODE_LIFETIME, int(self.cognito.clock()))
        return _redirect(asked.redirect_uri, {"code": code,
                                              **({"state": asked.state} if asked.state else {})})

    def _check(self, params: MultiMapping[Any]) -> _Authorize:
        """An authorize request (or the form carrying it) as Cognito checks it."""
        client = self.cognito.clients.get(str(params.get("client_id", "")))
        if client is None:
            raise _Refused("invalid_request", "unknown client_id")
        uri = str(params.get("redirect_uri", ""))
        if uri not in client.callback_urls:
            raise _Refused("redirect_mismatch", "redirect_uri is not one of the app client's "
                           "callback URLs")
        state = str(params["state"]) if params.get("state") else None
        refuse = {"redirect": uri, "state": state}
        if params.get("response_type") != "code":
            raise _Refused("unsupported_response_type", "response_type must be code",
                           **refuse)
        if "code" not in client.oauth_flows:
            raise _Refused("unauthorized_client", "the code grant is not enabled for this "
                           "client", **refuse)
        scopes = tuple(str(params.get("scope", "")).split()) or client.scopes
        if not set(scopes) <= set(client.scopes):
            raise _Refused("invalid_scope", "a requested scope is not allowed for this client",
                           **refuse)
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if challenge is not None or method is not None:
            if method != "S256":  # Cognito supports S256 only
                raise _Refused("invalid_request", "code_challenge_method must be S256",
                               **refuse)
            if not _CHALLENGE.fullmatch(str(challenge or "")):
                raise _Refused("invalid_request", "code_challenge is malformed", **refuse)
        provider = str(params.get("identity_provider") or "COGNITO")
        if provider not in client.identity_providers:
            raise _Refused("invalid_request", f"identity provider {provider} is not enabled "
                           "for this client", **refuse)
        carried = {k: str(params[k]) for k in _CARRIED if params.get(k) is not None}
        return _Authorize(client, uri, scopes, state, str(params["nonce"]) if params.get(
            "nonce") else None, str(challenge) if challenge else None, provider, carried)

    def _form(self, asked: _Authorize, error: str = "", username: str = "") -> web.Response:
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" '
                         f'value="{html.escape(v)}">' for k, v in asked.carried.items())
        via = "" if asked.provider == "COGNITO" else f" with {asked.provider}"
        shown = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = f"""<form method="post" action="/login">{hidden}
<h1>Sign in{html.escape(via)}</h1>{shown}
<label>Username <input id="username" name="username" autocomplete="username" required
  value="{html.escape(username)}"></label>
<label>Password <input id="password" name="password" type="password"
  autocomplete="current-password" required></label>
<button id="signin" type="submit" name="action" value="signin">Sign in</button>
<button id="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>"""
        return _page(200, f"Sign in{via}", body, raw=True)

    # --- the token endpoint's side ----------------------------------------------------------

    def token(self, grant: str, client: FakeClient, form: MultiDictProxy[Any]) -> web.Response:
        """/oauth2/token for grant authorization_code or refresh_token, once the client has
        authenticated (FakeCognito checks that and the form's Content-Type)."""
        self.token_forms.append({k: str(v) for k, v in form.items()})
        if grant == "authorization_code":
            return self._exchange(client, form)
        return self._refresh(client, form)

    def _exchange(self, client: FakeClient, form: MultiDictProxy[Any]) -> web.Response:
        if "code" not in client.oauth_flows:
            return oauth_error("unauthorized_client")
        code, uri = str(form.get("code", "")), str(form.get("redirect_uri", ""))
        if not code or not uri:
            return oauth_error("invalid_request")
        issued = self.codes.pop(code, None)  # single use, whatever comes of this presentation
        if (issued is None or issued.client_id != client.client_id
                or issued.redirect_uri != uri or self.cognito.clock() >= issued.expires):
            return oauth_error("invalid_grant")
        if issued.challenge is not None:
            verifier = form.get("code_verifier")
            if verifier is None:
                return oauth_error("invalid_request")
            if not _VERIFIER.fullmatch(str(verifier)) or not secrets.compare_digest(
                    _s256(str(verifier)), issued.challenge):
                return oauth_error("invalid_grant")
        user = self.cognito.pools[issued.pool_id].users.get(issued.username)
        if user is None or not user.enabled:
            return oauth_error("invalid_grant")
        refresh = self.cognito.new_refresh_token(issued.pool_id, client.client_id,
                                                 user.username, issued.auth_time, issued.scopes)
        return self._tokens(client, issued.pool_id, issued.username, issued.scopes,
                            issued.auth_time, nonce=issued.nonce, refresh=refresh)

    def _refresh(self, client: FakeClient, form: MultiDictProxy[Any]) -> web.Response:
        token = str(form.get("refresh_token", ""))
        if not token:
            return oauth_error("invalid_request")
        held = self.cognito.refresh_record(token)
        if held is None or held.client_id != client.client_id or held.revoked:
            return oauth_error("invalid_grant")
        user = self.cognito.pools[held.pool_id].users.get(held.username)
        if user is None or not user.enabled:
            return oauth_error("invalid_grant")
        # Cognito hands out no new refresh token here; the old one goes on working.
        # A refresh token from InitiateAuth was granted what such sign-ins get.
        scopes = held.scopes or ("openid", "aws.cognito.signin.user.admin")
        return self._tokens(client, held.pool_id, held.username, scopes, held.auth_time)

    def _tokens(self, client: FakeClient, pool_id: str, username: str, scopes: tuple[str, ...],
                auth_time: int, *, nonce: str | None = None,
                refresh: str | None = None) -> web.Response:
        fake = self.cognito
        pool = fake.pools[pool_id]
        now = int(fake.clock() + fake.clock_skew)
        issued = user_tokens(pool, client, pool.users[username], issuer=fake.issuer(pool_id),
                             now=now, lifetime=fake.token_lifetime, auth_time=auth_time,
                             scope=" ".join(scopes), id_extra={"nonce": nonce} if nonce else None)
        body: dict[str, Any] = {"access_token": issued["AccessToken"],
                                "expires_in": fake.token_lifetime, "token_type": "Bearer"}
        if "openid" in scopes:  # no ID token without the openid scope
            body["id_token"] = issued["IdToken"]
        if refresh:
            body["refresh_token"] = refresh
        self.issued.append(body)
        return web.json_response(body)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def oauth_error(error: str) -> web.Response:
    """Cognito's token endpoint refusal: 400 {"error": ...}."""
    return web.json_response({"error": error}, status=400)


def _redirect(uri: str, params: dict[str, str]) -> web.Response:
    return web.Response(status=302, headers={"Location": f"{uri}?{urlencode(params)}",
                                             "Cache-Control": "no-store"})


def _page(status: int, title: str, body: str, raw: bool = False) -> web.Response:
    content = body if raw else f"<h1>{html.escape(title)}</h1><p>{html.escape(body)}</p>"
    return web.Response(status=status, content_type="text/html", text=(
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<body>{content}</body></html>"))
