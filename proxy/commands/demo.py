"""`authproxy demo`: the proxy plus a local fake API Gateway and fake Cognito, one request per
strategy to show what arrives upstream, and curl commands to try more. Needs no AWS account."""

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
from proxy.fakes.cognito import FakeCognito
from proxy.fakes.cognito_identity import FakeCognitoIdentity, IssuedView
from proxy.jwt import parse
from proxy.secret import redact
from proxy.server import BindError, Running, start

DEMO_CONFIG = Path(__file__).parent.parent / "fakes" / "demo.yaml"
POOL, CLIENT, USER = "us-east-1_DemoPool1", "demoappclient0001", "demo"
PASSWORD = "Demo-Passw0rd-only-for-the-fake"
WHAT = {
    "static": "a static token, as a Lambda TOKEN authorizer wants, injected as Authorization",
    "cognito": "a Cognito ID token the proxy signed in for (SRP) and keeps fresh, as Bearer",
    "signed": "SigV4 with a Cognito identity pool guest's AWS credentials (AWS_IAM auth)",
    "public": "strategy none: forwarded without any auth header",
}
IDENTITY_POOL = "us-east-1:00000000-0000-4000-8000-000000000000"


def demo(port: int, once: bool) -> int:
    log.configure("info", "text")
    return asyncio.run(_demo(port, once))


async def _demo(port: int, once: bool) -> int:
    fake = FakeApiGateway()
    await fake.start()
    cognito = FakeCognito()
    await cognito.start()
    cognito.add_pool(POOL)
    cognito.add_client(POOL, CLIENT)
    cognito.add_user(POOL, USER, PASSWORD, email="demo@example.test", groups=["developers"])
    identity = FakeCognitoIdentity()
    await identity.start()
    identity.add_pool(pool_id=IDENTITY_POOL)
    # A second stage with AWS_IAM authorization: it recomputes every signature.
    signed = FakeApiGateway(iam=IssuedView(identity, "secret_access_key"),
                            iam_tokens=IssuedView(identity, "session_token"))
    await signed.start()
    env = dict(os.environ, AUTHPROXY_DEMO_UPSTREAM=fake.url, AUTHPROXY_DEMO_COGNITO=cognito.url,
               AUTHPROXY_DEMO_POOL=POOL, AUTHPROXY_DEMO_CLIENT=CLIENT,
               AUTHPROXY_DEMO_PASSWORD=PASSWORD, AUTHPROXY_DEMO_IDENTITY=identity.url,
               AUTHPROXY_DEMO_IDENTITY_POOL=IDENTITY_POOL, AUTHPROXY_DEMO_IAM_UPSTREAM=signed.url)
    config = load_config(DEMO_CONFIG, env)
    config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, port=port))
    try:
        running = await start(config)
    except BindError as e:
        print(f"authproxy demo: {e}; using a free port instead")
        config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, port=0))
        running = await start(config)
    try:
        print(f"\nauthproxy demo: proxy on {running.url}\n  fake API Gateway: {fake.url}"
              f"/Development (and {signed.url}/Development with AWS_IAM)\n"
              f"  fake Cognito:     {cognito.url} (pool {POOL}, user {USER}); identity pool "
              f"{identity.url}\n"
              f"  inspector:        {running.url}/_authproxy/\n")
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
        await cognito.stop()
        await identity.stop()
        await signed.stop()
        await fake.stop()
    return 0


async def _show_websocket(session: aiohttp.ClientSession, running: Running) -> None:
    url = running.url.replace("http://", "ws://") + "/live/chat?room=demo"
    print("[live] a WebSocket: the Cognito ID token goes in ?token= on the handshake (browsers "
          "cannot set headers on one), then bytes flow both ways")
    try:
        async with session.ws_connect(url) as ws:
            await ws.send_str("hello over the tunnel")
            echo = (await ws.receive(timeout=10)).data
            await ws.send_str("push 2")
            pushed = [(await ws.receive(timeout=10)).data for _ in range(2)]
    except (aiohttp.ClientError, TimeoutError) as e:
        print(f"  -> failed: {e}\n")
        return
    print(f"  $ (in a page on http://localhost:*) new WebSocket('{url}')")
    print(f"  -> 101; sent 'hello over the tunnel', the echo came back as {echo!r}; "
          f"the server pushed {pushed}")
    print(f"     {running.url}/_authproxy/api/websockets lists it (token redacted)\n")


async def _show(running: Running) -> None:
    async with aiohttp.ClientSession() as session:
        for name, what in WHAT.items():
            url = f"{running.url}/{name}/hello?demo=1"
            async with session.get(url) as resp:
                body = await resp.text()
            print(f"[{name}] {what}")
            print(f"  $ curl -s '{url}'")
            if resp.status != 200:
                print(f"  -> {resp.status} {body}\n")
                continue
            echo = json.loads(body)
            auth = next((v for k, v in echo["headers"] if k.lower() == "authorization"), None)
            if auth and auth.startswith("AWS4-HMAC-SHA256"):
                scope = auth.partition("Credential=")[2].split(",", 1)[0]
                key_id, _, scope = scope.partition("/")
                print(f"  -> 200; API Gateway checked the SigV4 signature ({echo['sigv4']}) of "
                      f"{echo['method']} {echo['raw_path']}: key {key_id[:4]}…, scope {scope}")
                print()
                continue
            print(f"  -> 200; API Gateway saw {echo['method']} {echo['raw_path']} with "
                  + (f"Authorization: {redact(auth)}" if auth else "no Authorization header"))
            if auth and auth.startswith("Bearer "):
                claims = parse(auth)[1]
                print(f"     token_use={claims.get('token_use')} "
                      f"cognito:username={claims.get('cognito:username')} "
                      f"groups={claims.get('cognito:groups')}")
            print()
        await _show_websocket(session, running)
    tries = [
        (f"curl -s {running.url}/cognito/items -d '{{\"order\": 1}}'", "a POST, streamed"),
        (f"curl -s {running.url}/_authproxy/readyz", "each credential's state"),
        (f"curl -s {running.url}/_authproxy/metrics | grep ^authproxy_requests", "metrics"),
        ("authproxy explain -c config/demo.yaml /cognito/items", "the decision, offline"),
        (f"open {running.url}/_authproxy/ in a browser", "the inspector: headers, claims"),
    ]
    width = max(len(cmd) for cmd, _ in tries)
    print("Try:")
    for cmd, what in tries:
        print(f"  {cmd:<{width}}  # {what}")
    print()
