"""AWS credentials as every `iam` source produces them and the signer consumes them."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.secret import Secret


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: str  # not secret by itself; shown as its first 4 characters only
    secret_access_key: Secret
    session_token: Secret | None = None  # temporary credentials (STS, identity pools)

    @property
    def shown_key_id(self) -> str:
        """What logs, readyz and explain may show of the key id: `ASIA…`."""
        return f"{self.access_key_id[:4]}…"
