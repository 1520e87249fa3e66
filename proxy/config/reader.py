"""Reading the config file: `load_config(path)` / `parse_config(text)` into the types of
proxy/config/types.py.

YAML is composed with line marks, `${VAR}` / `${VAR:-default}` are expanded, every secret field
may come from its `*_file` twin, and every problem in the file is collected with its key path and
line and raised once, as a `ConfigError`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxy.config.types import (
    FLOWS,
    IAM_SOURCES,
    LOG_LEVELS,
    MAX_SIGNED_BODY,
    Admin,
    CognitoCredential,
    CommandCredential,
    Config,
    Cors,
    Credential,
    Endpoint,
    IamCredential,
    Listen,
    Logging,
    StaticCredential,
    TokenCache,
)
from proxy.secret import Secret

DEFAULT_CONFIG = "config/proxy.yaml"
# <api id>.execute-api.<region>.amazonaws.com: the signing region is in the host
_EXECUTE_API = re.compile(r"\.execute-api\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com$")


@dataclass(frozen=True)
class Problem:
    path: str  # key path, e.g. endpoints[1].auth
    line: int | None  # 1-based line in the file
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<file>'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}:{p.line}: {p.path or '<file>'}: {p.message}" if p.line
                else f"{self.source}: {p}" for p in self.problems]


# --- reading YAML with line marks -------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reader:
    """Turns a composed YAML node tree into plain values, recording the line of every key path
    and expanding `${VAR}` in strings."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.lines: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.loader: yaml.SafeLoader | None = None

    def value(self, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, val_node in node.value:
                key = str(self._scalar(key_node, path))
                sub = f"{path}.{key}" if path else key
                self.lines[sub] = key_node.start_mark.line + 1
                if key in out:
                    self.problems.append(Problem(sub, self.lines[sub], "duplicate key"))
                out[key] = self.value(val_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.value(n, f"{path}[{i}]") for i, n in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        assert self.loader is not None
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:  # e.g. a bare `=`, which YAML tags as !!value
            self.problems.append(Problem(path, node.start_mark.line + 1,
                                         f"not valid YAML: {getattr(e, 'problem', None) or e}"))
            return None
        if not isinstance(value, str) or "${" not in value:
            return value
        expanded = self._expand(value, path, node.start_mark.line + 1)
        if getattr(node, "style", None) is None:
            # A plain scalar: `port: ${PORT}` becomes an int, as `port: 8080` would.
            tag = self.loader.resolve(yaml.ScalarNode, expanded, (True, False))  # type: ignore
            return self.loader.construct_object(yaml.ScalarNode(tag, expanded), deep=True)
        return expanded

    def _expand(self, text: str, path: str, line: int) -> str:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.problems.append(Problem(path, line, f"environment variable {name} is not set "
                                         f"(set it, or write ${{{name}:-default}})"))
            return ""
        return _VAR.sub(sub, text)


# --- validation ------------------------------------------------------------------------------

class _Section:
    """One mapping of the file, read key by key; whatever is left unread is an unknown key."""

    def __init__(self, v: _Validator, data: Any, path: str, known: tuple[str, ...]) -> None:
        self.v, self.path = v, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            v.error(path, f"must be a mapping, got {_type_name(data)}")
            data = {}
        self.data: dict[str, Any] = data
        for key in data:
            if key not in known:
                v.error(self.sub(key), f"unknown key{_suggest(key, known)}")

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any,
            check: Callable[[Any], str | None] | None = None) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            want = " or ".join(_type_name(k()) if k is not tuple else "list" for k in kinds)
            self.v.error(self.sub(key), f"must be {want}, got {_type_name(value)} {value!r}")
            return default
        problem = check(value) if check else None
        if problem:
            self.v.error(self.sub(key), problem)
            return default
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            self.v.error(self.sub(key), f"must be one of {', '.join(choices)}, got {value!r}"
                         f"{_suggest(str(value), choices)}")
            return default
        return str(value)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.v.error(f"{self.sub(key)}[{i}]", f"must be a string, got {_type_name(item)}")
        return tuple(out)

    def secret(self, key: str, required: bool = False) -> Secret | None:
        """A secret field or its `<key>_file` twin (read once, trailing newline dropped)."""
        inline, file_key = self.data.get(key), f"{key}_file"
        path = self.get(file_key, str, None)
        if inline is not None and path is not None:
            self.v.error(self.sub(file_key), f"set {key} or {file_key}, not both")
            return None
        if path is not None:
            try:
                text = Path(path).expanduser().read_text().rstrip("\r\n")
            except OSError as e:
                self.v.error(self.sub(file_key), f"cannot read {path}: {e.strerror}")
                return None
            if not text:
                self.v.error(self.sub(file_key), f"{path} is empty")
                return None
            if _controls(text):
                self.v.error(self.sub(file_key), f"{path} holds a line break or control "
                             "character inside the value; it would break the header")
                return None
            return Secret(text)
        if inline is None:
            if required:
                self.v.error(self.sub(key), f"is required (or {file_key})", self.path)
            return None
        if not isinstance(inline, str | int) or isinstance(inline, bool):
            self.v.error(self.sub(key), f"must be a string, got {_type_name(inline)}")
            return None
        if inline == "":
            self.v.error(self.sub(key), "is empty (is its environment variable set?)")
            return None
        if _controls(str(inline)):
            # The value goes into a header line as is: a line break would inject headers.
            self.v.error(self.sub(key), "holds a line break or control character")
            return None
        return Secret(str(inline))

    def require(self, key: str, what: str = "") -> None:
        if self.data.get(key) in (None, ""):
            self.v.error(self.sub(key), f"is required{what}", self.path)


class _Validator:
    def __init__(self, lines: dict[str, int]) -> None:
        self.lines = lines
        self.problems: list[Problem] = []

    def error(self, path: str, message: str, line_of: str | None = None) -> None:
        if any(p.path == path for p in self.problems):
            return  # one problem per key: a missing ${VAR} need not also be "is required"
        line = self.lines.get(path) or self.lines.get(line_of or "")
        self.problems.append(Problem(path, line, message))

    def section(self, data: Any, path: str, known: tuple[str, ...]) -> _Section:
        return _Section(self, data, path, known)


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
            float: "a number", bool: "true/false", type(None): "null"}.get(type(value),
                                                                          type(value).__name__)


