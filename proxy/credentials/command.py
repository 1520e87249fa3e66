"""`type: command`: a header value printed by a program the user names (a vault CLI, `aws sso`,
a company tool), kept fresh by the refresh core (proxy/credentials/refresh.py).

This module says how to run the program and read what it printed, and which failures are worth
trying again; when to run it, single flight, backoff and hold-offs are the core's.

Running: argv as configured, never through a shell; the proxy's environment and working
directory; stdin /dev/null (a program that prompts fails at once instead of hanging); its own
session, so a timeout kills the whole process group (a wrapper script and what it started);
stdout read up to MAX_STDOUT, stderr only its tail.

What is shown of it: the program (argv[0]) and how many arguments it has, never the arguments
(one may be a secret from `${VAR}`), never stdout. A failure quotes the last line of stderr,
bounded, with the arguments and anything stdout printed blanked out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.config import CommandCredential
from proxy.credentials.base import CredentialSource, Description, Headers, Outgoing
from proxy.credentials.clock import Clock, SystemClock
from proxy.credentials.refresh import Failure, Fetched, Refresher
from proxy.credentials.shared import Codec, SharedSlot
from proxy.jwt import human_delta, parse
from proxy.secret import Secret

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authproxy.command")

MAX_STDOUT = 1024 * 1024  # bytes; a token or an ExecCredential is far smaller
STDERR_KEPT = 64 * 1024  # bytes of stderr's tail kept to find its last line in
STDERR_SHOWN = 300  # characters of that line quoted in an error
MIN_BLANKED = 8  # arguments and stdout lines this long are blanked out of a quoted stderr line
REAP_WAIT = 5.0  # seconds to wait for a killed process group to be reaped
# Epoch seconds past this (the year 5138) are milliseconds written by mistake: taken as
# seconds they would keep a value for ever.
MAX_EPOCH = 1e11
# What a header value can carry: printable ASCII, no space at either end.
_HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


@dataclass(frozen=True)
class CommandValue:
    """One value the command printed: plain fields, so a shared store can keep it."""

    token: Secret
    expires_at: float  # epoch seconds
    expiry_from: str  # what set the expiry: expires_at, expires_in, JWT exp, ttl, ...


class CommandError(Exception):
    """A run that gave no usable value. The message names the command, never its arguments
    or its output; it is shown in 503s, readyz and the log."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.message, self.transient = message, transient


class _TooMuchOutput(Exception):
    pass


@dataclass
class _Run:
    stdout: bytearray
    stderr: bytearray  # its tail only
    code: int | None = None  # exit status; negative: killed by that signal
    seconds: float = 0.0


def shown(argv: Sequence[str]) -> str:
    """How the command is named wherever it is shown: the program, and a count for the rest."""
    n = len(argv) - 1
    return f"command {argv[0]}" + (f" (+{n} arg{'s' if n != 1 else ''})" if n else "")


