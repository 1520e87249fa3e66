"""The confused-deputy wall: every request passes `Guard.check` before anything else is done.

authproxy adds credentials to whatever reaches it, and any web page the user visits can send
requests to localhost. So a request is refused unless its Host is a name only this machine answers
to (DNS rebinding), its Origin is allowed (CSRF; every method, since a form POST needs no
preflight), and it carries `X-Authproxy-Secret` when one is configured.
"""

from __future__ import annotations

import hmac
import ipaddress
import re

from proxy.config import Cors, Listen
from proxy.cors import CorsPolicy
from proxy.errors import error_response
from proxy.http.client_conn import Request
from proxy.http.respond import Response

SECRET_HEADER = "X-Authproxy-Secret"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
# Browsers resolve every *.localhost name to loopback themselves (RFC 6761), never via DNS.
_SUB_LOCALHOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.localhost")


def _split_host(value: str) -> tuple[str, str] | None:
    """`host[:port]` -> (lowercased host, port); None when it is not a well-formed authority."""
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
    if not host or (port and not (port.isascii() and port.isdigit())):
        return None
    return host.lower(), port


class Guard:
    def __init__(self, listen: Listen, cors: Cors) -> None:
        self._listen = listen
        extra = {f"[{h}]" if ":" in h and not h.startswith("[") else h.lower()
                 for h in listen.allowed_hosts}
        self._hosts = _LOOPBACK_NAMES | extra
        self._hosts_seen: set[str] = set()  # Host header values already judged allowed
        self._cors = CorsPolicy(cors)
        secret = listen.shared_secret
        self._secret = secret.reveal().encode() if secret is not None else None
        self._port = listen.port

    def set_port(self, port: int) -> None:
        self._port = port

    def _host_allowed(self, host: str) -> bool:
        return host in self._hosts or _SUB_LOCALHOST.fullmatch(host) is not None

    def _own_origin(self, origin: str) -> bool:
        """http://<allowed host>:<our port>: the inspector page and anything else we serve."""
        if not origin.startswith("http://"):
            return False
        parts = _split_host(origin[len("http://"):])
        if parts is None or not self._host_allowed(parts[0]):
            return False
        port = parts[1] or "80"
        return self._port != 0 and port == str(self._port)

    def check(self, request: Request) -> Response | None:
        # Host first: a page that rebound its own name to 127.0.0.1 is same-origin with us in the
        # browser's eyes, so Origin proves nothing for it; only Host unmasks it. Origin next, so a
        # page that is simply not listed is told so (actionable) rather than asked for a secret.
        # The secret last, and never asked of a preflight: browsers cannot add headers to one,
        # and a preflight is answered here and grants nothing by itself.
        hosts = request.headers.getall("Host", [])
        if len(hosts) == 1 and hosts[0] in self._hosts_seen:
            pass  # the common case, without parsing the value again
        elif (parts := _split_host(hosts[0]) if len(hosts) == 1 else None) is not None \
                and self._host_allowed(parts[0]):
            if len(self._hosts_seen) < 64:  # bounded: Host values are the client's to choose
                self._hosts_seen.add(hosts[0])
        else:
            shown = hosts[0][:200] if len(hosts) == 1 else f"{len(hosts)} Host headers"
            return error_response(403, "host_not_allowed",
                                  f"Host {shown!r} is not allowed: use localhost or 127.0.0.1, "
                                  "or add the name to listen.allowed_hosts")
        origins = request.headers.getall("Origin", [])
        if origins:
            origin = origins[0]
            if len(origins) > 1 or not (self._cors.origin_allowed(origin)
                                        or self._own_origin(origin.lower())):
                return error_response(403, "origin_not_allowed",
                                      f"origin {origin[:200]!r} is not in cors.allow_origins")
        elif request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            # An <img>, <script> or link from another site: no Origin to judge, so refuse.
            # same-site (another port of this loopback name) and none (a typed URL) pass: the
            # browser sends Origin on every CORS or non-GET request, so these are only plain
            # loads and navigations, from the developer's own local servers or the developer.
            return error_response(403, "origin_not_allowed",
                                  "cross-site request without an Origin header")
        if self._secret is not None and not CorsPolicy.is_preflight(request):
            given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self._secret):
                return error_response(401, "secret_required",
                                      f"missing or wrong {SECRET_HEADER} header "
                                      "(listen.shared_secret is set)")
        return None

    def bind_warning(self) -> str | None:
        host = self._listen.host
        if self._secret is not None or _is_loopback(host):
            return None
        port = self._port or self._listen.port
        return (f"WARNING: listening on {host or '*'}:{port}, which other machines can reach, "
                "and listen.shared_secret is not set: anyone who can connect can send requests "
                "that authproxy signs with your credentials. Listen on 127.0.0.1, or set "
                "listen.shared_secret (in a container, publish the port as 127.0.0.1:PORT:PORT).")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name may resolve anywhere; an empty host means every interface
