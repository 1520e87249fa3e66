"""WebSocket tunnels through `authproxy serve`, against the same traffic sent directly.

    .venv/bin/python bench/websocket.py [--tunnels 1000] [--megabytes 100] [--seconds 5]

Layout as in the other benches: the proxy pinned to core 0, the upstream (a raw asyncio
WebSocket server: handshake, then every byte echoed) and this script's clients on core 1.

1. Idle tunnels: `--tunnels` handshakes through the proxy, held open; the proxy's RSS and open
   descriptors before, with them open, and after they closed (back to the baseline?).
2. Echo throughput: one tunnel carries `--megabytes` of 64 KiB binary frames up while the echo
   comes back, through the proxy and directly; the ratio proxy/direct (goal >= 0.8).
3. Small frames: `--connections` clients each send a 32-byte frame and wait for its echo, for
   `--seconds`, through the proxy and directly: messages per second and the ratio.

The upstream echoes the client's (masked) frames as they are: what is measured is the tunnel,
which never parses payloads, so a byte echo is the cheapest honest upstream (an upstream that
decodes frames would make both sides of each ratio slower and the ratios rosier).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BENCH,
    LOAD_CPU,
    PROXY_CPU,
    PY,
    Proc,
    add_nice_option,
    apply_nice,
    free_port,
    have_uvloop,
    machine_info,
    pin,
    raise_nofile,
    table,
    wait_http,
    write_result,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


# --- the upstream: handshake, then echo ----------------------------------------------------

class _Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.switched = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.switched:
            self.transport.write(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        key = next(line.split(b":", 1)[1].strip() for line in self.head[:end].split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                             + b"\r\n\r\n" + self.head[end + 4:])
        self.switched = True
        self.transport.set_write_buffer_limits(1 << 20)

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


async def serve_upstream() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0, backlog=4096)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


# --- clients --------------------------------------------------------------------------------

def frame(payload: bytes) -> bytes:
    n = len(payload)
    mask = os.urandom(4)
    head = b"\x82" + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
                      if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def connect(port: int, path: str = "/ws/") -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + KEY
                 + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    return reader, writer


async def echo_stream(port: int, megabytes: int) -> float:
    """Seconds to push `megabytes` of frames through and read every byte of their echo."""
    reader, writer = await connect(port)
    block = frame(os.urandom(65536))
    count = megabytes * 16
    total = len(block) * count

    async def send() -> None:
        for _ in range(count):
            writer.write(block)
            await writer.drain()

    async def receive() -> None:
        got = 0
        while got < total:
            data = await reader.read(1 << 20)
            if not data:
                raise RuntimeError(f"tunnel closed after {got} of {total} bytes")
            got += len(data)

    started = time.perf_counter()
    await asyncio.gather(send(), receive())
    took = time.perf_counter() - started
    writer.close()
    return took


async def small_frames(port: int, connections: int, seconds: float) -> float:
    """Messages per second: each connection sends a 32-byte frame and waits for its echo."""
    msg = frame(b"m" * 32)
    conns = [await connect(port) for _ in range(connections)]
    stop = time.perf_counter() + seconds
    counts = [0] * connections

    async def run(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while time.perf_counter() < stop:
            writer.write(msg)
            await reader.readexactly(len(msg))
            counts[i] += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(i, r, w) for i, (r, w) in enumerate(conns)))
    took = time.perf_counter() - started
    for _, w in conns:
        w.close()
    return sum(counts) / took


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def idle_tunnels(port: int, proxy: Proc, n: int) -> dict[str, Any]:
    await asyncio.sleep(0.5)
    base_rss, base_fds = proxy.rss_kb(), fds(proxy.pid)
    conns = []
    for start in range(0, n, 100):  # in batches, as a fleet of clients would come
        conns += await asyncio.gather(*(connect(port) for _ in range(start, min(n, start + 100))))
    await asyncio.sleep(1.0)
    # One message each way on every tunnel: they are all really open.
    msg = frame(b"ping")
    for _, w in conns:
        w.write(msg)
    for r, _ in conns:
        await r.readexactly(len(msg))
    open_rss, open_fds = proxy.rss_kb(), fds(proxy.pid)
    for _, w in conns:
        w.close()
    deadline = time.monotonic() + 20
    while fds(proxy.pid) > base_fds and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after_fds = fds(proxy.pid)
    return {"tunnels": n, "rss_base_kb": base_rss, "rss_open_kb": open_rss,
            "rss_per_tunnel_kb": round((open_rss - base_rss) / n, 2),
            "fds_base": base_fds, "fds_open": open_fds, "fds_after": after_fds,
            "fds_back_to_baseline": after_fds <= base_fds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tunnels", type=int, default=1000)
    ap.add_argument("--megabytes", type=int, default=100)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of each measurement, direct and proxied interleaved; the "
                         "median is reported")
    add_nice_option(ap)
    ap.add_argument("upstream", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream == "upstream":
        asyncio.run(serve_upstream())
        return
    apply_nice(args.nice)
    raise_nofile()
    if len(pin(LOAD_CPU)):
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    logdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    up = Proc("ws-upstream", [PY, str(Path(__file__).resolve()), "upstream"], LOAD_CPU, logdir,
              stdout=-1)
    assert up.p.stdout is not None
    up_port = int(up.p.stdout.readline().decode().split()[1])
    config = logdir / "proxy.yaml"
    config.write_text(
        "credentials:\n  tok: {type: static, value: Bearer bench-token-0123456789}\n"
        f"endpoints:\n  - {{name: ws, endpoint: 'http://127.0.0.1:{up_port}', auth: tok, "
        "prefix: /ws, idle_timeout: 3600}\nlogging: {level: warning}\n")
    loop = "uvloop" if have_uvloop() else "asyncio"
    port = free_port()
    proxy = Proc(f"authproxy-{loop}", [PY, str(BENCH / "_launch.py"), loop, "authproxy", "serve",
                                       "-c", str(config), "--port", str(port)], PROXY_CPU, logdir)
    try:
        wait_http(f"http://127.0.0.1:{port}/_authproxy/healthz", proxy)
        result: dict[str, Any] = {"machine": machine_info(), "loop": loop, "args": vars(args)}
        result["idle"] = asyncio.run(idle_tunnels(port, proxy, args.tunnels))

        direct, through = [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            direct.append(asyncio.run(echo_stream(up_port, args.megabytes)))
            through.append(asyncio.run(echo_stream(port, args.megabytes)))
        d, t = sorted(direct)[len(direct) // 2], sorted(through)[len(through) // 2]
        result["echo"] = {"megabytes": args.megabytes, "direct_s": round(d, 3),
                          "proxy_s": round(t, 3), "direct_MBps": round(args.megabytes / d, 1),
                          "proxy_MBps": round(args.megabytes / t, 1), "ratio": round(d / t, 3)}
        ratios, mds, mps = [], [], []
        for _ in range(args.rounds):
            md = asyncio.run(small_frames(up_port, args.connections, args.seconds))
            mp = asyncio.run(small_frames(port, args.connections, args.seconds))
            mds.append(md)
            mps.append(mp)
            ratios.append(mp / md)
        result["small"] = {"connections": args.connections,
                           "direct_msgs": round(sorted(mds)[len(mds) // 2]),
                           "proxy_msgs": round(sorted(mps)[len(mps) // 2]),
                           "ratio": round(sorted(ratios)[len(ratios) // 2], 3),
                           "ratios": [round(r, 3) for r in ratios]}
        result["echo"]["ratios"] = [round(a / b, 3) for a, b in zip(direct, through,
                                                                    strict=True)]
    finally:
        proxy.stop()
        up.stop()
    idle, echo, small = result["idle"], result["echo"], result["small"]
    print(table([[idle["tunnels"], idle["rss_base_kb"], idle["rss_open_kb"],
                  idle["rss_per_tunnel_kb"], idle["fds_base"], idle["fds_open"],
                  idle["fds_after"]]],
                ["idle tunnels", "RSS base KiB", "RSS open KiB", "KiB/tunnel", "fds base",
                 "fds open", "fds after"]))
    print()
    print(table([[f"{echo['megabytes']} MB echo", echo["direct_MBps"], echo["proxy_MBps"],
                  echo["ratio"]],
                 [f"32 B frames x{small['connections']}", small["direct_msgs"],
                  small["proxy_msgs"], small["ratio"]]],
                ["stream", "direct (MB/s | msg/s)", "through authproxy", "ratio"]))
    path = write_result("websocket", result)
    print(f"\nper round: echo {echo['ratios']}, small frames {small['ratios']}\n{path}")
    ok = idle["fds_back_to_baseline"] and echo["ratio"] >= 0.8
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
