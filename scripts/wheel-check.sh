#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it (not editable) into a fresh
# venv, and from a directory with no checkout run what a newcomer runs first: `authproxy demo
# --once`, `authproxy check` of a config of their own, the inspector page of a running demo.
# Exits non-zero with a "wheel-check: FAIL: ..." line on any failure.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d /tmp/authproxy-wheel.XXXXXX)
PY=${PYTHON:-python3}
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ]; then kill "$demo_pid" 2>/dev/null || true; wait "$demo_pid" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "wheel-check: FAIL: $*" >&2; exit 1; }
trap 'fail "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
step() { echo "wheel-check: $*"; }

step "building the wheel"
"$PY" -m venv "$W/build-env"
"$W/build-env/bin/pip" install -q build
# From a copy of the tracked files: what is not committed does not ship by accident.
git -C "$ROOT" archive HEAD | tar -x -C "$W" --one-top-level=src
"$W/build-env/bin/python" -m build -q --wheel --outdir "$W/dist" "$W/src" >/dev/null
wheel=$(ls "$W"/dist/authproxy-*.whl)
step "built $(basename "$wheel")"

step "installing it into a fresh venv"
"$PY" -m venv "$W/venv"
"$W/venv/bin/pip" install -q "$wheel"
AP="$W/venv/bin/authproxy"
mkdir "$W/elsewhere"
cd "$W/elsewhere"  # no checkout here: only the installed package can answer
[ ! -e proxy ] || fail "the work dir holds a proxy/ package"
"$W/venv/bin/python" - <<'PY' || fail "the proxy package is imported from outside the venv"
import pathlib, sys, proxy
where = pathlib.Path(proxy.__file__).resolve()
sys.exit(0 if pathlib.Path(sys.prefix).resolve() in where.parents else 1)
PY

step "pipx install of the wheel (the README's first way to install)"
"$W/build-env/bin/pip" install -q pipx
PIPX_HOME="$W/pipx" PIPX_BIN_DIR="$W/pipx-bin" PIPX_MAN_DIR="$W/pipx-man" \
  "$W/build-env/bin/pipx" install -q "$wheel" >/dev/null
"$W/pipx-bin/authproxy" --version | grep -q "^authproxy " || fail "pipx's authproxy does not run"

step "authproxy demo --once"
out=$("$AP" demo --once --port 0 2>&1) || { echo "$out" >&2; fail "authproxy demo --once"; }
grep -q -- "-> 200;" <<<"$out" || { echo "$out" >&2; fail "the demo showed no 200"; }

step "authproxy check of a config of one's own"
cat > proxy.yaml <<'YAML'
credentials:
  api-key: {type: static, header: x-api-key, value: wheel-check-key-1}
endpoints:
  - {name: api, endpoint: "https://abc123.execute-api.us-east-1.amazonaws.com/dev", auth: api-key}
YAML
"$AP" check -c proxy.yaml >/dev/null || fail "authproxy check"
if "$AP" check -c /dev/null/nope.yaml >/dev/null 2>&1; then fail "check of a missing file passed"; fi

step "authproxy schema"
"$AP" schema > schema.json || fail "authproxy schema"
"$W/venv/bin/python" -c 'import json, sys; d = json.load(open("schema.json")); sys.exit(0 if d["$schema"].endswith("2020-12/schema") and "credentials" in d["properties"] else 1)' \
  || fail "authproxy schema printed no config schema"

step "the inspector page of a running demo"
port=$("$W/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$AP" demo --port "$port" >"$W/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/_authproxy/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
page=$(curl -fs "http://127.0.0.1:$port/_authproxy/") || { cat "$W/demo.log" >&2; fail "no inspector page"; }
grep -qi "<html" <<<"$page" || fail "the inspector page is not HTML"
assets=$(grep -o '"static/[^"]*"' <<<"$page" | tr -d '"' || true)
[ -n "$assets" ] || fail "the inspector page names no static assets"
for asset in $assets; do
  curl -fs "http://127.0.0.1:$port/_authproxy/$asset" >/dev/null \
    || fail "inspector asset $asset is not served (package data missing from the wheel?)"
done
step "PASS"
