"""Reading a JWT without verifying it, and saying times the way people read them.

Shared by the debugging surface (hints, history, the inspector) and the CLI (`decode`): it lives
down here, below both, so that no request-path module imports a command.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any


def _part(segment: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWT; raises ValueError when it is not one."""
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"a JWT has 3 dot-separated parts, this has {len(parts)}")
    try:
        return _part(parts[0]), _part(parts[1])
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"its header or payload is not base64url JSON ({e})") from None


def human_delta(seconds: float) -> str:
    s = int(abs(seconds))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    text = " ".join(f"{n}{u}" for n, u in ((d, "d"), (h, "h"), (m, "m")) if n) or f"{s % 60}s"
    if not d and not h and m and s % 60:
        text += f" {s % 60}s"
    return text


def describe_time(claim: str, value: Any, now: float) -> str:
    if not isinstance(value, int | float):
        return repr(value)
    when = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = value - now
    if claim == "exp":
        rel = f"expires in {human_delta(delta)}" if delta > 0 else \
            f"EXPIRED {human_delta(delta)} ago"
    else:
        rel = f"{human_delta(delta)} ago" if delta <= 0 else f"in {human_delta(delta)}"
    return f"{value}  ({when}, {rel})"
