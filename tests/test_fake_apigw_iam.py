"""The fake API Gateway's IAM mode (proxy/fakes/apigw.py, proxy/fakes/sigv4_check.py): it accepts
what botocore signs, sent byte for byte, and refuses a tampered request with API Gateway's 403."""

from __future__ import annotations

import asyncio
import calendar
import datetime
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from unittest import mock
from urllib.parse import quote

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.credentials.aws_keys import AwsKeys
from proxy.credentials.sigv4 import Signer
from proxy.fakes import sigv4_check
from proxy.fakes.apigw import FakeApiGateway
from proxy.secret import Secret

REGION = "us-east-1"
KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TEMP_ID, TEMP_SECRET, TOKEN = "ASIATEMP", "temp/secret+key", "FwoGZXIvYXdzEXAMPLE/token=="
T0 = calendar.timegm((2026, 1, 1, 0, 0, 0))  # 20260101T000000Z

MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.")
BAD_TOKEN = "The security token included in the request is invalid."


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiGateway]:
    gw = FakeApiGateway(iam={KEY_ID: SECRET, TEMP_ID: TEMP_SECRET}, iam_tokens={TEMP_ID: TOKEN},
                        iam_region=REGION, clock=Clock(T0))
    await gw.start()
    yield gw
    await gw.stop()


@dataclass
class Signed:
    method: str
    target: str  # path?query as on the request line
    headers: list[tuple[str, str]]
    body: bytes


def botocore_signed(gw: FakeApiGateway, method: str, target: str, body: bytes = b"",
                    headers: dict[str, str] | None = None, key_id: str = KEY_ID,
                    secret: str = SECRET, token: str | None = None,
                    at: float = T0) -> Signed:
    """What botocore's SigV4Auth sends for this request, signed at `at` (botocore reads its
    clock through `botocore.auth.get_current_datetime`)."""
    host = f"127.0.0.1:{gw.port}"
    request = AWSRequest(method=method, url=f"http://{host}{target}",
                         headers={"Host": host, **(headers or {})}, data=body)
    fixed = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fixed):
        SigV4Auth(Credentials(key_id, secret, token), "execute-api", REGION).add_auth(request)
    return Signed(method, target, list(request.headers.items()), body)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> str:
        return str(json.loads(self.body)["message"])


