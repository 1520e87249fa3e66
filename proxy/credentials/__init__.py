"""Credential strategies, built once from the config. Adding one touches its own module and one
line of `_BUILDERS`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from proxy.config import Credential
from proxy.credentials.base import CredentialSource, CredentialsUnavailable
from proxy.credentials.cognito import CognitoSource
from proxy.credentials.static import StaticSource

_BUILDERS: dict[str, Callable[[Any], CredentialSource]] = {
    "static": StaticSource,
    "cognito": CognitoSource,
}


def build_sources(configs: Mapping[str, Credential]) -> dict[str, CredentialSource]:
    return {name: _BUILDERS[cfg.type](cfg) for name, cfg in configs.items()}


__all__ = ["CredentialSource", "CredentialsUnavailable", "build_sources"]
