"""A WSGI app for gunicorn (a real server, not ours) that answers the shapes real clients
tripped over: redirects of every Location form, a bare 418 without Content-Type, a header byte
that is not UTF-8."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/redirect":
        start_response("302 Found", [("Location", query["to"][0]), ("Content-Length", "0")])
        return [b""]
    if path == "/teapot":
        body = b"I'm a teapot"
        start_response("418 I'm a teapot", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/latin":
        # WSGI header values are latin-1 strings: this is the single byte 0xE9 on the wire.
        start_response("200 OK", [("X-Latin", "caf\xe9"), ("Content-Type", "text/plain"),
                                  ("Content-Length", "2")])
        return [b"ok"]
    body = json.dumps({"path": path, "method": environ["REQUEST_METHOD"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
