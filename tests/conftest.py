"""Shared fixtures: a fake API Gateway (in-process, or in a thread for subprocess tests), an
in-process proxy built from YAML text, and the real `authproxy serve` process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import BaseTestServer, TestClient
from yarl import URL

from proxy.app import Proxy, server_for
from proxy.config import Config, parse_config
from proxy.fakes.apigw import FakeApiGateway
from proxy.http.client_conn import ProxyServer
from proxy.http.listen import Listener

AUTHPROXY = str(Path(sys.executable).parent / "authproxy")


@pytest.fixture
async def apigw() -> AsyncIterator[FakeApiGateway]:
    fake = FakeApiGateway()
    await fake.start()
    yield fake
    await fake.stop()


MakeProxy = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_proxy(aiohttp_client: Any) -> AsyncIterator[MakeProxy]:
    """`await make_proxy(yaml_text, env={...})` -> a TestClient talking to an in-process proxy,
    served the way `authproxy serve` serves it (aiohttp's low-level server). The Proxy object is
    at `PROXIES[client]`."""
    started: list[Proxy] = []

    async def make(text: str, env: dict[str, str] | None = None) -> TestClient[Any, Any]:
        config = parse_config(text, "test.yaml", {**os.environ, **(env or {})})
        proxy = Proxy(config)
        await proxy.start()
        started.append(proxy)
        client: TestClient[Any, Any] = await aiohttp_client(ProxyTestServer(proxy, config))
        proxy.set_port(client.port)
        PROXIES[client] = proxy
        return client

    yield make
    for proxy in started:
        await proxy.close()


class ProxyTestServer(BaseTestServer):
    """A test server for aiohttp's TestClient, serving the way `authproxy serve` serves: our
    own client connections on our own listener."""

    def __init__(self, proxy: Proxy, config: Config, **kwargs: Any) -> None:
        self._proxy, self._config = proxy, config
        self._listener: Listener | None = None
        self._server: ProxyServer | None = None
        super().__init__(**kwargs)

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None,
                           **kwargs: Any) -> None:
        if self._listener is not None:
            return
        self._server = server_for(self._proxy, self._config.listen)
        self._listener = Listener(self._server)
        self._listener.bind("127.0.0.1", 0)
        self._listener.start()
        self.host, self.port = "127.0.0.1", self._listener.sockets[0].getsockname()[1]
        self.scheme = "http"
        self._root = URL(f"http://127.0.0.1:{self.port}")

    @property
    def started(self) -> bool:
        return self._listener is not None

    async def close(self) -> None:
        if self._listener is not None and not self.closed:
            self._listener.close()
            assert self._server is not None
            await self._server.shutdown(1.0)
            self._root = None
            self._closed = True

    async def _make_runner(self, **kwargs: Any) -> Any:
        raise NotImplementedError("served by start_server")


PROXIES: weakref.WeakKeyDictionary[TestClient[Any, Any], Proxy] = weakref.WeakKeyDictionary()


class BackgroundLoop:
    """An event loop on its own thread, so fakes keep serving while a test runs subprocesses
    or blocking clients. `run(coro)` runs a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await coro
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    bg = BackgroundLoop()
    yield bg
    bg.close()


@pytest.fixture
def threaded_apigw(background: BackgroundLoop) -> Iterator[FakeApiGateway]:
    fake = FakeApiGateway()
    background.run(fake.start())
    yield fake
    background.run(fake.stop())


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_serve(config_path: Path, *args: str, env: dict[str, str] | None = None,
                wait: bool = True, launcher: Sequence[str] = (AUTHPROXY,)) -> ServeProcess:
    """`launcher`: what runs the CLI (default: the `authproxy` script)."""
    log_path = config_path.with_suffix(".log")
    with log_path.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*launcher, "serve", "-c", str(config_path), "--port", "0", *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    sp = ServeProcess(proc, log_path)
    if not wait:
        return sp
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"listening on (http://\S+?)[\s\"]", sp.log())
        if m:
            sp.url = m.group(1)
            return sp
        if proc.poll() is not None:
            raise AssertionError(f"authproxy serve exited {proc.returncode}:\n{sp.log()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"authproxy serve did not start:\n{sp.log()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """`serve(yaml_text, *flags, env=...)` runs the real `authproxy serve` on a free port."""
    started: list[ServeProcess] = []

    def run(text: str, *args: str, env: dict[str, str] | None = None,
            wait: bool = True) -> ServeProcess:
        path = tmp_path / f"proxy{len(started)}.yaml"
        path.write_text(text)
        sp = start_serve(path, *args, env=env, wait=wait)
        started.append(sp)
        return sp

    yield run
    for sp in started:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait()
