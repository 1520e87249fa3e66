"""Raw WebSocket helpers for byte-level tests: a handshake written by hand, frames built and
read by hand (RFC 6455 5.2), independent of aiohttp's and the proxy's code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake(path: str, host: str = "127.0.0.1", extra: bytes = b"",
              key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(payload: bytes, opcode: int = 2, mask: bool = True) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, mask: bool = True) -> bytes:
    return frame(code.to_bytes(2, "big"), opcode=8, mask=mask)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next frame, unmasked."""
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if second & 0x80 else None
    data = await reader.readexactly(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return first & 0x0F, data


async def connect(port: int, path: str, extra: bytes = b""
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A raw client through the handshake: (reader, writer, the answer's head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(path, extra=extra))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head
