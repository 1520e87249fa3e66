"""The JSON Schema (draft 2020-12) of the config file, generated from the config types
(proxy/config/types.py) and the reader's key tables (proxy/config/reader.py).

Nothing here lists a key by hand. Which keys a section has, and in which order, comes from the
loader's own tables (`_TOP_KEYS`, `_LISTEN_KEYS`, `_CRED_KEYS`, `_ENDPOINT_KEYS`, ...); each key's
type, enum and default from its dataclass field; its description from the field's one-line
comment in types.py's source (read with `tokenize`; it ships in the wheel). A key of a
table without a field, or a field without a comment, stops the generator: the schema cannot
quietly fall behind the loader.

What the YAML spells differently from the types is said once, in `_YAML` and the functions
below it: the credential's name is its key under `credentials`, every secret has a `*_file`
twin, `auth: none`, `set_headers` is a mapping, an empty string stands for "computed" in a few
defaults, and `${VAR}` may stand for any scalar, since the loader expands it before it looks at
types (`port: ${PORT}` is an integer once expanded).

Only keywords that draft-07 knows too are used (plus `$defs`, reached by JSON pointer): the YAML
extension of VS Code and the other editors on yaml-language-server validate with draft-07.

What the loader checks and the schema does not (values and rules across keys):
- credential names: `endpoints[].auth` and `credentials.*.login` must name a credential, and
  `login` one of type cognito that signs a user in; JSON Schema cannot refer to sibling keys;
- values: URLs (http(s), no query), path prefixes, host names, header names, origins, regions,
  user pool and identity pool ids, OAuth scopes, port and timeout ranges, the token_cache URL,
  the length of encryption_key; `*_file` and `tls_verify` paths must be readable files;
- uniqueness: two endpoints with the same name, or the same host and prefix; an endpoint inside
  `admin.prefix`; duplicate YAML keys (JSON has none to see);
- cross-field: the signing region of an iam credential (from the endpoint host, `region` or the
  pool); `set_headers` naming a SigV4 header on a signed endpoint or a framing/hop-by-hop header;
  a Cognito `region` that cannot be taken from `user_pool_id`; `encryption_key` off loopback;
- `${VAR}`: whether the variable is set, and what the expanded value is; quoting (the loader
  types a plain `${PORT}` as an integer and a quoted `"${PORT}"` as a string, and JSON cannot
  tell them apart), so the schema lets a `${...}` string stand for any scalar.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import tokenize
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from proxy.config import reader as c  # the loader's key tables
from proxy.config import types as t
from proxy.secret import Secret

DRAFT = "https://json-schema.org/draft/2020-12/schema"
Schema = dict[str, Any]


class SchemaError(Exception):
    """The config types and the loader's tables disagree, or a field has no comment."""


# --- descriptions: the one-line comment of each field ----------------------------------------

def field_comments(cls: type) -> dict[str, str]:
    """{field: comment} of a dataclass in types.py: the comment at the end of the field's line,
    continued by comment lines indented under it, or else the comment lines right above it."""
    source = inspect.getsource(t)
    comments: dict[int, tuple[int, str]] = {}  # line -> (column of the text, text)
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#")
            comments[tok.start[0]] = (tok.start[1] + len(tok.string) - len(text.lstrip()),
                                      text.strip())
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    node = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    out: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        end = stmt.end_lineno or stmt.lineno
        parts = [comments[n][1] for n in range(stmt.lineno, end + 1) if n in comments]
        if parts:
            line = end + 1  # a wrapped comment: comment lines whose text is indented further
            while line in comments and line not in code_lines and \
                    comments[line][0] > stmt.col_offset + 2:
                parts.append(comments[line][1])
                line += 1
        else:
            line = stmt.lineno - 1  # a comment of its own above the field
            while line in comments and line not in code_lines and \
                    comments[line][0] == stmt.col_offset + 2:
                parts.insert(0, comments[line][1])
                line -= 1
        if parts:
            out[stmt.target.id] = " ".join(parts)
    return out


# --- types -----------------------------------------------------------------------------------

# ${VAR} and ${VAR:-default}, exactly as the loader matches them (the syntax is also ECMA-262's).
VAR_STRING: Schema = {"type": "string", "pattern": c._VAR.pattern,
                      "description": "${VAR} or ${VAR:-default}: taken from the environment "
                                     "before the value is typed (a plain `port: ${PORT}` is an "
                                     "integer once expanded)"}
_VAR_REF: Schema = {"$ref": "#/$defs/env_var"}


def _merge(alts: list[Schema]) -> Schema:
    """One schema accepting any of `alts`: a list of types where that says it, else anyOf."""
    if len(alts) == 1:
        return alts[0]
    if all(set(a) == {"type"} for a in alts):
        kinds: list[str] = []
        for a in alts:
            for k in a["type"] if isinstance(a["type"], list) else [a["type"]]:
                if k not in kinds:
                    kinds.append(k)
        return {"type": kinds[0] if len(kinds) == 1 else kinds}
    return {"anyOf": alts}


