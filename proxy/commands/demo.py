"""`authproxy demo`: the proxy plus a local fake API Gateway and fake Cognito, one request per
strategy to show what arrives upstream, and curl commands to try more. Needs no AWS account."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
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
# The managed login's user types this into the fake's sign-in page, so the demo shows it.
SSO_CLIENT, SSO_USER, SSO_PASSWORD = "demossoclient0001", "sso-demo", "sso-demo-fake-password"
SSO_CALLBACK = "http://localhost:8976/callback"  # demo.yaml's redirect_port
WHAT = {
    "static": "a static token, as a Lambda TOKEN authorizer wants, injected as Authorization",
    "cognito": "a Cognito ID token the proxy signed in for (SRP) and keeps fresh, as Bearer",
    "signed": "SigV4 with a Cognito identity pool guest's AWS credentials (AWS_IAM auth)",
    "command": "a token printed by a command (a vault CLI stand-in), as Bearer",
    "sso": "a Cognito ID token from a sign-in on the managed login page (flow "
           "authorization_code), refreshed at <domain>/oauth2/token",
    "public": "strategy none: forwarded without any auth header",
}
IDENTITY_POOL = "us-east-1:00000000-0000-4000-8000-000000000000"


def demo(port: int, once: bool) -> int:
    log.configure("info", "text")
    # The fakes are new every run, so what a login or a guest identity saved in a previous run
    # means nothing to them: the demo keeps its token cache in a directory of its own.
    cache = tempfile.mkdtemp(prefix="authproxy-demo-")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = cache
    try:
        return asyncio.run(_demo(port, once))
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous
        shutil.rmtree(cache, ignore_errors=True)


async def _demo(port: int, once: bool) -> int:
    fake = FakeApiGateway()
    await fake.start()
    cognito = FakeCognito()
    await cognito.start()
    cognito.add_pool(POOL)
    cognito.add_client(POOL, CLIENT)
    cognito.add_user(POOL, USER, PASSWORD, email="demo@example.test", groups=["developers"])
    cognito.add_client(POOL, SSO_CLIENT, scopes=["openid", "email", "profile"],
                       oauth_flows=["code"], callback_urls=[SSO_CALLBACK])
    cognito.add_user(POOL, SSO_USER, SSO_PASSWORD, email="sso-demo@example.test")
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
               AUTHPROXY_DEMO_IDENTITY_POOL=IDENTITY_POOL, AUTHPROXY_DEMO_IAM_UPSTREAM=signed.url,
               AUTHPROXY_DEMO_SSO_CLIENT=SSO_CLIENT,
               AUTHPROXY_DEMO_PYTHON=sys.executable)  # the command credential's program
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
        await _show(running, cognito.url)
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


async def _show(running: Running, cognito_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for name, what in WHAT.items():
            url = f"{running.url}/{name}/hello?demo=1"
            async with session.get(url) as resp:
                body = await resp.text()
            print(f"[{name}] {what}")
            print(f"  $ curl -s '{url}'")
            if resp.status != 200:
                print(f"  -> {resp.status} {body}\n")
                if name == "sso":
                    _sign_in_hint(cognito_url)
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
            if auth and auth.startswith("Bearer eyJ"):  # a JWT (the command token is not)
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


def _sign_in_hint(cognito_url: str) -> None:
    print(f"  Sign in on the fake managed login page (user {SSO_USER}, password "
          f"{SSO_PASSWORD}), in another terminal:\n"
          f"  $ XDG_CACHE_HOME={os.environ['XDG_CACHE_HOME']} AUTHPROXY_DEMO_COGNITO={cognito_url} "
          f"authproxy login -c {DEMO_CONFIG} sso-user\n"
          "  then curl again: the running demo picks the new login up.\n")
