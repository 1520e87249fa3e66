from __future__ import annotations

import json

import pytest

from proxy.config import Cors
from proxy.cors import CorsPolicy
from proxy.http.client_conn import Request


def policy(*origins: str, **kw: object) -> CorsPolicy:
    return CorsPolicy(Cors(allow_origins=origins, **kw))  # type: ignore[arg-type]


def preflight_request(origin: str | None = "http://localhost:3000", method: str = "POST",
                      headers: str | None = None, **extra: str) -> Request:
    h = {"Host": "localhost:8080"}
    if origin is not None:
        h["Origin"] = origin
    h["Access-Control-Request-Method"] = method
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    h.update(extra)
    return Request.made("OPTIONS", "/api/x", headers=h)


# --- origin matching ---------------------------------------------------------------------------

@pytest.mark.parametrize("origin, allowed", [
    ("http://localhost:3000", True),
    ("HTTP://LOCALHOST:3000", True),
    ("http://localhost:3001", False),
    ("http://localhost", False),
    ("https://localhost:3000", False),
    ("http://localhost:3000/", False),
    ("http://localhost:30000", False),
    ("http://127.0.0.1:3000", False),
    ("https://app.example.com", True),
    ("https://app.example.com:443", False),
    ("https://app.example.com.evil.test", False),
    ("null", False),
    ("", False),
])
def test_exact_origins(origin: str, allowed: bool) -> None:
    p = policy("http://localhost:3000", "https://App.Example.com")
    assert p.origin_allowed(origin) is allowed


def test_default_port_in_an_entry_is_dropped_like_browsers_do() -> None:
    p = policy("http://localhost:80", "https://app.example.com:443")
    assert p.origin_allowed("http://localhost")
    assert p.origin_allowed("https://app.example.com")


@pytest.mark.parametrize("origin, allowed", [
    ("http://localhost:3000", True),
    ("http://localhost:1", True),
    ("http://localhost", True),
    ("https://localhost:3000", False),
    ("http://localhost.evil.example", False),
    ("http://localhost.evil.example:3000", False),
    ("http://localhostevil:3000", False),
    ("http://evil-localhost:3000", False),
    ("http://localhost:3000.evil.example", False),
    ("http://localhost:", False),
    ("http://localhost:123456", False),
])
def test_any_port_pattern(origin: str, allowed: bool) -> None:
    assert policy("http://localhost:*").origin_allowed(origin) is allowed


@pytest.mark.parametrize("origin, allowed", [
    ("https://app.example.com", True),
    ("https://a.b.example.com", True),
    ("https://APP.example.com", True),
    ("https://example.com", False),
    ("https://.example.com", False),
    ("https://evil-example.com", False),
    ("https://evilexample.com", False),
    ("https://example.com.evil.test", False),
    ("https://app.example.com.evil.test", False),
    ("https://app.example.comm", False),
    ("http://app.example.com", False),
    ("https://app.example.com:8443", False),
    ("https://app.example.com/x", False),
    ("https://app.exampleXcom", False),
])
def test_subdomain_pattern(origin: str, allowed: bool) -> None:
    assert policy("https://*.example.com").origin_allowed(origin) is allowed


def test_wildcard_inside_a_label_is_not_a_wildcard() -> None:
    p = policy("https://*example.com", "https://app-*.example.com")
    for origin in ("https://evil-example.com", "https://example.com",
                   "https://app-1.example.com", "https://app-.example.com"):
        assert not p.origin_allowed(origin), origin


def test_host_and_port_wildcards_together() -> None:
    p = policy("http://*.localhost:*")
    assert p.origin_allowed("http://app.localhost:5173")
    assert not p.origin_allowed("http://localhost:5173")
    assert not p.origin_allowed("http://app.localhost.evil.test:5173")


def test_star_allows_any_origin_but_not_null() -> None:
    p = policy("*")
    assert p.origin_allowed("https://anything.test")
    assert not p.origin_allowed("null")
    assert policy("*", "null").origin_allowed("null")


def test_null_needs_its_own_entry() -> None:
    assert not policy("http://localhost:*").origin_allowed("null")
    assert policy("null").origin_allowed("null")
    assert policy("null").origin_allowed("NULL")


def test_no_origins_allows_nothing() -> None:
    p = policy()
    assert not p.origin_allowed("http://localhost:3000")
    assert not p.origin_allowed("null")


# --- preflight ----------------------------------------------------------------------------------

def test_is_preflight() -> None:
    assert CorsPolicy.is_preflight(preflight_request())
    assert not CorsPolicy.is_preflight(preflight_request(origin=None))
    plain = Request.made("OPTIONS", "/", headers={"Origin": "http://localhost:3000"})
    assert not CorsPolicy.is_preflight(plain)
    post = Request.made("POST", "/", headers={"Origin": "http://localhost:3000",
                                                     "Access-Control-Request-Method": "POST"})
    assert not CorsPolicy.is_preflight(post)


def test_preflight_allowed() -> None:
    p = policy("http://localhost:*", max_age=123)
    resp = p.preflight(preflight_request(method="PUT", headers="content-type, x-amz-date"))
    assert resp.status == 204
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert h["Access-Control-Allow-Methods"] == "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    assert h["Access-Control-Allow-Headers"] == (
        "Content-Type, X-Amz-Date, Authorization, X-Api-Key, X-Amz-Security-Token")
    assert h["Access-Control-Max-Age"] == "123"
    assert h.getall("Vary") == ["Origin, Access-Control-Request-Method, "
                                "Access-Control-Request-Headers, "
                                "Access-Control-Request-Private-Network"]
    assert "Access-Control-Allow-Credentials" not in h
    assert "Access-Control-Allow-Private-Network" not in h
    assert "X-Authproxy-Cors-Denied" not in h
    assert resp.body is None or resp.body == b""


