"""The small protocol every credential strategy follows.

A request asks `current()` first: a plain lookup that returns the header value when one is ready
now. Only when it returns None does the request await `header()`, which may fetch. Strategies use
aiohttp's client (the app's one ClientSession, given at `start`) but never `aiohttp.web`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import aiohttp


class CredentialsUnavailable(Exception):
    """No header value can be had now. The message says why and what to do, never a secret."""


class CredentialSource(ABC):
    name: str
    header_name: str  # the header this strategy injects, e.g. Authorization
    flow: str  # shown in status: static, none, password, srp, ...
    refreshable = False  # True when `rejected` can produce a new value (an upstream 401 replays)

    async def start(self, session: aiohttp.ClientSession) -> None:  # noqa: B027
        """Called once the app's ClientSession exists; may begin a first fetch."""

    async def close(self) -> None:  # noqa: B027
        """Stop background work."""

    def current(self) -> str | None:
        """The header value if one is valid now, without waiting. None means: await header()."""
        return None

    @abstractmethod
    async def header(self) -> str:
        """The header value, fetching it if need be; raises CredentialsUnavailable."""

    async def rejected(self, value: str) -> bool:
        """The upstream answered 401 to `value`. Return True when a different value is now
        available and the request is worth replaying."""
        return False

    def ready(self) -> bool:
        return self.current() is not None

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """State for readyz, metrics and the inspector: JSON-able, never a secret."""
