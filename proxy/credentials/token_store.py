"""The refresh-token cache that `authproxy login` writes and `serve` / `token` read.

One small JSON file per (user pool, app client, configured username) (for a managed login:
per domain, identity provider and app client) under
`$XDG_CACHE_HOME/authproxy/` (default `~/.cache/authproxy/`): keyed by what identifies the
sign-in rather than by the credential's name, so renaming a credential keeps its login and two
names for the same user share it. Files are mode 0600 in a 0700 directory and are replaced
atomically (temporary file, fsync, rename), so a reader never sees half a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.config import CognitoCredential
from proxy.secret import Secret

log = logging.getLogger("authproxy.cognito")


@dataclass(frozen=True)
class SavedLogin:
    refresh_token: Secret
    username: str  # Cognito's internal username: SECRET_HASH on refresh must use it
    saved_at: float  # epoch seconds


def default_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "authproxy"


def path_for(config: CognitoCredential, directory: Path) -> Path:
    if config.flow == "authorization_code":
        # No pool id or username in such a config: the managed login (domain, identity
        # provider) and the app client say whose sign-in it is; the user is known only after.
        where = hashlib.sha256(f"{config.domain}\0{config.identity_provider or ''}".encode())
        return directory / f"oauth2.{config.client_id}.{where.hexdigest()[:16]}.json"
    # The username is hashed: it is often an email address, which need not show in `ls`.
    who = hashlib.sha256(config.username.encode()).hexdigest()[:16]
    return directory / f"{config.user_pool_id}.{config.client_id}.{who}.json"


def stamp(path: Path) -> tuple[int, int] | None:
    """Cheap change detection (mtime, size); None when there is no file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def load(path: Path) -> SavedLogin | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SavedLogin(Secret(str(data["refresh_token"])), str(data.get("username", "")),
                          float(data.get("saved_at", 0)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable token cache %s (%s); run `authproxy login` again",
                    path, type(e).__name__)
        return None


def save(path: Path, refresh_token: str, username: str) -> None:
    write_private(path, {"version": 1, "refresh_token": refresh_token, "username": username,
                         "saved_at": time.time()})


def write_private(path: Path, data: Mapping[str, object]) -> None:
    """JSON to a 0600 file in a 0700 directory, replaced atomically (temporary file, fsync,
    rename), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps(data).encode()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
