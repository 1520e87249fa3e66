"""The listening sockets, with an accept loop of our own.

Why not `loop.create_server` (aiohttp's TCPSite): under uvloop, while the loop is busy serving
keep-alive traffic, new connections were taken about one per loop iteration: at 1000 connections
the last ones waited seconds for their first answer (p99 ~3 s; the naive aiohttp proxy shows the
same 4-8 s tail). Here every pending connection is accepted as soon as the socket is readable, on
asyncio and uvloop alike, and handed to the protocol factory with connect_accepted_socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("authproxy")

ACCEPT_BATCH = 1024  # per readiness event; the rest wait for the next loop iteration
RETRY_DELAY = 1.0  # after EMFILE and the like, as asyncio does


class Listener:
    def __init__(self, factory: Callable[[], asyncio.Protocol], backlog: int = 2048) -> None:
        self.factory = factory
        self.backlog = backlog
        self.sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, host: str, port: int) -> None:
        """Binds every address `host` resolves to (like create_server); raises OSError."""
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        seen = set()
        try:
            for family, kind, proto, _, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # With port 0, every address gets the port the first one was given.
                sock.bind((addr[0], port, *addr[2:]))
                port = port or sock.getsockname()[1]
                sock.listen(self.backlog)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                # Out of file descriptors, most likely: stop accepting for a moment rather
                # than spin on a socket that stays readable.
                log.error("accept failed: %s; retrying in %g s", e, RETRY_DELAY)
                loop.remove_reader(sock.fileno())
                loop.call_later(RETRY_DELAY, self._resume, sock)
                return
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(self.factory, conn))
            self._tasks.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("connection lost while being set up: %s", task.exception())

    def _resume(self, sock: socket.socket) -> None:
        if self._loop is not None and sock.fileno() != -1:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        for sock in self.sockets:
            if self._loop is not None and sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []
