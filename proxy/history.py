"""Recent exchanges kept in memory for the inspector and `/api/exchanges`, secrets redacted."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from aiohttp import web

from proxy.forward import Exchange
from proxy.log import redact_headers


class History:
    def __init__(self, size: int) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self.counter = 0

    def add(self, request: web.Request, ex: Exchange | None, endpoint: str, status: int,
            total_ms: float, injected: str | None) -> None:
        self.counter += 1
        also = frozenset([injected.lower()]) if injected else frozenset()
        self.entries.append({
            "id": self.counter,
            "time": time.time(),
            "method": request.method,
            "path": request.raw_path,
            "endpoint": endpoint,
            "status": status,
            "total_ms": round(total_ms, 2),
            "upstream_ms": round(ex.upstream_ms, 2) if ex and ex.upstream_ms is not None
            else None,
            "upstream_url": str(ex.upstream_url) if ex and ex.upstream_url else None,
            "request_id": ex.request_id if ex else None,
            "amzn_request_id": ex.amzn_request_id if ex else None,
            "bytes": ex.bytes_out if ex else None,
            "error": ex.error if ex else None,
            "hint": ex.hint if ex else None,
            "replayed": ex.replayed if ex else False,
            "injected_header": injected,
            "request_headers": redact_headers(request.headers.items(), also),
            "sent_headers": redact_headers(ex.sent_headers, also) if ex else [],
            "response_headers": redact_headers(ex.response_headers) if ex else [],
        })

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        items = list(self.entries)
        return items[-limit:][::-1] if limit else items[::-1]
