"""proxy/credentials/sigv4.py, checked against botocore's SigV4Auth (an independent
implementation) on generated requests, plus the signing-key cache and region_from_host."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import json
from collections.abc import Sequence
from unittest import mock
from urllib.parse import quote

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.credentials import sigv4
from proxy.credentials.aws_keys import AwsKeys
from proxy.credentials.sigv4 import (
    EMPTY_SHA256,
    Signer,
    canonical_query,
    canonical_uri,
    region_from_host,
)
from proxy.secret import Secret

REGION = "eu-west-1"
HOST = f"a1b2c3d4e5.execute-api.{REGION}.amazonaws.com"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//token+with/odd=chars"
# Headers the proxy passes along but never signs; botocore is not given them (it would sign
# them), so a signer that signs any of them differs from botocore.
UNSIGNED = [("User-Agent", "Mozilla/5.0 (X11)"), ("Accept", "*/*"), ("X-Forwarded-For", "1.2.3.4"),
            ("Content-Length", "12"), ("X-Amz-Date", "19990101T000000Z")]


def botocore_sign(method: str, url: str, headers: dict[str, str], body: bytes, now: float,
                  token: str | None,
                  params: Sequence[tuple[str, str]] | None = None) -> dict[str, str]:
    """What botocore sends for this request at `now`. botocore reads its clock through
    `botocore.auth.get_current_datetime` (a naive UTC datetime); the X-Amz-Date it produced is
    returned too, so a patch that stopped working shows up as a wrong date, not a mystery."""
    request = AWSRequest(method=method, url=url, headers=headers, data=body,
                         params=list(params) if params else None)
    fixed = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fixed):
        SigV4Auth(Credentials("AKIDEXAMPLE", SECRET, token), "execute-api",
                  REGION).add_auth(request)
    return dict(request.headers.items())


def ours(method: str, host: str, raw_path: str, query: str, headers: Sequence[tuple[str, str]],
         body: bytes, now: float, token: str | None) -> dict[str, str]:
    keys = AwsKeys("AKIDEXAMPLE", Secret(SECRET), Secret(token) if token else None)
    out = Signer(REGION).sign(keys, method, host, raw_path, query, headers,
                              hashlib.sha256(body).hexdigest(), now=now)
    return dict(out)


# --- generated requests --------------------------------------------------------------------

_unicode = st.characters(blacklist_categories=("Cs",))  # any code point UTF-8 can carry


def _pct(text: str) -> str:
    return quote(text, safe="")


path_atom = st.one_of(
    st.sampled_from(["a", "Z", "0", "-", "_", ".", "~", "+", "%2F", "%2f", "%20", "%25", "%7E",
                     "!", "$", "&", "'", "(", ")", "*", ",", ";", "=", ":", "@", "%3F", "%23"]),
    _unicode.map(_pct),  # unicode, percent-encoded as browsers send it
)
path_segment = st.one_of(st.lists(path_atom, min_size=1, max_size=6).map("".join),
                         st.sampled_from(["", ".", ".."]))
raw_paths = st.builds(lambda segs, slash: "/" + "/".join(segs) + slash,
                      st.lists(path_segment, max_size=6), st.sampled_from(["", "/"]))

# Query names that sort differently as tuples and as "name=value" strings (`a` < `a-b` as a
# tuple, `a-b=` < `a=` as text), plus generated text.
query_text = st.one_of(st.sampled_from(["a", "a-b", "a_b", "A", "b", "~", "x+y", "a b", "ä", ""]),
                       st.text(_unicode, max_size=8))
query_pairs = st.lists(st.tuples(query_text, st.one_of(st.none(), query_text)), max_size=6)


def canonical_form(pairs: list[tuple[str, str | None]], empty_pieces: bool) -> str:
    """A raw query as botocore itself writes one: every name and value encoded with only
    A-Za-z0-9-_.~ left as is; None is a bare name without `=`."""
    pieces = [quote(n, safe="-_.~") if v is None
              else f"{quote(n, safe='-_.~')}={quote(v, safe='-_.~')}" for n, v in pairs]
    if empty_pieces and pieces:
        pieces.insert(len(pieces) // 2, "")
    return "&".join(pieces)


content_types = st.one_of(st.none(), st.sampled_from([
    "application/json", "application/json; charset=utf-8", "  text/plain;   charset=UTF-8  ",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=----x  y"]))
bodies = st.one_of(st.just(b""), st.binary(max_size=300),
                   st.dictionaries(st.text(max_size=5), st.integers()).map(
                       lambda d: json.dumps(d).encode()))
hosts = st.sampled_from([HOST, HOST + ":443", "127.0.0.1:9000", "api.example.com"])
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"])
tokens = st.one_of(st.none(), st.just(TOKEN))
# 2001 .. 2099, with milliseconds (X-Amz-Date truncates them). Not finer: botocore's datetime
# rounds to microseconds, so 0.9999995 would be the next second for it and not for time.gmtime.
times = st.builds(lambda s, ms: s + ms / 1000, st.integers(978307200, 4102444799),
                  st.integers(0, 999))

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(method=methods, host=hosts, raw_path=raw_paths, pairs=query_pairs,
       empty_pieces=st.booleans(), content_type=content_types, body=bodies, token=tokens,
       now=times)
def test_same_authorization_as_botocore(method: str, host: str, raw_path: str,
                                        pairs: list[tuple[str, str | None]], empty_pieces: bool,
                                        content_type: str | None, body: bytes,
                                        token: str | None, now: float) -> None:
    query = canonical_form(pairs, empty_pieces)
    url = f"https://{host}{raw_path}" + (f"?{query}" if query else "")
    signed_headers = {"Host": host} | ({"Content-Type": content_type} if content_type else {})
    theirs = botocore_sign(method, url, signed_headers, body, now, token)
    assert theirs["X-Amz-Date"] == _stamp(now)

    headers = UNSIGNED + ([("Content-Type", content_type)] if content_type else [])
    mine = ours(method, host, raw_path, query, headers, body, now, token)

    assert mine["Authorization"] == theirs["Authorization"]
    assert mine["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert mine.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")
    assert set(mine) == {"Authorization", "X-Amz-Date"} | (
        {"X-Amz-Security-Token"} if token else set())


def _raw_char(draw: st.DrawFn, c: str) -> str:
    """One decoded character the way some client may have put it on the wire."""
    unreserved = c.isascii() and (c.isalnum() or c in "-_.~")
    upper = "".join(f"%{b:02X}" for b in c.encode())
    hexes = [upper, upper.lower()]
    if c == " ":
        return draw(st.sampled_from(["+", "%20"]))
    if unreserved:
        return draw(st.sampled_from([c, *hexes]))
    if c.isascii() and c in ",:/@!$'()*;?[]|^`{}\"<>\\":  # sent raw by browsers and curl
        return draw(st.sampled_from([c, *hexes]))
    return draw(st.sampled_from(hexes))  # `&`, `=`, `+`, `%`, `#`, non-ASCII: must be escaped


@st.composite
def loose_query(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """A raw query in any encoding a client may use, and the parameters it stands for."""
    pairs = draw(st.lists(st.tuples(query_text, st.one_of(st.none(), query_text)), max_size=6))
    pieces, decoded = [], []
    for name, value in pairs:
        if not name and not value:
            continue  # an empty piece has no parameter for botocore's `params` to stand for
        raw_name = "".join(_raw_char(draw, c) for c in name)
        if value is None:
            pieces.append(raw_name)
        else:
            pieces.append(raw_name + "=" + "".join(_raw_char(draw, c) for c in value))
        decoded.append((name, value or ""))
    return "&".join(pieces), decoded


@SETTINGS
@given(raw_path=raw_paths, query=loose_query(), token=tokens, now=times)
def test_loose_query_signs_as_botocore_signs_its_parameters(
        raw_path: str, query: tuple[str, list[tuple[str, str]]], token: str | None,
        now: float) -> None:
    """A query not in canonical form (`a,b`, `%7e`, `+` for a space) is signed as botocore signs
    the parameters it stands for (given as `params`, which botocore encodes itself)."""
    raw_query, params = query
    theirs = botocore_sign("GET", f"https://{HOST}{raw_path}", {"Host": HOST}, b"", now, token,
                           params=params)
    mine = ours("GET", HOST, raw_path, raw_query, [], b"", now, token)
    assert mine["Authorization"] == theirs["Authorization"]


def _stamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


# --- edge cases, spelled out ---------------------------------------------------------------

def test_canonical_uri_encodes_the_raw_path_once_more() -> None:
    assert canonical_uri("/Dev/a%2Fb") == "/Dev/a%252Fb"
    assert canonical_uri("/path/%C3%A4") == "/path/%25C3%25A4"
    assert canonical_uri("/a b+c~d*") == "/a%20b%2Bc~d%2A"
    assert canonical_uri("/a/./b/../c//d/") == "/a/c/d/"
    assert canonical_uri("") == "/"
    assert canonical_uri("/") == "/"


def test_canonical_query() -> None:
    assert canonical_query("") == ""
    assert canonical_query("b=2&a=2&a=1") == "a=1&a=2&b=2"
    assert canonical_query("flag") == "flag="
    assert canonical_query("a=") == "a="
    assert canonical_query("a-b=1&a=2") == "a=2&a-b=1"  # by name, then value: not as text
    assert canonical_query("a=1&&b=2") == "=&a=1&b=2"  # botocore keeps an empty piece
    assert canonical_query("q=a,b:c/d") == "q=a%2Cb%3Ac%2Fd"
    assert canonical_query("q=%7e%2f") == "q=~%2F"
    assert canonical_query("q=%zz") == "q=%25zz"
    assert canonical_query("q=%FF") == "q=%FF"  # not UTF-8: the byte is kept exactly


def test_plus_in_a_query_is_a_space_and_encoded_plus_is_a_plus() -> None:
    assert canonical_query("q=a+b") == canonical_query("q=a%20b") == "q=a%20b"
    assert canonical_query("q=a%2Bb") == "q=a%2Bb"
    assert canonical_uri("/a+b") == "/a%2Bb"  # in the path `+` is only a `+`


def test_signed_headers_and_values() -> None:
    signer = Signer(REGION)
    plain = AwsKeys("AKIDEXAMPLE", Secret(SECRET))
    temp = AwsKeys("ASIAEXAMPLE", Secret(SECRET), Secret(TOKEN))
    assert signer.signed_header_names([], plain) == ["host", "x-amz-date"]
    assert signer.signed_header_names([("content-TYPE", "x")] + UNSIGNED, temp) == [
        "content-type", "host", "x-amz-date", "x-amz-security-token"]
    # An empty session token (AWS_SESSION_TOKEN="") is no token, as for botocore.
    assert signer.signed_header_names([], AwsKeys("AKID", Secret(SECRET), Secret(""))) == [
        "host", "x-amz-date"]
    out = dict(signer.sign(temp, "GET", HOST, "/", "", [("Content-Type", "a/b")], EMPTY_SHA256,
                           now=0))
    assert out["X-Amz-Date"] == "19700101T000000Z"
    assert out["X-Amz-Security-Token"] == TOKEN
    assert out["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/19700101/eu-west-1/execute-api/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=")


def test_known_answers_from_aws_documentation() -> None:
    # The derived key of AWS's "Examples of how to derive a signing key" page.
    key = sigv4.signing_key(SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    # `get-vanilla` of the SigV4 test suite (service `service`, region us-east-1).
    now = calendar.timegm((2015, 8, 30, 12, 36, 0))
    out = dict(Signer("us-east-1", "service").sign(
        AwsKeys("AKIDEXAMPLE", Secret(SECRET)), "GET", "example.amazonaws.com", "/", "", [],
        EMPTY_SHA256, now=now))
    assert out["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")


def test_empty_sha256() -> None:
    assert EMPTY_SHA256 == botocore.auth.EMPTY_SHA256_HASH


def test_no_secret_in_repr() -> None:
    signer = Signer(REGION)
    keys = AwsKeys("AKIDEXAMPLE", Secret(SECRET), Secret(TOKEN))
    signer.sign(keys, "GET", HOST, "/", "", [], EMPTY_SHA256, now=0)
    for text in (repr(signer), repr(keys), repr(signer._keys), str(keys)):
        assert SECRET not in text and TOKEN not in text


# --- the signing-key cache -----------------------------------------------------------------

@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    calls: list[tuple[str, str, str]] = []
    real = sigv4.signing_key

    def counting(secret: str, date: str, region: str, service: str) -> bytes:
        calls.append((date, region, service))
        return real(secret, date, region, service)

    monkeypatch.setattr(sigv4, "signing_key", counting)
    return calls


def test_signing_key_is_reused_within_a_utc_day(derivations: list[tuple[str, str, str]]) -> None:
    signer = Signer(REGION)
    keys = AwsKeys("AKIDEXAMPLE", Secret(SECRET))
    day = calendar.timegm((2026, 3, 1, 0, 0, 0))
    first = signer.sign(keys, "GET", HOST, "/a", "", [], EMPTY_SHA256, now=day)
    for offset in (1, 3600, 86399.9):
        signer.sign(keys, "GET", HOST, "/a", "", [], EMPTY_SHA256, now=day + offset)
    assert derivations == [("20260301", REGION, "execute-api")]

    signer.sign(keys, "GET", HOST, "/a", "", [], EMPTY_SHA256, now=day + 86400)
    assert derivations[-1] == ("20260302", REGION, "execute-api")
    assert len(derivations) == 2

    # The cached key signs exactly as a freshly derived one does.
    assert Signer(REGION).sign(keys, "GET", HOST, "/a", "", [], EMPTY_SHA256, now=day) == first


def test_signing_key_cache_follows_the_secret_and_stays_small(
        derivations: list[tuple[str, str, str]]) -> None:
    signer = Signer(REGION)
    a = AwsKeys("AKIDA", Secret("secret-a"))
    b = AwsKeys("AKIDB", Secret("secret-b"))
    sig_a = signer.sign(a, "GET", HOST, "/", "", [], EMPTY_SHA256, now=0)[0][1]
    sig_b = signer.sign(b, "GET", HOST, "/", "", [], EMPTY_SHA256, now=0)[0][1]
    assert len(derivations) == 2
    assert sig_a.rsplit("=", 1)[1] != sig_b.rsplit("=", 1)[1]
    for i in range(50):
        signer.sign(AwsKeys("AKID", Secret(f"rotated-{i}")), "GET", HOST, "/", "", [],
                    EMPTY_SHA256, now=0)
    assert len(signer._keys) <= 8


# --- region_from_host ----------------------------------------------------------------------

@pytest.mark.parametrize(("host", "region"), [
    ("a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "eu-west-1"),
    ("a1b2c3d4e5.execute-api.us-gov-west-1.amazonaws.com:443", "us-gov-west-1"),
    ("A1B2C3D4E5.EXECUTE-API.AP-SOUTHEAST-2.AMAZONAWS.COM", "ap-southeast-2"),
    ("a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn", "cn-north-1"),
    ("a1b2c3d4e5-vpce-0123456789abcdef0.execute-api.us-east-1.amazonaws.com", "us-east-1"),
    ("api.example.com", None),
    ("127.0.0.1:9000", None),
    ("execute-api.us-east-1.amazonaws.com", None),
    ("a.b.execute-api.us-east-1.amazonaws.com", None),
    ("a1b2c3d4e5.execute-api.us-east-1.amazonaws.com.evil.example", None),
    ("", None),
])
def test_region_from_host(host: str, region: str | None) -> None:
    assert region_from_host(host) == region


# --- presigned URLs (query-string SigV4, WebSocket handshakes) -----------------------------

def botocore_presign(url: str, now: float, token: str | None, expires: int) -> str:
    """The query string botocore's SigV4QueryAuth puts on this URL at `now`."""
    request = AWSRequest(method="GET", url=url)
    fixed = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fixed):
        botocore.auth.SigV4QueryAuth(Credentials("AKIDEXAMPLE", SECRET, token), "execute-api",
                                     REGION, expires=expires).add_auth(request)
    return str(request.url).partition("?")[2]


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("path,query", [
    ("/prod", ""), ("/prod/", "room=lobby"), ("/prod/a%20b", "a=1&b=two&c=%C3%A4"),
    ("/", "x=%2F&y=~"),
])
def test_presign_matches_botocore_sigv4_query_auth(path: str, query: str,
                                                   token: str | None) -> None:
    now = 1_764_653_000.0
    keys = AwsKeys("AKIDEXAMPLE", Secret(SECRET), Secret(token) if token else None)
    got = Signer(REGION).presign(keys, "GET", HOST, path, query, 300, now=now)
    want = botocore_presign(f"https://{HOST}{path}" + (f"?{query}" if query else ""), now,
                            token, 300)
    assert got == want
    assert "X-Amz-SignedHeaders=host&" in got and got.rsplit("&", 1)[1].startswith(
        "X-Amz-Signature=")


