"""`source: aws` against real botocore, hermetic: temporary AWS config and credentials files,
the environment cleared of the machine's AWS settings, instance metadata disabled, and every
credential_process a small script in tmp_path. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cognito_fixtures import FakeClock

from proxy.credentials import aws_chain
from proxy.credentials.aws_chain import INSTALL_HINT, STATIC_LIFETIME, AwsChain, available
from proxy.credentials.aws_keys import AwsKeys
from proxy.credentials.refresh import Refresher

botocore_exceptions = pytest.importorskip("botocore.exceptions")

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN0123456789abcdefghijklmnopqrstuvwxyz"


class Aws:
    """The AWS files of one test, and a credential_process whose answers it scripts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config"
        self.credentials = root / "credentials"
        self.config.write_text("")
        self.credentials.write_text("")
        self.script = root / "creds.py"
        self.script.write_text(PROCESS)
        self.control(expires_at=None)

    def control(self, **settings: object) -> None:
        """What the next credential_process run does: expires_at (epoch seconds) or ahead
        (seconds from the real now) for its Expiration, sleep, fail (its stderr)."""
        (self.root / "control.json").write_text(json.dumps(settings))

    @property
    def runs(self) -> int:
        runs = self.root / "runs"
        return int(runs.read_text()) if runs.exists() else 0

    def process_profile(self, name: str = "proc") -> None:
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(self.script))}"
        with self.config.open("a") as f:
            f.write(f"[profile {name}]\ncredential_process = {command}\n")