def _suggest(word: str, options: Any) -> str:
    import difflib  # only a config with a mistake in it needs it, not every start

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _url(value: str) -> str | None:
    m = re.fullmatch(r"(https?)://([^/?#@\s]+)(/[^?#\s]*)?", value)
    if not m:
        return f"must be an http(s) URL without query or fragment, got {value!r}"
    return None


def _path_prefix(value: str) -> str | None:
    if not value.startswith("/") or "//" in value or "?" in value or "#" in value:
        return f"must be a path starting with '/', got {value!r}"
    if any(seg in (".", "..") for seg in value.split("/")):
        return "must not contain '.' or '..' segments"
    return None


def _controls(value: str) -> bool:
    """Control characters (tab allowed) that have no place in a header value."""
    return any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value)


def _header_name(value: str) -> str | None:
    return None if re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value) else (
        f"is not a valid header name: {value!r}")


# The framing and hop-by-hop headers are the proxy's alone (proxy/target.py drops them both
# ways); letting the config set or remove them would reopen request smuggling.
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "trailers", "upgrade"})


def _why_not(lower_name: str) -> str:
    return "message framing" if lower_name in _FRAMING else "hop-by-hop"


_CRED_KEYS = {
    "static": ("type", "header", "value", "value_file"),
    "iam": ("type", "source", "identity_pool_id", "login", "endpoint", "access_key_id",
            "secret_access_key", "secret_access_key_file", "session_token", "session_token_file",
            "profile", "region", "service", "max_signed_body", "refresh_margin"),
    "cognito": ("type", "flow", "region", "user_pool_id", "client_id", "client_secret",
                "client_secret_file", "username", "password", "password_file", "refresh_token",
                "refresh_token_file", "token", "header", "prefix", "refresh_margin", "endpoint",
                "domain", "scopes", "redirect_port", "identity_provider"),
    "command": ("type", "command", "header", "prefix", "format", "ttl", "refresh_margin",
                "timeout"),
}


