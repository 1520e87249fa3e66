# authproxy container image.
#
#   docker build -t authproxy .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -v "$PWD/config/proxy.yaml:/etc/authproxy/proxy.yaml:ro" \
#     -e API_KEY authproxy
#
# Configuration: mount your config file at /etc/authproxy/proxy.yaml (or point AUTHPROXY_CONFIG
# elsewhere); pass secrets as environment variables referenced by ${VAR} in the file, or as files
# referenced by `*_file:` keys (e.g. /run/secrets/api_key). Nothing secret is baked into the image.
# AUTHPROXY_HOST, AUTHPROXY_PORT, AUTHPROXY_LOG_LEVEL and AUTHPROXY_LOG_FORMAT override the file.
#
# Listen address: the image listens on 0.0.0.0 so that `-p` port publishing works. A proxy that
# injects credentials and is reachable from other hosts must be protected: set listen.shared_secret
# in your config (clients then send X-Authproxy-Secret) -- authproxy logs a loud warning otherwise.
# As a sidecar that shares the app's network namespace (docker-compose.yml, Kubernetes pod), set
# AUTHPROXY_HOST=127.0.0.1 instead: only the app can reach it then.
#
# The config shipped in the image is a placeholder with no credentials and no endpoints: the
# container starts, answers /_authproxy/healthz and readyz, and every other path is 404 no_route,
# so an unconfigured container exposes nothing worth protecting.
#
# BASE_IMAGE: any Debian-like image with python3 >= 3.11 and its venv module; the default is the
# official slim Python image. scripts/container-check.sh builds FROM a locally made bookworm base.
ARG BASE_IMAGE=python:3.12-slim

# ---- build: a venv with authproxy and its dependencies (wheels only: no compiler needed) ----
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/authproxy
WORKDIR /src
# Dependencies (and the build backend) first, from pyproject.toml alone, so that a code change
# reuses this layer.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); p = d['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['speed'] + p['optional-dependencies']['redis'] + d['build-system']['requires']))" \
    > /tmp/requirements.txt \
 && /opt/authproxy/bin/pip install --only-binary=:all: -r /tmp/requirements.txt
COPY . .
# The project itself (its [speed] and [redis] extras, uvloop and redis-py for token_cache, came as
# wheels above); then drop the build tools.
RUN /opt/authproxy/bin/pip install --no-build-isolation --no-deps . \
 && /opt/authproxy/bin/pip check \
 && /opt/authproxy/bin/pip uninstall -y -q setuptools wheel pip

# ---- runtime ----
FROM ${BASE_IMAGE}
ARG APP_UID=10001
# A numeric, non-root user (Kubernetes runAsNonRoot needs the number) with a home for the token
# cache of `authproxy login` ($XDG_CACHE_HOME/authproxy, default ~/.cache/authproxy).
RUN groupadd --system --gid "${APP_UID}" authproxy \
 && useradd --system --no-log-init --uid "${APP_UID}" --gid "${APP_UID}" \
      --home-dir /home/authproxy --create-home --shell /usr/sbin/nologin authproxy \
 && mkdir -p /etc/authproxy \
 && printf '%s\n' \
  '# Placeholder config of the authproxy image: no credentials, no endpoints.' \
  '# Mount your own file here (or set AUTHPROXY_CONFIG); the README lists the keys.' \
  'listen:' \
  '  port: 8080' \
  'endpoints: []' \
  > /etc/authproxy/proxy.yaml
COPY --from=build /opt/authproxy /opt/authproxy
ENV PATH=/opt/authproxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTHPROXY_CONFIG=/etc/authproxy/proxy.yaml \
    AUTHPROXY_HOST=0.0.0.0 \
    AUTHPROXY_PORT=8080 \
    AUTHPROXY_LOG_FORMAT=json
USER ${APP_UID}:${APP_UID}
WORKDIR /home/authproxy
EXPOSE 8080
# SIGTERM: stop accepting, let in-flight requests finish (listen.drain_timeout, 10 s), exit 0.
# Give the container a stop timeout longer than the drain timeout.
STOPSIGNAL SIGTERM
# python3 rather than curl (slim images have none); http.client ignores HTTP(S)_PROXY variables.
# Healthy = the proxy itself answers /_authproxy/healthz: 200, or 401 secret_required when
# listen.shared_secret is set (the secret guards the admin paths too, and this check does not
# know it). Assumes the default admin.prefix. Shell form (CMD-SHELL) on purpose: podman's
# Docker-compatible API splits an exec-form health check on spaces.
# hadolint ignore=DL3025
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD python3 -c "import http.client as h, os, sys; c = h.HTTPConnection('127.0.0.1', int(os.environ.get('AUTHPROXY_PORT') or 8080), timeout=4); c.request('GET', '/_authproxy/healthz'); r = c.getresponse(); sys.exit(not (r.status == 200 or r.getheader('X-Authproxy-Error') == 'secret_required'))"
ENTRYPOINT ["authproxy"]
CMD ["serve"]