class CommandSource(CredentialSource):
    refreshable = True  # an upstream 401 reruns the command (once) and replays the request

    def __init__(self, config: CommandCredential, *, clock: Clock | None = None) -> None:
        self.name, self.header_name = config.name, config.header
        self._cfg = config
        self._shown = shown(config.command)
        self._clock: Clock = clock or SystemClock()
        # the program as a permanent failure found it (see _program_changed)
        self._located: tuple[str, int, int] | None = None
        self._core: Refresher[CommandValue] = Refresher(
            config.name, self._fetch, self._classify, margin=config.refresh_margin,
            clock=self._clock, recheck=self._program_changed)
        # current()'s answer, built once per value rather than per request
        self._built: tuple[CommandValue | None, Headers] = (None, ())
        self.runs = 0
        self._last_run_at: float | None = None
        self._last_run_seconds: float | None = None
        self._last_exit: int | str | None = None

    # --- the CredentialSource protocol -------------------------------------------------------

    def share(self, slot: SharedSlot) -> None:
        # A fleet runs the command once per lifetime, not once per member: what it printed is
        # kept (encrypted) in the fleet's cache like any token.
        self._core.share(slot.store(_CODEC), slot.key(_CODEC))

    async def start(self, session: aiohttp.ClientSession | None) -> None:
        await self._core.start()

    async def close(self) -> None:
        await self._core.close()  # cancels a run in flight, which kills its process group

    def current(self) -> Headers | None:
        value = self._core.current()
        return None if value is None else self._cached(value)

    async def headers_for(self, request: Outgoing) -> Headers:
        return self._cached(await self._core.get())

    async def rejected(self, sent: Headers) -> bool:
        return await self._core.force(lambda value: self._headers(value) == sent)

    def describe(self) -> Description:
        cfg = self._cfg
        missing = "" if shutil.which(cfg.command[0]) else \
            (f"; {cfg.command[0]} is NOT FOUND on PATH or not executable (requests get 503 "
             "until it is)")
        expiry = ("the expiry it states, its JWT exp" if cfg.format == "json" else
                  "its JWT exp") + f", else ttl {cfg.ttl:g} s"
        return Description(
            name=self.name, type="command", header=cfg.header,
            summary=f"{self._shown}, {cfg.format} output as {cfg.header}: {cfg.prefix}<value>, "
                    f"kept until {expiry}; timeout {cfg.timeout:g} s{missing}",
            how=f"{self._shown} run at start and {cfg.refresh_margin:g} s before its value "
                f"expires (arguments not shown){missing}",
            headers=((cfg.header, f"{cfg.prefix}<output of {cfg.command[0]}>"),),
            prefix=cfg.prefix, flow="command", refreshed=True, settings=frozenset({"prefix"}))

    def status(self) -> dict[str, Any]:
        core = self._core.status()
        value = self._core.held()
        cfg = self._cfg
        return {
            "name": self.name, "type": "command", "flow": "command", "state": core["state"],
            "ready": core["ready"], "header": self.header_name,
            "command": cfg.command[0], "args": len(cfg.command) - 1, "format": cfg.format,
            **{k: core[k] for k in ("expires_at", "expires_in", "refresh_in", "last_error",
                                    "last_error_at", "retry_in", "fetches")},
            "expiry_from": value.expiry_from if value else None,
            "runs": self.runs,
            "last_run_at": _iso(self._last_run_at),
            "last_run_seconds": self._last_run_seconds,
            "last_exit": self._last_exit,
        }

    # --- fetching: what the refresh core calls -----------------------------------------------

    async def _fetch(self) -> Fetched[CommandValue]:
        run = await self._run()
        if run.code != 0:
            raise CommandError(self._failed(run))
        try:
            text = run.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError(self._with_stderr("printed output that is not UTF-8 text",
                                                 run)) from None
        now = self._clock.time()
        try:
            value = read_value(text, self._cfg.format, self._cfg.ttl, now)
        except ValueError as e:
            raise CommandError(self._with_stderr(str(e), run)) from None
        return Fetched(value, value.expires_at - now, f"value from {self._shown} "
                       f"(expiry from {value.expiry_from})")

    def _classify(self, e: Exception) -> Failure:
        if isinstance(e, CommandError):
            if not e.transient:
                self._located = _locate(self._cfg.command[0])
            return Failure(e.message, e.transient)
        # Our own surprise, not the command's: its type only, then try again later.
        log.debug("credential %s: %s failed", self.name, self._shown, exc_info=e)
        return Failure(f"{self._shown} failed ({type(e).__name__})", transient=True)

    def _program_changed(self) -> bool:
        """A permanent failure (not found, not executable) may end when the program appears
        or changes; comparing with what the failure saw keeps a broken program from being run
        by every request."""
        return _locate(self._cfg.command[0]) != self._located

    async def _run(self) -> _Run:
        argv = self._cfg.command
        self.runs += 1
        self._last_run_at = self._clock.time()
        started = time.monotonic()
        run = _Run(bytearray(), bytearray())
        log.debug("credential %s: running %s", self.name, self._shown)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as e:
            self._last_exit = "not started"
            raise _start_error(self._shown, e) from None
        try:
            async with asyncio.timeout(self._cfg.timeout):
                assert proc.stdout is not None and proc.stderr is not None
                await asyncio.gather(_read_bounded(proc.stdout, run.stdout),
                                     _read_tail(proc.stderr, run.stderr))
                run.code = await proc.wait()
        except TimeoutError:
            self._last_exit = "timeout"
            raise CommandError(self._with_stderr(
                f"timed out after {self._cfg.timeout:g} s (its process group was killed)",
                run)) from None
        except _TooMuchOutput:
            self._last_exit = "too much output"
            raise CommandError(f"{self._shown} printed more than {MAX_STDOUT // 1024} KiB on "
                               "stdout (killed); a token is one line") from None
        finally:
            if proc.returncode is None:  # timed out, too much output, or the proxy stopping
                await _kill_group(proc)
            run.seconds = round(time.monotonic() - started, 3)
            self._last_run_seconds = run.seconds
        self._last_exit = run.code
        log.debug("credential %s: %s exited %s in %.2f s (%d bytes on stdout, %d on stderr)",
                  self.name, self._shown, run.code, run.seconds, len(run.stdout),
                  len(run.stderr))
        return run

    # --- messages ----------------------------------------------------------------------------

    def _failed(self, run: _Run) -> str:
        code = run.code or 0
        if code < 0:
            try:
                what = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"was killed by signal {-code}"
        else:
            what = f"exited with status {code}"
        return self._with_stderr(what, run)

    def _with_stderr(self, what: str, run: _Run) -> str:
        line = last_line(bytes(run.stderr), [*self._cfg.command[1:], *_lines(run.stdout)])
        return f"{self._shown} {what}" + (f"; stderr: {line}" if line else "; stderr was empty")

    def _cached(self, value: CommandValue) -> Headers:
        """The headers for `value`: built when the value changes, looked up otherwise (a
        value from a shared store is a new object, and gets its headers built once too)."""
        built_for, headers = self._built
        if value is not built_for:
            headers = self._headers(value)
            self._built = (value, headers)
        return headers

    def _headers(self, value: CommandValue) -> Headers:
        return ((self._cfg.header, self._cfg.prefix + value.token.reveal()),)