def _credential(v: _Validator, name: str, data: Any) -> Credential | None:
    path = f"credentials.{name}"
    kind = data.get("type") if isinstance(data, dict) else None
    if kind not in _CRED_KEYS:
        if isinstance(data, dict) and kind is None:
            v.error(f"{path}.type", "is required: static, cognito, iam or command", path)
        elif isinstance(data, dict):
            v.error(f"{path}.type", f"must be static, cognito, iam or command, got {kind!r}"
                    f"{_suggest(str(kind), _CRED_KEYS)}")
        else:
            v.error(path, f"must be a mapping, got {_type_name(data)}")
        return None
    s = v.section(data, path, _CRED_KEYS[kind])
    if kind == "iam":
        return _iam(v, s, name)
    if kind == "command":
        return _command(v, s, name)
    header = s.get("header", str, "Authorization", _header_name)
    if kind == "static":
        value = s.secret("value", required=True)
        return StaticCredential(name=name, header=header, value=value) if value else None

    flow = s.choice("flow", FLOWS, "password")
    if flow == "authorization_code":
        return _authorization_code(v, s, name, header)
    for key in AUTHORIZATION_CODE_KEYS:
        if key in s.data:
            v.error(s.sub(key), "is for flow authorization_code only")
    pool = s.get("user_pool_id", str, "", lambda p: None if re.fullmatch(
        r"[\w-]+_[0-9A-Za-z]+", p) else f"must look like us-east-1_AbCdEf123, got {p!r}")
    region = s.get("region", str, pool.partition("_")[0] if "_" in pool else "")
    token = s.choice("token", ("id", "access"), "access" if flow == "client_credentials" else "id")
    secret = s.secret("client_secret")
    s.require("client_id")
    if flow == "client_credentials":
        s.require("domain", " for flow client_credentials (https://<prefix>.auth.<region>."
                            "amazoncognito.com)")
        if secret is None and "client_secret_file" not in s.data:
            v.error(s.sub("client_secret"), "is required for flow client_credentials", path)
        if token != "access":
            v.error(s.sub("token"), "must be access for flow client_credentials "
                                    "(it returns no ID token)")
    else:
        s.require("user_pool_id")
        if not region and not s.data.get("endpoint"):
            v.error(s.sub("region"), "is required (could not be taken from user_pool_id)", path)
        if flow in ("password", "srp"):
            s.require("username")
    return CognitoCredential(
        name=name, flow=flow,  # type: ignore[arg-type]
        client_id=str(s.get("client_id", (str, int), "")), region=region, user_pool_id=pool,
        client_secret=secret,
        username=str(s.get("username", (str, int), "")),
        password=s.secret("password") if flow in ("password", "srp") else None,
        refresh_token=s.secret("refresh_token"), token=token,  # type: ignore[arg-type]
        header=header, prefix=s.get("prefix", str, "Bearer ", lambda p: (
            "holds a line break or control character" if _controls(p) else None)),
        refresh_margin=s.get("refresh_margin", float, 300.0,
                             lambda m: None if m >= 0 else "must be 0 or more"),
        endpoint=s.get("endpoint", str, None, _url),
        domain=s.get("domain", str, "", _url).rstrip("/"),
        scopes=s.strings("scopes", ()))


# --- flow: authorization_code (managed login / Hosted UI) -------------------------------------

AUTHORIZATION_CODE_KEYS = ("redirect_port", "identity_provider")
# Keys of the other Cognito flows that mean nothing here: the user signs in on the managed
# login page, and its domain (not cognito-idp.<region>) answers every call.
_NOT_FOR_AUTHORIZATION_CODE = ("user_pool_id", "region", "username", "password",
                               "password_file", "refresh_token", "refresh_token_file", "endpoint")
_AUTHORIZATION_CODE_SCOPES = ("openid", "email", "profile")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _authorization_code(v: _Validator, s: _Section, name: str,
                        header: str) -> CognitoCredential:
    for key in _NOT_FOR_AUTHORIZATION_CODE:
        if key in s.data:
            v.error(s.sub(key), "is not used by flow authorization_code (the user signs in on "
                    "the managed login page; `authproxy login` saves the refresh token)")
    s.require("domain", " for flow authorization_code (https://<prefix>.auth.<region>."
                        "amazoncognito.com, or your custom domain)")
    s.require("client_id")
    token = s.choice("token", ("id", "access"), "id")
    scopes = s.strings("scopes", _AUTHORIZATION_CODE_SCOPES)
    if "openid" not in scopes:
        # Without it there is no ID token: no nonce to check and no user to show.
        v.error(s.sub("scopes"), "must include openid (Cognito returns an ID token only then)")
    for i, scope in enumerate(scopes):
        if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope):  # RFC 6749 scope-token
            v.error(f"{s.sub('scopes')}[{i}]", f"is not a valid OAuth scope: {scope!r}")
    return CognitoCredential(
        name=name, flow="authorization_code", client_id=str(s.get("client_id", (str, int), "")),
        client_secret=s.secret("client_secret"), token=token,  # type: ignore[arg-type]
        header=header, prefix=s.get("prefix", str, "Bearer ", lambda p: (
            "holds a line break or control character" if _controls(p) else None)),
        refresh_margin=s.get("refresh_margin", float, 300.0,
                             lambda m: None if m >= 0 else "must be 0 or more"),
        domain=s.get("domain", str, "", _managed_login_domain).rstrip("/"),
        scopes=scopes,
        redirect_port=s.get("redirect_port", int, 8976, lambda p: None if 0 < p < 65536 else
                            "must be 1-65535 (http://localhost:<port>/callback must be an "
                            "allowed callback URL of the app client)"),
        identity_provider=s.get("identity_provider", str, None, lambda p: None if re.fullmatch(
            r"[\w.@:+-]+", p) else f"must be an identity provider name like Google or "
            f"COGNITO, got {p!r}"))