async def send(gw: FakeApiGateway, req: Signed) -> Answer:
    """The request exactly as given: request line, headers in order, body; nothing re-encoded."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    head = f"{req.method} {req.target} HTTP/1.1\r\n"
    for name, value in req.headers:
        head += f"{name}: {value}\r\n"
    head += f"Content-Length: {len(req.body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + req.body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


def replace_header(req: Signed, name: str, value: str) -> Signed:
    headers = [(k, value if k.lower() == name.lower() else v) for k, v in req.headers]
    return Signed(req.method, req.target, headers, req.body)


def drop_header(req: Signed, name: str) -> Signed:
    return Signed(req.method, req.target, [(k, v) for k, v in req.headers
                                           if k.lower() != name.lower()], req.body)


# --- accepted ------------------------------------------------------------------------------

TARGETS = [
    "/Development",
    "/Development/items/a%2Fb/%C3%A4/x+y/~z",
    "/Development/q?b=2&a=1&a=0&flag&c=%2B&d=a%20b&e=%E2%82%AC",
    "/Development/./x/../y//z/?",
]


@pytest.mark.parametrize("target", TARGETS)
async def test_accepts_what_botocore_signs(fake: FakeApiGateway, target: str) -> None:
    answer = await send(fake, botocore_signed(fake, "GET", target))
    assert answer.status == 200, answer.body
    assert fake.seen[-1].sigv4 == "verified"
    assert json.loads(answer.body)["sigv4"] == "verified"
    assert fake.seen[-1].raw_path == target


async def test_accepts_a_signed_body_session_token_and_extra_signed_headers(
        fake: FakeApiGateway) -> None:
    body = json.dumps({"name": "ä", "n": 1}).encode()
    req = botocore_signed(fake, "POST", "/Development/items?x=1", body,
                          {"Content-Type": "application/json;  charset=utf-8",
                           "X-Custom": "  spaced   out  "},
                          key_id=TEMP_ID, secret=TEMP_SECRET, token=TOKEN)
    answer = await send(fake, req)
    assert answer.status == 200, answer.body
    # Headers that were not signed may change on the way: the fake looks only at signed ones.
    answer = await send(fake, Signed(req.method, req.target,
                                     req.headers + [("User-Agent", "changed/1.0")], req.body))
    assert answer.status == 200, answer.body
    assert fake.seen[-1].header("X-Amz-Security-Token") == TOKEN


async def test_accepts_a_binary_body(fake: FakeApiGateway) -> None:
    body = bytes(range(256)) * 40
    answer = await send(fake, botocore_signed(fake, "PUT", "/Development/blob", body,
                                              {"Content-Type": "application/octet-stream"}))
    assert answer.status == 200, answer.body


async def test_accepts_what_our_signer_signs(fake: FakeApiGateway) -> None:
    host = f"127.0.0.1:{fake.port}"
    body = b'{"a": 1}'
    headers = [("Host", host), ("Content-Type", "application/json")]
    keys = AwsKeys(TEMP_ID, Secret(TEMP_SECRET), Secret(TOKEN))
    added = Signer(REGION).sign(keys, "POST", host, "/Development/a%2Fb", "z=1&a=%7e&q=a+b",
                                headers, hashlib.sha256(body).hexdigest(), now=T0)
    req = Signed("POST", "/Development/a%2Fb?z=1&a=%7e&q=a+b", headers + list(added), body)
    answer = await send(fake, req)
    assert answer.status == 200, answer.body


# --- refused -------------------------------------------------------------------------------

def assert_refused(answer: Answer, error_type: str, message: str, now: float = T0) -> None:
    assert answer.status == 403
    assert answer.headers["x-amzn-errortype"] == error_type
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["date"] == formatdate(now, usegmt=True)
    assert answer.message == message
    assert answer.body == json.dumps({"message": message}, separators=(",", ":")).encode()


async def test_refuses_one_changed_body_byte(fake: FakeApiGateway) -> None:
    req = botocore_signed(fake, "POST", "/Development/items", b'{"amount": 10}',
                          {"Content-Type": "application/json"})
    req.body = b'{"amount": 90}'
    assert_refused(await send(fake, req), "InvalidSignatureException", MISMATCH)
    assert fake.seen[-1].sigv4 == "InvalidSignatureException"


@pytest.mark.parametrize("target", ["/Development/item/2", "/Development/item/1/",
                                    "/Development/item%2F1", "/Development/item/1?x=1",
                                    "/Development/item/1?"])
async def test_refuses_a_changed_path_or_query(fake: FakeApiGateway, target: str) -> None:
    req = botocore_signed(fake, "GET", "/Development/item/1")
    req.target = target
    answer = await send(fake, req)
    if target.endswith("?"):  # an empty query is no query: still the same request
        assert answer.status == 200, answer.body
    else:
        assert_refused(answer, "InvalidSignatureException", MISMATCH)


async def test_refuses_a_changed_signed_header_and_method(fake: FakeApiGateway) -> None:
    req = botocore_signed(fake, "POST", "/Development/x", b"{}",
                          {"Content-Type": "application/json"})
    assert_refused(await send(fake, replace_header(req, "Content-Type", "text/plain")),
                   "InvalidSignatureException", MISMATCH)
    assert_refused(await send(fake, replace_header(req, "Host", "127.0.0.1:1")),
                   "InvalidSignatureException", MISMATCH)
    assert_refused(await send(fake, Signed("PUT", req.target, req.headers, req.body)),
                   "InvalidSignatureException", MISMATCH)
    assert_refused(await send(fake, botocore_signed(fake, "GET", "/Development/x",
                                                    secret="not-the-secret")),
                   "InvalidSignatureException", MISMATCH)


async def test_refuses_a_stale_or_early_date(fake: FakeApiGateway) -> None:
    clock = fake.clock
    assert isinstance(clock, Clock)
    req = botocore_signed(fake, "GET", "/Development/x", at=T0)
    clock.now = T0 + 600
    assert_refused(await send(fake, req), "InvalidSignatureException",
                   "Signature expired: 20260101T000000Z is now earlier than 20260101T000500Z "
                   "(20260101T001000Z - 5 min.)", now=T0 + 600)
    clock.now = T0 - 600
    assert_refused(await send(fake, req), "InvalidSignatureException",
                   "Signature not yet current: 20260101T000000Z is still later than "
                   "20251231T235500Z (20251231T235000Z + 5 min.)", now=T0 - 600)
    clock.now = T0 + 299  # within API Gateway's 5 minutes
    assert (await send(fake, req)).status == 200


async def test_refuses_a_wrong_missing_or_unexpected_token(fake: FakeApiGateway) -> None:
    wrong = botocore_signed(fake, "GET", "/Development/x", key_id=TEMP_ID, secret=TEMP_SECRET,
                            token="some-other-token")
    assert_refused(await send(fake, wrong), "UnrecognizedClientException", BAD_TOKEN)
    missing = botocore_signed(fake, "GET", "/Development/x", key_id=TEMP_ID, secret=TEMP_SECRET)
    assert_refused(await send(fake, missing), "UnrecognizedClientException", BAD_TOKEN)
    stripped = drop_header(botocore_signed(fake, "GET", "/Development/x", key_id=TEMP_ID,
                                           secret=TEMP_SECRET, token=TOKEN),
                           "X-Amz-Security-Token")
    assert_refused(await send(fake, stripped), "UnrecognizedClientException", BAD_TOKEN)
    unexpected = botocore_signed(fake, "GET", "/Development/x", token=TOKEN)
    assert_refused(await send(fake, unexpected), "UnrecognizedClientException", BAD_TOKEN)
    unknown = botocore_signed(fake, "GET", "/Development/x", key_id="AKIDUNKNOWN")
    assert_refused(await send(fake, unknown), "UnrecognizedClientException", BAD_TOKEN)


async def test_refuses_unsigned_and_malformed(fake: FakeApiGateway) -> None:
    plain = Signed("GET", "/Development/x", [("Host", f"127.0.0.1:{fake.port}")], b"")
    assert_refused(await send(fake, plain), "MissingAuthenticationTokenException",
                   "Missing Authentication Token")
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    answer = await send(fake, replace_header(Signed(plain.method, plain.target,
                                                    plain.headers + [("Authorization", "")],
                                                    b""), "Authorization", jwt))
    assert answer.status == 403
    assert answer.headers["x-amzn-errortype"] == "IncompleteSignatureException"
    assert answer.message.startswith("Authorization header requires 'Credential' parameter. "
                                     "Authorization header requires 'Signature' parameter.")
    assert jwt not in answer.message  # quoted back redacted
    bearer = Signed(plain.method, plain.target, plain.headers + [("Authorization", "Bearer abc")],
                    b"")
    answer = await send(fake, bearer)
    assert answer.headers["x-amzn-errortype"] == "IncompleteSignatureException"
    assert "not a valid key=value pair (missing equal-sign) in Authorization header" in (
        answer.message)
    no_date = drop_header(botocore_signed(fake, "GET", "/Development/x"), "X-Amz-Date")
    answer = await send(fake, no_date)
    assert answer.headers["x-amzn-errortype"] == "IncompleteSignatureException"
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in answer.message


async def test_refuses_a_wrong_scope(fake: FakeApiGateway) -> None:
    req = botocore_signed(fake, "GET", "/Development/x")
    auth = dict(req.headers)["Authorization"]
    other_region = replace_header(req, "Authorization",
                                  auth.replace(f"/{REGION}/", "/eu-west-1/"))
    answer = await send(fake, other_region)
    assert answer.headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert answer.message == "Credential should be scoped to a valid region, not 'eu-west-1'. "
    other_day = replace_header(req, "Authorization", auth.replace("/20260101/", "/20260102/"))
    answer = await send(fake, other_day)
    assert answer.message.startswith("Date in Credential scope does not match YYYYMMDD")


async def test_outside_the_stage_and_without_iam_nothing_changes(fake: FakeApiGateway) -> None:
    answer = await send(fake, botocore_signed(fake, "GET", "/Other/x"))
    assert answer.status == 403 and answer.message == "Missing Authentication Token"
    plain = FakeApiGateway()
    await plain.start()
    try:
        answer = await send(plain, Signed("GET", "/Development/x", [("Host", "h")], b""))
        assert answer.status == 200
        assert plain.seen[-1].sigv4 is None
        assert "sigv4" not in json.loads(answer.body)
    finally:
        await plain.stop()


# --- the check itself, against botocore on generated requests ------------------------------

segment = st.lists(st.one_of(
    st.sampled_from(["a", "-", ".", "~", "+", "%2F", "%20", "!", "*", "'", "(", ")", ":", "@"]),
    st.characters(blacklist_categories=("Cs",)).map(lambda c: quote(c, safe=""))),
    min_size=1, max_size=5).map("".join)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "DELETE"]),
       path=st.lists(st.one_of(segment, st.sampled_from(["", ".", ".."])), max_size=5).map(
           lambda s: "/Development/" + "/".join(s)),
       params=st.lists(st.tuples(text, st.one_of(st.none(), text)), max_size=5),
       body=st.binary(max_size=200), token=st.booleans(),
       content_type=st.one_of(st.none(), st.just("application/json;   charset=utf-8")))
def test_check_agrees_with_botocore(method: str, path: str,
                                    params: list[tuple[str, str | None]], body: bytes,
                                    token: bool, content_type: str | None) -> None:
    query = "&".join(quote(n, safe="-_.~") + ("" if v is None else "=" + quote(v, safe="-_.~"))
                     for n, v in params)
    target = path + (f"?{query}" if query else "")
    host = "a1b2c3.execute-api.us-east-1.amazonaws.com"
    request = AWSRequest(method=method, url=f"https://{host}{target}",
                         headers={"Host": host} | ({"Content-Type": content_type}
                                                   if content_type else {}), data=body)
    fixed = datetime.datetime.fromtimestamp(T0, datetime.UTC).replace(tzinfo=None)
    key_id, secret = (TEMP_ID, TEMP_SECRET) if token else (KEY_ID, SECRET)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fixed):
        SigV4Auth(Credentials(key_id, secret, TOKEN if token else None), "execute-api",
                  REGION).add_auth(request)
    headers = list(request.headers.items())
    secrets, tokens = {KEY_ID: SECRET, TEMP_ID: TEMP_SECRET}, {TEMP_ID: TOKEN}
    digest = hashlib.sha256(body).hexdigest()
    verdict = sigv4_check.check(sigv4_check.Request(method, target, headers, digest),
                                secrets, tokens, T0, REGION)
    assert verdict is None
    # and a one-bit change of the body is seen
    other = hashlib.sha256(body + b"x").hexdigest()
    verdict = sigv4_check.check(sigv4_check.Request(method, target, headers, other),
                                secrets, tokens, T0, REGION)
    assert verdict is not None and verdict.message == MISMATCH


# --- presigned URLs (a WebSocket $connect with IAM authorization) -----------------------------

PRESIGN_NOW = 1_764_653_000.0


def _presigned(url: str, key_id: str, secret: str, token: str | None, expires: int = 300,
               now: float = PRESIGN_NOW) -> str:
    """What botocore's SigV4QueryAuth makes of this URL: the independent implementation."""
    request = AWSRequest(method="GET", url=url)
    fixed = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fixed):
        botocore.auth.SigV4QueryAuth(Credentials(key_id, secret, token), "execute-api",
                                     "us-east-1", expires=expires).add_auth(request)
    return str(request.url)


