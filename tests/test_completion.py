"""proxy/commands/completion.py: the scripts `authproxy completion bash|zsh` print, run by the
real shells as a user's shell runs them: bash through its completion variables, zsh
interactively in a pseudo-terminal with compinit, a Tab typed and the line read back."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

AUTHPROXY = str(Path(sys.executable).parent / "authproxy")
CONFIG = """\
credentials:
  user-pool: {type: cognito, flow: password, client_id: c, user_pool_id: us-east-1_Abc,
              username: u, password: "${UNSET_PASSWORD_FOR_COMPLETION}"}
  api-key: {type: static, value: "${UNSET_KEY_FOR_COMPLETION}"}
endpoints:
  - {name: orders, endpoint: "https://abc.execute-api.us-east-1.amazonaws.com/dev", auth: api-key}
  - {name: shop, endpoint: "https://def.execute-api.us-east-1.amazonaws.com/dev", prefix: /v2/shop}
"""


def _env(tmp_path: Path) -> dict[str, str]:
    # The scripts call `authproxy` itself: the one of this venv comes first on PATH.
    env = {k: v for k, v in os.environ.items() if k != "AUTHPROXY_CONFIG"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(tmp_path)
    return env


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG)
    return path


def test_names_come_from_the_yaml_without_its_variables_set(config: Path) -> None:
    def listed(what: str) -> list[str]:
        out = subprocess.run([AUTHPROXY, "completion", "--list", what, "-c", str(config)],
                             capture_output=True, text=True, check=True, env=_env(config.parent))
        return out.stdout.split()
    assert listed("credentials") == ["user-pool", "api-key"]
    assert listed("endpoints") == ["orders", "shop"]
    assert listed("paths") == ["/orders/", "/v2/shop/"]
    broken = config.parent / "broken.yaml"
    broken.write_text("credentials: [unclosed\n")
    out = subprocess.run([AUTHPROXY, "completion", "--list", "credentials", "-c", str(broken)],
                         capture_output=True, text=True, env=_env(config.parent))
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr == ""


def _bash_complete(line: str, tmp_path: Path) -> list[str]:
    """What bash offers for a Tab at the end of `line`, the script loaded as ~/.bashrc would."""
    script = subprocess.run([AUTHPROXY, "completion", "bash"], capture_output=True, text=True,
                            check=True).stdout
    (tmp_path / "authproxy.bash").write_text(script)
    driver = (f'source {tmp_path / "authproxy.bash"}\n'
              'read -ra COMP_WORDS <<< "$LINE"\n'
              '[[ $LINE == *" " ]] && COMP_WORDS+=("")\n'
              'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
              '_authproxy\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "--norc", "-c", driver], capture_output=True, text=True,
                         check=True, env=_env(tmp_path) | {"LINE": line})
    return [w for w in out.stdout.splitlines() if w]


def test_bash_completes_commands_flags_choices_and_names(config: Path) -> None:
    tmp = config.parent
    assert _bash_complete("authproxy ", tmp) == ["serve", "check", "explain", "token", "login",
                                                 "decode", "demo", "completion", "schema"]
    assert _bash_complete("authproxy to", tmp) == ["token"]
    assert _bash_complete("authproxy serve --log-l", tmp) == ["--log-level"]
    assert _bash_complete("authproxy serve --log-level w", tmp) == ["warning"]
    assert _bash_complete("authproxy token --format ", tmp) == ["env", "credential-process"]
    assert _bash_complete("authproxy check --format ", tmp) == ["text", "json"]
    assert _bash_complete(f"authproxy token -c {config} ", tmp) == ["user-pool", "api-key"]
    assert _bash_complete(f"authproxy login -c {config} us", tmp) == ["user-pool"]
    assert _bash_complete(f"authproxy explain -c {config} -X POST /v", tmp) == ["/v2/shop/"]
    assert _bash_complete("authproxy completion ", tmp) == ["bash", "zsh"]
    # A value after a flag that takes one is not taken for the command.
    assert _bash_complete("authproxy serve --port 9000 --h", tmp) == ["--help", "--host"]


def _zsh_complete(typed: str, tmp_path: Path, timeout: float = 15.0) -> str:
    """Type `typed` and a Tab into an interactive zsh with the script on $fpath and compinit
    run, and return the screen text that follows."""
    functions = tmp_path / "zfunc"
    functions.mkdir(exist_ok=True)
    script = subprocess.run([AUTHPROXY, "completion", "zsh"], capture_output=True, text=True,
                            check=True).stdout
    (functions / "_authproxy").write_text(script)
    (tmp_path / ".zshrc").write_text(
        f"fpath=({functions} $fpath)\nautoload -Uz compinit\ncompinit -u -d {tmp_path}/zcd\n"
        "PROMPT='READY> '\nunsetopt BEEP\n")
    env = _env(tmp_path) | {"ZDOTDIR": str(tmp_path), "TERM": "dumb"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive zsh on the pty, in the config's directory
        os.chdir(tmp_path)
        os.execve(shutil.which("zsh") or "/usr/bin/zsh", ["zsh", "-i"], env)
    try:
        screen = _read_until(fd, b"READY> ", timeout)
        os.write(fd, typed.encode() + b"\t")
        time.sleep(0.3)
        screen = _read_until(fd, None, 3.0)
        return screen.decode(errors="replace")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)


def _read_until(fd: int, marker: bytes | None, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
            if marker is not None and marker in got:
                return got
        elif marker is None and got:
            break
    if marker is not None:
        raise AssertionError(f"zsh never showed {marker!r}; it showed {got!r}")
    return got


needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None and not os.environ.get(
    "AUTHPROXY_REQUIRE_ZSH"), reason="zsh not installed (apt-get install zsh)")


@needs_zsh
def test_zsh_completes_a_command_a_choice_and_a_credential_name(config: Path) -> None:
    tmp = config.parent
    assert "token " in _zsh_complete("authproxy tok", tmp)
    assert "--log-level " in _zsh_complete("authproxy serve --log-l", tmp)
    assert "warning " in _zsh_complete("authproxy serve --log-level wa", tmp)
    assert "user-pool " in _zsh_complete(f"authproxy token -c {config.name} us", tmp)
    assert "/v2/shop/" in _zsh_complete(f"authproxy explain -c {config.name} /v", tmp)
