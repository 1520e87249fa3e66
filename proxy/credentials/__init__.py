"""Credential strategies, built once from the config. Adding one takes its own module, its
config dataclass (and its reading in config.py) and one line of `_BUILDERS`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from proxy.config import Credential
from proxy.credentials.base import (
    CredentialSource,
    CredentialsUnavailable,
    Description,
    Headers,
    Outgoing,
)
from proxy.credentials.cognito import CognitoSource
from proxy.credentials.command import CommandSource
from proxy.credentials.iam import IamSource
from proxy.credentials.static import StaticSource

# type -> builder(config, cache_dir): cache_dir is where logins and cached values are kept
# (None: the default, $XDG_CACHE_HOME/authproxy/)
_BUILDERS: dict[str, Callable[[Any, Path | None], CredentialSource]] = {
    "static": lambda cfg, cache_dir: StaticSource(cfg),
    "cognito": lambda cfg, cache_dir: CognitoSource(cfg, cache_dir=cache_dir),
    "iam": lambda cfg, cache_dir: IamSource(cfg, cache_dir=cache_dir),
    "command": lambda cfg, cache_dir: CommandSource(cfg),
}


def build_source(config: Credential, *, cache_dir: Path | None = None) -> CredentialSource:
    return _BUILDERS[config.type](config, cache_dir)


def build_sources(configs: Mapping[str, Credential]) -> dict[str, CredentialSource]:
    return {name: build_source(cfg) for name, cfg in configs.items()}


__all__ = ["CredentialSource", "CredentialsUnavailable", "Description", "Headers", "Outgoing",
           "build_source", "build_sources"]
