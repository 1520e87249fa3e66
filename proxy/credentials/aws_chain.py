"""`source: aws`: AWS credentials from botocore's default chain, the way the AWS CLI finds them
(environment, ~/.aws profiles with credential_process, assume-role and SSO, web identity,
container credentials, EC2 instance metadata). botocore is an optional extra
(`pip install 'authproxy[aws]'`): this module imports without it, and `available()` says so.

The refresh core (refresh.py) decides when to fetch; this module only says how and how to judge
a failure. botocore is blocking (it may run a credential_process, read files, call STS or the
instance metadata service), so every call into it runs on a worker thread, never on the loop.
One botocore Session is kept with the credentials object it returned, so that botocore's own
state (an assume-role's source credentials, an SSO token, the provider that knows how to
refresh) is reused: a fetch of refreshable credentials asks botocore for a frozen copy, and
botocore runs its refresh when they are within its windows (advisory 15 min, mandatory 10 min
before expiry). With the default refresh_margin of 300 s every scheduled fetch falls in the
mandatory window, so botocore refreshes and any error reaches `classify`. A margin above 900 s
is before botocore's windows: botocore hands back the same credentials until its advisory
window opens, and the core fetches again (at most once a second) until then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import threading
from typing import Any

from proxy.credentials.aws_keys import AwsKeys
from proxy.credentials.base import CredentialsUnavailable
from proxy.credentials.clock import Clock, SystemClock
from proxy.credentials.refresh import Failure, Fetched
from proxy.secret import Secret

INSTALL_HINT = "source: aws needs botocore: pip install 'authproxy[aws]'"
# Static keys (environment, a plain profile) never expire, but the credentials file they came
# from may be rotated: fetching them again this often picks a new one up without a restart.
STATIC_LIFETIME = 12 * 3600.0

# botocore's DEBUG logging prints canonical requests with the session token and STS answers
# with the secret key. Its records must never reach our handlers, whatever level the root
# logger is at: they stop at botocore's own loggers. The NullHandler keeps Python's
# last-resort handler from printing botocore's warnings to stderr instead. Someone who wants
# botocore's log attaches a handler to it explicitly (botocore's own set_stream_logger does).
for _name in ("botocore", "boto3"):
    _isolated = logging.getLogger(_name)
    _isolated.propagate = False
    _isolated.addHandler(logging.NullHandler())

log = logging.getLogger("authproxy.aws")

# botocore's credential `method` in the user's terms
_METHODS = {
    "env": "environment variables",
    "shared-credentials-file": "shared credentials file",
    "config-file": "keys in the config file",
    "custom-process": "credential_process",
    "assume-role": "assume-role",
    "assume-role-with-web-identity": "web identity",
    "sso": "SSO",
    "login": "aws login",
    "container-role": "container credentials",
    "iam-role": "EC2 instance metadata",
    "ec2-credentials-file": "EC2 credentials file",
    "boto-config": "boto config file",
}
# STS error codes that go away by themselves; any other STS refusal needs the user
_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "ServiceUnavailable", "InternalFailure", "InternalError", "RequestTimeout",
    "IDPCommunicationError",
})


def available() -> str | None:
    """None when botocore can be imported; else the message a config error shows."""
    try:
        import botocore.session  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None


class _NoCredentials(Exception):
    """botocore's chain found nothing (`get_credentials()` returned None)."""


