"""`authproxy demo`: the proxy plus a local fake API Gateway, one request per strategy to show
what arrives upstream, and curl commands to try more. Needs no AWS account."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path

import aiohttp

from proxy import log
from proxy.config import load_config
from proxy.fakes.apigw import FakeApiGateway
from proxy.secret import redact
from proxy.server import BindError, Running, start

DEMO_CONFIG = Path(__file__).parent.parent / "fakes" / "demo.yaml"
WHAT = {
    "static": "a static token (for a Lambda TOKEN authorizer) is injected as Authorization",
    "public": "strategy none: forwarded without any auth header",
}


def demo(port: int, once: bool) -> int:
    log.configure("info", "text")
    return asyncio.run(_demo(port, once))


async def _demo(port: int, once: bool) -> int:
    fake = FakeApiGateway()
    await fake.start()
    env = dict(os.environ, AUTHPROXY_DEMO_UPSTREAM=fake.url)
    config = load_config(DEMO_CONFIG, env)
    config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, port=port))
    try:
        running = await start(config)
    except BindError as e:
        print(f"authproxy demo: {e}; using a free port instead")
        config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, port=0))
        running = await start(config)
    try:
        print(f"\nauthproxy demo: proxy on {running.url}, fake API Gateway on {fake.url}"
              f"/Development\n")
        await _show(running)
        if not once:
            print("Ctrl-C stops the demo.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        await running.stop()
        await fake.stop()
    return 0


async def _show(running: Running) -> None:
    async with aiohttp.ClientSession() as session:
        for name, what in WHAT.items():
            url = f"{running.url}/{name}/hello?demo=1"
            async with session.get(url) as resp:
                body = await resp.text()
            print(f"[{name}] {what}")
            print(f"  $ curl -s {url}")
            if resp.status != 200:
                print(f"  -> {resp.status} {body}")
                continue
            echo = json.loads(body)
            auth = next((v for k, v in echo["headers"] if k.lower() == "authorization"), None)
            print(f"  -> 200; API Gateway saw {echo['method']} {echo['raw_path']}, "
                  + (f"Authorization: {redact(auth)}" if auth else "no Authorization header"))
            print()
    print(f"More: curl -s {running.url}/_authproxy/readyz ; "
          f"curl -s {running.url}/_authproxy/metrics | grep authproxy_requests ; "
          f"authproxy explain -c config/demo.yaml /static/hello\n")
