"""AWS's JSON 1.1 protocol as the fakes speak it: the checks every operation call passes
first (the full `X-Amz-Target`, the Content-Type, a JSON object body), and errors in its shape
(`{"__type": kind, "message": ...}` plus `x-amzn-ErrorType`)."""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any

from aiohttp import web

AMZ_JSON = "application/x-amz-json-1.1"


class JsonFault(Exception):
    """Answered in the JSON protocol's error shape."""

    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status

    def response(self) -> web.Response:
        return web.json_response({"__type": self.kind, "message": self.message},
                                 status=self.status, content_type=AMZ_JSON,
                                 headers={"x-amzn-ErrorType": f"{self.kind}:"})


async def read_call(request: web.Request, target_prefix: str, operations: Container[str], *,
                    empty_body: bool = False) -> tuple[str, dict[str, Any]]:
    """(operation, body) of a call, or JsonFault as AWS refuses it. `empty_body`: an empty body
    reads as `{}`."""
    target = request.headers.get("X-Amz-Target", "")
    op = target.removeprefix(target_prefix) if target.startswith(target_prefix) else ""
    if op not in operations:
        # AWS's JSON protocol: the operation is named by the full target only.
        raise JsonFault("UnknownOperationException",
                        f"Unknown operation {target!r}" if target
                        else "Missing X-Amz-Target header")
    if request.content_type != AMZ_JSON:
        # A body it will not read as JSON 1.1: SerializationException.
        raise JsonFault("SerializationException", f"Content-Type must be {AMZ_JSON}, "
                        f"got {request.content_type!r}")
    raw = await request.read()
    try:
        body = json.loads(raw or b"{}" if empty_body else raw)
    except ValueError:
        raise JsonFault("SerializationException", "Body is not JSON") from None
    if not isinstance(body, dict):
        raise JsonFault("SerializationException", "Body is not a JSON object")
    return op, body
