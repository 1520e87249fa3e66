"""`type: static`: a fixed header value, such as a token for a Lambda authorizer or an API key."""

from __future__ import annotations

from typing import Any

from proxy.config import StaticCredential
from proxy.credentials.base import CredentialSource, Description, Headers, Outgoing


class StaticSource(CredentialSource):
    flow = "static"

    def __init__(self, config: StaticCredential) -> None:
        self.name = config.name
        self.header_name = config.header
        self._config = config
        self._headers: Headers = ((config.header, config.value.reveal()),)  # built once

    def current(self) -> Headers:
        return self._headers

    async def headers_for(self, request: Outgoing) -> Headers:
        return self._headers

    def describe(self) -> Description:
        shown = str(self._config.value)  # a Secret prints redacted
        return Description(
            name=self.name, type="static", header=self.header_name,
            summary=f"static, header {self.header_name}: {shown}", how="static value",
            headers=((self.header_name, shown),), redacted=True, flow=self.flow)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "type": "static", "flow": self.flow, "state": "ready",
                "header": self.header_name, "ready": True}