def _encode(value: CommandValue) -> dict[str, Any]:
    return {"token": value.token.reveal(), "expires_at": value.expires_at,
            "expiry_from": value.expiry_from}


def _decode(d: dict[str, Any]) -> CommandValue:
    return CommandValue(Secret(str(d["token"])), float(d["expires_at"]), str(d["expiry_from"]))


_CODEC: Codec[CommandValue] = Codec("command-output/1", _encode, _decode)


# --- reading what it printed -----------------------------------------------------------------

def read_value(text: str, fmt: str, ttl: float, now: float) -> CommandValue:
    """The value in the command's stdout; raises ValueError saying what is wrong (never
    quoting the output)."""
    stated: list[tuple[float, str]] = []  # (epoch, where it came from)
    if fmt == "text":
        token = text.strip()
        if not token:
            raise ValueError("printed nothing on stdout")
        if "\n" in token:
            raise ValueError(f"printed {len(token.splitlines())} lines on stdout; format text "
                             "takes one line, the value (or set format: json)")
    else:
        token = _read_json(text, now, stated)
    if not _HEADER_SAFE.fullmatch(token):
        raise ValueError("printed a value with characters a header cannot carry (control or "
                         "non-ASCII characters, or inner line breaks)")
    exp = _jwt_exp(token)
    if exp is not None:
        stated.append((exp, "JWT exp"))
    # Several statements of expiry (expires_at and a JWT's exp): the earliest holds.
    expires_at, origin = min(stated) if stated else (now + ttl, "ttl")
    if expires_at <= now:
        raise ValueError(f"printed a value that expired {human_delta(now - expires_at)} ago "
                         f"(by its {origin})")
    return CommandValue(Secret(token), expires_at, origin)


