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
from collections.abc import Callable, Iterable
from typing import Any

from proxy.redaction import SECRET_HEADERS, redact_queries
from proxy.secret import redact

access_log = logging.getLogger("authproxy.access")

# Header names whose values are credentials (`name.lower() in SENSITIVE`); other values are
# shown as sent, but for the secrets in a URL's query.
SENSITIVE = SECRET_HEADERS
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
# An access line's fields for the JSON format, made only when a formatter shows them.
Extra = Callable[[], dict[str, Any]]


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

    def access(self, created: float, text: str, extra: Extra) -> str:
        """What format() gives for an INFO access record with these extras."""
        return json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int((created - int(created)) * 1000):03d}Z",
            "level": "info", "logger": access_log.name, "message": text, **extra()},
            default=str)


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

    def access(self, created: float, text: str, extra: Extra) -> str:
        """What format() gives for an INFO access record (the text format shows no extras, so
        `extra` is never called)."""
        second = int(created)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created)))
        return f"{self._second[1]},{int((created - second) * 1000):03d}{_ACCESS_TAIL}{text}"


# What the text format puts between the time and an access line's message.
_ACCESS_TAIL = f" {'INFO':<7} {access_log.name}: "


# How long an access line may wait in the buffer. Flushing once per event-loop iteration made a
# write (and, for get_running_loop, a getpid) system call per iteration, and under load an
# iteration answers only a request or a few: waiting took the access log's cost from 34 to
# 22 us a request (bench/load.py --access-log). A line that shows 50 ms later costs a reader of
# the log nothing.
FLUSH_DELAY = 0.05


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Flushes FLUSH_DELAY after the first line that waits, rather than once per line (or per
    loop iteration); warnings and worse go out at once, and so does everything outside a
    running loop (start-up, shutdown, tools)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(_unbuffered_lines(stream))
        self._pending: asyncio.AbstractEventLoop | None = None  # the loop a flush is due on

    def flush(self) -> None:
        self._pending = None
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
        pending = self._pending
        if pending is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._pending = loop
            loop.call_later(FLUSH_DELAY, self.flush)
        elif not pending.is_running():
            self.flush()  # that loop stopped before its flush came: nothing else will


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


def access(text: str, extra: Extra) -> None:
    """Writes the access line. When our handler is the only thing listening (no caplog, no
    handler or filter added by someone else), the line goes straight to it: building a
    LogRecord and passing it through the logging machinery cost more than the rest of the
    line. Otherwise, or when anything is unusual, it goes through `logging` as any line."""
    h = _direct
    if h is not None and h.level <= logging.INFO and not h.filters and h.formatter \
            and _only(h):
        h.write_line(h.formatter.access(time.time(), text, extra))  # type: ignore[attr-defined]
    else:
        access_log.info(text, extra=extra())


def _only(h: BatchingHandler) -> bool:
    """`h` is the one handler an access record would reach, and nothing filters on the way."""
    for lg in _chain:
        if lg.filters:
            return False
        if lg.parent is None:
            handlers = lg.handlers
            return len(handlers) == 1 and handlers[0] is h
        if lg.handlers or not lg.propagate:
            return False
    return False


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
