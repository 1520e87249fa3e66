"""HAR 1.2 of the inspector's exchanges (`GET <admin>/api/exchanges.har`), for Chrome DevTools,
Insomnia, Postman or any HAR viewer.

Built from the records the inspector's JSON API hands out, so it is redacted exactly as they
are (tokens, signatures, secret headers and query values) and says nothing the inspector does
not. Each entry is the request as it went to API Gateway (the upstream URL, the headers sent,
the credential's among them, redacted) and the answer that came back; what the client sent the
proxy, the endpoint, ids, hint and token claims ride along under `_authproxy` (HAR allows
custom fields that start with an underscore). The proxy keeps no bodies, so none are exported:
sizes are given where the proxy knows them, -1 where it does not.

Timings are what the proxy measured: `wait` is the upstream's time to answer, `receive` the rest
of the exchange, so that `time` is their sum as HAR requires; DNS, connect and TLS are not
measured apart (-1).
"""

from __future__ import annotations

import datetime as dt
import http
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from proxy import __version__

_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def har(records: Iterable[dict[str, Any]], local_origin: str) -> dict[str, Any]:
    """`records`: inspector records (History.query), in any order; `local_origin`: where the
    proxy was reached (`http://localhost:8080`), for requests that never went upstream."""
    entries = sorted((_entry(r, local_origin) for r in records),
                     key=lambda e: (e["startedDateTime"], e["_authproxy"]["id"]))
    return {"log": {"version": "1.2",
                    "creator": {"name": "authproxy", "version": __version__},
                    "pages": [], "entries": entries}}


def _entry(r: dict[str, Any], local_origin: str) -> dict[str, Any]:
    upstream = r.get("upstream_url")
    url = upstream or f"{local_origin}{r['path']}"
    sent = r["sent_headers"] if upstream else r["request_headers"]
    total = float(r["total_ms"])
    wait = min(float(r["upstream_ms"] or 0.0), total)
    response_headers = r["response_headers"]
    size = r.get("bytes")
    status = int(r["status"])
    comment = "; ".join(str(x) for x in (r.get("error"), r.get("hint")) if x)
    return {
        "startedDateTime": dt.datetime.fromtimestamp(r["time"], dt.UTC).isoformat(
            timespec="milliseconds"),
        "time": total,
        "request": {
            "method": r["method"], "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": _headers(sent),
            "queryString": [{"name": n, "value": v}
                            for n, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)],
            "headersSize": -1, "bodySize": _request_body_size(r["method"], sent)},
        "response": {
            "status": status, "statusText": _reason(status), "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": _headers(response_headers),
            "content": {"size": size if isinstance(size, int) else 0,
                        "mimeType": _header(response_headers, "content-type") or ""},
            "redirectURL": _header(response_headers, "location") or "",
            "headersSize": -1, "bodySize": size if isinstance(size, int) else -1},
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0,
                    "wait": wait, "receive": total - wait},
        **({"comment": comment} if comment else {}),
        "_authproxy": {
            "id": r["id"], "endpoint": r["endpoint"], "local_path": r["path"],
            "client_headers": _headers(r["request_headers"]),
            "request_id": r.get("request_id"), "amzn_request_id": r.get("amzn_request_id"),
            "replayed": r.get("replayed", False), "injected_header": r.get("injected_header"),
            "error": r.get("error"), "hint": r.get("hint"),
            "token": r.get("token")},
    }


def _headers(marked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inspector headers ({name, value, mark}) as HAR's, the mark (injected, added, replaced;
    dropped, among the client's) kept as `_mark`."""
    return [{"name": h["name"], "value": h["value"], **({"_mark": h["mark"]} if h["mark"] else {})}
            for h in marked]


def _header(marked: list[dict[str, Any]], name: str) -> str | None:
    return next((str(h["value"]) for h in marked if h["name"].lower() == name), None)


def _request_body_size(method: str, headers: list[dict[str, Any]]) -> int:
    length = _header(headers, "content-length")
    if length is not None and length.isdigit():
        return int(length)
    return 0 if method in _BODILESS and _header(headers, "transfer-encoding") is None else -1


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
