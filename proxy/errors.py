"""The SPEC's error answers: JSON `{"error": CODE, "message": TEXT}` plus `X-Authproxy-Error`."""

from __future__ import annotations

import json

from proxy.http.respond import Response

ERROR_HEADER = "X-Authproxy-Error"


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": code, "message": message}).encode()
    resp = Response(status=status, body=body, content_type="application/json")
    resp.headers[ERROR_HEADER] = code
    if headers:
        resp.headers.update(headers)
    return resp
