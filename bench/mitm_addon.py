# ruff: noqa
"""mitmproxy addon for the load bench: reverse mode plus one injected header, as a user of
mitmproxy would set up a token-injecting proxy. usage: mitmdump -s bench/mitm_addon.py ..."""
import os


class SetAuthorization:
    def __init__(self) -> None:
        with open(os.environ["AUTHPROXY_BENCH_TOKEN_FILE"]) as f:
            self.token = f.read().strip()

    def request(self, flow) -> None:  # type: ignore[no-untyped-def]
        flow.request.headers["Authorization"] = self.token


addons = [SetAuthorization()]