# A credential_process (the Version 1 protocol): each run numbers its keys, so a test tells
# whose credentials it got, and counts itself in `runs`.
PROCESS = """\
import datetime, json, pathlib, sys, time
here = pathlib.Path(__file__).parent
runs = here / "runs"
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
ctl = json.loads((here / "control.json").read_text())
time.sleep(ctl.get("sleep") or 0)
if ctl.get("fail"):
    print(ctl["fail"], file=sys.stderr)
    sys.exit(2)
out = {"Version": 1, "AccessKeyId": "ASIAPROCESS%09d" % n,
       "SecretAccessKey": "process/secret/%d/wJalrXUtnFEMIK7MDENGbPxRfiCY" % n,
       "SessionToken": "process-token-%d-IQoJb3JpZ2luX2VjEXAMPLE0123456789" % n}
at = ctl.get("expires_at")
if ctl.get("ahead") is not None:
    at = time.time() + ctl["ahead"]
if at is not None:
    out["Expiration"] = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()
print(json.dumps(out))
"""


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Aws:
    for name in list(os.environ):
        if name.startswith(("AWS_", "BOTO")):
            monkeypatch.delenv(name)
    files = Aws(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.aws/sso/cache and the like: ours
    monkeypatch.setenv("AWS_CONFIG_FILE", str(files.config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(files.credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never 169.254.169.254
    return files


def secrets_of(keys: AwsKeys) -> list[str]:
    out = [keys.secret_access_key.reveal()]
    return out + ([keys.session_token.reveal()] if keys.session_token else [])


# --- where the credentials come from ------------------------------------------------------------


async def test_environment_keys_without_a_session_token(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    chain = AwsChain(None)
    got = await chain.fetch()
    assert got.value == AwsKeys("AKIAENVEXAMPLE000001", aws_chain.Secret(SECRET), None)
    assert got.lifetime == STATIC_LIFETIME
    assert chain.describe_source() == (
        "botocore default chain, profile default (environment variables)")
    assert SECRET not in repr(got) and SECRET not in got.what


async def test_environment_keys_with_a_session_token(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVEXAMPLE000002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    got = (await AwsChain(None).fetch()).value
    assert got.session_token is not None and got.session_token.reveal() == TOKEN
    assert got.secret_access_key.reveal() == SECRET
    assert TOKEN not in repr(got) and SECRET not in repr(got)


async def test_a_named_profile_wins_over_the_environment(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore's rule, kept: an explicit profile disables the environment's keys
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE000003")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    aws.credentials.write_text(
        f"[dev]\naws_access_key_id = AKIADEVEXAMPLE000001\naws_secret_access_key = {SECRET}\n")
    chain = AwsChain("dev")
    got = await chain.fetch()
    assert got.value.access_key_id == "AKIADEVEXAMPLE000001"
    assert got.value.secret_access_key.reveal() == SECRET and got.value.session_token is None
    assert got.lifetime == STATIC_LIFETIME
    assert chain.describe_source() == (
        "botocore default chain, profile dev (shared credentials file)")


async def test_aws_profile_from_the_environment(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.credentials.write_text(
        f"[ops]\naws_access_key_id = AKIAOPSEXAMPLE000001\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_PROFILE", "ops")
    chain = AwsChain(None)
    assert (await chain.fetch()).value.access_key_id == "AKIAOPSEXAMPLE000001"
    assert "profile ops" in chain.describe_source()


async def test_static_keys_are_read_again_so_a_rotated_file_is_picked_up(aws: Aws) -> None:
    aws.credentials.write_text(
        "[dev]\naws_access_key_id = AKIAOLDEXAMPLE000001\naws_secret_access_key = old\n")
    chain = AwsChain("dev")
    assert (await chain.fetch()).value.access_key_id == "AKIAOLDEXAMPLE000001"
    aws.credentials.write_text(
        "[dev]\naws_access_key_id = AKIANEWEXAMPLE000001\naws_secret_access_key = new\n")
    got = (await chain.fetch()).value
    assert (got.access_key_id, got.secret_access_key.reveal()) == ("AKIANEWEXAMPLE000001", "new")


async def test_credential_process_lifetime_is_botocores_expiry(aws: Aws) -> None:
    aws.process_profile()
    aws.control(ahead=300)  # inside botocore's 15 min window: it refreshes on every read
    chain = AwsChain("proc")
    assert chain.describe_source() == "botocore default chain, profile proc"
    got = await chain.fetch()
    assert 290 < got.lifetime <= 300
    assert got.value.access_key_id.startswith("ASIAPROCESS")
    assert got.value.session_token is not None
    assert chain.describe_source() == "botocore default chain, profile proc (credential_process)"
    # botocore loads once, then refreshes at once because 300 s is inside its advisory window
    # (15 min): the keys are the refresh's, key and secret of the same run (frozen).
    assert aws.runs == 2
    assert got.value.access_key_id == "ASIAPROCESS000000002"
    assert "process/secret/2/" in got.value.secret_access_key.reveal()
    assert "process-token-2-" in got.value.session_token.reveal()


async def test_botocores_credentials_are_reused_until_they_expire(aws: Aws) -> None:
    clock = FakeClock()
    aws.process_profile()
    aws.control(expires_at=clock.time() + 3600)
    chain = AwsChain("proc", clock=clock)
    first = await chain.fetch()
    assert first.lifetime == pytest.approx(3600, abs=0.01)
    assert aws.runs == 1
    again = await chain.fetch()  # the same session and credentials object: nothing is run
    assert aws.runs == 1 and again.value == first.value
    assert again.lifetime == pytest.approx(3600, abs=0.01)

    clock.advance(3601)  # past botocore's expiry (on the clock botocore is given)
    aws.control(expires_at=clock.time() + 1800)
    after = await chain.fetch()
    assert aws.runs == 2
    assert after.value.access_key_id == "ASIAPROCESS000000002"
    assert after.lifetime == pytest.approx(1800, abs=0.01)


async def test_fetch_runs_off_the_event_loop(aws: Aws) -> None:
    aws.process_profile()
    aws.control(ahead=3600, sleep=0.5)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await AwsChain("proc").fetch()
    finally:
        ticker.cancel()
    assert aws.runs == 1
    assert ticks >= 10  # 0.5 s of process at 20 ms a tick; on the loop it would be 0


# --- failures ---------------------------------------------------------------------------------


async def test_unknown_profile_is_a_permanent_failure_naming_it(aws: Aws) -> None:
    chain = AwsChain("nosuch")
    with pytest.raises(botocore_exceptions.ProfileNotFound) as e:
        await chain.fetch()
    failure = chain.classify(e.value)
    assert not failure.transient
    assert "'nosuch' not found" in failure.message and str(aws.config) in failure.message


async def test_no_credentials_at_all_is_permanent_and_says_what_to_do(aws: Aws) -> None:
    chain = AwsChain(None)
    with pytest.raises(Exception) as e:
        await chain.fetch()
    failure = chain.classify(e.value)
    assert not failure.transient
    assert failure.message.startswith("no AWS credentials found for profile default: ")
    assert "aws sso login --profile default" in failure.message
    assert "AWS_ACCESS_KEY_ID" in failure.message

    # the next fetch looks again: keys written since are found without a restart
    aws.credentials.write_text(
        "[default]\naws_access_key_id = AKIALATEEXAMPLE00001\naws_secret_access_key = s\n")
    assert (await chain.fetch()).value.access_key_id == "AKIALATEEXAMPLE00001"


async def test_credential_process_exiting_non_zero_is_transient(aws: Aws) -> None:
    aws.process_profile()
    # stderr is the one explanation botocore passes on: shown, but what looks like a key is not
    aws.control(fail=f"vault unreachable (ASIAPROCESS000000099 {SECRET})")
    chain = AwsChain("proc", clock=FakeClock())
    with pytest.raises(botocore_exceptions.CredentialRetrievalError) as e:
        await chain.fetch()
    failure = chain.classify(e.value)
    assert failure.transient
    assert failure.message == (
        "AWS credentials (profile proc): credential_process failed: "
        "vault unreachable (ASIA… ***)")

    aws.control(expires_at=FakeClock().time() + 3600)  # the vault is back
    assert (await chain.fetch()).value.access_key_id == "ASIAPROCESS000000002"


async def test_credential_process_that_cannot_be_run_is_permanent(aws: Aws) -> None:
    aws.config.write_text(f"[profile gone]\ncredential_process = {aws.root / 'no-such-helper'}\n")
    chain = AwsChain("gone")
    with pytest.raises(FileNotFoundError) as e:
        await chain.fetch()
    failure = chain.classify(e.value)
    assert not failure.transient and "no-such-helper" in failure.message


async def test_credential_process_printing_the_wrong_version_is_permanent(aws: Aws) -> None:
    helper = aws.root / "v2.py"
    helper.write_text('print(\'{"Version": 2, "AccessKeyId": "A", "SecretAccessKey": "B"}\')\n')
    aws.config.write_text(f"[profile v2]\ncredential_process = {sys.executable} {helper}\n")
    chain = AwsChain("v2")
    with pytest.raises(botocore_exceptions.CredentialRetrievalError) as e:
        await chain.fetch()
    failure = chain.classify(e.value)
    assert not failure.transient and "Unsupported version '2'" in failure.message


@pytest.mark.parametrize(("code", "status", "transient"), [
    ("AccessDenied", 403, False), ("ExpiredToken", 400, False),
    ("Throttling", 400, True), ("InternalFailure", 500, True), ("Whatever", 503, True),
])
def test_sts_refusals(aws: Aws, code: str, status: int, transient: bool) -> None:
    e = botocore_exceptions.ClientError(
        {"Error": {"Code": code, "Message": "not for you"},
         "ResponseMetadata": {"HTTPStatusCode": status}}, "AssumeRole")
    failure = AwsChain("dev").classify(e)
    assert failure.transient is transient
    assert failure.message == f"AWS credentials (profile dev): STS refused ({code}): not for you"


def test_network_errors_and_sso_expiry(aws: Aws) -> None:
    chain = AwsChain("dev")
    down = chain.classify(botocore_exceptions.EndpointConnectionError(
        endpoint_url="https://sts.amazonaws.com/"))
    assert down.transient and "could not reach AWS" in down.message
    sso = chain.classify(botocore_exceptions.UnauthorizedSSOTokenError())
    assert not sso.transient and "aws sso login --profile dev" in sso.message
    odd = chain.classify(KeyError("x"))
    assert odd.transient and odd.message == "AWS credentials (profile dev): KeyError"


# --- through the refresh core -----------------------------------------------------------------


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def until(check: Callable[[], bool], state: Callable[[], object],
                seconds: float = 10.0) -> None:
    """Real time: botocore works on a thread, which a hand-moved clock does not hurry."""
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out; {state()}")


async def test_the_refresh_core_refreshes_before_botocores_expiry(aws: Aws) -> None:
    clock = FakeClock()
    aws.process_profile()
    aws.control(expires_at=clock.time() + 3600)
    chain = AwsChain("proc", clock=clock)
    core: Refresher[AwsKeys] = Refresher("dev", chain.fetch, chain.classify, margin=300,
                                         clock=clock, rng=random.Random(1))

    def state() -> object:
        return {"runs": aws.runs, "now": clock.now, **core.status()}

    await core.start()
    try:
        await until(lambda: core.current() is not None, state)
        first = core.current()
        assert first is not None and first.access_key_id == "ASIAPROCESS000000001"
        assert core.status()["refresh_in"] == pytest.approx(3300, abs=1)
        # The core's background loop must be asleep on the clock before the clock moves: its
        # sleep reads the clock when it begins, a few loop turns after the fetch completed.
        await settle()

        clock.advance(3000)
        await asyncio.sleep(0.2)
        assert aws.runs == 1 and core.current() == first  # not due yet

        aws.control(expires_at=clock.time() + 3600)
        clock.advance(300)  # expiry - margin: inside botocore's mandatory window, so it runs
        await until(lambda: core.fetches["success"] == 2, state)
        assert aws.runs == 2
        now = core.current()
        assert now is not None and now.access_key_id == "ASIAPROCESS000000002"
        assert clock.now < 1000 + 3600  # before the first credentials' expiry
        assert core.status()["expires_in"] == pytest.approx(3300, abs=1)
    finally:
        await core.close()


# --- botocore's log stays botocore's ------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in self.records)


@pytest.fixture
def root_at_debug() -> Iterator[Capture]:
    root, capture = logging.getLogger(), Capture()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(capture)
    yield capture
    root.removeHandler(capture)
    root.setLevel(level)


@pytest.fixture
def botocore_own() -> Iterator[Capture]:
    """What botocore logs, seen at its own logger: proves it did log, and what."""
    own = Capture()
    logger = logging.getLogger("botocore")
    logger.addHandler(own)
    yield own
    logger.removeHandler(own)


async def test_botocore_logs_never_reach_our_handlers(
        aws: Aws, root_at_debug: Capture, botocore_own: Capture) -> None:
    aws.process_profile()
    aws.control(ahead=300)
    keys = (await AwsChain("proc").fetch()).value
    assert any(r.name.startswith("botocore.credentials") for r in botocore_own.records)
    assert not [r for r in root_at_debug.records if r.name.startswith(("botocore", "boto3"))]
    for secret in secrets_of(keys):
        assert secret not in root_at_debug.text()


class FakeSts(BaseHTTPRequestHandler):
    """STS's AssumeRole, enough for botocore: a signed POST in, temporary credentials out."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if (not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ")
                or "Action=AssumeRole" not in body):
            self.send_response(400)
            self.end_headers()
            return
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        answer = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleResult><AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId>"
            "<Arn>arn:aws:sts::123456789012:assumed-role/dev/s</Arn></AssumedRoleUser>"
            f"<Credentials><AccessKeyId>ASIAROLEEXAMPLE00001</AccessKeyId>"
            f"<SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>{TOKEN}</SessionToken>"
            f"<Expiration>{expires}</Expiration></Credentials></AssumeRoleResult>"
            "<ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sts(monkeypatch: pytest.MonkeyPatch, aws: Aws) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
    yield url
    server.shutdown()
    server.server_close()


async def test_assume_role_secrets_botocore_logs_stay_in_botocore(
        aws: Aws, sts: str, root_at_debug: Capture, botocore_own: Capture) -> None:
    source_token = "IQoJsourceSESSIONtoken0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
    aws.credentials.write_text(
        "[base]\naws_access_key_id = ASIABASEEXAMPLE00001\n"
        f"aws_secret_access_key = base-secret-0123456789abcdefghij\n"
        f"aws_session_token = {source_token}\n")
    aws.config.write_text("[profile dev]\nrole_arn = arn:aws:iam::123456789012:role/dev\n"
                          "source_profile = base\nregion = us-east-1\n")
    chain = AwsChain("dev")
    got = await chain.fetch()
    assert got.value.access_key_id == "ASIAROLEEXAMPLE00001"
    assert 3590 < got.lifetime <= 3600
    assert chain.describe_source() == "botocore default chain, profile dev (assume-role)"
    # The premise: botocore itself logs the source token it signs with and the secret STS sent
    assert source_token in botocore_own.text() and SECRET in botocore_own.text()
    # ... and none of it reaches a handler of ours
    assert not [r for r in root_at_debug.records if r.name.startswith(("botocore", "boto3"))]
    for secret in (source_token, SECRET, TOKEN):
        assert secret not in root_at_debug.text()


# --- botocore missing ---------------------------------------------------------------------------


def test_available_says_how_to_install_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    assert available() is None
    monkeypatch.setitem(sys.modules, "botocore", None)  # an import of it now fails
    assert available() == INSTALL_HINT == "source: aws needs botocore: pip install 'authproxy[aws]'"
    with pytest.raises(Exception, match="pip install 'authproxy\\[aws\\]'"):
        AwsChain(None)


def test_the_module_imports_without_botocore() -> None:
    code = ("import sys; sys.modules['botocore'] = None\n"
            "from proxy.credentials.aws_chain import available; print(available())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == INSTALL_HINT