def _alternatives(tp: Any) -> list[Schema]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(tp) for alt in _alternatives(arg)]
    if origin is Literal:
        return [{"enum": list(typing.get_args(tp))}]
    if origin is tuple:
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise SchemaError(f"no YAML form for {tp}: say it in schema._YAML")
        return [{"type": "array", "items": _merge(_alternatives(item))}]
    if tp is type(None):
        return [{"type": "null"}]
    if tp is Secret:
        # The loader takes a number too (`password: 1234` is the string "1234").
        return [{"type": ["string", "integer"], "minLength": 1}]
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp in simple:
        return [{"type": simple[tp]}]
    if dataclasses.is_dataclass(tp):
        return [{"$ref": f"#/$defs/{_DEFS[tp]}"}]
    raise SchemaError(f"no JSON Schema for {tp}: say it in schema._YAML")


def _types(alt: Schema) -> list[str]:
    kind = alt.get("type", [])
    return kind if isinstance(kind, list) else [kind]


def _takes_var(alts: list[Schema]) -> list[Schema]:
    """Let a `${...}` string stand for a scalar that is not a string already."""
    if any("string" in _types(a) and "enum" not in a for a in alts):
        return alts
    if any("enum" in a or {"integer", "number", "boolean"} & set(_types(a)) for a in alts):
        return [*alts, _VAR_REF]
    return alts


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # `timeout: 30`, as a person writes it
    return value


# --- where the YAML differs from the types ---------------------------------------------------

_MAPPING_OF_HEADERS: Schema = {"type": "object", "additionalProperties": {
    "type": ["string", "integer"]}}
_ARGV: Schema = {"type": "array", "minItems": 1, "items": {"type": ["string", "integer"]}}

# (dataclass, key) -> what the YAML has instead of the field's type, default or requiredness.
# "default": ... replaces the field's default; _COMPUTED drops it (the description says it).
_COMPUTED = object()
_YAML: dict[tuple[type, str], dict[str, Any]] = {
    # The loader reads `none`, the type stores None.
    (t.Endpoint, "auth"): {"default": "none"},
    # A mapping in YAML, (name, value) pairs in the type.
    (t.Endpoint, "set_headers"): {"schema": _MAPPING_OF_HEADERS, "default": {}},
    # "/<name>", or "/" with host: computed by the loader.
    (t.Endpoint, "prefix"): {"default": _COMPUTED},
    # Defaults of "" below mean "not set": computed (region), required by some flows or
    # sources (see _cognito_flows, _iam_sources), or taken from the login cache.
    (t.CognitoCredential, "region"): {"default": _COMPUTED},
    (t.CognitoCredential, "user_pool_id"): {"default": _COMPUTED},
    (t.CognitoCredential, "username"): {"default": _COMPUTED, "also_integer": True},
    (t.CognitoCredential, "domain"): {"default": _COMPUTED},
    (t.CognitoCredential, "client_id"): {"also_integer": True},
    (t.CognitoCredential, "flow"): {"default": "password", "optional": True},
    (t.IamCredential, "identity_pool_id"): {"default": _COMPUTED},
    (t.IamCredential, "access_key_id"): {"default": _COMPUTED, "also_integer": True},
    (t.CommandCredential, "command"): {"schema": _ARGV},
}


# --- sections --------------------------------------------------------------------------------

def _sections() -> dict[str, tuple[type, tuple[str, ...]]]:
    """Each section's type and the loader's table of its keys, as they are now."""
    return {
        "listen": (t.Listen, c._LISTEN_KEYS),
        "cors": (t.Cors, c._CORS_KEYS),
        "logging": (t.Logging, c._LOGGING_KEYS),
        "admin": (t.Admin, c._ADMIN_KEYS),
        "token_cache": (t.TokenCache, c._TOKEN_CACHE_KEYS),
        "endpoint": (t.Endpoint, c._ENDPOINT_KEYS),
    }


_CRED_CLASSES: dict[str, type] = {
    typing.get_args(typing.get_type_hints(cls)["type"])[0]: cls
    for cls in typing.get_args(t.Credential)}
_DEFS: dict[Any, str] = {cls: name for name, (cls, _) in _sections().items()} | {
    cls: f"{kind}_credential" for kind, cls in _CRED_CLASSES.items()}


def secret_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls)
            if Secret in (typing.get_args(hints[f.name]) or (hints[f.name],))]


def _not_null(key: str) -> Schema:
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