def _managed_login_domain(value: str) -> str | None:
    m = re.fullmatch(r"(https?)://([^/?#@\s]+)/?", value)
    if not m:
        return ("must be the managed login domain's base URL, like https://myapp.auth."
                f"us-east-1.amazoncognito.com (no path, query or fragment), got {value!r}")
    host = m.group(2).rsplit(":", 1)[0] if not m.group(2).startswith("[") else \
        m.group(2).split("]")[0] + "]"
    if m.group(1) == "http" and host not in _LOOPBACK_HOSTS:
        # The authorization code and the refresh token travel to this host.
        return f"must be https:// (plain http only on localhost/127.0.0.1), got {value!r}"
    return None


# The keys that belong to one source only; another source's key is an error.
_IAM_SOURCE_KEYS = {"identity_pool": ("identity_pool_id", "login", "endpoint"),
                    "keys": ("access_key_id", "secret_access_key", "secret_access_key_file",
                             "session_token", "session_token_file"),
                    "aws": ("profile",)}


def _iam(v: _Validator, s: _Section, name: str) -> IamCredential | None:
    path = s.path
    source = s.choice("source", IAM_SOURCES, "")
    if "source" not in s.data:
        v.error(s.sub("source"), f"is required: {', '.join(IAM_SOURCES)}", path)
    pool = s.get("identity_pool_id", str, "", lambda p: None if re.fullmatch(
        r"[a-z]{2}(-[a-z]+)+-\d:[0-9a-f-]{36}", p) else
        f"must look like us-east-1:0f3c5e1a-1111-2222-3333-444455556666, got {p!r}")
    key_id = str(s.get("access_key_id", (str, int), ""))
    secret = s.secret("secret_access_key", required=source == "keys")
    token = s.secret("session_token")
    for other, keys in _IAM_SOURCE_KEYS.items():
        for key in keys:
            if other != source and key in s.data and source:
                v.error(s.sub(key), f"is for source {other}, not {source}")
    if source == "identity_pool":
        s.require("identity_pool_id", " for source identity_pool")
    elif source == "keys":
        s.require("access_key_id", " for source keys")
    elif source == "aws" and importlib.util.find_spec("botocore") is None:
        v.error(s.sub("source"), "source aws needs botocore: pip install 'authproxy[aws]'")
    if not source:
        return None
    return IamCredential(
        name=name, source=source,  # type: ignore[arg-type]
        identity_pool_id=pool, login=s.get("login", str, None),
        endpoint=s.get("endpoint", str, None, _url), access_key_id=key_id,
        secret_access_key=secret, session_token=token or None,
        profile=s.get("profile", str, None),
        region=s.get("region", str, None, lambda r: None if re.fullmatch(
            r"[a-z]{2}(-[a-z]+)+-\d", r) else f"must be a region like us-east-1, got {r!r}"),
        service=s.get("service", str, "execute-api"),
        max_signed_body=s.get("max_signed_body", int, MAX_SIGNED_BODY, _positive),
        refresh_margin=s.get("refresh_margin", float, 300.0,
                             lambda m: None if m >= 0 else "must be 0 or more"))


