"""A real `redis-server` (Debian's) for the token_cache tests, started by the tests on a free
loopback port, with its faults made for real: stopped (SIGSTOP), killed, restarted empty, a
password required. Import `redis_fixture` to get the `redis_server` fixture.

Without redis-server on PATH the tests skip, unless AUTHPROXY_REQUIRE_REDIS=1 (scripts/test.sh
sets it, and CI runs that), when they fail: the shared cache must be tested against the
independent implementation, never quietly not at all.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found:
        return found
    if os.environ.get("AUTHPROXY_REQUIRE_REDIS"):
        pytest.fail("redis-server is not installed (apt-get install redis-server); "
                    "AUTHPROXY_REQUIRE_REDIS=1 says these tests must run")
    pytest.skip("redis-server is not installed (apt-get install redis-server)")


class RedisServer:
    """One redis-server process; `restart()` brings it back on the same port, empty (no
    persistence), as a Redis that crashed or failed over to a blank replica."""

    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        self.binary = redis_binary()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca_file: Path | None = None
        if tls:  # a CA of the test's own and a certificate for 127.0.0.1 (trustme)
            import trustme
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1")
            self.ca_file = self.dir / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))
            cert.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))

    @property
    def url(self) -> str:
        return f"{'rediss' if self.ca_file else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning",
                "--protected-mode", "yes"]
        if self.ca_file:
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.dir / "cert.pem"),
                     "--tls-key-file", str(self.dir / "key.pem"),
                     "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise AssertionError(f"redis-server did not start on {self.port}")

    def client(self) -> redis.Redis:
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca_file)} \
            if self.ca_file else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=2, **tls)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel does), nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def require_password(self, password: str | None) -> None:
        """Change requirepass on the running server (existing connections stay signed in,
        new ones must AUTH): an operator turning authentication on."""
        with self.client() as c:
            c.config_set("requirepass", password or "")
        self.password = password

    def dump(self) -> dict[bytes, bytes]:
        """Every key and its value as Redis holds them."""
        out: dict[bytes, bytes] = {}
        with self.client() as c:
            for key in c.scan_iter(count=1000):
                value = c.get(key)
                assert isinstance(value, bytes)
                out[key] = value
        return out


@pytest.fixture(name="redis_server")
def redis_fixture(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None:
        server.resume()  # a stopped process does not act on SIGTERM
        server.stop()
