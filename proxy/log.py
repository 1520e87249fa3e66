"""Logging set-up: human text or one JSON object per line, and the access line.

Header values are redacted before they reach a record (`redact_headers`: secret-looking names by
the rule in `proxy.redaction`, and query secrets in URLs such as Location and Referer); secrets
are `Secret`s, which format redacted, so a log line cannot show one by accident.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from proxy.redaction import SECRET_HEADERS, redact_queries
from proxy.secret import redact

access_log = logging.getLogger("authproxy.access")

# Header names whose values are credentials (`name.lower() in SENSITIVE`); other values are
# shown as sent, but for the secrets in a URL's query.
SENSITIVE = SECRET_HEADERS
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def redact_headers(headers: Iterable[tuple[str, str]],
                   also: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """`also`: more names (lower case) to redact, e.g. a credential's custom header."""
    return [(k, redact(v) if k.lower() in also or k in SENSITIVE else redact_queries(v))
            for k, v in headers]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        out.update((k, v) for k, v in record.__dict__.items() if k not in _RESERVED)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)

    def access(self, created: float, text: str, extra: dict[str, Any]) -> str:
        """What format() gives for an INFO access record with these extras."""
        return json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int((created - int(created)) * 1000):03d}Z",
            "level": "info", "logger": access_log.name, "message": text, **extra}, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._second = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # strftime once a second instead of once a line (the access log writes thousands).
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S",
                                                  self.converter(record.created)))
        return f"{self._second[1]},{int(record.msecs):03d}"

    def access(self, created: float, text: str, extra: dict[str, Any]) -> str:
        """What format() gives for an INFO access record (the text format shows no extras)."""
        second = int(created)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created)))
        asctime = f"{self._second[1]},{int((created - second) * 1000):03d}"
        return self._fmt % {"asctime": asctime, "levelname": "INFO",  # type: ignore[operator]
                            "name": access_log.name, "message": text}


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Flushes once per event-loop iteration rather than once per line: at thousands of access
    lines a second, a write system call per line was a third of the access log's cost. Outside
    a running loop (start-up, shutdown, tools) every line is flushed at once."""

    def __init__(self, stream: Any) -> None:
        super().__init__(_unbuffered_lines(stream))
        self._pending = False

    def flush(self) -> None:
        self._pending = False
        super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()  # problems show at once, whatever the loop is doing
            return
        self._later()

    def write_line(self, line: str) -> None:
        self.stream.write(line + self.terminator)
        self._later()

    def _later(self) -> None:
        if not self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._pending = True
            loop.call_soon(self.flush)


def _unbuffered_lines(stream: Any) -> Any:
    """The same file without line buffering (sys.stderr flushes at every newline, which would
    undo the batching), or the stream itself when it is no real file (tests capture it)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    return io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "w", closefd=False), 1 << 16),
                            encoding=getattr(stream, "encoding", None) or "utf-8",
                            errors="backslashreplace")


_direct: BatchingHandler | None = None  # our handler, when access lines may skip `logging`
_chain: tuple[logging.Logger, ...] = ()  # access_log and its ancestors


def access(text: str, extra: dict[str, Any]) -> None:
    """Writes the access line. When our handler is the only thing listening (no caplog, no
    handler or filter added by someone else), the line goes straight to it: building a
    LogRecord and passing it through the logging machinery cost more than the rest of the
    line. Otherwise, or when anything is unusual, it goes through `logging` as any line."""
    h = _direct
    if h is not None and h.level <= logging.INFO and not h.filters and h.formatter and all(
            not lg.filters and (lg.handlers == [h] if lg.parent is None else
                                not lg.handlers and lg.propagate) for lg in _chain):
        h.write_line(h.formatter.access(time.time(), text, extra))  # type: ignore[attr-defined]
    else:
        access_log.info(text, extra=extra)


def configure(level: str, fmt: str) -> None:
    # No formatter here shows a file name, line number, thread or process: skip gathering them
    # (the logging HOWTO's own advice for speed; a few microseconds per access line).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stdout if fmt == "json" else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()  # a reload replaces the handler: nothing buffered may be lost
    root.handlers[:] = [handler]
    global _direct, _chain
    _direct = handler
    chain: list[logging.Logger] = []
    logger: logging.Logger | None = access_log
    while logger is not None:
        chain.append(logger)
        logger = logger.parent
    _chain = tuple(chain)
    root.setLevel(level.upper())
    # aiohttp's own access log would repeat ours; its server errors stay.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
