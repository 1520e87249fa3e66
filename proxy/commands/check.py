"""`authproxy check`: the config is valid; here is what it will do (secrets redacted)."""

from __future__ import annotations

from proxy.config import Config
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
