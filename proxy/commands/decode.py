"""`authproxy decode JWT`: header and claims with human times. Never verifies, never prints the
signature."""

from __future__ import annotations

import json
import sys
import time

from proxy.jwt import describe_time, parse

TIME_CLAIMS = ("iat", "nbf", "auth_time", "exp")


def decode(token: str, now: float | None = None) -> int:
    try:
        header, claims = parse(token)
    except ValueError as e:
        print(f"authproxy decode: not a JWT: {e}", file=sys.stderr)
        return 2
    now = time.time() if now is None else now
    print("header:")
    print(json.dumps(header, indent=2))
    print("claims:")
    print(json.dumps(claims, indent=2))
    print("times:")
    for claim in TIME_CLAIMS:
        if claim in claims:
            print(f"  {claim:<9} {describe_time(claim, claims[claim], now)}")
    return 0
