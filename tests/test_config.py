"""The config file: every key of the SPEC, interpolation, *_file twins, and errors that name the
key path and line, all reported in one pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import (
    CognitoCredential,
    CommandCredential,
    ConfigError,
    StaticCredential,
    load_config,
    parse_config,
)

SPEC_EXAMPLE = """\
listen:
  host: 127.0.0.1
  port: 8080
  allowed_hosts: [dev.example.test]
  shared_secret: null
credentials:
  api-key:
    type: static
    header: x-api-key
    value: ${API_KEY}
  user:
    type: cognito
    flow: srp
    user_pool_id: us-east-1_AbCdEf123
    client_id: 1example23456789
    client_secret: ${COGNITO_CLIENT_SECRET}
    username: ${COGNITO_USERNAME}
    password: ${COGNITO_PASSWORD}
    token: id
    header: Authorization
    prefix: "Bearer "
    refresh_margin: 300
    endpoint: null
  machine:
    type: cognito
    flow: client_credentials
    domain: https://myapp.auth.us-east-1.amazoncognito.com
    client_id: abc
    client_secret: ${M2M_SECRET}
    scopes: [orders/read]
endpoints:
  - name: sampleCloudApi
    endpoint: https://xyz.execute-api.us-east-1.amazonaws.com/Development
    auth: user
    prefix: /sampleCloudApi
    host: null
    client_header: replace
    set_headers: {}
    remove_headers: []
    timeout: 30
    connect_timeout: 5
    tls_verify: true
  - name: orders
    endpoint: https://abc.execute-api.us-east-1.amazonaws.com/prod/
    auth: api-key
    host: orders.localhost
  - name: public
    endpoint: https://pub.example.com
    auth: none
    client_header: keep
    set_headers: {X-Stage: dev}
    remove_headers: [Cookie]
cors:
  allow_origins: ["http://localhost:*"]
  allow_methods: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS]
  allow_headers: [Content-Type, X-Amz-Date, Authorization, X-Api-Key, X-Amz-Security-Token]
  expose_headers: []
  allow_credentials: false
  max_age: 600
  allow_private_network: true
logging:
  level: info
  format: text
  log_headers: false
admin:
  prefix: /_authproxy
  inspector: true
  history: 200
"""
ENV = {"API_KEY": "k-1", "COGNITO_CLIENT_SECRET": "cs", "COGNITO_USERNAME": "alice",
       "COGNITO_PASSWORD": "pw", "M2M_SECRET": "m2m"}


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml", env or {})
    return info.value.lines()


def test_the_spec_example_loads_with_every_key() -> None:
    c = parse_config(SPEC_EXAMPLE, "t.yaml", ENV)
    key = c.credentials["api-key"]
    assert isinstance(key, StaticCredential) and key.header == "x-api-key"
    assert key.value.reveal() == "k-1"
    user = c.credentials["user"]
    assert isinstance(user, CognitoCredential)
    assert (user.flow, user.region, user.username, user.token) == ("srp", "us-east-1", "alice",
                                                                   "id")
    assert user.password is not None and user.password.reveal() == "pw"
    machine = c.credentials["machine"]
    assert isinstance(machine, CognitoCredential) and machine.token == "access"
    assert machine.scopes == ("orders/read",)
    api, orders, public = c.endpoints
    assert api.prefix == "/sampleCloudApi" and api.auth == "user"
    assert orders.prefix == "/" and orders.host == "orders.localhost"
    assert orders.endpoint.endswith("/prod")
    assert public.prefix == "/public" and public.auth is None
    assert public.client_header == "keep" and public.set_headers == (("X-Stage", "dev"),)
    assert c.listen.allowed_hosts == ("dev.example.test",)
    assert c.cors.allow_origins == ("http://localhost:*",)


def test_defaults_for_a_minimal_file() -> None:
    c = parse_config("endpoints:\n  - {name: api, endpoint: 'https://x.example'}\n", "t", {})
    assert (c.listen.host, c.listen.port) == ("127.0.0.1", 8080)
    ep = c.endpoints[0]
    assert (ep.prefix, ep.auth, ep.timeout, ep.connect_timeout, ep.tls_verify) == (
        "/api", None, 30.0, 5.0, True)
    assert c.admin.prefix == "/_authproxy" and c.logging.format == "text"


def test_env_interpolation_with_defaults_and_types() -> None:
    text = "listen:\n  port: ${PORT:-9001}\n  host: '${HOST:-127.0.0.1}'\n"
    assert parse_config(text, "t", {}).listen.port == 9001
    assert parse_config(text, "t", {"PORT": "7000"}).listen.port == 7000
    lines = problems("credentials:\n  k:\n    type: static\n    value: ${NOPE}\n")
    assert lines == ["t.yaml:4: credentials.k.value: environment variable NOPE is not set "
                     "(set it, or write ${NOPE:-default})"]


def test_file_twins(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    c = parse_config(f"credentials:\n  k: {{type: static, value_file: {secret}}}\n", "t", {})
    k = c.credentials["k"]
    assert isinstance(k, StaticCredential) and k.value.reveal() == "from-file"
    lines = problems(f"credentials:\n  k: {{type: static, value: x, value_file: {secret}}}\n")
    assert "set value or value_file, not both" in lines[0]
    lines = problems("credentials:\n  k: {type: static, value_file: /nonexistent/x}\n")
    assert "cannot read /nonexistent/x" in lines[0]
    secret.write_text("two\nlines\n")
    lines = problems(f"credentials:\n  k: {{type: static, value_file: {secret}}}\n")
    assert "line break" in lines[0] and "two" not in lines[0]


def test_three_mistakes_reported_at_once_with_paths_lines_and_suggestions() -> None:
    text = """\