def _command(v: _Validator, s: _Section, name: str) -> CommandCredential | None:
    argv = _argv(v, s)
    cred = CommandCredential(  # every key read (and checked) even when argv is wrong
        name=name, command=argv,
        header=s.get("header", str, "Authorization", _header_name),
        prefix=s.get("prefix", str, "", lambda p: (
            "holds a line break or control character" if _controls(p) else None)),
        format=s.choice("format", ("text", "json"), "text"),  # type: ignore[arg-type]
        ttl=s.get("ttl", float, 300.0, _positive),
        refresh_margin=s.get("refresh_margin", float, 30.0,
                             lambda m: None if m >= 0 else "must be 0 or more"),
        timeout=s.get("timeout", float, 10.0, _positive))
    return cred if argv else None


def _argv(v: _Validator, s: _Section) -> tuple[str, ...]:
    """`command`: a list of strings, run as argv. A string is refused rather than split: it
    reads like a shell line, and running it as one is exactly what must never happen."""
    key = s.sub("command")
    raw = s.data.get("command")
    if raw is None:
        v.error(key, "is required: the program and its arguments as a list, "
                "e.g. [vault, read, -field=token, secret/api]", s.path)
        return ()
    if isinstance(raw, str):
        # The value is not quoted back: an argument may be a secret from ${VAR}.
        v.error(key, "must be a list of strings, not a string: it is run without a shell, so "
                "write the program and each argument as items, e.g. "
                "[vault, read, -field=token, secret/api]")
        return ()
    if not isinstance(raw, list) or not raw:
        v.error(key, "must be a non-empty list of strings (the program, then its arguments)"
                if isinstance(raw, list) else f"must be a list of strings, got {_type_name(raw)}")
        return ()
    argv: list[str] = []
    for i, item in enumerate(raw):
        if isinstance(item, bool) or not isinstance(item, str | int):
            # Numbers are taken (`[sleep, 5]`); anything else is likely a YAML slip.
            v.error(f"{key}[{i}]", f"must be a string, got {_type_name(item)}")
        elif "\0" in str(item):
            v.error(f"{key}[{i}]", "holds a NUL character, which no argument can carry")
        else:
            argv.append(str(item))
    if argv and not argv[0]:
        v.error(f"{key}[0]", "is empty: it must name the program to run")
    return tuple(argv) if len(argv) == len(raw) and argv[0] else ()


_ENDPOINT_KEYS = ("name", "endpoint", "auth", "prefix", "host", "client_header", "set_headers",
                  "remove_headers", "timeout", "connect_timeout", "tls_verify", "idle_timeout",
                  "token_query")
# A WebSocket API may be written as such; it is reached as https/http (the handshake is an
# HTTP request), so the scheme is kept in its HTTP form from here on.
_WS_SCHEMES = {"wss://": "https://", "ws://": "http://"}


def _endpoint_url(value: str) -> str | None:
    for ws, http in _WS_SCHEMES.items():
        if value[:len(ws)].lower() == ws:
            value = http + value[len(ws):]
    problem = _url(value)
    return problem and problem.replace("an http(s) URL", "an http(s) URL (or ws/wss)")


