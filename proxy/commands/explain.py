"""`authproxy explain`: the whole decision for one request, without touching the network."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from multidict import CIMultiDict

from proxy.app import build_runtime, target_problem
from proxy.config import Config
from proxy.forward import Exchange, upstream_headers
from proxy.guard import SECRET_HEADER
from proxy.http.client_conn import Request
from proxy.http.respond import Response
from proxy.log import redact_headers
from proxy.redaction import redact_target


def explain(config: Config, method: str, header_args: Sequence[str], target: str) -> int:
    headers: CIMultiDict[str] = CIMultiDict()
    for raw in header_args:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            print(f"authproxy explain: -H wants 'Name: value', got {raw!r}")
            return 2
        headers.add(name.strip(), value.strip())
    port = config.listen.port
    if target.startswith(("http://", "https://")):
        url = urlsplit(target)
        headers.setdefault("Host", url.netloc)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers.setdefault("Host", f"localhost:{port}")
    rt = build_runtime(config, port=port)
    request = Request.made(method.upper(), target, headers)
    path, _, query = target.partition("?")
    print(f"request: {method.upper()} {redact_target(target)}  (Host: {headers['Host']})")

    # A refusal is noted, not the end: the rest of the decision is what the user will get
    # once the fix is in, and seeing it all at once saves a round of trial and error.
    denied = rt.guard.check(request)
    refusal = None
    if denied is not None:
        code = denied.headers.get("X-Authproxy-Error", "")
        refusal = f"REFUSED {denied.status} {code}: {_message(denied.text)}"
        print(f"guard: {refusal}")
    else:
        origin = headers.get("Origin")
        print(f"guard: Host {headers['Host']} allowed" + (
            f"; Origin {origin} allowed" if origin else "; no Origin (not a cross-site call)"))
    if path.startswith(config.admin.prefix + "/") or path == config.admin.prefix:
        print(f"admin: answered by the proxy itself ({config.admin.prefix}), never forwarded")
        return _verdict(refusal, denied, headers, 0)
    if rt.cors.is_preflight(request):
        answer = rt.cors.preflight(request)
        print(f"cors: preflight answered by the proxy with {answer.status}, never forwarded")
        for k, v in answer.headers.items():
            if k.lower().startswith(("access-control-", "vary")):
                print(f"  {k}: {v}")
        if refusal is None and answer.status >= 400:
            refusal = f"REFUSED {answer.status} preflight"
        return _verdict(refusal, denied, headers, 0)
    problem = target_problem(path)
    if problem:
        print(f"target: REFUSED 400 bad_request: {problem}")
        return 3
    match = rt.rules.match(headers.get("Host"), path)
    if match is None:
        known = ", ".join(ep.host or ep.prefix for ep in config.endpoints) or "(none)"
        print(f"endpoint: NO MATCH (404 no_route) for {path}; endpoints: {known}")
        return 3
    ep = match.endpoint
    why = (f"Host {ep.host}" + (f" and prefix {ep.prefix}" if ep.prefix != "/" else "")
           if ep.host else f"longest prefix {ep.prefix}")
    print(f"endpoint: {ep.name} (matched by {why})")
    up = rt.upstreams[ep.name]
    print(f"upstream: {method.upper()} {redact_target(str(up.url(match.rest, query)))}")
    inject = None
    shown_as_is: frozenset[str] = frozenset()
    if ep.auth:
        described = rt.sources[ep.auth].describe()
        inject = described.headers
        if described.redacted:
            shown_as_is = frozenset(k.lower() for k, _ in inject)
        print(f"credential: {ep.auth} ({described.how})")
    else:
        print("credential: none (no auth header is added)")
    sent = upstream_headers(request, up, inject, Exchange())
    sent["X-Forwarded-For"] = "<client address>"
    sent["Host"] = up.url("", "").raw_authority
    received = {k.lower() for k in headers}
    print("headers sent upstream:")
    for name, value in sent.items():
        low = name.lower()
        # Marked by the raw values, shown redacted.
        mark = "+" if low not in received else ("~" if headers.get(name) != value else " ")
        if low not in shown_as_is:
            value = redact_headers([(name, value)])[0][1]
        print(f"  {mark} {name}: {value}")
    for name in headers:
        if name.lower() not in {k.lower() for k in sent}:
            print(f"  - {name} (dropped)")
    print("  (+ added, ~ replaced, - dropped; secrets redacted; X-Request-Id is the client's "
          "or a new one per request)")
    return _verdict(refusal, denied, headers, 0)


def _verdict(refusal: str | None, denied: Response | None, headers: CIMultiDict[str],
             code: int) -> int:
    """Exit 4 when the request matched but is refused, with the refusal and its fix last."""
    if refusal is None:
        return code
    print(f"verdict: {refusal}")
    fix = _fix(denied, headers) if denied is not None else None
    if fix:
        print(f"fix: {fix}")
    return 4


def _fix(denied: Response, headers: CIMultiDict[str]) -> str | None:
    code = denied.headers.get("X-Authproxy-Error")
    if code == "host_not_allowed":
        host = headers.get("Host", "").rpartition(":")[0] or headers.get("Host", "")
        return (f"add {host.lower()!r} to listen.allowed_hosts, or send the request to "
                "localhost or 127.0.0.1")
    if code == "origin_not_allowed":
        origin = headers.get("Origin")
        if origin is None:
            return ("a cross-site load without an Origin is never allowed: call the API "
                    "with fetch() from a page whose origin is in cors.allow_origins")
        return f"add {origin!r} to cors.allow_origins"
    if code == "secret_required":
        return f"send {SECRET_HEADER}: <listen.shared_secret>"
    return None


def _message(text: str | None) -> str:
    import json
    try:
        return str(json.loads(text or "{}").get("message", text))
    except ValueError:
        return text or ""