def test_presign_drops_the_clients_own_signature_params_and_keeps_the_rest_in_order() -> None:
    keys = AwsKeys("AKIDEXAMPLE", Secret(SECRET), None)
    got = Signer(REGION).presign(keys, "GET", HOST, "/prod",
                                 "z=1&X-Amz-Signature=forged&a=2&x-amz-credential=evil&"
                                 "X%2DAmz%2DDate=1", 60, now=1_764_653_000.0)
    params = [p.partition("=") for p in got.split("&")]
    assert [n for n, _, _ in params][:2] == ["z", "a"]
    assert "forged" not in got and "evil" not in got and got.count("X-Amz-Date=") == 1
    assert [n for n, _, _ in params].count("X-Amz-Signature") == 1


def test_presign_leaves_the_header_signer_alone() -> None:
    """Presigning shares the day's key state with `sign`; a signature made after a presign is
    the same as one made without."""
    keys = AwsKeys("AKIDEXAMPLE", Secret(SECRET), Secret(TOKEN))
    now = 1_764_653_000.0
    before = Signer(REGION).sign(keys, "GET", HOST, "/prod/x", "a=1", [], EMPTY_SHA256, now)
    signer = Signer(REGION)
    signer.presign(keys, "GET", HOST, "/prod", "", 300, now=now)
    assert signer.sign(keys, "GET", HOST, "/prod/x", "a=1", [], EMPTY_SHA256, now) == before
