"""The small protocol every credential strategy follows: "the headers for this request".

httpx's `Auth` is the model. Most strategies ignore the request: a static value or a bearer
token is a tuple of (name, value) pairs computed ahead of time, which `current()` hands out
with a plain lookup (no allocation per request). A signing strategy (`iam`) needs to see the
request as it goes upstream, so the one method that may fetch, `headers_for`, is given those
facts (`Outgoing`); it returns `Authorization`, `X-Amz-Date`, `X-Amz-Security-Token` there.
`requires_request_body` tells the forwarder to read the body first (to hash it) for such a
strategy only, and to stream it for every other.

The caller never branches on the strategy:

    headers = source.current() or await source.headers_for(outgoing)

or, where the request is known (a signing strategy answers it without waiting when it holds
its keys, which is every request but those that must fetch them):

    headers = source.current_for(outgoing) or await source.headers_for(outgoing)

Strategies that call HTTP services (`uses_http`) use aiohttp's client (the app's one
ClientSession, given at `start`) but never `aiohttp.web`; the app makes that session only when
one of them is configured, so that a config of static values never loads aiohttp. They also
describe themselves (`describe()` for check/explain/token/hints, `status()` for
readyz/metrics/inspector), so nothing above them switches on their class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from proxy.credentials.aws_keys import AwsKeys

if TYPE_CHECKING:
    import aiohttp  # for the types only: a strategy that calls HTTP imports it itself

    from proxy.credentials.shared import SharedSlot  # builds on refresh.py, which imports us

Headers = tuple[tuple[str, str], ...]  # (name, value) pairs, in the order they are sent
# login's prompt(kind, message, secret) -> answer; kind is one of: username, password,
# new_password, attribute, mfa_code, mfa_choice, and browser: `message` is a sign-in URL for
# the CLI to show and open in a browser, the answer is ignored. `secret` asks not to echo.
Prompt = Callable[[str, str, bool], str | Awaitable[str]]


class CredentialsUnavailable(Exception):
    """No header value can be had now. The message says why and what to do, never a secret."""


@dataclass(slots=True)
class Outgoing:
    """A request as it goes upstream, for a strategy whose headers depend on it. Not frozen:
    one is made per signed request, and a frozen dataclass's __init__ costs over 1 us more."""

    method: str
    host: str  # the Host header sent upstream
    raw_path: str  # the path as forwarded, percent-encoding kept byte for byte
    query: str  # the raw query string, without '?'
    headers: Sequence[tuple[str, str]]  # the headers going upstream, the credential's aside
    body_sha256: str | None = None  # hex; given only when `requires_request_body` is True


@dataclass(frozen=True)
class Description:
    """What a strategy is, from its settings alone (no network), secrets redacted: for
    `check`, `explain`, `token`, `login` and the hints."""

    name: str
    type: str  # static, cognito, ...
    header: str  # the header `client_header` governs and an authorizer reads
    summary: str  # check's line: "static, header x-api-key: ***(8 chars)"
    how: str  # explain's "credential: NAME (how)"
    # the headers explain shows as injected: a secret redacted, a value only known at run time
    # as a placeholder; `redacted` says the values are shown as they are (already redacted)
    headers: Headers
    redacted: bool = False
    prefix: str = ""  # put before the token in the header value; `token --raw` drops it
    flow: str = ""  # how the value is obtained, in the strategy's own terms
    refreshed: bool = False  # the proxy fetches the value and refreshes it before it expires
    settings: frozenset[str] = frozenset()  # config keys that shape the value (token, prefix)
    signs_in: bool = False  # `authproxy login NAME` has something to do
    aws_keys: bool = False  # `authproxy token NAME` prints AWS credentials (aws_credentials())


class LoginResult(ABC):
    """What `authproxy login` prints on success (no secret in it)."""

    @abstractmethod
    def __str__(self) -> str: ...


