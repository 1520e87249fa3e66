"""Small complete answers sent in one write, past aiohttp's response machinery.

When the upstream's whole answer is already in memory (nearly every API call), aiohttp's
prepare/_prepare_headers/write_headers/write_eof path cost about a sixth of the proxy's CPU per
request. `Ready` serializes the status line, headers and body once and writes them in one go;
aiohttp's request handler sees an ordinary, already finished StreamResponse. It adds what
aiohttp would have added (Date, Server, Content-Length, a default Content-Type) so clients see
the same answer either way.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE

MAX_READY = 256 * 1024  # larger complete bodies go the ordinary (draining) way
_ADDED = frozenset({"content-length", "date", "server", "content-type"})
_date = ("", 0)


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[1] != now:
        _date = (formatdate(now, usegmt=True), now)
    return _date[0]


def fits(request: web.BaseRequest, status: int, body: bytes) -> bool:
    """Plain keep-alive HTTP/1.1 with a body that may be sent: the one shape `Ready` handles."""
    return (len(body) <= MAX_READY and request.version == (1, 1) and request.keep_alive
            and request.method != "HEAD" and 200 <= status and status not in (204, 304))


class Ready(web.StreamResponse):
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        super().__init__(status=status, reason=reason)
        have: set[str] = set()
        lines = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers:
            low = name.lower()
            if low in _ADDED:
                if low == "content-length":
                    continue  # ours, below: the body is exactly this long
                have.add(low)
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        if "date" not in have:
            lines.append(f"Date: {_http_date()}")
        if "server" not in have:
            lines.append(f"Server: {SERVER_SOFTWARE}")
        if body and "content-type" not in have:
            lines.append("Content-Type: application/octet-stream")
        lines.append("\r\n")
        self._data = "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        self._eof_sent = True
        self._keep_alive = True
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client disconnected")
        transport.write(self._data)
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None
