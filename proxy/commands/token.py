"""`authproxy token NAME` and `authproxy login NAME`: the CLI side of proxy/login.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import getpass
import json
import logging
import os
import shlex
import sys
import threading
import webbrowser

from proxy.commands.decode import decode
from proxy.config import Config, Credential
from proxy.credentials import CredentialsUnavailable, build_source
from proxy.login import aws_credentials, login, token


def _quiet() -> None:
    # The token source logs its failures for `serve`; here the one clear stderr line is ours.
    logging.disable(logging.ERROR)


def _credential(config: Config, name: str) -> Credential | None:
    cred = config.credentials.get(name)
    if cred is None:
        close = difflib.get_close_matches(name, list(config.credentials), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else \
            f" (credentials: {', '.join(config.credentials) or 'none'})"
        print(f"authproxy: no credential {name!r} in {config.source}{hint}", file=sys.stderr)
    return cred


def token_command(config: Config, name: str, claims: bool, raw: bool,
                  fmt: str | None = None) -> int:
    cred = _credential(config, name)
    if cred is None:
        return 2
    described = build_source(cred).describe()
    if described.aws_keys:
        return _aws_keys(config, name, fmt or "env")
    if fmt is not None:
        print(f"authproxy token: --format is for iam credentials; {name} gives a header value "
              "(use --raw or --claims)", file=sys.stderr)
        return 2
    _quiet()
    try:
        value = asyncio.run(token(cred))
    except CredentialsUnavailable as e:
        print(f"authproxy token {name}: {e}", file=sys.stderr)
        return 1
    prefix = described.prefix
    bare = value[len(prefix):] if prefix and value.startswith(prefix) else value
    if claims:
        return 0 if decode(bare) == 0 else 1
    print(bare if raw else value)
    return 0


def _aws_keys(config: Config, name: str, fmt: str) -> int:
    _quiet()
    try:
        keys, expires = asyncio.run(aws_credentials(config.credentials, name))
    except CredentialsUnavailable as e:
        print(f"authproxy token {name}: {e}", file=sys.stderr)
        return 1
    when = (dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if expires is not None else None)
    token = keys.session_token.reveal() if keys.session_token else None
    if fmt == "credential-process":
        # The AWS CLI/SDK `credential_process` contract (Version 1); without Expiration the
        # SDK treats the keys as long-lived.
        out: dict[str, object] = {"Version": 1, "AccessKeyId": keys.access_key_id,
                                  "SecretAccessKey": keys.secret_access_key.reveal()}
        if token:
            out["SessionToken"] = token
        if when:
            out["Expiration"] = when
        print(json.dumps(out))
        return 0
    print(f"export AWS_ACCESS_KEY_ID={shlex.quote(keys.access_key_id)}")
    print(f"export AWS_SECRET_ACCESS_KEY={shlex.quote(keys.secret_access_key.reveal())}")
    if token:
        print(f"export AWS_SESSION_TOKEN={shlex.quote(token)}")
    if when:
        print(f"export AWS_CREDENTIAL_EXPIRATION={when}")
    return 0


def _prompt(kind: str, message: str, secret: bool) -> str:
    """Ask on the terminal (no echo for secrets); from a pipe, read one line per question so
    scripts can answer: `printf 'pw\\n123456\\n' | authproxy login user`."""
    if sys.stdin.isatty():
        return getpass.getpass(f"{message}: ") if secret else input(f"{message}: ")
    print(f"{message}: ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise CredentialsUnavailable(f"no answer on stdin for: {message}")
    print(file=sys.stderr)
    return line.rstrip("\r\n")


def _show_url(url: str, open_browser: bool) -> None:
    """The managed login's URL: printed always (to copy to another device), opened in the
    default browser unless --no-browser or there is no display to show one on."""
    print(f"Sign in on the managed login page:\n  {url}", file=sys.stderr, flush=True)
    if not open_browser:
        return
    if not _has_display():
        print("(no display found: open the URL in a browser yourself)", file=sys.stderr,
              flush=True)
        return

    def launch() -> None:
        # A thread: a browser command that stays in the foreground must not stall the
        # listener the browser is about to call back.
        if not webbrowser.open(url):
            print("(could not open a browser: open the URL yourself)", file=sys.stderr,
                  flush=True)
    threading.Thread(target=launch, name="open-browser", daemon=True).start()


def _has_display() -> bool:
    # Without one, `webbrowser` falls back to text browsers (lynx, w3m) that would take over
    # the terminal the login is waiting in.
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _login_timeout() -> float | None:
    value = os.environ.get("AUTHPROXY_LOGIN_TIMEOUT")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise CredentialsUnavailable(f"AUTHPROXY_LOGIN_TIMEOUT must be a number of seconds, "
                                     f"got {value!r}")
    return seconds


def login_command(config: Config, name: str, no_browser: bool = False) -> int:
    cred = _credential(config, name)
    if cred is None:
        return 2
    described = build_source(cred).describe()
    if not described.signs_in:
        print(f"authproxy login: {name} is a {described.type} credential; there is nothing to "
              "sign in to", file=sys.stderr)
        return 1
    _quiet()

    def prompt(kind: str, message: str, secret: bool) -> str:
        if kind == "browser":
            _show_url(message, not no_browser)
            return ""
        return _prompt(kind, message, secret)
    try:
        result = asyncio.run(login(cred, prompt, timeout=_login_timeout()))
    except CredentialsUnavailable as e:
        print(f"authproxy login {name}: {e}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print(f"\nauthproxy login {name}: cancelled", file=sys.stderr)
        return 1
    print(result)
    return 0
