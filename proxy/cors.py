"""CORS, answered by the proxy itself: preflight answers and the headers of actual responses.

Everything the config decides is built in `__init__`; a request only looks things up.

Origin entries in `cors.allow_origins`:
- an exact origin (`https://app.example.com`, `http://localhost:3000`), compared case-insensitively;
  a default port (`:80` on http, `:443` on https) is dropped, as browsers drop it;
- `"*"`: any origin except `null`; `"null"`: the opaque origin of sandboxed frames and files;
- a pattern: a host label that is exactly `*` stands for one or more DNS labels
  (`https://*.example.com` matches `https://a.b.example.com`, never `https://example.com`,
  `https://evil-example.com` or `https://example.com.evil.test`); a port `*` stands for any port or
  none (`http://localhost:*`). A `*` inside a label (`app-*.example.com`) is not a wildcard, so it
  matches nothing: a half-label wildcard like `*example.com` would admit `evil-example.com`.

A preflight asking for a method or header that is not allowed still gets its 204, with the
configured lists: the browser then refuses the real request and its console names exactly what was
missing (a 403 would only say "preflight failed"). `X-Authproxy-Cors-Denied` says the same for curl
and the inspector. Methods are compared case-sensitively because browsers do (`fetch` sends `patch`
as typed, and `PATCH` does not allow it); header names case-insensitively.
"""

from __future__ import annotations

import re

from proxy.config import Cors
from proxy.errors import error_response
from proxy.http.client_conn import Request
from proxy.http.respond import Response

_CACHE_LIMIT = 1024  # distinct origins remembered; with "*" a client could send endless ones
_ORIGIN = re.compile(r"(https?)://([^/:?#\s]+)(?::(\d+|\*))?")
_LABELS = r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*"
_DEFAULT_PORT = {"http": "80", "https": "443"}


def _normalize(entry: str) -> str:
    entry = entry.lower()
    m = _ORIGIN.fullmatch(entry)
    if m and m.group(3) == _DEFAULT_PORT[m.group(1)]:
        return f"{m.group(1)}://{m.group(2)}"
    return entry


def _pattern(entry: str) -> re.Pattern[str] | None:
    """The regex for an allow_origins entry with a wildcard; None for an exact entry."""
    m = _ORIGIN.fullmatch(entry)
    if m is None or "*" not in entry:
        return None
    scheme, host, port = m.groups()
    labels = r"\.".join(_LABELS if label == "*" else re.escape(label)
                        for label in host.split("."))
    port_re = r"(?::[0-9]{1,5})?" if port == "*" else (f":{port}" if port else "")
    return re.compile(f"{scheme}://{labels}{port_re}")


PROXY_EXPOSED = ("X-Request-Id", "X-Authproxy-Hint", "X-Authproxy-Error")


class CorsPolicy:
    def __init__(self, cors: Cors) -> None:
        entries = [_normalize(o) for o in cors.allow_origins]
        self._any = "*" in entries
        self._exact = frozenset(e for e in entries if e != "*" and _pattern(e) is None)
        self._patterns = tuple(p for p in map(_pattern, entries) if p is not None)
        self._credentials = cors.allow_credentials
        self._private_network = cors.allow_private_network
        self._methods = frozenset(cors.allow_methods)
        self._headers = frozenset(h.lower() for h in cors.allow_headers)
        # "*" in a list is echoed back as the requested value: a literal "*" would not cover
        # Authorization, and browsers ignore it altogether on credentialed requests.
        self._echo_methods = "*" in self._methods
        self._echo_headers = "*" in self._headers

        creds = (("Access-Control-Allow-Credentials", "true"),) if self._credentials else ()
        vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        if self._private_network:
            vary += ", Access-Control-Request-Private-Network"
        self._preflight_fixed: tuple[tuple[str, str], ...] = (
            *creds,
            ("Access-Control-Max-Age", str(cors.max_age)),
            ("Vary", vary),
        )
        self._methods_value = ", ".join(cors.allow_methods)
        self._headers_value = ", ".join(cors.allow_headers)
        # A page should be able to read what the proxy itself adds: the id to find the request
        # in CloudWatch, and why API Gateway refused it.
        ours = [h for h in PROXY_EXPOSED if h.lower() not in {e.lower() for e in
                                                               cors.expose_headers}]
        expose = ", ".join([*cors.expose_headers, *ours])
        self._actual_fixed: tuple[tuple[str, str], ...] = (
            ("Vary", "Origin"), *creds,
            *((("Access-Control-Expose-Headers", expose),) if expose else ()),
        )
        # When some origin may be allowed, an answer depends on Origin even when none was sent:
        # without `Vary: Origin` the browser cache could hand a CORS-less copy to a later fetch().
        self._no_grant: tuple[tuple[str, str], ...] = (
            (("Vary", "Origin"),) if entries else ())
        self._cache: dict[str, tuple[tuple[str, str], ...]] = {}

    def origin_allowed(self, origin: str) -> bool:
        o = origin.lower()
        if o in self._exact:
            return True
        if o == "null":  # only an explicit "null" entry admits it, never "*"
            return False
        return self._any or any(p.fullmatch(o) for p in self._patterns)

    @staticmethod
    def is_preflight(request: Request) -> bool:
        h = request.headers
        return (request.method == "OPTIONS" and "Origin" in h
                and "Access-Control-Request-Method" in h)

    def preflight(self, request: Request) -> Response:
        origin = request.headers.get("Origin", "")
        if not self.origin_allowed(origin):
            return error_response(403, "origin_not_allowed",
                                  f"origin {origin[:200]!r} is not in cors.allow_origins")
        method = request.headers.get("Access-Control-Request-Method", "")
        asked = [h.strip() for h in
                 request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
        headers = [("Access-Control-Allow-Origin", origin), *self._preflight_fixed,
                   ("Access-Control-Allow-Methods",
                    method if self._echo_methods else self._methods_value)]
        if asked:
            headers.append(("Access-Control-Allow-Headers",
                            ", ".join(asked) if self._echo_headers else self._headers_value))
        denied = [] if self._echo_methods or method in self._methods else [f"method {method}"]
        if not self._echo_headers:
            denied += [f"header {h}" for h in asked if h.lower() not in self._headers]
        if denied:
            headers.append(("X-Authproxy-Cors-Denied",
                            "; ".join(denied) + " (see cors.allow_methods / cors.allow_headers)"))
        if (self._private_network and request.headers.get(
                "Access-Control-Request-Private-Network", "").lower() == "true"):
            headers.append(("Access-Control-Allow-Private-Network", "true"))
        return Response(status=204, headers=headers)

    def response_headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        if origin is None:
            return self._no_grant
        found = self._cache.get(origin)
        if found is None:
            found = ((("Access-Control-Allow-Origin", origin), *self._actual_fixed)
                     if self.origin_allowed(origin) else self._no_grant)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[origin] = found
        return found
