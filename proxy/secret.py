"""Secrets as a type, so that no log line, error message or page can print one by accident."""

from __future__ import annotations


class Secret:
    """A secret string. `str()`, `repr()` and f-strings show a redacted form; `reveal()` is the
    one explicit way to get the value, so every use of it can be found by grep."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return redact(self._value)

    def __repr__(self) -> str:
        return f"Secret({redact(self._value)!r})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def redact(value: str) -> str:
    """`eyJhbGci…(1043 chars)` for a JWT (its first bytes are the public header), `***(N chars)`
    for anything else. A `Bearer ` style scheme word stays readable."""
    scheme, sep, rest = value.partition(" ")
    if sep and rest and scheme.isalpha() and len(scheme) <= 10:
        return f"{scheme} {redact(rest)}"
    if value.startswith("eyJ") and value.count(".") == 2:
        return f"{value[:8]}…({len(value)} chars)"
    return f"***({len(value)} chars)"
