"""`authproxy token NAME` and `authproxy login NAME`: the CLI side of proxy/login.py."""

from __future__ import annotations

import asyncio
import difflib
import getpass
import logging
import sys

from proxy.commands.decode import decode
from proxy.config import Config, Credential
from proxy.credentials import CredentialsUnavailable, build_source
from proxy.login import login, token


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


def token_command(config: Config, name: str, claims: bool, raw: bool) -> int:
    cred = _credential(config, name)
    if cred is None:
        return 2
    _quiet()
    try:
        value = asyncio.run(token(cred))
    except CredentialsUnavailable as e:
        print(f"authproxy token {name}: {e}", file=sys.stderr)
        return 1
    prefix = build_source(cred).describe().prefix
    bare = value[len(prefix):] if prefix and value.startswith(prefix) else value
    if claims:
        return 0 if decode(bare) == 0 else 1
    print(bare if raw else value)
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


def login_command(config: Config, name: str) -> int:
    cred = _credential(config, name)
    if cred is None:
        return 2
    described = build_source(cred).describe()
    if not described.signs_in:
        print(f"authproxy login: {name} is a {described.type} credential; there is nothing to "
              "sign in to", file=sys.stderr)
        return 1
    _quiet()
    try:
        result = asyncio.run(login(cred, _prompt))
    except CredentialsUnavailable as e:
        print(f"authproxy login {name}: {e}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print(f"\nauthproxy login {name}: cancelled", file=sys.stderr)
        return 1
    print(result)
    return 0
