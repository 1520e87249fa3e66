"""Credential strategies, built once from the config. Adding one takes its own module, its
config dataclass (and its reading in config.py), a builder and one line of `_BUILDERS`.

A strategy's module is imported by its builder, when a credential of its type is built: what
it stands on (aiohttp for Cognito's HTTP API, PyJWT, cryptography for the shared cache) then
loads only for a config that uses it, and a config of static values starts without them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.config import Credential, TokenCache
from proxy.credentials.base import (
    CredentialSource,
    CredentialsUnavailable,
    Description,
    Headers,
    Outgoing,
)

if TYPE_CHECKING:
    from proxy.credentials.shared import SharedCache


def _static(cfg: Any, cache_dir: Path | None) -> CredentialSource:
    from proxy.credentials.static import StaticSource
    return StaticSource(cfg)


def _cognito(cfg: Any, cache_dir: Path | None) -> CredentialSource:
    from proxy.credentials.cognito import CognitoSource
    return CognitoSource(cfg, cache_dir=cache_dir)


def _iam(cfg: Any, cache_dir: Path | None) -> CredentialSource:
    from proxy.credentials.iam import IamSource
    return IamSource(cfg, cache_dir=cache_dir)


def _command(cfg: Any, cache_dir: Path | None) -> CredentialSource:
    from proxy.credentials.command import CommandSource
    return CommandSource(cfg)


# type -> builder(config, cache_dir): cache_dir is where logins and cached values are kept
# (None: the default, $XDG_CACHE_HOME/authproxy/)
_BUILDERS: dict[str, Callable[[Any, Path | None], CredentialSource]] = {
    "static": _static,
    "cognito": _cognito,
    "iam": _iam,
    "command": _command,
}


def build_source(config: Credential, *, cache_dir: Path | None = None) -> CredentialSource:
    return _BUILDERS[config.type](config, cache_dir)


def build_sources(configs: Mapping[str, Credential], *, shared: SharedCache | None = None,
                  among: Mapping[str, Credential] | None = None
                  ) -> dict[str, CredentialSource]:
    """`shared`: the fleet's cache (token_cache), where each source may keep its values under
    its settings; `among`: every credential of the config, for those `configs` build on."""
    sources = {name: build_source(cfg) for name, cfg in configs.items()}
    if shared is not None:
        from proxy.credentials.shared import settings_material
        for name, source in sources.items():
            source.share(shared.slot(name, settings_material(configs[name], among or configs)))
    return sources


def open_token_cache(config: TokenCache) -> SharedCache | None:
    """The fleet's cache of `token_cache`, not yet started; None when it is not set."""
    if config.url is None:
        return None
    # Imported here: redis-py is an optional extra, checked by config.py when the url is set.
    from proxy.credentials.redis_store import RedisStore
    from proxy.credentials.shared import SharedCache

    return SharedCache(RedisStore(config), key_prefix=config.key_prefix,
                       encryption_key=config.encryption_key)


__all__ = ["CredentialSource", "CredentialsUnavailable", "Description", "Headers", "Outgoing",
           "build_source", "build_sources", "open_token_cache"]