def test_preflight_disallowed_origin_is_403() -> None:
    resp = policy("http://localhost:3000").preflight(
        preflight_request(origin="http://evil.test:3000"))
    assert resp.status == 403
    assert resp.headers["X-Authproxy-Error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert isinstance(resp.body, bytes)
    assert json.loads(resp.body)["error"] == "origin_not_allowed"


def test_preflight_null_origin() -> None:
    assert policy("*").preflight(preflight_request(origin="null")).status == 403
    resp = policy("null").preflight(preflight_request(origin="null"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "null"


def test_preflight_with_credentials_echoes_the_origin_never_star() -> None:
    p = policy("http://localhost:*", allow_credentials=True)
    resp = p.preflight(preflight_request(origin="http://localhost:5173"))
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


def test_preflight_star_origin_still_echoes_the_origin() -> None:
    resp = policy("*").preflight(preflight_request(origin="https://x.test"))
    assert resp.headers["Access-Control-Allow-Origin"] == "https://x.test"


def test_requested_headers_are_checked_case_insensitively() -> None:
    p = policy("http://localhost:3000", allow_headers=("Content-Type", "X-Custom"))
    resp = p.preflight(preflight_request(headers="x-custom,CONTENT-TYPE"))
    assert "X-Authproxy-Cors-Denied" not in resp.headers
    assert resp.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Custom"


def test_a_header_not_allowed_gets_the_configured_list_and_a_diagnosis() -> None:
    p = policy("http://localhost:3000", allow_headers=("Content-Type",))
    resp = p.preflight(preflight_request(headers="content-type, x-secret-thing"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert "header x-secret-thing" in resp.headers["X-Authproxy-Cors-Denied"]
    assert "content-type" not in resp.headers["X-Authproxy-Cors-Denied"]


def test_a_method_not_allowed_gets_the_configured_list_and_a_diagnosis() -> None:
    p = policy("http://localhost:3000", allow_methods=("GET", "POST"))
    resp = p.preflight(preflight_request(method="DELETE"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert "method DELETE" in resp.headers["X-Authproxy-Cors-Denied"]


def test_methods_are_case_sensitive_like_browsers() -> None:
    resp = policy("http://localhost:3000").preflight(preflight_request(method="patch"))
    assert "method patch" in resp.headers["X-Authproxy-Cors-Denied"]


def test_no_requested_headers_means_no_allow_headers() -> None:
    resp = policy("http://localhost:3000").preflight(preflight_request(headers=None))
    assert "Access-Control-Allow-Headers" not in resp.headers


def test_star_in_lists_echoes_what_was_asked() -> None:
    p = policy("http://localhost:3000", allow_methods=("*",), allow_headers=("*",),
               allow_credentials=True)
    resp = p.preflight(preflight_request(method="PROPFIND", headers="Authorization, X-Any"))
    assert resp.headers["Access-Control-Allow-Methods"] == "PROPFIND"
    assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, X-Any"
    assert "X-Authproxy-Cors-Denied" not in resp.headers


def test_private_network_when_asked_and_allowed() -> None:
    ask = {"Access-Control-Request-Private-Network": "true"}
    on = policy("http://localhost:3000").preflight(preflight_request(**ask))
    assert on.headers["Access-Control-Allow-Private-Network"] == "true"
    not_asked = policy("http://localhost:3000").preflight(preflight_request())
    assert "Access-Control-Allow-Private-Network" not in not_asked.headers
    off = policy("http://localhost:3000", allow_private_network=False)
    resp = off.preflight(preflight_request(**ask))
    assert "Access-Control-Allow-Private-Network" not in resp.headers
    assert "Private-Network" not in resp.headers["Vary"]


# --- actual responses ---------------------------------------------------------------------------

def test_response_headers_for_an_allowed_origin() -> None:
    p = policy("http://localhost:*", expose_headers=("X-Request-Id", "X-Amzn-RequestId"))
    assert p.response_headers("http://localhost:3000") == (
        ("Access-Control-Allow-Origin", "http://localhost:3000"),
        ("Vary", "Origin"),
        ("Access-Control-Expose-Headers",
         "X-Request-Id, X-Amzn-RequestId, X-Authproxy-Hint, X-Authproxy-Error"),
    )


def test_response_headers_with_credentials() -> None:
    p = policy("http://localhost:3000", allow_credentials=True)
    assert dict(p.response_headers("http://localhost:3000")) == {
        "Access-Control-Allow-Origin": "http://localhost:3000",
        "Vary": "Origin",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Request-Id, X-Authproxy-Hint, X-Authproxy-Error",
    }


def test_response_headers_grant_nothing_without_an_allowed_origin() -> None:
    p = policy("http://localhost:3000")
    # Vary still tells caches that the answer would differ for another Origin.
    assert p.response_headers(None) == (("Vary", "Origin"),)
    assert p.response_headers("http://evil.test") == (("Vary", "Origin"),)
    assert p.response_headers("null") == (("Vary", "Origin"),)
    assert policy().response_headers(None) == ()
    assert policy().response_headers("http://localhost:3000") == ()


def test_response_headers_are_built_once_per_origin() -> None:
    p = policy("http://localhost:*")
    first = p.response_headers("http://localhost:3000")
    assert p.response_headers("http://localhost:3000") is first
    assert p.response_headers("http://localhost:4000") is not first


def test_response_header_cache_is_bounded() -> None:
    p = policy("*")
    for i in range(5000):
        p.response_headers(f"https://o{i}.test")
    assert len(p._cache) <= 1024
    assert dict(p.response_headers("https://o1.test"))["Access-Control-Allow-Origin"] == (
        "https://o1.test")
