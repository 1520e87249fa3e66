"""Running the proxy: bind, serve until SIGINT/SIGTERM, drain, and reload on SIGHUP."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass

from proxy.app import Proxy, make_server
from proxy.config import Config, ConfigError
from proxy.http.client_conn import ProxyServer
from proxy.http.listen import Listener

log = logging.getLogger("authproxy")


ANY_ORIGIN_WARNING = ("cors.allow_origins has '*': any web site you visit can send requests "
                      "through this proxy with your credentials and read the answers; list the "
                      "origins you use instead")


class BindError(Exception):
    """The listen address cannot be used; the message says which and what to do."""


@dataclass
class Running:
    server: ProxyServer
    listener: Listener
    url: str
    proxy: Proxy

    async def stop(self) -> None:
        # Closes the listening socket first, then gives in-flight requests the drain time.
        # WebSocket tunnels get the same time, then are closed (a plain close: frames are not
        # parsed, see proxy/http/tunnel.py), so their handlers end within the drain as well.
        self.listener.close()
        drain = self.proxy.rt.config.listen.drain_timeout
        closing = asyncio.get_running_loop().call_later(drain, self.proxy.tunnels.close_all,
                                                        "drain")
        try:
            await self.server.shutdown(drain)
        finally:
            closing.cancel()
            await self.proxy.close()


def _raise_fd_limit() -> None:
    """Every client and upstream connection is a descriptor; the usual soft limit (1024) is a
    few hundred clients. The hard limit is what the system allows us: take it."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.debug("could not raise the open-file limit: %s", e)


async def start(config: Config) -> Running:
    _raise_fd_limit()
    server, proxy = make_server(config)
    host, port = config.listen.host, config.listen.port
    listener = Listener(server, backlog=2048)
    try:
        listener.bind(host, port)
    except OSError as e:
        hint = (" (another process holds it: pick another with --port)"
                if e.errno == errno.EADDRINUSE else "")
        raise BindError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    await proxy.start()
    listener.start()
    bound = listener.sockets[0].getsockname()[1]
    proxy.set_port(bound)
    shown = f"[{host}]" if ":" in host else host
    return Running(server, listener, f"http://{shown}:{bound}", proxy)


async def serve(config: Config, reload_config: Callable[[], Config] | None = None,
                on_ready: Callable[[Running], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. `reload_config` re-reads the file on SIGHUP."""
    running = await start(config)
    # Everything built so far (modules, config, runtime) lives as long as the process: frozen,
    # the collector stops walking it on every older-generation pass.
    gc.collect()
    gc.freeze()
    warning = running.proxy.rt.guard.bind_warning()
    if warning:
        log.warning(warning)
    if "*" in config.cors.allow_origins:
        log.warning(ANY_ORIGIN_WARNING)
    n = len(config.endpoints)
    log.info("authproxy listening on %s (%d endpoint%s, admin at %s%s/)", running.url, n,
             "" if n == 1 else "s", running.url, config.admin.prefix)
    if on_ready:
        on_ready(running)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloading: set[asyncio.Task[None]] = set()
    if reload_config is not None:
        def on_hup() -> None:
            task = loop.create_task(_reload(running.proxy, reload_config))
            reloading.add(task)
            task.add_done_callback(reloading.discard)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await stop.wait()
        log.info("stopping: no new connections; draining in-flight requests for up to %gs",
                 config.listen.drain_timeout)
        await running.stop()
        log.info("stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _reload(proxy: Proxy, reload_config: Callable[[], Config]) -> None:
    try:
        config = reload_config()
    except ConfigError as e:
        log.error("reload failed; the previous config keeps serving:\n%s", e)
        return
    await proxy.reload(config)
    log.info("config reloaded (%d endpoints)", len(config.endpoints))
