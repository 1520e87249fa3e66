"""The rule table, compiled once: `RuleTable.match(host, path)` finds the endpoint for a request.

An endpoint with `host` matches that Host header (port ignored) and takes every path on that host
unless it also sets `prefix`; host endpoints are tried before host-less ones. Within a group the
longest prefix wins, on whole path segments: `/api` matches `/api` and `/api/x`, never `/apix`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.config import Endpoint


@dataclass(frozen=True)
class Match:
    endpoint: Endpoint
    rest: str  # the raw path after the prefix: "" or starting with "/"


class RuleTable:
    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        # host (None for host-less) -> prefix -> endpoint
        self._tables: dict[str | None, dict[str, Endpoint]] = {}
        for ep in endpoints:
            host = ep.host.lower() if ep.host else None
            self._tables.setdefault(host, {})[ep.prefix] = ep
        self._by_host = any(host is not None for host in self._tables)

    def match(self, host: str | None, path: str) -> Match | None:
        """`host` is the Host header (any port is ignored); `path` is the raw path, no query."""
        if host and self._by_host:
            name = _strip_port(host)
            table = self._tables.get(name)
            if table is not None:
                found = _longest(table, path)
                if found:
                    return found
        table = self._tables.get(None)
        return _longest(table, path) if table else None


def _strip_port(host: str) -> str:
    host = host.lower()
    if host.startswith("["):  # [::1]:8080
        return host[: host.find("]") + 1]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _longest(table: dict[str, Endpoint], path: str) -> Match | None:
    # Try the path itself, then each shorter whole-segment prefix, then "/".
    candidate = path.rstrip("/") if path != "/" else path
    while True:
        ep = table.get(candidate or "/")
        if ep is not None:
            if ep.prefix == "/":
                return Match(ep, path)
            return Match(ep, path[len(ep.prefix):])
        if not candidate:
            return None
        candidate = candidate[: candidate.rfind("/")]
