"""Helpers for the real-browser tests: a server for test pages under any host name, the real
`authproxy serve` process, and headless Chromium with test names mapped to 127.0.0.1.

Everything listens on 127.0.0.1 only; `app.test`, `evil.test` and `rebind.test` exist only
inside the browser, through `--host-resolver-rules`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP app.test 127.0.0.1, MAP rebind.test 127.0.0.1, "
    "MAP evil.test 127.0.0.1",
]


def require_browser() -> None:
    """Skip where Chromium or Playwright is missing, except in CI (`CI` or
    `AUTHPROXY_REQUIRE_BROWSER` set): there a missing browser must fail the run, never quietly
    drop the tests that prove the browser-facing defences."""
    missing = [what for what, ok in (
        (CHROMIUM, Path(CHROMIUM).exists()),
        ("playwright (pip)", _has_playwright())) if not ok]
    if missing:
        message = f"browser tests need {' and '.join(missing)} (apt chromium, pip playwright)"
        if os.environ.get("CI") or os.environ.get("AUTHPROXY_REQUIRE_BROWSER"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Any]:
    """A headless Chromium (Debian's), launched once per test."""
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def _has_playwright() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Pages:
    """Serves `pages[path]` as HTML to whatever Host the browser asked for, so one server stands
    in for several origins (http://app.test:PORT, http://evil.test:PORT)."""

    pages: dict[str, str] = field(default_factory=dict)
    port: int = 0

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    async def _serve(self, request: web.Request) -> web.Response:
        html = self.pages.get(request.path)
        if html is None:
            return web.Response(status=404, text="no such test page")
        return web.Response(text=html, content_type="text/html")


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[Pages]:
    pages = Pages()
    app = web.Application()
    app.router.add_get("/{tail:.*}", pages._serve)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    pages.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield pages
    finally:
        await runner.cleanup()


@dataclass
class ProxyProcess:
    port: int
    records: list[dict[str, Any]]  # the JSON log lines it printed so far
    stderr: list[str]

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def access(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("method") == method and r.get("path") == path]

    async def wait_access(self, method: str, path: str, timeout: float = 5.0
                          ) -> list[dict[str, Any]]:
        """The access records for this request, waiting for the log line to be read."""
        for _ in range(int(timeout / 0.05)):
            found = self.access(method, path)
            if found:
                return found
            await asyncio.sleep(0.05)
        return []


def _command() -> list[str]:
    script = shutil.which("authproxy", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "proxy"]


@contextlib.asynccontextmanager
async def authproxy(config: str, tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    """Runs the real `authproxy serve -c FILE` on an ephemeral port (the config says port 0)
    with JSON logs, and stops it with SIGTERM."""
    path = tmp_path / f"proxy-{len(list(tmp_path.glob('proxy-*.yaml')))}.yaml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHPROXY_")}
    proc = await asyncio.create_subprocess_exec(
        *_command(), "serve", "-c", str(path), "--log-format", "json", "--log-level", "info",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None and proc.stderr is not None
    records: list[dict[str, Any]] = []
    stderr: list[str] = []
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def read_stdout(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                records.append(record)
                m = re.search(r"listening on http://\S+:(\d+)", str(record.get("message")))
                if m and not listening.done():
                    listening.set_result(int(m.group(1)))

    async def read_stderr(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            stderr.append(line.decode(errors="replace").rstrip())

    readers = [asyncio.create_task(read_stdout(proc.stdout)),
               asyncio.create_task(read_stderr(proc.stderr))]
    try:
        exited = asyncio.create_task(proc.wait())
        done, _ = await asyncio.wait({listening, exited}, timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if listening not in done:
            exited.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            raise RuntimeError("authproxy serve did not start:\n" + "\n".join(stderr))
        yield ProxyProcess(listening.result(), records, stderr)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*readers, return_exceptions=True)


def proxy_config(upstream: str, origins: list[str], credentials: bool = False) -> str:
    """One endpoint `/api` -> the fake API Gateway's stage, with a static API key injected."""
    return f"""
listen:
  host: 127.0.0.1
  port: 0
credentials:
  key:
    type: static
    header: x-api-key
    value: browser-test-api-key
endpoints:
  - name: api
    endpoint: {upstream}/Development
    auth: key
cors:
  allow_origins: {json.dumps(origins)}
  allow_headers: [Content-Type, X-Trace, X-Fake-Header]
  expose_headers: [X-Request-Id]
  allow_credentials: {json.dumps(credentials)}
"""
