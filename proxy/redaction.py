"""Which names look secret, and query strings shown with the values of those names hidden.

The SPEC's rule: a query parameter or header whose name contains `token`, `code`, `password`,
`secret`, `key`, `signature`, `credential` or `auth` (any case) holds a secret (`access_token`
and `id_token` contain `token`). It over-matches (`keyword`, `author`) on purpose: showing
`***` for a harmless value costs a debugger less than one leaked signature costs anybody.

These run when a record is shown (inspector, curl, a header log line), never on the request
path: history and the forwarder keep the raw target.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from urllib.parse import unquote_plus

from proxy.secret import redact

_WORDS = re.compile("token|code|password|secret|key|signature|credential|auth")
# A URL's query inside a header value (Location, Referer, Link, ...): up to whitespace or `#`.
# `<>`, quotes and commas may sit in a query, so they do not end one: a `>` is at worst hidden
# along with a secret, never a secret shown.
_QUERY_IN_TEXT = re.compile(r"\?([^\s#]*)")


def looks_secret(name: str) -> bool:
    # Our own name holds `auth`: X-Authproxy-Error is no secret (X-Authproxy-Secret still is).
    return _WORDS.search(name.lower().replace("authproxy", "")) is not None


class SecretNames(Container[str]):
    """`name in names`: the name rule, plus names that are always secret and the few standard
    ones whose value by definition holds none."""

    def __init__(self, always: Iterable[str] = (), never: Iterable[str] = ()) -> None:
        self.always = frozenset(n.lower() for n in always)
        self.never = frozenset(n.lower() for n in never)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        low = name.lower()
        return low in self.always or (low not in self.never and looks_secret(low))


SECRET_HEADERS = SecretNames(
    # Session cookies are credentials though their names say nothing.
    always=("cookie", "set-cookie"),
    # `true` or absent; and challenges, which say how to authenticate, not with what (their
    # `error="invalid_token"` is what one debugs a 401 with).
    never=("access-control-allow-credentials", "www-authenticate", "proxy-authenticate"))


def redact_query(query: str, also: Container[str] = frozenset()) -> str:
    """The query (without `?`) with each secret-looking parameter's value replaced by
    `***(N chars)`; order, names, separators and every other byte kept as sent. `also`: more
    names (lower case) that are always secret, whatever they look like (`token_query`)."""
    if not query:
        return query
    parts = query.split("&")
    for i, part in enumerate(parts):
        raw_name, eq, value = part.partition("=")
        if not value:
            continue  # `name=` or a bare `name`: nothing to hide
        # Compared as the server reads it (`%61ccess_token`, `access+token`), shown as sent.
        name = unquote_plus(raw_name).lower() if "%" in raw_name or "+" in raw_name \
            else raw_name.lower()
        if name in also or looks_secret(name):
            parts[i] = f"{raw_name}{eq}{_hide(value)}"
    return "&".join(parts)


def redact_target(target: str, also: Container[str] = frozenset()) -> str:
    """A path or URL: everything before the first `?` as is, the query redacted."""
    base, q, query = target.partition("?")
    return f"{base}{q}{redact_query(query, also)}" if q else target


def redact_queries(text: str) -> str:
    """A header value with the query of every URL in it redacted."""
    if "?" not in text:
        return text
    return _QUERY_IN_TEXT.sub(lambda m: "?" + redact_query(m.group(1)), text)


def _hide(raw: str) -> str:
    value = unquote_plus(raw)
    # `redact` keeps a leading scheme word readable (`Bearer ***`); in a query value such a
    # word would be part of the secret.
    return redact(value) if " " not in value else f"***({len(value)} chars)"