def _section(cls: type, keys: tuple[str, ...]) -> Schema:
    """An object with exactly the loader's keys, typed, defaulted and described by `cls`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    comments = field_comments(cls)
    secrets = secret_fields(cls)
    props: Schema = {}
    required: list[str] = []
    one_of_twins: list[str] = []
    for key in keys:
        if key not in fields:
            base = key.removesuffix("_file")
            if base == key or base not in secrets:
                raise SchemaError(f"{cls.__name__} has no field for the loader's key {key!r}")
            props[key] = {"description": f"a file holding {base} (read at start and reload, "
                          f"one trailing newline dropped), so that the secret stays out of "
                          f"this file; set {base} or {key}, not both",
                          "type": ["string", "null"]}
            continue
        if key not in comments:
            raise SchemaError(f"{cls.__name__}.{key} has no one-line comment; the schema "
                              "takes the key's description from it")
        f, yaml_form = fields[key], _YAML.get((cls, key), {})
        has_default = (f.default is not dataclasses.MISSING
                       or f.default_factory is not dataclasses.MISSING)
        optional = has_default or yaml_form.get("optional", False)
        alts = [yaml_form["schema"]] if "schema" in yaml_form else _alternatives(hints[key])
        if yaml_form.get("also_integer"):
            alts = [{**a, "type": ["string", "integer"]} if _types(a) == ["string"] else a
                    for a in alts]
        alts = [a for a in _takes_var(alts) if a != {"type": "null"}]
        if key in secrets and f"{key}_file" in keys and not optional:
            one_of_twins.append(key)  # required, but the twin may give it instead
        if optional or key in one_of_twins:
            alts.append({"type": "null"})  # the loader takes null for "not set" everywhere
        else:
            required.append(key)
            # The loader's `is required` refuses an empty string as it refuses a missing key.
            alts = [{**a, "minLength": 1} if "string" in _types(a) else a for a in alts]
        prop: Schema = {"description": comments[key], **_merge(alts)}
        default = yaml_form.get("default", f.default if f.default is not dataclasses.MISSING
                                else dataclasses.MISSING)
        if f.default_factory is not dataclasses.MISSING and "default" not in yaml_form:
            default = f.default_factory()
        if default is not dataclasses.MISSING and default is not _COMPUTED:
            prop["default"] = _json(default)
        props[key] = prop
    out: Schema = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    rules: list[Schema] = []
    for key in one_of_twins:  # value or value_file: one of them, with a value
        rules.append({"anyOf": [_not_null(key), _not_null(f"{key}_file")]})
    for key in secrets:
        if f"{key}_file" in keys:
            rules.append({"not": {"allOf": [_not_null(key), _not_null(f"{key}_file")]}})
    if rules:
        out["allOf"] = rules
    return out


def _given(*keys: str) -> list[Schema]:
    """Keys the loader's `require` wants: present, and neither null nor empty."""
    return [{"required": [k], "properties": {k: {"not": {"enum": [None, ""]}}}} for k in keys]


def _forbid(keys: typing.Iterable[str], present: typing.Iterable[str]) -> Schema:
    return {"properties": {k: False for k in keys if k in present}}


def _flow_is(flow: str) -> Schema:
    if flow == "password":  # the loader's default: no flow key (or null) means password
        return {"properties": {"flow": {"enum": [flow, None]}}}
    return {"properties": {"flow": {"const": flow}}, "required": ["flow"]}


def _cognito_flows(section: Schema) -> list[Schema]:
    """What each flow requires and refuses, as the loader's `_credential` and
    `_authorization_code` check it (where one key alone decides)."""
    keys = section["properties"]
    rules = []
    for flow in t.FLOWS:
        then: Schema
        if flow == "authorization_code":
            then = {"allOf": _given("domain"), **_forbid(c._NOT_FOR_AUTHORIZATION_CODE, keys)}
            then["properties"]["scopes"] = {
                "contains": {"const": "openid"},
                "default": list(c._AUTHORIZATION_CODE_SCOPES)}
        else:
            then = _forbid(c.AUTHORIZATION_CODE_KEYS, keys)
            if flow == "client_credentials":
                then["allOf"] = _given("domain")
                # It returns no ID token.
                then["properties"]["token"] = {"enum": ["access", None], "default": "access"}
                then["anyOf"] = [_not_null("client_secret"), _not_null("client_secret_file")]
            else:
                then["allOf"] = _given("user_pool_id", *(
                    ["username"] if flow in ("password", "srp") else []))
        rules.append({"if": _flow_is(flow), "then": then})
    return rules


