"""The config's JSON Schema (proxy/schema.py): the committed and shipped copies are what the
generator makes, every shipped example passes it and names it in its first line, and the
schema and `load_config` agree on a corpus of good and bad files."""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import AUTHPROXY

from proxy import schema
from proxy.commands.schema import REGENERATE, copies
from proxy.config import ConfigError, parse_config
from proxy.config import reader as c  # the loader's key tables
from proxy.config import types as t

ROOT = Path(__file__).resolve().parent.parent
MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)$")
KUBERNETES = ROOT / "config" / "kubernetes" / "authproxy.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema.build())


# --- the committed copies cannot drift from the types ----------------------------------------

def stale_copies(paths: list[Path]) -> list[str]:
    """Each copy that is not what the generator makes now, with the first lines of the
    difference."""
    want = schema.render()
    out = []
    for path in paths:
        have = path.read_text(encoding="utf-8") if path.exists() else ""
        if have != want:
            diff = difflib.unified_diff(have.splitlines(), want.splitlines(), str(path),
                                        "generated", lineterm="", n=1)
            out.append("\n".join(list(diff)[:30]))
    return out


def test_committed_schema_is_what_the_generator_makes() -> None:
    stale = stale_copies(copies())
    assert not stale, (f"the config schema is out of date; run `{REGENERATE}` and commit both "
                       "files\n" + "\n".join(stale))


def test_a_key_the_loader_drops_makes_the_committed_schema_stale(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # What the test above sees when the config types change and the schema is not regenerated.
    committed = [tmp_path / "proxy.json", tmp_path / "config.json"]
    for path in committed:
        path.write_text(schema.render())
    assert stale_copies(committed) == []
    monkeypatch.setattr(c, "_LOGGING_KEYS", ("level", "format"))
    stale = stale_copies(committed)
    assert len(stale) == 2 and all('-        "log_headers": {' in d for d in stale)


def test_a_loader_key_without_a_field_or_a_field_without_a_comment_stops_the_generator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c, "_ENDPOINT_KEYS", (*c._ENDPOINT_KEYS, "no_such_key"))
    with pytest.raises(schema.SchemaError, match="Endpoint has no field for the loader's key "
                                                 "'no_such_key'"):
        schema.build()
    monkeypatch.undo()
    real = schema.field_comments
    monkeypatch.setattr(schema, "field_comments", lambda cls: {
        k: v for k, v in real(cls).items() if (cls, k) != (t.Admin, "history")})
    with pytest.raises(schema.SchemaError, match="Admin.history has no one-line comment"):
        schema.build()


def test_descriptions_are_the_fields_comments() -> None:
    s = schema.build()["$defs"]
    assert s["listen"]["properties"]["keepalive_timeout"]["description"] == (
        "seconds an idle keep-alive client connection is kept")
    # A comment wrapped onto the next line, and a comment standing above its field.
    assert s["cognito_credential"]["properties"]["scopes"]["description"].endswith(
        "authorization_code: default openid, email, profile")
    assert s["command_credential"]["properties"]["command"]["description"].startswith(
        "argv, run without a shell")
    assert "secret stays out of this file" in (
        s["static_credential"]["properties"]["value_file"]["description"])


