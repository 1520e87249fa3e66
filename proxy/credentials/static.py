"""`type: static`: a fixed header value, such as a token for a Lambda authorizer or an API key."""

from __future__ import annotations

from typing import Any

from proxy.config import StaticCredential
from proxy.credentials.base import CredentialSource


class StaticSource(CredentialSource):
    flow = "static"

    def __init__(self, config: StaticCredential) -> None:
        self.name = config.name
        self.header_name = config.header
        self._value = config.value.reveal()

    def current(self) -> str:
        return self._value

    async def header(self) -> str:
        return self._value

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "type": "static", "flow": self.flow, "state": "ready",
                "header": self.header_name, "ready": True}
