"""`authproxy check`: the config is valid; here is what it will do (secrets redacted)."""

from __future__ import annotations

import json
from typing import Any

from proxy.config import Config, Problem
from proxy.credentials import build_source


def check(config: Config) -> int:
    print(f"{config.source}: OK")
    listen = config.listen
    print(f"\nlisten: http://{listen.host}:{listen.port}"
          + (" (shared secret required)" if listen.shared_secret else ""))
    print(f"\nendpoints ({len(config.endpoints)}):")
    width = max((len(e.name) for e in config.endpoints), default=0)
    for ep in config.endpoints:
        match = f"host {ep.host}" + (f" {ep.prefix}" if ep.prefix != "/" else "") if ep.host \
            else ep.prefix
        print(f"  {ep.name:<{width}}  {match} -> {ep.endpoint}  auth: {ep.auth or 'none'}")
    print(f"\ncredentials ({len(config.credentials)}):")
    used = {ep.auth for ep in config.endpoints}
    for name, cred in config.credentials.items():
        unused = "" if name in used else "  (not used by any endpoint)"
        print(f"  {name}: {build_source(cred).describe().summary}{unused}")
    tc = config.token_cache
    if tc.url is not None:
        from proxy.credentials.redis_store import redacted_url
        print(f"\ntoken_cache: {redacted_url(tc.url.reveal())}, keys {tc.key_prefix}<hash>, "
              + ("encrypted with encryption_key" if tc.encryption_key else
                 "no encryption_key (loopback: sealed by the credentials' own settings)")
              + f", timeout {tc.timeout:g} s")
    cors = config.cors
    print(f"\ncors: origins {', '.join(cors.allow_origins) or '(none: only the proxy itself)'}"
          f", credentials {'allowed' if cors.allow_credentials else 'not allowed'}")
    if "*" in cors.allow_origins:
        from proxy.server import ANY_ORIGIN_WARNING
        print(f"\nwarning: {ANY_ORIGIN_WARNING}")
    return 0


def check_json(config: Config | None, source: str, problems: list[Problem]) -> int:
    """`check --format json`: for editors and scripts. One JSON object on stdout: `ok`, the
    file, every problem with its file, line, key path and message, and when the file is
    valid what it sets up (the same facts as the text summary, secrets redacted)."""
    doc: dict[str, Any] = {
        "ok": config is not None, "file": source,
        "problems": [{"file": source, "line": p.line, "path": p.path, "message": p.message}
                     for p in problems]}
    if config is not None:
        used = {ep.auth for ep in config.endpoints}
        doc |= {
            "listen": {"host": config.listen.host, "port": config.listen.port,
                       "shared_secret": config.listen.shared_secret is not None},
            "endpoints": [{"name": ep.name, "host": ep.host, "prefix": ep.prefix,
                           "endpoint": ep.endpoint, "auth": ep.auth}
                          for ep in config.endpoints],
            "credentials": [{"name": name, "type": described.type,
                             "summary": described.summary, "used": name in used}
                            for name, cred in config.credentials.items()
                            for described in [build_source(cred).describe()]],
            "cors": {"allow_origins": list(config.cors.allow_origins),
                     "allow_credentials": config.cors.allow_credentials},
            "warnings": []}
        if "*" in config.cors.allow_origins:
            from proxy.server import ANY_ORIGIN_WARNING
            doc["warnings"].append(ANY_ORIGIN_WARNING)
    print(json.dumps(doc, indent=2))
    return 0 if config is not None else 2
