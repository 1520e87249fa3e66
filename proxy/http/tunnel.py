"""A WebSocket tunnel after `101 Switching Protocols`: bytes both ways between the client's and
the upstream's sockets, as they come, never parsed or re-encoded.

Both transports get a small Protocol of ours (`transport.set_protocol`), so a chunk read on one
side is written to the other from `data_received`: no task, queue or copy per chunk. Memory is
bounded by back-pressure: when one side's transport holds more than HIGH_WATER unsent bytes
(asyncio calls `pause_writing`), reading from the other side stops until it drains to
LOW_WATER. A slow reader on either side therefore holds at most about HIGH_WATER plus one read
per direction, however fast the other side sends.

Closing: an EOF from one side is passed on as a half-close where the other side's transport can
write one (a WebSocket close handshake finishes that way), else the tunnel closes; a lost
connection or an error on either side closes the other; `idle_timeout` of silence both ways, a
drain or the proxy itself close both. A close flushes what is buffered, but a peer that does not
read it for CLOSE_GRACE seconds is cut off (abort), so no socket outlives the tunnel for long.

Frames are never decoded or re-encoded, but their headers are followed (a few byte reads per
frame, payloads skipped by length): so the tunnel knows which side sent the first close frame,
and with which code (the access log's "who closed"), and where each direction's frames begin.
A tunnel the proxy closes (idle_timeout, drain) therefore sends each side a going-away close
frame (1001) where that direction is between frames, then closes the connections.

The client's side belongs to its ClientConnection (proxy/http/client_conn.py) until the switch
(`ClientConnection.take_over`); its `connection_lost` is handed back to it, so its bookkeeping
ends as for any other connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

HIGH_WATER = 256 * 1024  # unsent bytes on one side before the other side stops being read
LOW_WATER = 64 * 1024
CLOSE_GRACE = 5.0  # seconds a closing side may take to flush before it is aborted
HALF_CLOSE_LINGER = 10.0  # seconds the other direction may go on after one side's EOF


GOING_AWAY = 1001
_TO_CLIENT_GOING_AWAY = b"\x88\x02" + GOING_AWAY.to_bytes(2, "big")  # unmasked (server's)
# Frames to a server must be masked (RFC 6455 5.3); a fixed key does, it only has to be there.
_MASK = b"\x5a\xa5\x3c\xc3"
_TO_UPSTREAM_GOING_AWAY = b"\x88\x82" + _MASK + bytes(
    b ^ m for b, m in zip(GOING_AWAY.to_bytes(2, "big"), _MASK, strict=False))


class _Side(asyncio.Protocol):
    __slots__ = ("tunnel", "name", "transport", "peer", "received", "eof", "lost", "_sent_eof",
                 "passes_lost_to", "_keeps_open", "_skip", "_partial")

    def __init__(self, tunnel: Tunnel, name: str, transport: asyncio.Transport,
                 passes_lost_to: asyncio.BaseProtocol | None = None) -> None:
        self.tunnel = tunnel
        self.name = name  # "client" or "upstream"
        self.transport = transport
        self.peer: _Side = self
        self.received = 0  # bytes read from this side
        self.eof = False
        self.lost = False
        self._sent_eof = False
        self.passes_lost_to = passes_lost_to
        # A TLS transport cannot stay half-open (asyncio warns when asked to)
        self._keeps_open = transport.can_write_eof()
        self._skip = 0  # payload bytes of the current frame still to come from this side
        self._partial = b""  # the start of a frame header split across reads

    @property
    def between_frames(self) -> bool:
        return self._skip == 0 and not self._partial

    def _frames(self, data: bytes) -> None:
        """Follows frame headers (RFC 6455 5.2) across reads: payloads are skipped by length."""
        skip = self._skip
        n = len(data)
        if skip >= n:
            self._skip = skip - n
            return
        if self._partial:
            data, n, skip = self._partial + data[skip:], n - skip + len(self._partial), 0
            self._partial = b""
        pos = skip
        while n - pos >= 2:
            second = data[pos + 1]
            length = second & 0x7F
            head = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (
                4 if second & 0x80 else 0)
            if n - pos < head:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
            if data[pos] & 0x0F == 8:  # a close frame
                self.tunnel.close_frame(self, _close_code(data, pos, head, length, second))
            pos += head + length
        if pos > n:
            self._skip = pos - n
        else:
            self._skip = 0
            if pos < n:
                self._partial = data[pos:]

    # --- asyncio callbacks ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.tunnel.last = self.tunnel.clock()
        self._frames(data)
        peer = self.peer
        if not (peer.lost or peer._sent_eof or peer.transport.is_closing()):
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.tunnel.side_eof(self)
        # Kept open (plain TCP) for the other direction's bytes still to come.
        return self._keeps_open and not self.transport.is_closing()

    def pause_writing(self) -> None:
        # This side cannot take more: stop reading what would be written to it.
        peer = self.peer
        if not peer.lost and not peer.transport.is_closing():
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if not peer.lost and not peer.transport.is_closing():
            peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.tunnel.side_lost(self, exc)
        if self.passes_lost_to is not None:
            self.passes_lost_to.connection_lost(exc)
            self.passes_lost_to = None

    # --- ours -------------------------------------------------------------------------------

    def half_close(self) -> bool:
        """Pass an EOF on to this side; False where its transport cannot (TLS)."""
        if self.lost or self._sent_eof or self.transport.is_closing():
            return not self.lost
        if not self.transport.can_write_eof():
            return False
        self._sent_eof = True
        self.transport.write_eof()
        return True

    def close(self) -> None:
        if not self.lost and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if not self.lost:
            self.transport.abort()


def _close_code(data: bytes, pos: int, head: int, length: int, second: int) -> int | None:
    if length < 2 or len(data) < pos + head + 2:
        return None  # no code, or its bytes are in a later read
    code = data[pos + head:pos + head + 2]
    if second & 0x80:
        mask = data[pos + head - 4:pos + head - 2]
        code = bytes(b ^ m for b, m in zip(code, mask, strict=True))
    return int.from_bytes(code, "big")


class Tunnel:
    """One client <-> upstream byte tunnel. `done` resolves once both sockets are closed."""

    def __init__(self, client: asyncio.Transport, client_protocol: asyncio.BaseProtocol,
                 upstream: asyncio.Transport, idle_timeout: float,
                 registry: Tunnels | None = None, info: object = None) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.clock: Callable[[], float] = loop.time
        self.idle_timeout = idle_timeout
        self.info = info  # the caller's record of what this tunnel is (endpoint, handshake)
        self.started = time.time()
        self.ended: float | None = None
        self.last = loop.time()
        # Who ended it: the side that sent the first close frame, or whose connection ended
        # first (client, upstream), or the proxy's reason (idle_timeout, drain, proxy).
        self.closed_by: str | None = None
        self.close_code: int | None = None  # of that first close frame
        self.error: str | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self.client = _Side(self, "client", client, client_protocol)
        self.upstream = _Side(self, "upstream", upstream)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._timer: asyncio.TimerHandle | None = None
        self._registry = registry

    @property
    def bytes_up(self) -> int:
        """Client -> upstream."""
        return self.client.received

    @property
    def bytes_down(self) -> int:
        return self.upstream.received

    def start(self, client_tail: bytes = b"", upstream_tail: bytes = b"") -> None:
        """Takes both transports over and passes on what each side sent before the switch."""
        if self._registry is not None:
            self._registry.opened(self)
        # Both connections are alive (the caller checked): a transport that is closing still
        # calls connection_lost, on the protocol set now, so the tunnel ends the usual way.
        for side in (self.client, self.upstream):
            t = side.transport
            t.set_protocol(side)
            t.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
            if not t.is_closing():
                t.resume_reading()  # paused by the client connection or the pool around the switch
        self._timer = self.loop.call_at(self.last + self.idle_timeout, self._idle)
        for side, tail in ((self.client, client_tail), (self.upstream, upstream_tail)):
            if tail:
                side.data_received(tail)

    # --- closing ----------------------------------------------------------------------------

    def close(self, why: str, error: str | None = None) -> None:
        """Ends the tunnel from the proxy's side (idle_timeout, drain, proxy): a going-away
        close frame to each side that is between frames, then the connections close."""
        if self.closed_by is None:
            self.close_code = GOING_AWAY
        self._end_by(why, error)
        for side, frame in ((self.client, _TO_CLIENT_GOING_AWAY),
                            (self.upstream, _TO_UPSTREAM_GOING_AWAY)):
            # What this side receives comes from its peer: a frame may start here only where
            # the peer's last frame ended.
            if side.peer.between_frames and not (side.lost or side._sent_eof
                                                 or side.transport.is_closing()):
                side.transport.write(frame)
        self.client.close()
        self.upstream.close()
        self._arm_abort()

    def close_frame(self, side: _Side, code: int | None) -> None:
        if self.closed_by is None:
            self.close_code = code
        self._end_by(side.name, None)

    def abort(self, why: str) -> None:
        self._end_by(why, None)
        self.client.abort()
        self.upstream.abort()

    def side_eof(self, side: _Side) -> None:
        self._end_by(side.name, None)
        if side.peer.eof:  # both directions are finished
            self.client.close()
            self.upstream.close()
            self._arm_abort()
        elif side.peer.half_close():
            self._rearm(HALF_CLOSE_LINGER)
        else:
            side.peer.close()
            side.close()
            self._arm_abort()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        self._end_by(side.name, None if exc is None else (str(exc) or type(exc).__name__))
        side.peer.close()
        self._arm_abort()
        self._check_done()

    def _end_by(self, who: str, error: str | None) -> None:
        if self.closed_by is None:
            self.closed_by = who
            self.error = error

    def _arm_abort(self) -> None:
        self._rearm(CLOSE_GRACE, abort=True)

    def _rearm(self, delay: float, abort: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.done.done():
            self._timer = None
            return
        self._timer = self.loop.call_later(delay, self._abort_now if abort else self._linger)

    def _linger(self) -> None:
        self._timer = None
        self.close(self.closed_by or "proxy")

    def _abort_now(self) -> None:
        self._timer = None
        self.client.abort()
        self.upstream.abort()

    def _idle(self) -> None:
        self._timer = None
        due = self.last + self.idle_timeout
        if self.loop.time() < due:  # there was traffic since: wait for the rest of it
            self._timer = self.loop.call_at(due, self._idle)
            return
        self.close("idle_timeout")

    def _check_done(self) -> None:
        if self.client.lost and self.upstream.lost and not self.done.done():
            self.ended = time.time()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.done.set_result(None)
            if self._registry is not None:
                self._registry.closed(self)


class Tunnels:
    """The open tunnels (for drain, the inspector and metrics) and totals of the closed ones,
    so byte counters never need a global update per chunk."""

    def __init__(self, on_close: Callable[[Tunnel], None] | None = None) -> None:
        self.open: set[Tunnel] = set()
        self.total = 0
        self.closed_up = 0
        self.closed_down = 0
        self.on_close = on_close

    def opened(self, tunnel: Tunnel) -> None:
        self.open.add(tunnel)
        self.total += 1

    def closed(self, tunnel: Tunnel) -> None:
        if tunnel in self.open:
            self.open.discard(tunnel)
            self.closed_up += tunnel.bytes_up
            self.closed_down += tunnel.bytes_down
            if self.on_close is not None:
                self.on_close(tunnel)

    def bytes(self) -> tuple[int, int]:
        """Bytes client -> upstream and upstream -> client, over every tunnel so far."""
        up = self.closed_up + sum(t.bytes_up for t in self.open)
        down = self.closed_down + sum(t.bytes_down for t in self.open)
        return up, down

    def close_all(self, why: str) -> None:
        for tunnel in list(self.open):
            tunnel.close(why)

    def abort_all(self, why: str) -> None:
        for tunnel in list(self.open):
            tunnel.abort(why)
