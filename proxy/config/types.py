"""The config's types: what `load_config` (proxy/config/reader.py) produces, and all that the
rest of the proxy reads. One frozen dataclass per section or credential type, a one-line comment
per field with its default (proxy/schema.py turns these into the JSON Schema's descriptions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from proxy.secret import Secret

Flow = Literal["password", "srp", "refresh_token", "client_credentials", "authorization_code"]
FLOWS: tuple[str, ...] = get_args(Flow)
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"  # loopback only by default
    port: int = 8080  # TCP port to listen on (0: any free port)
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the loopback names
    shared_secret: Secret | None = None  # required X-Authproxy-Secret value, if set
    drain_timeout: float = 10.0  # seconds in-flight requests get after SIGTERM
    header_timeout: float = 10.0  # seconds to send a whole request head, and to keep a body moving
    keepalive_timeout: float = 75.0  # seconds an idle keep-alive client connection is kept


@dataclass(frozen=True)
class StaticCredential:
    name: str
    value: Secret  # the header value, sent as is
    header: str = "Authorization"  # the header the value is sent in
    type: Literal["static"] = "static"  # a fixed value: a token, an API key


@dataclass(frozen=True)
class CognitoCredential:
    name: str
    flow: Flow  # password (default) | srp | refresh_token | client_credentials | authorization_code
    client_id: str  # the user pool app client's id
    region: str = ""  # default: the part of user_pool_id before "_"
    user_pool_id: str = ""  # required except for client_credentials
    client_secret: Secret | None = None  # when set, SECRET_HASH is sent
    username: str = ""  # password/srp: the user who signs in
    password: Secret | None = None  # password/srp; without it the `login` cache must hold a token
    refresh_token: Secret | None = None  # flow refresh_token; else taken from the login cache
    token: Literal["id", "access"] = "id"  # which JWT is sent; client_credentials: access only
    header: str = "Authorization"  # the header the token is sent in
    prefix: str = "Bearer "  # put before the token; "" sends the bare JWT
    refresh_margin: float = 300.0  # seconds before exp to fetch a new token in the background
    endpoint: str | None = None  # default https://cognito-idp.<region>.amazonaws.com/
    domain: str = ""  # client_credentials, authorization_code: token URL is <domain>/oauth2/token
    scopes: tuple[str, ...] = ()  # client_credentials: empty asks for all; authorization_code:
    #                               default openid, email, profile
    redirect_port: int = 8976  # authorization_code: login listens on 127.0.0.1:<port>/callback
    identity_provider: str | None = None  # authorization_code: skip the chooser, go to this IdP
    type: Literal["cognito"] = "cognito"  # a Cognito user pool token, fetched and refreshed

    @property
    def idp_url(self) -> str:
        return self.endpoint or f"https://cognito-idp.{self.region}.amazonaws.com/"


IAM_SOURCES = ("identity_pool", "keys", "aws")
MAX_SIGNED_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit is 10 MB


@dataclass(frozen=True)
class IamCredential:
    name: str
    source: Literal["identity_pool", "keys", "aws"]  # where the AWS credentials come from
    identity_pool_id: str = ""  # identity_pool: us-east-1:<guid>
    login: str | None = None  # identity_pool: a cognito credential whose ID token signs in
    endpoint: str | None = None  # identity_pool: default https://cognito-identity.<region>.amazonaws.com/
    access_key_id: str = ""  # keys
    secret_access_key: Secret | None = None  # keys
    session_token: Secret | None = None  # keys, optional
    profile: str | None = None  # aws: default $AWS_PROFILE, else the default profile
    region: str | None = None  # signing region; default from the endpoint host, else the pool's
    service: str = "execute-api"  # the service name SigV4 signs for
    max_signed_body: int = MAX_SIGNED_BODY  # bytes; the body is hashed before it is sent
    refresh_margin: float = 300.0  # seconds before the credentials expire to fetch new ones
    type: Literal["iam"] = "iam"  # each request signed with SigV4 (AWS_IAM authorization)
    header: str = "Authorization"  # what SigV4 sets (and what client_header: keep looks for)

    @property
    def pool_region(self) -> str:
        return self.identity_pool_id.partition(":")[0]


@dataclass(frozen=True)
class CommandCredential:
    name: str
    # argv, run without a shell; argv[0] is looked up on the proxy's PATH. Arguments may hold
    # secrets, so nothing prints them (describe, status and errors show argv[0] and a count).
    command: tuple[str, ...] = field(repr=False)
    header: str = "Authorization"  # the header the value is sent in
    prefix: str = ""  # put before the value, e.g. "Bearer "
    format: Literal["text", "json"] = "text"  # text: stdout trimmed; json: ExecCredential or token
    ttl: float = 300.0  # seconds to keep a value that states no expiry (a JWT's exp is one)
    refresh_margin: float = 30.0  # seconds before expiry to run the command again
    timeout: float = 10.0  # seconds a run may take before its process group is killed
    type: Literal["command"] = "command"  # a value a program prints, rerun before it expires


Credential = StaticCredential | CognitoCredential | IamCredential | CommandCredential


@dataclass(frozen=True)
class Endpoint:
    name: str  # letters, digits, . _ ~ -; served at /<name>/... unless prefix or host is set
    endpoint: str  # upstream base URL, no trailing slash
    auth: str | None = None  # a credential name, or none (stored as None): no auth header
    prefix: str = ""  # local path prefix, default "/<name>"; "/" takes every path
    host: str | None = None  # match on this Host header instead (port ignored)
    client_header: Literal["replace", "keep"] = "replace"  # when the client sent the auth header
    set_headers: tuple[tuple[str, str], ...] = ()  # extra headers set upstream
    remove_headers: tuple[str, ...] = ()  # client headers dropped before forwarding
    timeout: float = 30.0  # total seconds per upstream exchange
    connect_timeout: float = 5.0  # seconds to connect to the upstream (TCP and TLS)
    tls_verify: bool | str = True  # or a CA bundle path
    idle_timeout: float = 600.0  # WebSocket tunnels: seconds of silence before one is closed
    token_query: str | None = None  # WebSocket handshakes: the credential in this query parameter


@dataclass(frozen=True)
class Cors:
    allow_origins: tuple[str, ...] = ()  # exact origins, "*", or patterns like http://localhost:*
    allow_methods: tuple[str, ...] = HTTP_METHODS  # methods a preflight may ask for
    allow_headers: tuple[str, ...] = (  # request headers a preflight may ask for
        "Content-Type", "X-Amz-Date", "Authorization", "X-Api-Key", "X-Amz-Security-Token")
    expose_headers: tuple[str, ...] = ()  # answer headers a page's script may read
    allow_credentials: bool = False  # pages may send cookies; not with "*" in allow_origins
    max_age: int = 600  # seconds a browser may keep a preflight's answer
    allow_private_network: bool = True  # say yes to Private Network Access preflights


@dataclass(frozen=True)
class Logging:
    level: LogLevel = "info"  # debug | info | warning | error
    format: Literal["text", "json"] = "text"  # json: one object per line, for containers
    log_headers: bool = False  # log request/response headers, secrets redacted


@dataclass(frozen=True)
class Admin:
    prefix: str = "/_authproxy"  # path of healthz, readyz, metrics and the inspector
    inspector: bool = True  # serve the inspector page and its JSON APIs
    history: int = 200  # exchanges kept in memory for the inspector


@dataclass(frozen=True)
class TokenCache:
    """`token_cache`: a Redis that processes with the same credential settings share tokens in."""

    url: Secret | None = None  # redis://host:6379/0 or rediss://; None: each process keeps its own
    key_prefix: str = "authproxy:"  # put before every Redis key
    encryption_key: Secret | None = None  # required unless the url's host is loopback
    timeout: float = 0.5  # seconds per Redis call before the process uses its own cache
    tls_verify: bool | str = True  # rediss://: verify the server's certificate (or a CA bundle)

    @property
    def enabled(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class Config:
    listen: Listen = field(default_factory=Listen)  # the local listener
    credentials: Mapping[str, Credential] = field(default_factory=dict)  # header sources by name
    endpoints: tuple[Endpoint, ...] = ()  # the rule table: where each request goes, how signed
    cors: Cors = field(default_factory=Cors)  # which browser pages may call the proxy
    logging: Logging = field(default_factory=Logging)  # the access log and the proxy's messages
    admin: Admin = field(default_factory=Admin)  # the proxy's own pages, on its listener
    token_cache: TokenCache = field(default_factory=TokenCache)  # tokens a fleet shares
    source: str = ""  # the file this came from