def test_every_key_has_a_description_and_the_enums_come_from_the_types() -> None:
    def properties(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "description" in sub:
                    yield key, sub
            for sub in node.values():
                yield from properties(sub)
        elif isinstance(node, list):
            for sub in node:
                yield from properties(sub)

    s = schema.build()
    for name, section in [*s["$defs"].items(), ("<top>", s)]:
        if name == "env_var":
            continue
        for key in section["properties"]:
            prop = section["properties"][key]
            assert prop.get("description"), f"{name}.{key} has no description"
    enums = {key: json.dumps(sub) for key, sub in properties(s)}
    for key, values in {"flow": t.FLOWS, "type": ("static", "cognito", "iam", "command"),
                        "source": t.IAM_SOURCES, "format": ("text", "json"),
                        "client_header": ("replace", "keep"), "level": t.LOG_LEVELS,
                        "token": ("id", "access")}.items():
        if key == "type":
            assert s["$defs"]["credential"]["properties"]["type"]["enum"] == list(values)
        else:
            assert json.dumps(list(values)) in enums[key], key


# Keywords draft-07 knows as well: yaml-language-server (VS Code's YAML extension, and the
# editors built on it) validates with draft-07, so a 2020-12-only keyword would go unchecked.
DRAFT7_TOO = {"$schema", "$ref", "$defs", "title", "description", "default", "type", "enum",
              "const", "properties", "additionalProperties", "required", "items", "minItems",
              "minLength", "pattern", "propertyNames", "contains", "anyOf", "allOf", "not", "if",
              "then"}


def test_schema_is_draft_2020_12_in_words_draft_07_also_reads(
        validator: jsonschema.Draft202012Validator) -> None:
    s = schema.build()
    jsonschema.Draft202012Validator.check_schema(s)
    jsonschema.Draft7Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    used: set[str] = set()

    def walk(node: Any, in_properties: bool = False) -> None:
        if isinstance(node, dict):
            for key, sub in node.items():
                if not in_properties:
                    used.add(key)
                walk(sub, key in ("properties", "$defs") and not in_properties)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    walk(s)
    assert used <= DRAFT7_TOO, used - DRAFT7_TOO


def test_authproxy_schema_prints_the_shipped_schema() -> None:
    out = subprocess.run([AUTHPROXY, "schema"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == copies()[0].read_text(encoding="utf-8")
    assert json.loads(out.stdout)["title"] == "authproxy config"


def test_the_schema_is_package_data() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'proxy = \[[^\]]*"authproxy\.schema\.json"', pyproject)


# --- the shipped examples --------------------------------------------------------------------

def examples() -> list[Path]:
    """Every config the repo ships: config/**/*.yaml (the Kubernetes manifest is one by its
    ConfigMap) and the package's own (the demo's)."""
    return sorted({p for p in [*ROOT.glob("config/**/*.yaml"), *ROOT.glob("proxy/fakes/*.yaml")]
                   if not p.is_symlink()})


def embedded_config(manifest: Path) -> str:
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return str(cm["data"]["proxy.yaml"])


def config_text(path: Path) -> str:
    return embedded_config(path) if path == KUBERNETES else path.read_text()


def test_examples_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in examples()}
    assert {"config/proxy.yaml", "config/compose/proxy.yaml", "config/fleet/proxy.yaml",
            "config/kubernetes/authproxy.yaml", "proxy/fakes/demo.yaml"} <= names


@pytest.mark.parametrize("path", examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_example_passes_the_schema(
        path: Path, validator: jsonschema.Draft202012Validator) -> None:
    errors = [f"{e.json_path}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(config_text(path)))]
    assert not errors


@pytest.mark.parametrize("path", examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_example_starts_with_the_modeline(path: Path) -> None:
    first = config_text(path).splitlines()[0]
    m = MODELINE.fullmatch(first)
    assert m, f"{path} starts with {first!r}"
    # Relative to the file (the ConfigMap's block: to the block saved beside the manifest).
    # The demo's is relative to where it really is, in the package, beside the shipped copy.
    # (That the copies are the generator's is the first test's business.)
    target = (path.resolve().parent / m.group(1)).resolve()
    assert target in copies()


def test_the_kubernetes_manifest_itself_is_not_pointed_at_the_config_schema() -> None:
    # The file is Kubernetes objects: the editor's Kubernetes schema is the one that fits it.
    assert "$schema" not in KUBERNETES.read_text().split("\ndata:")[0]


# --- schema and loader agree -----------------------------------------------------------------

ENV = {"API_KEY": "k-123", "PORT": "8081", "FLAG": "true", "FLOW": "srp", "SECRET": "s3cr3t"}


def loader_problems(text: str) -> list[c.Problem]:
    try:
        parse_config(text, "corpus.yaml", env=ENV)
    except ConfigError as e:
        return e.problems
    return []


def schema_errors(validator: jsonschema.Draft202012Validator, text: str) -> list[list[Any]]:
    """The location of every error, the alternatives' (anyOf, if/then) included."""
    out: list[list[Any]] = []

    def leaves(e: jsonschema.ValidationError) -> None:
        if e.context:
            for sub in e.context:
                leaves(sub)
        else:
            out.append(list(e.absolute_path))

    for e in validator.iter_errors(yaml.safe_load(text)):
        leaves(e)
    return out


def key_path(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return {"{secret}": str(tmp_path / "secret.txt"), "{ca}": str(tmp_path / "ca.pem")}


def fill(text: str, files: dict[str, str]) -> str:
    for k, v in files.items():
        text = text.replace(k, v)
    return text


GOOD = {
    "empty file": "",
    "empty sections": "listen:\ncredentials:\nendpoints:\ncors:\nlogging:\nadmin:\n",
    "every section": """
listen: {host: 127.0.0.1, port: 8080, allowed_hosts: [dev.test], shared_secret: null,
         drain_timeout: 10, header_timeout: 10.5, keepalive_timeout: 75}
credentials:
  key: {type: static, header: x-api-key, value: "${API_KEY}"}
endpoints:
  - {name: a, endpoint: "https://x.execute-api.us-east-1.amazonaws.com/dev", auth: key,
     prefix: /a, host: null, client_header: keep, set_headers: {X-Stage: dev, X-N: 3},
     remove_headers: [Cookie], timeout: 30, connect_timeout: 5, tls_verify: false}
  - {name: b, endpoint: "http://127.0.0.1:9000", auth: none, host: b.localhost,
     tls_verify: "{ca}"}
cors: {allow_origins: ["http://localhost:*"], allow_methods: [get, POST], allow_headers: [],
       expose_headers: [X-Request-Id], allow_credentials: true, max_age: 0,
       allow_private_network: false}
logging: {level: debug, format: json, log_headers: true}
admin: {prefix: /_admin, inspector: false, history: 0}
""",
    # Plain scalars: the loader types them once expanded (quoted, they would stay strings).
    "${VAR} for an integer, a boolean and an enum": """
listen:
  port: ${PORT}
logging:
  log_headers: ${FLAG}
credentials:
  user:
    type: cognito
    flow: ${FLOW}
    user_pool_id: us-east-1_Abc
    client_id: c
    username: u
    password: ${SECRET}
""",
    "*_file twins": """
listen: {shared_secret_file: "{secret}"}
credentials:
  key: {type: static, value_file: "{secret}"}
  keys: {type: iam, source: keys, access_key_id: AKIA1234, secret_access_key_file: "{secret}",
         region: us-east-1}
""",
    "a number where a name or secret is a string": """
credentials:
  key: {type: static, value: 123456}
  user: {type: cognito, flow: password, user_pool_id: us-east-1_Abc, client_id: 1234567890,
         username: 42}
""",
    "every cognito flow": """
credentials:
  a: {type: cognito, user_pool_id: us-east-1_Abc, client_id: c, username: u}
  b: {type: cognito, flow: srp, user_pool_id: us-east-1_Abc, client_id: c, username: u,
      client_secret: x, token: access, prefix: "", refresh_margin: 0, endpoint: null}
  c: {type: cognito, flow: refresh_token, user_pool_id: us-east-1_Abc, client_id: c,
      refresh_token: r}
  d: {type: cognito, flow: client_credentials, domain: "https://d.auth.example", client_id: c,
      client_secret_file: "{secret}", scopes: [orders/read], token: access}
  e: {type: cognito, flow: authorization_code, domain: "https://d.auth.example", client_id: c,
      scopes: [openid, email], redirect_port: 8976, identity_provider: Google, token: id}
""",
    "every iam source": """
credentials:
  user: {type: cognito, user_pool_id: us-east-1_Abc, client_id: c, username: u}
  guest: {type: iam, source: identity_pool,
          identity_pool_id: "us-east-1:0f3c5e1a-1111-2222-3333-444455556666", login: user,
          endpoint: null, service: execute-api, max_signed_body: 1024, refresh_margin: 60}
  keys: {type: iam, source: keys, access_key_id: AKIA1234, secret_access_key: x,
         session_token: null, region: eu-west-1}
  dev: {type: iam, source: aws, profile: dev, region: us-east-1}
""",
    "a command": """
credentials:
  vault: {type: command, command: [vault, read, -field=token, secret/api, 5], header: X-Token,
          prefix: "Bearer ", format: json, ttl: 60, refresh_margin: 10, timeout: 3}
""",
    "a token cache": """
token_cache: {url: "redis://127.0.0.1:6379/0", key_prefix: "ap:", timeout: 0.5,
              tls_verify: true}
""",
}


@pytest.mark.parametrize("name", GOOD)
def test_good_files_pass_both(name: str, validator: jsonschema.Draft202012Validator,
                              files: dict[str, str]) -> None:
    text = fill(GOOD[name], files)
    assert loader_problems(text) == []
    assert schema_errors(validator, text) == []


# (file, the key path the loader names). Each file has one mistake: the loader reports it (and
# at most what follows from it, below that key), and every error the schema reports is on the
# way to that key.
BAD = {
    "unknown top-level key": ("listn: {port: 8080}\n", "listn"),
    "unknown key in a section": ("admin: {inspectr: true}\n", "admin.inspectr"),
    "unknown key of an endpoint": (
        "endpoints: [{name: a, endpoint: 'http://h', clientheader: keep}]\n",
        "endpoints[0].clientheader"),
    "a key of another credential type": (
        "credentials: {k: {type: static, value: x, flow: srp}}\n", "credentials.k.flow"),
    "wrong type: string for an integer": ("listen: {port: eighty}\n", "listen.port"),
    "wrong type: integer for a boolean": ("admin: {inspector: 1}\n", "admin.inspector"),
    "wrong type: mapping for a list": ("cors: {allow_origins: {a: b}}\n", "cors.allow_origins"),
    "wrong type: a section that is a list": ("logging: [info]\n", "logging"),
    "wrong type: a string for argv": (
        "credentials: {v: {type: command, command: 'vault read x'}}\n", "credentials.v.command"),
    "wrong type: a boolean secret": (
        "credentials: {k: {type: static, value: true}}\n", "credentials.k.value"),
    "bad enum: client_header": (
        "endpoints: [{name: a, endpoint: 'http://h', client_header: replac}]\n",
        "endpoints[0].client_header"),
    "bad enum: flow": (
        "credentials: {u: {type: cognito, flow: sprp, user_pool_id: us-east-1_A, client_id: c,"
        " username: u}}\n", "credentials.u.flow"),
    "bad enum: source": ("credentials: {g: {type: iam, source: env}}\n", "credentials.g.source"),
    "bad enum: format": (
        "credentials: {v: {type: command, command: [x], format: yaml}}\n",
        "credentials.v.format"),
    "bad enum: log level": ("logging: {level: verbose}\n", "logging.level"),
    "bad enum: log format": ("logging: {format: xml}\n", "logging.format"),
    "bad enum: token": (
        "credentials: {u: {type: cognito, user_pool_id: us-east-1_A, client_id: c, username: u,"
        " token: refresh}}\n", "credentials.u.token"),
    "wrong discriminator": ("credentials: {k: {type: statc, value: x}}\n", "credentials.k.type"),
    "missing discriminator": ("credentials: {k: {value: x}}\n", "credentials.k.type"),
    "a credential that is not a mapping": ("credentials: {k: token}\n", "credentials.k"),
    "a credential named none": (
        "credentials: {none: {type: static, value: x}}\n", "credentials.none"),
    "missing: endpoint name": ("endpoints: [{endpoint: 'http://h'}]\n", "endpoints[0].name"),
    "missing: endpoint url (empty)": (
        "endpoints: [{name: a, endpoint: ''}]\n", "endpoints[0].endpoint"),
    "missing: static value": ("credentials: {k: {type: static}}\n", "credentials.k.value"),
    "missing: command": ("credentials: {v: {type: command}}\n", "credentials.v.command"),
    "missing: empty argv": (
        "credentials: {v: {type: command, command: []}}\n", "credentials.v.command"),
    "missing: client_id": (
        "credentials: {u: {type: cognito, flow: refresh_token, user_pool_id: us-east-1_A}}\n",
        "credentials.u.client_id"),
    "missing: username for the default flow": (
        "credentials: {u: {type: cognito, user_pool_id: us-east-1_A, client_id: c}}\n",
        "credentials.u.username"),
    "missing: user_pool_id for srp": (
        "credentials: {u: {type: cognito, flow: srp, region: us-east-1, client_id: c,"
        " username: u}}\n",
        "credentials.u.user_pool_id"),
    "missing: domain for client_credentials": (
        "credentials: {m: {type: cognito, flow: client_credentials, client_id: c,"
        " client_secret: s}}\n", "credentials.m.domain"),
    "missing: client_secret for client_credentials": (
        "credentials: {m: {type: cognito, flow: client_credentials, client_id: c,"
        " domain: 'https://d.example'}}\n", "credentials.m.client_secret"),
    "client_credentials with the id token": (
        "credentials: {m: {type: cognito, flow: client_credentials, client_id: c,"
        " client_secret: s, domain: 'https://d.example', token: id}}\n", "credentials.m.token"),
    "missing: domain for authorization_code": (
        "credentials: {s: {type: cognito, flow: authorization_code, client_id: c}}\n",
        "credentials.s.domain"),
    "authorization_code without openid": (
        "credentials: {s: {type: cognito, flow: authorization_code, client_id: c,"
        " domain: 'https://d.example', scopes: [email]}}\n", "credentials.s.scopes"),
    "a key of another flow (authorization_code)": (
        "credentials: {s: {type: cognito, flow: authorization_code, client_id: c,"
        " domain: 'https://d.example', username: u}}\n", "credentials.s.username"),
    "a key of another flow (srp)": (
        "credentials: {u: {type: cognito, flow: srp, user_pool_id: us-east-1_A, client_id: c,"
        " username: u, redirect_port: 8976}}\n", "credentials.u.redirect_port"),
    "missing: iam source": ("credentials: {g: {type: iam}}\n", "credentials.g.source"),
    "missing: identity_pool_id": (
        "credentials: {g: {type: iam, source: identity_pool}}\n",
        "credentials.g.identity_pool_id"),
    "missing: secret_access_key": (
        "credentials: {k: {type: iam, source: keys, access_key_id: AKIA}}\n",
        "credentials.k.secret_access_key"),
    "a key of another source": (
        "credentials: {d: {type: iam, source: aws, access_key_id: AKIA}}\n",
        "credentials.d.access_key_id"),
    "a secret and its file": (
        "credentials: {k: {type: static, value: x, value_file: '{secret}'}}\n",
        "credentials.k.value_file"),
    "an empty secret": ("credentials: {k: {type: static, value: ''}}\n", "credentials.k.value"),
    "token_cache settings without a url": ("token_cache: {timeout: 1}\n", "token_cache.timeout"),
    "'*' with allow_credentials": (
        "cors: {allow_origins: ['*'], allow_credentials: true}\n", "cors.allow_origins"),
    "set_headers as a list": (
        "endpoints: [{name: a, endpoint: 'http://h', set_headers: [X-A]}]\n",
        "endpoints[0].set_headers"),
    "an endpoint that is not a mapping": ("endpoints: [api]\n", "endpoints[0]"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_files_are_refused_by_both(name: str, validator: jsonschema.Draft202012Validator,
                                       files: dict[str, str]) -> None:
    text, where = BAD[name]
    text = fill(text, files)
    problems = loader_problems(text)
    assert where in [p.path for p in problems], problems
    assert all(p.path.startswith(where) for p in problems), problems
    errors = schema_errors(validator, text)
    assert errors, "the schema takes it"
    wrong = [e for e in errors if e != key_path(where)[:len(e)]]
    assert not wrong, f"schema errors elsewhere than on the way to {where}: {wrong}"


# What only the loader refuses (see proxy/schema.py's docstring for the whole list): rules
# across keys of different places, values JSON Schema would need to know more to check, and
# what depends on the environment. If the schema learns one, move it to BAD.
LOADER_ONLY = {
    "a dangling credential name": (
        "credentials: {user: {type: static, value: x}}\n"
        "endpoints: [{name: a, endpoint: 'http://h', auth: usr}]\n", "endpoints[0].auth"),
    "login naming a static credential": (
        "credentials:\n  k: {type: static, value: x}\n"
        "  g: {type: iam, source: identity_pool, login: k,"
        " identity_pool_id: 'us-east-1:0f3c5e1a-1111-2222-3333-444455556666'}\n",
        "credentials.g.login"),
    "two endpoints with one name": (
        "endpoints: [{name: a, endpoint: 'http://h', prefix: /x},"
        " {name: a, endpoint: 'http://h'}]\n", "endpoints[1].name"),
    "a port out of range": ("listen: {port: 70000}\n", "listen.port"),
    # JSON has no quoting: the schema cannot tell this from a plain ${PORT}, an integer.
    "a quoted ${VAR} for an integer": ("listen:\n  port: '${PORT}'\n", "listen.port"),
    "an upstream that is not an http(s) URL": (
        "endpoints: [{name: a, endpoint: 'ftp://h'}]\n", "endpoints[0].endpoint"),
    "an unset ${VAR}": ("credentials: {k: {type: static, value: '${NOPE}'}}\n",
                        "credentials.k.value"),
    "a CA bundle that is not a file": (
        "endpoints: [{name: a, endpoint: 'http://h', tls_verify: /no/such/ca.pem}]\n",
        "endpoints[0].tls_verify"),
    "no region to sign for": (
        "credentials: {k: {type: iam, source: keys, access_key_id: A, secret_access_key: s}}\n"
        "endpoints: [{name: a, endpoint: 'https://api.example.com', auth: k}]\n",
        "endpoints[0].auth"),
}


@pytest.mark.parametrize("name", LOADER_ONLY)
def test_loader_only_rules_pass_the_schema_and_not_the_loader(
        name: str, validator: jsonschema.Draft202012Validator) -> None:
    text, where = LOADER_ONLY[name]
    assert [p.path for p in loader_problems(text)] == [where]
    assert schema_errors(validator, text) == []


# --- defaults --------------------------------------------------------------------------------

# A smallest valid form of each place a key can be; a key set to its schema default must give
# the loader the same value as the key left out.
BASES: dict[str, tuple[str, Any]] = {
    "listen": ("listen", {}),
    "cors": ("cors", {}),
    "logging": ("logging", {}),
    "admin": ("admin", {}),
    "token_cache": ("token_cache", {"url": "redis://127.0.0.1:6379/0"}),
    "endpoint": ("endpoints", {"name": "a", "endpoint": "http://h"}),
    "static_credential": ("credentials", {"type": "static", "value": "x"}),
    "iam_credential": ("credentials", {"type": "iam", "source": "aws"}),
    "command_credential": ("credentials", {"type": "command", "command": ["x"]}),
    "cognito_credential password": ("credentials", {
        "type": "cognito", "user_pool_id": "us-east-1_A", "client_id": "c", "username": "u"}),
    "cognito_credential client_credentials": ("credentials", {
        "type": "cognito", "flow": "client_credentials", "client_id": "c", "client_secret": "s",
        "domain": "https://d.example"}),
    "cognito_credential authorization_code": ("credentials", {
        "type": "cognito", "flow": "authorization_code", "client_id": "c",
        "domain": "https://d.example"}),
}


def defaults(section: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The schema's default of each key, as the branch for body's flow or source has it."""
    out = {k: p["default"] for k, p in section["properties"].items() if "default" in p}
    for rule in section.get("allOf", []):
        cond = rule.get("if", {}).get("properties", {})
        if cond.keys() & {"flow", "source"} and jsonschema.Draft202012Validator(
                rule["if"]).is_valid(body):
            for k, p in rule["then"].get("properties", {}).items():
                if p is False:
                    out.pop(k, None)
                elif "default" in p:
                    out[k] = p["default"]
    return out


def loaded(where: str, body: dict[str, Any]) -> Any:
    if where == "credentials":
        return parse_config(yaml.safe_dump({where: {"x": body}})).credentials["x"]
    if where == "endpoints":
        return parse_config(yaml.safe_dump({where: [body]})).endpoints[0]
    return getattr(parse_config(yaml.safe_dump({where: body})), where)


@pytest.mark.parametrize("base", BASES)
def test_every_default_in_the_schema_is_the_loaders(base: str) -> None:
    where, body = BASES[base]
    section = schema.build()["$defs"][base.partition(" ")[0]]
    found = defaults(section, body)
    assert found, base
    without = loaded(where, body)
    for key, value in found.items():
        if key in body:
            continue
        assert loaded(where, {**body, key: value}) == without, f"{base}: {key}: {value!r}"