listen:
  prot: 8080
credentials:
  user: {type: static, value: x}
endpoints:
  - name: api
    endpoint: https://x.example
    auth: usr
    timeout: soon
"""
    lines = problems(text)
    assert lines == [
        "t.yaml:2: listen.prot: unknown key (did you mean 'port'?)",
        "t.yaml:8: endpoints[0].auth: unknown credential 'usr' (did you mean 'user'?)",
        "t.yaml:9: endpoints[0].timeout: must be a number, got a string 'soon'",
    ]


@pytest.mark.parametrize("text, expected", [
    ("endpoints:\n  - {name: a, endpoint: 'ftp://x'}\n", "endpoints[0].endpoint: must be an http"),
    ("endpoints:\n  - {name: a, endpoint: 'https://x', prefix: 'api'}\n",
     "endpoints[0].prefix: must be a path"),
    ("endpoints:\n  - {name: a, endpoint: 'https://x'}\n  - {name: a, endpoint: 'https://y'}\n",
     "same host and prefix"),
    ("endpoints:\n  - {name: a, endpoint: 'https://x', client_header: repalce}\n",
     "(did you mean 'replace'?)"),
    ("endpoints:\n  - {name: a, endpoint: 'https://x', tls_verify: /no/ca.pem}\n",
     "CA bundle '/no/ca.pem' is not a readable file"),
    ("endpoints:\n  - {endpoint: 'https://x'}\n", "endpoints[0].name: is required"),
    ("credentials:\n  u: {type: cognito, flow: password, client_id: c}\n",
     "credentials.u.user_pool_id: is required"),
    ("credentials:\n  u: {type: cognito, flow: srpp, client_id: c}\n",
     "(did you mean 'srp'?)"),
    ("credentials:\n  m: {type: cognito, flow: client_credentials, client_id: c,"
     " domain: 'https://d', token: id, client_secret: s}\n", "must be access"),
    ("credentials:\n  k: {type: statik}\n", "(did you mean 'static'?)"),
    ("cors:\n  allow_origins: ['*']\n  allow_credentials: true\n", "'*' cannot be used"),
    ("cors:\n  allow_origins: ['http://x.example/path']\n", "cors.allow_origins[0]: must be an"),
    ("cors:\n  allow_origins: ['https://*example.com']\n", "must be a whole host label"),
    ("credentials:\n  k: {type: static, value: \"a\\r\\nX-Injected: 1\"}\n",
     "credentials.k.value: holds a line break"),
    ("endpoints:\n  - {name: a, endpoint: 'https://x', set_headers: {X-A: \"1\\n2\"}}\n",
     "without line breaks"),
    ("credentials:\n  u: {type: cognito, flow: password, client_id: c, user_pool_id: us-east-1_A,"
     " username: u, prefix: \"Bearer\\n\"}\n", "credentials.u.prefix: holds a line break"),
    ("logging: {format: xml}\n", "logging.format: must be one of text, json"),
    ("admin: {prefix: /}\n", "admin.prefix"),
    ("endpoints:\n  - {name: a, endpoint: 'https://x', prefix: /_authproxy/x}\n",
     "is inside admin.prefix"),
    ("listen: [1, 2]\n", "listen: must be a mapping"),
    ("endpoints: {a: 1}\n", "endpoints: must be a list, got a mapping"),
    ("listen:\n  port: 1\n  port: 2\n", "listen.port: duplicate key"),
    ("listen: {port: 70000}\n", "listen.port: must be 0-65535"),
    ("endpoints:\n  - name: a\n    endpoint: 'https://x'\n    set_headers: {'bad header': x}\n",
     "set_headers.bad header: must map a header name"),

    ("credentials:\n  k: {type: iam, source: keys, access_key_id: AKID, secret_access_key: s,"
     " region: us-east-1}\nendpoints:\n  - {name: a, endpoint: 'https://x', auth: k,"
     " set_headers: {X-Amz-Date: '20200101T000000Z'}}\n",
     "endpoints[0].set_headers.X-Amz-Date: X-Amz-Date is part of the SigV4 signature"),
])
def test_each_mistake_is_named(text: str, expected: str) -> None:
    assert any(expected in line for line in problems(text)), problems(text)


def test_ipv6_and_wildcard_origins_accepted() -> None:
    text = "cors:\n  allow_origins: ['http://[::1]:3000', 'https://*.example.com', 'null']\n"
    assert len(parse_config(text, "t", {}).cors.allow_origins) == 3


SSO_EXAMPLE = """\
credentials:
  sso-user:
    type: cognito
    flow: authorization_code
    domain: https://myapp.auth.us-east-1.amazoncognito.com
    client_id: 1example23456789
    client_secret: null
    scopes: [openid, email, profile]
    redirect_port: 8976
    identity_provider: null
    token: id
