"""`authproxy schema`: print the JSON Schema of the config file, as shipped in the package.

The shipped copy (proxy/authproxy.schema.json) and the repository's (config/authproxy.schema.json)
are what proxy/schema.py generates from the config types; tests/test_schema.py fails when either
differs, and `python -m proxy.commands.schema` writes both again.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

SHIPPED = "authproxy.schema.json"
REGENERATE = "python -m proxy.commands.schema"


def shipped_text() -> str:
    return resources.files("proxy").joinpath(SHIPPED).read_text(encoding="utf-8")


def schema() -> int:
    sys.stdout.write(shipped_text())
    return 0


def copies() -> list[Path]:
    """Where the generated schema is kept in a checkout: the package's copy, the repo's."""
    package = Path(__file__).resolve().parent.parent
    return [package / SHIPPED, package.parent / "config" / SHIPPED]


def write() -> int:
    from proxy.schema import render

    text = render()
    for path in copies():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(write())