class AwsChain:
    """How to fetch AWS credentials from botocore and how to judge a failure, for the refresh
    core: `Refresher(name, chain.fetch, chain.classify, margin=...)`."""

    def __init__(self, profile: str | None, *, clock: Clock | None = None) -> None:
        """`profile` None: botocore's own choice ($AWS_PROFILE, else the default profile)."""
        if (hint := available()) is not None:
            raise CredentialsUnavailable(hint)
        self._profile = profile
        self._clock: Clock = clock or SystemClock()
        # Guards the session and its credentials: fetch() may be called again (by another
        # caller than the core) while a worker thread is still in botocore.
        self._lock = threading.Lock()
        self._session: Any = None  # botocore.session.Session, built on the first fetch
        self._creds: Any = None  # what the session's get_credentials() returned
        self._method: str | None = None  # botocore's name for where they came from

    async def fetch(self) -> Fetched[AwsKeys]:
        keys, expiry = await asyncio.to_thread(self._resolve)
        if expiry is None:
            lifetime = STATIC_LIFETIME
        else:
            # Measured after botocore returned: the core lays the lifetime onto the time it
            # asked, so the value is held as expiring a little early, never late.
            lifetime = expiry.timestamp() - self._clock.time()
        return Fetched(keys, lifetime, f"AWS credentials {keys.shown_key_id} from "
                                       f"{self._how() or 'botocore'}")

    def classify(self, error: Exception) -> Failure:
        """Transient (trying again later can help) or permanent, with a message in the user's
        terms; never a secret (botocore's text is scrubbed of anything shaped like a key)."""
        transient, message = self._judge(error)
        return Failure(message, transient)

    def describe_source(self) -> str:
        """e.g. "botocore default chain, profile dev (credential_process)"; the part in
        brackets once a fetch has told where the credentials come from."""
        how = self._how()
        return f"botocore default chain, profile {self._profile_name()}" + (
            f" ({how})" if how else "")

    # --- on the worker thread ---------------------------------------------------------------

    def _resolve(self) -> tuple[AwsKeys, dt.datetime | None]:
        with self._lock:
            try:
                creds = self._credentials()
                # Frozen: key, secret and token of one issue, even across a refresh.
                frozen = creds.get_frozen_credentials()
                expiry = getattr(creds, "_expiry_time", None)
            except Exception:
                # The next fetch starts from a new session that reads the files again: a
                # rotated key, a new `aws sso login` or a fixed profile is then seen.
                self._session = self._creds = None
                raise
            if expiry is None:
                # Static keys: read again on the next fetch, from a new session, so that a
                # rotated credentials file is picked up (a session caches what it found).
                self._session = self._creds = None
            return _keys(frozen), expiry

    def _credentials(self) -> Any:
        if self._creds is not None:
            return self._creds
        import botocore.session

        if self._session is None:
            self._session = botocore.session.Session(profile=self._profile)
        creds = self._session.get_credentials()
        if creds is None:
            raise _NoCredentials()
        self._method = getattr(creds, "method", None)
        if hasattr(creds, "_time_fetcher"):
            # botocore decides when its refreshable credentials are due by its own clock; it
            # must be ours, or it and the core disagree about expiry (a test's clock, too).
            # In production both are the system's wall clock.
            creds._time_fetcher = self._botocore_now
        self._creds = creds
        return creds

    def _botocore_now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock.time(), dt.UTC)

    # --- describing ---------------------------------------------------------------------------

    def _profile_name(self) -> str:
        return (self._profile or os.environ.get("AWS_PROFILE")
                or os.environ.get("AWS_DEFAULT_PROFILE") or "default")

    def _how(self) -> str | None:
        return _METHODS.get(self._method, self._method) if self._method else None

    def _judge(self, e: Exception) -> tuple[bool, str]:
        import botocore.exceptions as bx

        profile = self._profile_name()
        where = f"AWS credentials (profile {profile}"
        where += f", {self._how()})" if self._how() else ")"
        if isinstance(e, _NoCredentials):
            return False, (
                f"no AWS credentials found for profile {profile}: set AWS_PROFILE or the "
                f"credential's `profile`, run `aws sso login --profile {profile}` or "
                f"`aws configure --profile {profile}`, or export AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY")
        if isinstance(e, bx.ProfileNotFound):
            name = e.kwargs.get("profile", profile)
            return False, (f"AWS profile {name!r} not found in {_config_files()}: check the "
                           "name, or run `aws configure --profile " + str(name) + "`")
        if isinstance(e, _known(bx, "UnauthorizedSSOTokenError", "SSOTokenLoadError",
                                "TokenRetrievalError")):
            return False, (f"{where}: the SSO session has expired or is missing: run "
                           f"`aws sso login --profile {profile}`")
        if isinstance(e, _known(bx, "LoginError")):
            return False, f"{where}: {_scrub(str(e))}"
        if isinstance(e, bx.RefreshWithMFAUnsupportedError):
            return False, (f"{where}: the role needs an MFA code, which the proxy cannot "
                           "prompt for: use credential_process or SSO for this profile")
        if isinstance(e, _known(bx, "PartialCredentialsError", "InvalidConfigError",
                                "ConfigParseError", "ConfigNotFound", "UnknownCredentialError",
                                "MissingDependencyException")):
            return False, f"{where}: {_scrub(str(e))}"
        if isinstance(e, bx.CredentialRetrievalError):
            msg = _scrub(" ".join(str(e.kwargs.get("error_msg", "")).split())[:300])
            if e.kwargs.get("provider") == "custom-process":
                # A non-zero exit says nothing but its stderr: the usual causes (a network
                # or VPN down, a vault or SSO helper not reachable, a locked keychain) mend
                # themselves, and the backoff caps reruns at one a minute. Output botocore
                # cannot read is the program's contract broken: that needs a fix.
                broken = msg.startswith(("Unsupported version", "Missing required key"))
                what = "printed an answer botocore cannot use" if broken else "failed"
                return not broken, f"{where}: credential_process {what}: {msg or '(no output)'}"
            return True, f"{where}: {msg or type(e).__name__}"
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            transient = code in _TRANSIENT_CODES or status == 429 or status >= 500
            message = _scrub(str(err.get("Message", "")))
            return transient, f"{where}: STS refused ({code}): {message}"
        if isinstance(e, bx.ConnectionError | bx.HTTPClientError | bx.MetadataRetrievalError):
            return True, f"{where}: could not reach AWS: {_scrub(str(e))}"
        if isinstance(e, json.JSONDecodeError):
            return False, f"{where}: credential_process printed something that is not JSON"
        if isinstance(e, FileNotFoundError | PermissionError):
            return False, (f"{where}: a command in the profile could not be run: "
                           f"{e.strerror} ({e.filename})")
        if isinstance(e, RuntimeError | ValueError):
            # botocore's "refreshed credentials are still expired", or the core's "expired
            # when issued": an Expiration in the past, or a local clock that is off.
            return True, (f"{where}: the credentials were already expired when obtained; "
                          "check the system clock")
        return True, f"{where}: {type(e).__name__}"


def _known(module: Any, *names: str) -> tuple[type[Exception], ...]:
    """Those of botocore's exception classes this version has (the SSO and `aws login` ones
    are younger than botocore 1.34, the oldest we accept)."""
    return tuple(getattr(module, n) for n in names if hasattr(module, n))


def _keys(frozen: Any) -> AwsKeys:
    token = frozen.token
    return AwsKeys(frozen.access_key, Secret(frozen.secret_key),
                   Secret(token) if token else None)


def _config_files() -> str:
    return " or ".join((os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
                        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")))


# A secret key is 40 base64 characters and a session token hundreds; an access key id is
# AKIA/ASIA and 16 more. A path or a sentence has no run this long mixing digits and letters.
_SECRETISH = re.compile(r"[A-Za-z0-9/+=_-]{32,}")
_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}\b")


def _scrub(message: str) -> str:
    """botocore's text (a credential_process's stderr, an STS message) may quote anything."""
    def hide(m: re.Match[str]) -> str:
        run = m.group(0)
        mixed = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        return "***" if mixed else run

    return _KEY_ID.sub(lambda m: m.group(1) + "…", _SECRETISH.sub(hide, message))
