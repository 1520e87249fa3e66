#!/usr/bin/env bash
# The test command of the README: installs what the tests need on a fresh machine (a venv with
# the project and its test extra; Debian's chromium, curl and node), then runs ruff, mypy
# and the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: chromium (browser tests), curl and node (real clients),
# zsh (its completion script, run in a pseudo-terminal), redis-server (token_cache: the
# tests start their own on a free loopback port; the package's system service is not used).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing Debian's ${missing[*]} for the tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "missing: sudo apt-get install ${missing[*]} (the tests need them)" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff";  .venv/bin/ruff check proxy tests bench
echo "== mypy";  .venv/bin/mypy
echo "== pytest"
# The browser, moto, pycognito and redis tests must run here, never skip quietly.
AUTHPROXY_REQUIRE_BROWSER=1 AUTHPROXY_REQUIRE_MOTO=1 AUTHPROXY_REQUIRE_PYCOGNITO=1 \
  AUTHPROXY_REQUIRE_ZSH=1 AUTHPROXY_REQUIRE_REDIS=1 \
  .venv/bin/pytest "$@"