def _endpoint(v: _Validator, i: int, data: Any, creds: Mapping[str, Any]) -> Endpoint | None:
    path = f"endpoints[{i}]"
    s = v.section(data, path, _ENDPOINT_KEYS)
    s.require("name")
    s.require("endpoint")
    name = s.get("name", str, "", lambda n: None if re.fullmatch(r"[\w.~-]+", n) else
                 "may hold only letters, digits and . _ ~ -")
    url = s.get("endpoint", str, "", _endpoint_url).rstrip("/")
    for ws, http in _WS_SCHEMES.items():
        if url[:len(ws)].lower() == ws:
            url = http + url[len(ws):]
    auth = s.get("auth", str, "none")
    if auth != "none" and auth not in creds:
        v.error(s.sub("auth"), f"unknown credential {auth!r}"
                f"{_suggest(auth, [*creds, 'none'])}" + ("" if creds else
                " (no credentials are defined; use none or add one under credentials)"))
    host = s.get("host", str, None, lambda h: None if re.fullmatch(r"[\w.-]+", h) else
                 f"must be a host name without port or scheme, got {h!r}")
    default_prefix = "/" if host and "prefix" not in s.data else f"/{name}"
    prefix = s.get("prefix", str, default_prefix, _path_prefix)
    prefix = prefix.rstrip("/") or "/"
    tls = s.get("tls_verify", (bool, str), True)
    if isinstance(tls, str) and not Path(tls).expanduser().is_file():
        v.error(s.sub("tls_verify"), f"CA bundle {tls!r} is not a readable file")
    set_headers = s.get("set_headers", dict, {})
    for key, val in set_headers.items():
        low = str(key).lower()
        if low in _FRAMING or low in _HOP_BY_HOP or low.startswith("proxy-"):
            v.error(f"{s.sub('set_headers')}.{key}", f"{key} is a {_why_not(low)} header; "
                    "the proxy sets it itself")
        elif _header_name(key) or not isinstance(val, str | int) or _controls(str(val)):
            v.error(f"{s.sub('set_headers')}.{key}", "must map a header name to a string "
                    "without line breaks or control characters")
    remove_headers = s.strings("remove_headers", ())
    for j, name in enumerate(remove_headers):
        if name.lower() in _FRAMING:
            v.error(f"{s.sub('remove_headers')}[{j}]", f"{name} is a {_why_not(name.lower())} "
                    "header; the proxy sets it itself and it cannot be removed")
    return Endpoint(
        name=name, endpoint=url, auth=None if auth == "none" else auth, prefix=prefix, host=host,
        client_header=s.choice("client_header", ("replace", "keep"), "replace"),  # type: ignore
        set_headers=tuple((k, str(val)) for k, val in set_headers.items()),
        remove_headers=remove_headers,
        timeout=s.get("timeout", float, 30.0, _positive),
        connect_timeout=s.get("connect_timeout", float, 5.0, _positive),
        tls_verify=tls,
        idle_timeout=s.get("idle_timeout", float, 600.0, _positive),
        token_query=s.get("token_query", str, None, lambda q: None if re.fullmatch(
            r"[A-Za-z0-9_.~-]+", q) else "must be a query parameter name (letters, digits, "
            f"_ . ~ -), got {q!r}"))


_SIGNATURE_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token"})
# The keys each section accepts (what is not here is an unknown key); proxy/schema.py reads them.
_TOP_KEYS = ("listen", "credentials", "endpoints", "cors", "logging", "admin", "token_cache")
_LISTEN_KEYS = ("host", "port", "allowed_hosts", "shared_secret", "shared_secret_file",
                "drain_timeout", "header_timeout", "keepalive_timeout")
_CORS_KEYS = tuple(Cors.__dataclass_fields__)
_LOGGING_KEYS = ("level", "format", "log_headers")
_ADMIN_KEYS = ("prefix", "inspector", "history")
_TOKEN_CACHE_KEYS = ("url", "url_file", "key_prefix", "encryption_key", "encryption_key_file",
                     "timeout", "tls_verify")