def _read_json(text: str, now: float, stated: list[tuple[float, str]]) -> str:
    if not text.strip():
        raise ValueError("printed nothing on stdout")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        # e.msg and the position only: the document itself is the secret
        raise ValueError(f"printed invalid JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno}); format json wants an ExecCredential or "
                         '{"token": ..., "expires_at" | "expires_in": ...}') from None
    if not isinstance(doc, dict):
        raise ValueError(f"printed JSON that is {_kind(doc)}, not an object")
    if doc.get("kind") == "ExecCredential" or ("status" in doc and "token" not in doc):
        # Kubernetes client.authentication.k8s.io ExecCredential, as kubectl plugins print.
        status = doc.get("status")
        if not isinstance(status, dict):
            raise ValueError("printed an ExecCredential without a status object")
        token = status.get("token")
        if not isinstance(token, str) or not token.strip():
            raise ValueError("printed an ExecCredential without status.token (client "
                             "certificates cannot be sent as a header)")
        when = status.get("expirationTimestamp")
        if when is not None:
            stated.append((_timestamp(when, "status.expirationTimestamp", rfc3339_only=True),
                           "status.expirationTimestamp"))
        return token.strip()
    token = doc.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ValueError('printed JSON without a "token" string')
    if doc.get("expires_at") is not None:
        stated.append((_timestamp(doc["expires_at"], "expires_at"), "expires_at"))
    expires_in = doc.get("expires_in")
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise ValueError(f"printed expires_in as {_kind(expires_in)}; it takes seconds "
                             "as a number")
        stated.append((now + float(expires_in), "expires_in"))
    return token.strip()


def _timestamp(value: object, key: str, rfc3339_only: bool = False) -> float:
    """RFC 3339 / ISO 8601 with a zone, or epoch seconds (a number or a string of digits)."""
    if isinstance(value, str) and not rfc3339_only and re.fullmatch(r"\d+(\.\d+)?", value):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and not rfc3339_only:
        if value > MAX_EPOCH:
            raise ValueError(f"printed {key} in what looks like milliseconds; it takes epoch "
                             "seconds")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"printed {key} as {_kind(value)}; it takes an RFC 3339 time"
                         + ("" if rfc3339_only else " or epoch seconds"))
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"printed {key} that is not an RFC 3339 / ISO 8601 time "
                         "(like 2030-01-02T03:04:05Z)") from None
    if when.tzinfo is None:
        raise ValueError(f"printed {key} without a time zone; write it with Z or an offset "
                         "(2030-01-02T03:04:05Z, or +02:00)")
    return when.timestamp()


def _jwt_exp(token: str) -> float | None:
    if token.count(".") != 2 or not token.startswith("eyJ"):
        return None
    try:
        exp = parse(token)[1].get("exp")
    except ValueError:
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


# --- stderr ----------------------------------------------------------------------------------

def last_line(tail: bytes, blank: Sequence[str]) -> str | None:
    """The last non-empty line of stderr, made safe to show: printable, bounded, and with
    every string of `blank` (arguments, stdout lines) that is long enough to be a secret
    replaced by ***."""
    lines = [ln.strip() for ln in tail.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return None
    line = "".join(c if c.isprintable() else "?" for c in lines[-1])
    for secret in sorted((b for b in blank if len(b) >= MIN_BLANKED), key=len, reverse=True):
        line = line.replace(secret, "***")
    return line if len(line) <= STDERR_SHOWN else line[:STDERR_SHOWN] + "…"


def _lines(stdout: bytearray) -> list[str]:
    return [ln.strip() for ln in stdout.decode("utf-8", "replace").splitlines() if ln.strip()]


# --- the process -----------------------------------------------------------------------------

async def _read_bounded(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk
        if len(into) > MAX_STDOUT:
            raise _TooMuchOutput


async def _read_tail(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk
        if len(into) > STDERR_KEPT:
            del into[:-STDERR_KEPT]


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the run's whole process group (it has its own session) and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # in case it left the group
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), REAP_WAIT)


def _start_error(name: str, e: OSError) -> CommandError:
    # Not there, not executable, not a program: trying again cannot help until the program
    # changes (CommandSource._program_changed notices). Anything else (out of processes or
    # file descriptors) may pass.
    if isinstance(e, FileNotFoundError):
        return CommandError(f"{name} failed: not found (is it installed and on the proxy's "
                            "PATH?)", transient=False)
    if isinstance(e, PermissionError):
        return CommandError(f"{name} failed: permission denied (is it executable?)",
                            transient=False)
    if e.errno == errno.ENOEXEC:
        return CommandError(f"{name} failed: not a program the system can run (a script "
                            "needs a #! line)", transient=False)
    return CommandError(f"{name} could not be started ({e.strerror})")


def _locate(program: str) -> tuple[str, int, int] | None:
    """Where the program is, when it last changed and its mode, or None when there is no such
    file. Found even when it is not executable, so that a chmod counts as a change."""
    path = shutil.which(program, mode=os.F_OK)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_mtime_ns, st.st_mode


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