def _check(url: str, now: float = PRESIGN_NOW + 10) -> sigv4_check.Refusal | None:
    target = url.split("/", 3)[3]
    return sigv4_check.check_presigned(
        sigv4_check.Request("GET", "/" + target, [("Host", "h.example")],
                            hashlib.sha256(b"").hexdigest()),
        {KEY_ID: SECRET, TEMP_ID: TEMP_SECRET}, {TEMP_ID: TOKEN}, now, "us-east-1")


@pytest.mark.parametrize("query", ["", "?room=lobby", "?a=1&b=two%20words"])
def test_presigned_accepts_what_botocore_presigns(query: str) -> None:
    assert _check(_presigned(f"https://h.example/prod{query}", KEY_ID, SECRET, None)) is None
    assert _check(_presigned(f"https://h.example/prod{query}", TEMP_ID, TEMP_SECRET,
                             TOKEN)) is None


def test_presigned_accepts_what_our_signer_presigns() -> None:
    query = Signer("us-east-1").presign(AwsKeys(TEMP_ID, Secret(TEMP_SECRET), Secret(TOKEN)),
                                        "GET", "h.example", "/prod", "x=1", 60, PRESIGN_NOW)
    assert _check(f"https://h.example/prod?{query}") is None


def test_presigned_refuses_tampering_expiry_and_missing_parts() -> None:
    url = _presigned("https://h.example/prod?room=a", KEY_ID, SECRET, None, expires=60)
    assert _check(url.replace("room=a", "room=b")).error_type == "InvalidSignatureException"
    assert _check(url.replace("/prod?", "/other?")).error_type == "InvalidSignatureException"
    assert "expired" in _check(url, now=PRESIGN_NOW + 61).message  # type: ignore[union-attr]
    assert _check(url.replace("&X-Amz-Signature=", "&X-Amz-Sig=")).error_type == \
        "IncompleteSignatureException"
    assert _check("https://h.example/prod?room=a").error_type == \
        "MissingAuthenticationTokenException"
    # A temporary key without its token, or someone else's token: the token is invalid.
    bare = _presigned("https://h.example/prod", TEMP_ID, TEMP_SECRET, None)
    assert _check(bare).error_type == "UnrecognizedClientException"
    other = _presigned("https://h.example/prod", TEMP_ID, TEMP_SECRET, "another-token")
    assert _check(other).error_type == "UnrecognizedClientException"
    wrong = _presigned("https://h.example/prod", KEY_ID, SECRET + "x", None)
    assert _check(wrong).error_type == "InvalidSignatureException"