class CredentialSource(ABC):
    name: str
    header_name: str  # the header whose client copy `client_header` governs, e.g. Authorization
    # True: headers_for needs Outgoing.body_sha256, so the forwarder reads the body before
    # sending (bounded, spooled) instead of streaming it.
    requires_request_body: ClassVar[bool] = False
    max_request_body = 0  # with requires_request_body: the most the forwarder reads (else 413)
    refreshable: ClassVar[bool] = False  # True when `rejected` can produce new headers
    # Lower-case names of the headers it sets besides `header_name` (X-Amz-Date ...): a
    # client's own copies are dropped when the credential's go in.
    also_sets: ClassVar[frozenset[str]] = frozenset()
    # True: a WebSocket handshake carries this credential in its URL (`presign`), not in a
    # header, as API Gateway's IAM authorization of `$connect` wants.
    signs_url: ClassVar[bool] = False
    # True when it calls HTTP services (Cognito) through the session `start` gives it; only
    # then is there a session (aiohttp costs ~100 ms and ~10 MB at start). Per instance, since
    # it may depend on the settings (iam: an identity pool does, fixed keys do not).
    uses_http = False

    def link(self, sources: Mapping[str, CredentialSource]) -> None:  # noqa: B027
        """Called once all sources of a runtime exist (again after a reload): a strategy that
        builds on another (an identity pool signing in with a Cognito credential) finds it."""

    def depends_on(self) -> tuple[str, ...]:
        """Names of the credentials this one builds on (what `link` looks up)."""
        return ()

    def share(self, slot: SharedSlot) -> None:  # noqa: B027
        """Called before `start` when `token_cache` is set: a strategy whose values expire
        gives its refresher a store in the fleet's cache (see proxy/credentials/shared.py).
        Values that are the same everywhere (static) or that differ per machine although the
        settings are the same (botocore's chain) stay in the process."""

    async def aws_credentials(self) -> tuple[AwsKeys, float | None]:
        """AWS credentials an SDK can use, with their expiry (epoch seconds) if any."""
        raise CredentialsUnavailable(f"{self.name} is a {self.describe().type} credential, "
                                     "not AWS credentials")

    async def start(self, session: aiohttp.ClientSession | None) -> None:  # noqa: B027
        """Called once at start (and for a source a reload brings); may begin a first fetch.
        `session`: the app's ClientSession, never None for a source that `uses_http`."""

    async def close(self) -> None:  # noqa: B027
        """Stop background work."""

    def current(self) -> Headers | None:
        """The headers if they are ready now and do not depend on the request: a lookup,
        without waiting. None means: await headers_for()."""
        return None

    def current_for(self, request: Outgoing) -> Headers | None:
        """`current()` for a strategy whose headers depend on the request: the headers for it
        if they can be made now, without waiting (a signature over held keys). None means:
        await headers_for()."""
        return self.current()

    @abstractmethod
    async def headers_for(self, request: Outgoing) -> Headers:
        """The headers for this request, fetching what they need; raises
        CredentialsUnavailable."""

    async def presign(self, request: Outgoing, expires: int) -> tuple[str, Headers]:
        """For `signs_url`: the handshake's query string with the signature in it, and the
        headers `rejected` recognises that credential by (nothing of it is sent as such)."""
        raise CredentialsUnavailable(f"{self.name} is a {self.describe().type} credential; "
                                     "it does not presign URLs")

    async def rejected(self, sent: Headers) -> bool:
        """The upstream refused a request sent with `sent`. True when different headers are
        now to be had and the request is worth sending again."""
        return False

    def ready(self) -> bool:
        """Headers can be had now, without a fetch."""
        return self.current() is not None

    @abstractmethod
    def describe(self) -> Description:
        """Static facts for the CLI and hints; never a secret."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """State for readyz, metrics and the inspector: JSON-able, never a secret."""

    async def login(self, prompt: Prompt, session: aiohttp.ClientSession,
                    cache_dir: Path | None = None, timeout: float | None = None
                    ) -> LoginResult:
        """Sign in interactively and keep what lets `serve` go on without the user.
        `timeout`: how long a sign-in in a browser may take (None: the strategy's own)."""
        raise CredentialsUnavailable(f"{self.name} is a {self.describe().type} credential; "
                                     "there is nothing to sign in to")