def _iam_sources(section: Schema) -> list[Schema]:
    """Each source's own keys are refused with another source (the loader's _IAM_SOURCE_KEYS),
    and what each source needs is required."""
    needs = {"identity_pool": {"allOf": _given("identity_pool_id")},
             "keys": {"allOf": _given("access_key_id"), "anyOf": [
                 _not_null("secret_access_key"), _not_null("secret_access_key_file")]}}
    rules = []
    for source in typing.get_args(typing.get_type_hints(t.IamCredential)["source"]):
        others = [k for s, ks in c._IAM_SOURCE_KEYS.items() if s != source for k in ks]
        then = {**needs.get(source, {}), **_forbid(others, section["properties"])}
        rules.append({"if": {"properties": {"source": {"const": source}},
                             "required": ["source"]}, "then": then})
    return rules


def _credential_defs() -> Schema:
    defs: Schema = {}
    for kind, cls in _CRED_CLASSES.items():
        body = _section(cls, c._CRED_KEYS[kind])
        # `type` picks the branch: a ${VAR} there could not.
        body["properties"]["type"] = {"description": field_comments(cls)["type"], "const": kind}
        body.setdefault("required", []).insert(0, "type")
        if kind == "cognito":
            body.setdefault("allOf", []).extend(_cognito_flows(body))
        elif kind == "iam":
            body.setdefault("allOf", []).extend(_iam_sources(body))
        defs[_DEFS[cls]] = body
    kinds = list(_CRED_CLASSES)
    defs["credential"] = {
        "description": "a named header source (its name is the key); type picks the kind: "
                       + "; ".join(f"{k}: {field_comments(cls)['type']}"
                                   for k, cls in _CRED_CLASSES.items()),
        "type": "object", "required": ["type"],
        "properties": {"type": {"description": " | ".join(kinds), "enum": kinds}},
        "allOf": [{"if": {"properties": {"type": {"const": k}}, "required": ["type"]},
                   "then": {"$ref": f"#/$defs/{_DEFS[cls]}"}}
                  for k, cls in _CRED_CLASSES.items()]}
    return defs


def _cross_field(defs: Schema) -> None:
    """The loader's rules across two keys of one section that the schema can say."""
    tc = defs["token_cache"]
    tc.setdefault("allOf", []).append({
        # Every other key "has no effect without token_cache.url".
        "if": {"not": {"anyOf": [_not_null("url"), _not_null("url_file")]}},
        "then": _forbid([k for k in c._TOKEN_CACHE_KEYS if k not in ("url", "url_file")],
                        tc["properties"])})
    defs["cors"].setdefault("allOf", []).append({
        "if": {"properties": {"allow_credentials": {"const": True}},
               "required": ["allow_credentials"]},
        "then": {"properties": {"allow_origins": {"not": {"contains": {"const": "*"}}}}}})


def build() -> Schema:
    for cls, key in _YAML:  # a key renamed or gone must not leave its YAML form behind
        if key not in {f.name for f in dataclasses.fields(cls)}:
            raise SchemaError(f"schema._YAML names {cls.__name__}.{key}, which is no field")
    defs: Schema = {"env_var": VAR_STRING}
    for name, (cls, keys) in _sections().items():
        defs[name] = _section(cls, keys)
    defs.update(_credential_defs())
    _cross_field(defs)
    comments = field_comments(t.Config)
    top: Schema = {}
    for key in c._TOP_KEYS:
        if key not in comments:
            raise SchemaError(f"Config.{key} has no one-line comment")
        if key == "credentials":
            # The credential's name is its key; `none` is what `auth: none` means.
            value: Schema = {"type": "object", "propertyNames": {"not": {"const": "none"}},
                             "additionalProperties": {"$ref": "#/$defs/credential"}}
        elif key == "endpoints":
            value = {"type": "array", "items": {"$ref": "#/$defs/endpoint"}}
        else:
            value = {"$ref": f"#/$defs/{key}"}
        top[key] = {"description": comments[key], "anyOf": [value, {"type": "null"}]}
    return {
        "$schema": DRAFT,
        "title": "authproxy config",
        "description": "The config file of authproxy, the local authenticating reverse proxy "
                       "for AWS API Gateway (authproxy serve -c FILE). Generated from "
                       "proxy/config/types.py by proxy/schema.py; `authproxy check` checks more "
                       "than this schema can (credential names, URLs, files).",
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": top,
        "$defs": defs,
    }


def render(schema: Mapping[str, Any] | None = None) -> str:
    """The schema as committed and shipped: stable key order, two-space indent, a short list
    or object of plain values on one line (so that a diff shows what changed), one newline."""
    return _dump(build() if schema is None else schema, 0) + "\n"


def _dump(value: Any, indent: int) -> str:
    flat = json.dumps(value, ensure_ascii=False)
    plain = isinstance(value, list | dict) and not any(
        isinstance(v, list | dict) for v in (value.values() if isinstance(value, dict) else value))
    if not isinstance(value, list | dict) or not value or (plain and indent + len(flat) <= 96):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list):
        items = [pad + _dump(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [f"{pad}{json.dumps(k)}: {_dump(v, indent + 2)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
