"""The rule table: host match first, then the longest whole-segment prefix."""

from __future__ import annotations

import pytest

from proxy.config import Endpoint
from proxy.rules import RuleTable

TABLE = RuleTable([
    Endpoint("api", "https://a.example", prefix="/api"),
    Endpoint("v2", "https://b.example", prefix="/api/v2"),
    Endpoint("orders", "https://o.example", prefix="/", host="orders.localhost"),
    Endpoint("orders-admin", "https://oa.example", prefix="/admin", host="orders.localhost"),
    Endpoint("all", "https://all.example", prefix="/"),
])


@pytest.mark.parametrize("host, path, name, rest", [
    ("localhost:8080", "/api", "api", ""),
    ("localhost:8080", "/api/", "api", "/"),
    ("localhost:8080", "/api/x/y", "api", "/x/y"),
    ("localhost:8080", "/apix", "all", "/apix"),
    ("localhost:8080", "/api/v2", "v2", ""),
    ("localhost:8080", "/api/v2/items", "v2", "/items"),
    ("localhost:8080", "/api/v2x", "api", "/v2x"),
    ("localhost", "/", "all", "/"),
    ("orders.localhost:8080", "/api/x", "orders", "/api/x"),
    ("ORDERS.localhost", "/admin/users", "orders-admin", "/users"),
    ("orders.localhost", "/administrator", "orders", "/administrator"),
    ("[::1]:8080", "/api/q", "api", "/q"),
    (None, "/api/q", "api", "/q"),
])
def test_match(host: str | None, path: str, name: str, rest: str) -> None:
    m = TABLE.match(host, path)
    assert m is not None and (m.endpoint.name, m.rest) == (name, rest)


def test_no_match_without_a_catch_all() -> None:
    table = RuleTable([Endpoint("api", "https://a.example", prefix="/api"),
                       Endpoint("h", "https://h.example", prefix="/", host="h.localhost")])
    assert table.match("localhost", "/apix") is None
    assert table.match("localhost", "/") is None
    assert table.match("other.localhost", "/x") is None
    m = table.match("h.localhost:1", "/x")
    assert m is not None and m.endpoint.name == "h"


def test_a_table_of_host_endpoints_only_routes_by_host() -> None:
    for table in (
            RuleTable([Endpoint("orders", "https://o.example", prefix="/",
                                host="orders.localhost")]),
            RuleTable([Endpoint("orders", "https://o.example", prefix="/",
                                host="orders.localhost"),
                       Endpoint("admin", "https://a.example", prefix="/admin",
                                host="orders.localhost")])):
        m = table.match("orders.localhost:8080", "/items")
        assert m is not None and (m.endpoint.name, m.rest) == ("orders", "/items")
        m = table.match("ORDERS.localhost", "/")
        assert m is not None and m.endpoint.name == "orders"
        assert table.match("localhost:8080", "/items") is None
        assert table.match(None, "/items") is None