"""


def test_authorization_code_loads_with_the_spec_keys_and_defaults() -> None:
    sso = parse_config(SSO_EXAMPLE, "t.yaml", {}).credentials["sso-user"]
    assert isinstance(sso, CognitoCredential)
    assert (sso.flow, sso.domain, sso.client_id, sso.client_secret, sso.scopes,
            sso.redirect_port, sso.identity_provider, sso.token) == (
        "authorization_code", "https://myapp.auth.us-east-1.amazoncognito.com",
        "1example23456789", None, ("openid", "email", "profile"), 8976, None, "id")
    minimal = parse_config("credentials:\n  s: {type: cognito, flow: authorization_code, "
                           "domain: 'https://auth.example.com/', client_id: c, "
                           "client_secret: s3cr3t-v4lue, identity_provider: Google, "
                           "token: access}\n",
                           "t.yaml", {}).credentials["s"]
    assert isinstance(minimal, CognitoCredential)
    assert minimal.domain == "https://auth.example.com" and minimal.redirect_port == 8976
    assert minimal.scopes == ("openid", "email", "profile") and minimal.token == "access"
    assert minimal.identity_provider == "Google" and minimal.client_secret is not None
    assert "s3cr3t-v4lue" not in repr(minimal)


@pytest.mark.parametrize("keys, expected", [
    ("client_id: c", "t.yaml:2: credentials.s.domain: is required for flow authorization_code"),
    ("domain: 'https://d.example'", "credentials.s.client_id: is required"),
    ("domain: 'https://d.example/oauth2', client_id: c",
     "credentials.s.domain: must be the managed login domain's base URL"),
    ("domain: 'https://d.example?x=1', client_id: c", "credentials.s.domain: must be the"),
    ("domain: 'http://d.example', client_id: c", "must be https:// (plain http only on"),
    ("domain: d.example, client_id: c", "credentials.s.domain: must be the"),
    ("domain: 'https://d.example', client_id: c, scopes: [email]", "must include openid"),
    ("domain: 'https://d.example', client_id: c, scopes: [openid, 'a b']",
     "credentials.s.scopes[1]: is not a valid OAuth scope"),
    ("domain: 'https://d.example', client_id: c, redirect_port: 0", "must be 1-65535"),
    ("domain: 'https://d.example', client_id: c, redirect_port: '80'", "must be an integer"),
    ("domain: 'https://d.example', client_id: c, token: refresh", "must be one of id, access"),
    ("domain: 'https://d.example', client_id: c, identity_provider: 'Goo gle'",
     "credentials.s.identity_provider: must be an identity provider name"),
    ("domain: 'https://d.example', client_id: c, username: alice",
     "credentials.s.username: is not used by flow authorization_code"),
    ("domain: 'https://d.example', client_id: c, user_pool_id: us-east-1_A",
     "credentials.s.user_pool_id: is not used by flow authorization_code"),
    ("domain: 'https://d.example', client_id: c, redirect_prot: 1",
     "(did you mean 'redirect_port'?)"),
])
def test_authorization_code_mistakes_are_named(keys: str, expected: str) -> None:
    text = f"credentials:\n  s: {{type: cognito, flow: authorization_code, {keys}}}\n"
    assert any(expected in line for line in problems(text)), problems(text)


def test_managed_login_keys_belong_to_authorization_code() -> None:
    found = problems("credentials:\n  u: {type: cognito, flow: srp, client_id: c, "
                     "user_pool_id: us-east-1_A, username: u, password: p,\n"
                     "      redirect_port: 9000, identity_provider: Google}\n")
    assert found == ["t.yaml:3: credentials.u.identity_provider: is for flow "
                     "authorization_code only",
                     "t.yaml:3: credentials.u.redirect_port: is for flow authorization_code only"]


def test_yaml_syntax_error_has_a_line() -> None:
    lines = problems("listen:\n  port: [8080\n")
    assert lines[0].startswith("t.yaml:") and "not valid YAML" in lines[0]


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "none.yaml")
    assert "AUTHPROXY_CONFIG" in str(info.value)


def test_secrets_never_in_config_repr() -> None:
    c = parse_config(SPEC_EXAMPLE, "t.yaml", ENV | {"API_KEY": "very-secret-api-key"})
    assert "very-secret-api-key" not in repr(c) and "very-secret-api-key" not in str(c)


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).parent.parent / "config"
    for name in ("proxy.yaml", "demo.yaml"):
        load_config(root / name, {"API_KEY": "k", "COGNITO_USERNAME": "u",
                                  "COGNITO_PASSWORD": "p", "COGNITO_CLIENT_SECRET": "s",
                                  "M2M_SECRET": "m"})


def test_yaml_value_tag_is_a_config_error_not_a_crash() -> None:
    # Found by the fuzz test: a bare `=` is YAML's !!value tag, which SafeLoader cannot build.
    with pytest.raises(ConfigError) as e:
        parse_config("=", "fuzz.yaml", {})
    assert "not valid YAML" in e.value.problems[0].message


COMMAND = """\
credentials:
  vault:
    type: command
    command: [vault, read, -field=token, secret/api]
