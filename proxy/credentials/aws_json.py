"""Reading the answers of AWS's JSON APIs (Cognito user pools and identity pools) the same way:
the body as an object whatever its Content-Type, and an error's kind and message."""

from __future__ import annotations

import json
from typing import Any


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); ValueError when it is something else."""
    value = json.loads(raw or b"{}")
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def error_kind(data: dict[str, Any], status: int, *fallbacks: str) -> str:
    """`__type` without its `ns#` prefix and `:...` suffix (AWS JSON 1.1), else the first
    non-empty fallback (the OAuth `error`, the x-amzn-ErrorType header), else HTTP<status>."""
    kind = str(data.get("__type") or next((f for f in fallbacks if f), "") or f"HTTP{status}")
    return kind.rsplit("#", 1)[-1].split(":", 1)[0] or f"HTTP{status}"


def error_message(data: dict[str, Any], status: int, *extra_keys: str) -> str:
    return str(data.get("message") or data.get("Message")
               or next((data[k] for k in extra_keys if data.get(k)), "")
               or ("unreadable response" if status == 200 else f"HTTP {status}"))
