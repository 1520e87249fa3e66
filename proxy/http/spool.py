"""A request body read whole before it is sent, for credentials that must hash it (SigV4).

Up to MEMORY bytes stay in memory; past that the body goes to an anonymous temporary file
(unlinked at creation, so it is gone however the request ends, a client abort included) and
memory stays bounded whatever the size. Past `limit` the read stops with BodyTooLarge: nothing
has been sent upstream then. The body can be sent any number of times (a replay after a
refreshed credential sends the same bytes, under the same hash).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO

MEMORY = 1024 * 1024
PIECE = 256 * 1024  # what a spooled body is sent in
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # of a request without a body


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


class SpooledBody:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None

    async def fill(self, source: AsyncIterable[bytes]) -> None:
        async for chunk in source:
            self.size += len(chunk)
            if self.size > self.limit:
                self.close()
                raise BodyTooLarge(self.limit)
            self._hash.update(chunk)
            if self._file is not None:
                self._file.write(chunk)
            elif self.size > MEMORY:
                self._file = tempfile.TemporaryFile(prefix="authproxy-body-")
                self._file.writelines(self._chunks)
                self._file.write(chunk)
                self._chunks = []
            else:
                self._chunks.append(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest() if self.size else EMPTY_SHA256

    @property
    def spooled(self) -> bool:
        return self._file is not None

    def payload(self) -> bytes | AsyncIterable[bytes] | None:
        """What to send: bytes from memory, or the file read anew from its start."""
        if self._file is None:
            return b"".join(self._chunks) if self.size else None
        return self._pieces(self._file)

    @staticmethod
    async def _pieces(file: IO[bytes]) -> AsyncIterator[bytes]:
        # Page-cache reads of at most max_signed_body (10 MB): not worth a thread hop each.
        file.seek(0)
        while piece := file.read(PIECE):
            yield piece

    def close(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