endpoints:
  - {name: api, endpoint: "https://x.example.com", auth: vault}
"""


def test_command_credential_defaults() -> None:
    cred = parse_config(COMMAND, "t.yaml", {}).credentials["vault"]
    assert cred == CommandCredential(name="vault",
                                     command=("vault", "read", "-field=token", "secret/api"))
    assert (cred.header, cred.prefix, cred.format) == ("Authorization", "", "text")
    assert (cred.ttl, cred.refresh_margin, cred.timeout) == (300.0, 30.0, 10.0)


def test_command_credential_every_key() -> None:
    text = COMMAND.replace("    command: [vault", """\
    header: X-Token
    prefix: "Bearer "
    format: json
    ttl: 60
    refresh_margin: 5
    timeout: 2.5
    command: [vault""").replace("secret/api]", "secret/api, 8200]")
    cred = parse_config(text, "t.yaml", {}).credentials["vault"]
    assert isinstance(cred, CommandCredential)
    assert cred.command[-1] == "8200"  # a YAML number is an argument like any other
    assert (cred.header, cred.prefix, cred.format) == ("X-Token", "Bearer ", "json")
    assert (cred.ttl, cred.refresh_margin, cred.timeout) == (60.0, 5.0, 2.5)


def test_command_arguments_never_in_config_repr() -> None:
    text = COMMAND.replace("secret/api]", "\"--password=${PW}\"]")
    c = parse_config(text, "t.yaml", {"PW": "arg-secret-0123456789"})
    assert "arg-secret-0123456789" not in repr(c)


def test_a_command_written_as_a_string_says_to_write_a_list() -> None:
    text = COMMAND.replace("[vault, read, -field=token, secret/api]",
                           '"vault read -field=token ${TOKEN_PATH}"')
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml", {"TOKEN_PATH": "secret/from-env"})
    (problem,) = e.value.problems
    assert (problem.path, problem.line) == ("credentials.vault.command", 4)
    assert "list" in problem.message and "without a shell" in problem.message
    assert "secret/from-env" not in str(e.value)  # the value is not quoted back


@pytest.mark.parametrize(("value", "path", "expected"), [
    ("[]", "credentials.vault.command", "non-empty list"),
    ("{a: b}", "credentials.vault.command", "must be a list of strings, got a mapping"),
    ("[vault, [read]]", "credentials.vault.command[1]", "must be a string, got a list"),
    ("[vault, null]", "credentials.vault.command[1]", "must be a string, got null"),
    ('["", read]', "credentials.vault.command[0]", "must name the program"),
    ('[vault, "a\\0b"]', "credentials.vault.command[1]", "NUL"),
])
def test_command_argv_mistakes(value: str, path: str, expected: str) -> None:
    text = COMMAND.replace("[vault, read, -field=token, secret/api]", value)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml", {})
    (problem,) = e.value.problems
    assert problem.path == path and problem.line == 4 and expected in problem.message


def test_command_mistakes_are_all_reported_with_key_and_line() -> None:
    text = """\
credentials:
  vault:
    type: command
    format: yaml
    ttl: 0
    refresh_margin: -1
    timeout: -2
    header: "Bad Header"
    prefix: "a\\nb"
    timeoutt: 3
  other:
    type: comand
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml", {})
    found = {(p.path, p.line): p.message for p in e.value.problems}
    assert "one of text, json" in found[("credentials.vault.format", 4)]
    assert "greater than 0" in found[("credentials.vault.ttl", 5)]
    assert "0 or more" in found[("credentials.vault.refresh_margin", 6)]
    assert "greater than 0" in found[("credentials.vault.timeout", 7)]
    assert "not a valid header name" in found[("credentials.vault.header", 8)]
    assert "line break" in found[("credentials.vault.prefix", 9)]
    assert "did you mean 'timeout'" in found[("credentials.vault.timeoutt", 10)]
    assert "is required" in found[("credentials.vault.command", 2)]
    assert "did you mean 'command'" in found[("credentials.other.type", 12)]


# --- token_cache ----------------------------------------------------------------------------

TOKEN_CACHE_SPEC = """\
token_cache:
  url: redis://cache.internal:6379/0
  key_prefix: "authproxy:"
  encryption_key: ${CACHE_KEY}
  timeout: 0.5
  tls_verify: true
"""


def test_token_cache_as_in_the_spec_and_off_by_default() -> None:
    c = parse_config(TOKEN_CACHE_SPEC, "t.yaml", {"CACHE_KEY": "k" * 32})
    tc = c.token_cache
    assert tc.url is not None and tc.url.reveal() == "redis://cache.internal:6379/0"
    assert tc.encryption_key is not None and tc.encryption_key.reveal() == "k" * 32
    assert (tc.key_prefix, tc.timeout, tc.tls_verify) == ("authproxy:", 0.5, True)
    off = parse_config("endpoints: []\n", "t.yaml", {}).token_cache
    assert off.url is None and not off.enabled


def test_token_cache_from_files_and_on_loopback_without_a_key(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("rediss://authproxy:s3cret@cache.internal:6380/2\n")
    (tmp_path / "key").write_text("x" * 44 + "\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    c = parse_config(f"token_cache:\n  url_file: {tmp_path / 'url'}\n"
                     f"  encryption_key_file: {tmp_path / 'key'}\n  tls_verify: {ca}\n",
                     "t.yaml", {})
    assert c.token_cache.url is not None and "s3cret" in c.token_cache.url.reveal()
    assert "s3cret" not in repr(c)
    for url in ("redis://127.0.0.1:6379", "redis://localhost/1", "redis://[::1]:6379/0"):
        assert parse_config(f"token_cache: {{url: '{url}'}}\n", "t.yaml", {}).token_cache.url


@pytest.mark.parametrize("text, expected", [
    ("token_cache: {url: 'redis://cache.internal:6379/0'}\n",
     "t.yaml:1: token_cache.encryption_key: is required when Redis is not on loopback"),
    ("token_cache: {url: 'redis://10.0.0.5', encryption_key: short}\n",
     "token_cache.encryption_key: is too short (5 characters, at least 16)"),
    ("token_cache:\n  url: 'http://127.0.0.1:6379'\n", "t.yaml:2: token_cache.url: must look like"),
    ("token_cache:\n  url: 'redis://127.0.0.1:6379/0?ssl=1'\n", "token_cache.url: must look like"),
    ("token_cache:\n  url: 'redis://127.0.0.1:99999'\n", "token_cache.url: port must be 1-65535"),
    ("token_cache:\n  url: 'redis://127.0.0.1'\n  timeout: 0\n",
     "t.yaml:3: token_cache.timeout: must be greater than 0"),
    ("token_cache:\n  url: 'redis://127.0.0.1'\n  tls_verify: /no/ca.pem\n",
     "token_cache.tls_verify: a CA bundle is for rediss:// URLs only"),
    ("token_cache:\n  url: 'rediss://127.0.0.1'\n  tls_verify: /no/ca.pem\n",
     "token_cache.tls_verify: CA bundle '/no/ca.pem' is not a readable file"),
    ("token_cache:\n  url: 'redis://127.0.0.1'\n  encryption_kye: x\n",
     "t.yaml:3: token_cache.encryption_kye: unknown key (did you mean 'encryption_key'?)"),
    ("token_cache:\n  encryption_key: abcdefghijklmnopqrstuvwxyz\n",
     "t.yaml:2: token_cache.encryption_key: has no effect without token_cache.url"),
    ("token_cache: {url: 'redis://127.0.0.1', key_prefix: 'a b'}\n",
     "token_cache.key_prefix: must not hold spaces"),
])
def test_token_cache_mistakes_are_named(text: str, expected: str) -> None:
    assert any(expected in line for line in problems(text)), problems(text)


def test_a_token_cache_url_is_never_quoted_in_an_error() -> None:
    lines = problems("token_cache: {url: 'redis://:hunter2-password@cache.internal:6379/0?x=1'}\n")
    assert lines and all("hunter2" not in line for line in lines)


def test_token_cache_without_redis_py_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "redis" else real(name, *a))
    lines = problems("token_cache: {url: 'redis://127.0.0.1:6379/0'}\n")
    assert any("pip install 'authproxy[redis]'" in line for line in lines), lines


# --- WebSocket endpoint keys -------------------------------------------------------------------

def test_websocket_keys_and_ws_schemes() -> None:
    cfg = parse_config("""
credentials:
  tok: {type: static, value: abc}
endpoints:
  - {name: a, endpoint: "wss://x.execute-api.us-east-1.amazonaws.com/prod", auth: tok,
     idle_timeout: 30, token_query: token}
  - {name: b, endpoint: "WS://127.0.0.1:9000/dev"}
  - {name: c, endpoint: "https://h/prod"}
""")
    a, b, c = cfg.endpoints
    assert (a.endpoint, a.idle_timeout, a.token_query) == (
        "https://x.execute-api.us-east-1.amazonaws.com/prod", 30.0, "token")
    assert b.endpoint == "http://127.0.0.1:9000/dev"
    assert (c.idle_timeout, c.token_query) == (600.0, None)


def test_websocket_key_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config("""
credentials:
  keys: {type: iam, source: keys, access_key_id: AKID, secret_access_key: s, region: us-east-1}
endpoints:
  - {name: a, endpoint: "wss://h/prod", auth: keys, token_query: token}
  - {name: b, endpoint: "ftp://h/prod", idle_timeout: 0}
  - {name: c, endpoint: "ws://h/prod", token_query: "a b"}
  - {name: d, endpoint: "ws://h/prod", token_query: token}
""")
    text = str(e.value)
    assert "endpoints[0].token_query: needs a credential whose value can go in the query: an " \
           "iam credential presigns the handshake URL itself" in text
    assert "endpoints[1].endpoint: must be an http(s) URL (or ws/wss) without query" in text
    assert "endpoints[1].idle_timeout" in text
    assert "endpoints[2].token_query: must be a query parameter name" in text
    assert "endpoints[3].token_query" in text and "auth: none" in text