def _validate(data: Any, v: _Validator, source: str) -> Config:
    top = v.section(data, "", _TOP_KEYS)
    ls = v.section(top.data.get("listen"), "listen", _LISTEN_KEYS)
    listen = Listen(
        host=ls.get("host", str, "127.0.0.1"),
        port=ls.get("port", int, 8080, lambda p: None if 0 <= p < 65536 else "must be 0-65535"),
        allowed_hosts=tuple(h.lower() for h in ls.strings("allowed_hosts", ())),
        shared_secret=ls.secret("shared_secret"),
        drain_timeout=ls.get("drain_timeout", float, 10.0, lambda t: None if t >= 0 else
                             "must be 0 or more"),
        header_timeout=ls.get("header_timeout", float, 10.0, _positive),
        keepalive_timeout=ls.get("keepalive_timeout", float, 75.0, _positive))

    raw_creds = top.get("credentials", dict, {})
    credentials: dict[str, Credential] = {}
    for name, cdata in raw_creds.items():
        if name == "none":
            v.error(f"credentials.{name}", "'none' is reserved for endpoints without auth")
            continue
        cred = _credential(v, name, cdata)
        if cred:
            credentials[name] = cred

    for name, cred in credentials.items():
        if isinstance(cred, IamCredential) and cred.login is not None:
            signs_in = credentials.get(cred.login)
            if cred.login not in raw_creds:
                v.error(f"credentials.{name}.login", f"unknown credential {cred.login!r}"
                        f"{_suggest(cred.login, [n for n in raw_creds if n != name])}")
            elif signs_in is not None and not (isinstance(signs_in, CognitoCredential)
                                               and signs_in.flow != "client_credentials"):
                v.error(f"credentials.{name}.login", f"{cred.login!r} must be a cognito "
                        "credential that signs a user in (its ID token buys the pool's "
                        "authenticated role)")

    endpoints: list[Endpoint] = []
    seen: dict[tuple[str | None, str], int] = {}
    for i, edata in enumerate(top.get("endpoints", list, [])):
        ep = _endpoint(v, i, edata, raw_creds)
        if ep is None:
            continue
        key = (ep.host, ep.prefix)
        if key in seen:
            v.error(f"endpoints[{i}].prefix", f"same host and prefix as endpoints[{seen[key]}]"
                    f" ({ep.prefix!r}); one of them could never match", f"endpoints[{i}]")
        seen[key] = i
        endpoints.append(ep)
    for i, ep in enumerate(endpoints):
        cred = credentials.get(ep.auth or "")
        host = re.sub(r"^https?://([^/:]+).*", r"\1", ep.endpoint)
        if isinstance(cred, IamCredential) and not (cred.region or cred.pool_region
                                                    or _EXECUTE_API.search(host)):
            v.error(f"endpoints[{i}].auth", f"credential {cred.name!r} signs with SigV4 and "
                    f"{host} names no region: set credentials.{cred.name}.region")
        if ep.token_query is not None and (ep.auth is None or isinstance(cred, IamCredential)):
            v.error(f"endpoints[{i}].token_query", "needs a credential whose value can go in "
                    "the query: " + ("an iam credential presigns the handshake URL itself"
                                     if cred else "this endpoint has auth: none"))
        if isinstance(cred, IamCredential):
            for header, _ in ep.set_headers:
                if header.lower() in _SIGNATURE_HEADERS:
                    v.error(f"endpoints[{i}].set_headers.{header}", f"{header} is part of the "
                            f"SigV4 signature credential {cred.name!r} makes for every request; "
                            "it cannot be set")
    names = [e.name for e in endpoints]
    for i, n in enumerate(names):
        if n and names.index(n) != i:
            v.error(f"endpoints[{i}].name", f"duplicate endpoint name {n!r}")

    cs = v.section(top.data.get("cors"), "cors", _CORS_KEYS)
    methods = tuple(m.upper() for m in cs.strings("allow_methods", Cors.allow_methods))
    cors = Cors(
        allow_origins=cs.strings("allow_origins", ()), allow_methods=methods,
        allow_headers=cs.strings("allow_headers", Cors.allow_headers),
        expose_headers=cs.strings("expose_headers", ()),
        allow_credentials=cs.get("allow_credentials", bool, False),
        max_age=cs.get("max_age", int, 600, lambda a: None if a >= 0 else "must be 0 or more"),
        allow_private_network=cs.get("allow_private_network", bool, True))
    if cors.allow_credentials and "*" in cors.allow_origins:
        v.error("cors.allow_origins", "'*' cannot be used with allow_credentials: true; "
                "list the origins (patterns like http://localhost:* work)")
    for i, origin in enumerate(cors.allow_origins):
        m = re.fullmatch(r"https?://(\[[0-9a-fA-F:.]+\]|[\w.*-]+)(:(\d+|\*))?", origin)
        if origin not in ("*", "null") and not m:
            v.error(f"cors.allow_origins[{i}]", f"must be an origin like http://localhost:3000 "
                    f"(scheme://host[:port], no path), got {origin!r}")
        elif m and any("*" in label and label != "*" for label in m.group(1).split(".")):
            v.error(f"cors.allow_origins[{i}]", f"a '*' must be a whole host label, as in "
                    f"https://*.example.com; got {origin!r}")

    lg = v.section(top.data.get("logging"), "logging", _LOGGING_KEYS)
    logging_ = Logging(level=lg.choice("level", LOG_LEVELS, "info"),  # type: ignore[arg-type]
                       format=lg.choice("format", ("text", "json"), "text"),  # type: ignore
                       log_headers=lg.get("log_headers", bool, False))

    ad = v.section(top.data.get("admin"), "admin", _ADMIN_KEYS)
    admin = Admin(prefix=ad.get("prefix", str, "/_authproxy", _path_prefix).rstrip("/") or "",
                  inspector=ad.get("inspector", bool, True),
                  history=ad.get("history", int, 200, lambda h: None if h >= 0 else
                                 "must be 0 or more"))
    if not admin.prefix:
        v.error("admin.prefix", "must not be '/': it would hide every endpoint")
    for i, ep in enumerate(endpoints):
        if ep.host is None and (ep.prefix == admin.prefix or
                                ep.prefix.startswith(admin.prefix + "/")):
            v.error(f"endpoints[{i}].prefix", f"is inside admin.prefix {admin.prefix!r}")
    return Config(listen=listen, credentials=credentials, endpoints=tuple(endpoints), cors=cors,
                  logging=logging_, admin=admin, token_cache=_token_cache(v, top.data),
                  source=source)


