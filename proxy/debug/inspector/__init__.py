"""The inspector page: static HTML, CSS and JS shipped in this package (no build step, no CDN),
served from memory under `admin.prefix` with headers that let it run only its own script.

The page polls `api/exchanges?since=<last id>` every second rather than holding an SSE stream:
the admin answers stay plain synchronous lookups, no long-lived response holds up the graceful
drain at shutdown or a reload, a hidden tab simply stops asking, and on loopback a poll that
returns nothing new costs well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from proxy.http.client_conn import Request
from proxy.http.respond import Response

# The page only talks to its own origin and runs only its own files; it may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

FILES = {  # admin sub-path -> (file, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


class Inspector:
    def __init__(self) -> None:
        here = resources.files(__name__)
        self.files = {sub: ((here / name).read_bytes(), ctype)
                      for sub, (name, ctype) in FILES.items()}

    def routes(self) -> dict[str, Callable[[Request], Response]]:
        out: dict[str, Callable[[Request], Response]] = {"": self.to_page}
        for sub, (body, ctype) in self.files.items():
            out[sub] = self._file(body, ctype)
        return out

    @staticmethod
    def _file(body: bytes, ctype: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            return Response(body=body, headers=SECURITY_HEADERS | {"Content-Type": ctype})
        return serve

    @staticmethod
    def to_page(request: Request) -> Response:
        # The page's relative URLs (static/app.js, api/exchanges) need the trailing slash.
        path = request.raw_path.partition("?")[0]
        return Response(status=308, headers=SECURITY_HEADERS | {"Location": path + "/"})