_LOOPBACK_NAMES = ("localhost", "::1")  # and 127.0.0.0/8, *.localhost: see _loopback
MIN_ENCRYPTION_KEY = 16  # characters: HKDF spreads a key's entropy, it cannot add any


def _token_cache(v: _Validator, top: dict[str, Any]) -> TokenCache:
    s = v.section(top.get("token_cache"), "token_cache", _TOKEN_CACHE_KEYS)
    url = s.secret("url")  # a secret: redis://user:password@host holds the password
    key = s.secret("encryption_key")
    cache = TokenCache(
        url=url, encryption_key=key,
        key_prefix=s.get("key_prefix", str, "authproxy:", lambda p: (
            "must not hold spaces or control characters" if _controls(p) or " " in p
            else None)),
        timeout=s.get("timeout", float, 0.5, _positive),
        tls_verify=s.get("tls_verify", (bool, str), True))
    if url is None:
        for k in ("encryption_key", "encryption_key_file", "tls_verify", "key_prefix", "timeout"):
            if k in s.data:
                v.error(s.sub(k), "has no effect without token_cache.url", "token_cache")
        return cache
    where = s.sub("url_file" if "url_file" in s.data else "url")
    m = re.fullmatch(r"(rediss?)://(?:([^@/?#]*)@)?(\[[0-9A-Fa-f:.]+\]|[^:/?#@\[\]]+)"
                     r"(?::(\d{1,5}))?(?:/(\d{0,2}))?", url.reveal())
    if not m:
        # The message never quotes the URL: it may hold a password.
        v.error(where, "must look like redis://[user:password@]host[:port][/db] or rediss://... "
                "(no query string)")
        return cache
    scheme, host = m.group(1), m.group(3).strip("[]").lower()
    if m.group(4) and not 0 < int(m.group(4)) < 65536:
        v.error(where, "port must be 1-65535")
    if isinstance(cache.tls_verify, str):
        if scheme != "rediss":
            v.error(s.sub("tls_verify"), "a CA bundle is for rediss:// URLs only")
        elif not Path(cache.tls_verify).expanduser().is_file():
            v.error(s.sub("tls_verify"), f"CA bundle {cache.tls_verify!r} is not a readable file")
    if key is None and not _loopback(host) and "encryption_key_file" not in s.data:
        v.error(s.sub("encryption_key"), "is required when Redis is not on loopback (or "
                "encryption_key_file): the tokens are encrypted with it; make one with "
                "`openssl rand -base64 32` and give every member the same", "token_cache")
    elif key is not None and len(key.reveal()) < MIN_ENCRYPTION_KEY:
        v.error(s.sub("encryption_key_file" if "encryption_key_file" in s.data else
                      "encryption_key"),
                f"is too short ({len(key.reveal())} characters, at least {MIN_ENCRYPTION_KEY}): "
                "make one with `openssl rand -base64 32`")
    if importlib.util.find_spec("redis") is None:
        v.error(where, "token_cache needs redis-py: pip install 'authproxy[redis]'", "token_cache")
    return cache


def _loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.endswith(".localhost") or re.fullmatch(
        r"127(\.\d{1,3}){3}", host) is not None


def parse_config(text: str, source: str = "<config>",
                 env: Mapping[str, str] | None = None) -> Config:
    reader = _Reader(os.environ if env is None else env)
    try:
        loader = yaml.SafeLoader(text)
        reader.loader = loader
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError(source, [Problem("", line, f"not valid YAML: "
                                           f"{getattr(e, 'problem', None) or e}")]) from None
    data = reader.value(node, "") if node is not None else {}
    v = _Validator(reader.lines)
    v.problems.extend(reader.problems)
    config = _validate(data, v, source)
    if v.problems:
        raise ConfigError(source, sorted(v.problems, key=lambda p: (p.line or 0, p.path)))
    return config


def load_config(path: str | os.PathLike[str],
                env: Mapping[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), [Problem("", None, f"cannot read config file: {e.strerror}"
                                              " (use -c FILE or set AUTHPROXY_CONFIG)")]) from None
    return parse_config(text, str(path), env)
