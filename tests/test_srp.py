"""SRP three ways: our client (proxy/credentials/srp.py), the fake Cognito's server
(proxy/fakes/cognito_srp.py, which shares no code with it) and pycognito, written by other
people. The client must sign what pycognito signs, byte for byte; the fake's server must accept
pycognito's proof as well as ours and refuse a wrong password. Only then does a test against
the fake say something about Cognito.

pycognito is in the test extra; without it a developer gets a skip, but CI
(`CI` or `AUTHPROXY_REQUIRE_PYCOGNITO`, set by scripts/test.sh) gets a failure."""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import types
from typing import Any

import pytest

from proxy.credentials import srp
from proxy.fakes import cognito_srp

aws_srp: Any
if os.environ.get("CI") or os.environ.get("AUTHPROXY_REQUIRE_PYCOGNITO"):
    import pycognito.aws_srp as aws_srp
else:
    aws_srp = pytest.importorskip("pycognito.aws_srp")

POOL = "us-east-1_AbCdEf123"
USER_ID = "6f1c2e5a-0d4b-4a7e-9a57-2b9f1c3d4e5f"
NOW = dt.datetime(2026, 3, 5, 7, 8, 9, tzinfo=dt.UTC)


class _FrozenDatetime(dt.datetime):
    @classmethod
    def utcnow(cls) -> _FrozenDatetime:  # type: ignore[override]
        return cls(2026, 3, 5, 7, 8, 9)


def _pycognito(password: str, a: int, challenge: dict[str, str],
               monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """pycognito's process_challenge with our `a` and a frozen clock."""
    monkeypatch.setattr(aws_srp, "datetime", types.SimpleNamespace(datetime=_FrozenDatetime))
    helper = aws_srp.AWSSRP(username="alice", password=password, pool_id=POOL,
                            client_id="client", client=object())
    helper.small_a_value = a
    helper.large_a_value = helper.calculate_a()
    result: dict[str, str] = helper.process_challenge(challenge, {"USERNAME": "alice"})
    return result


def _server_challenge(password: str, big_a: int, salt: str | None = None,
                      ) -> tuple[dict[str, str], cognito_srp.ServerSession]:
    """A PASSWORD_VERIFIER challenge as the fake Cognito's server would give it."""
    salt = salt or secrets.token_hex(16)
    server = cognito_srp.ServerSession(cognito_srp.verifier(POOL, USER_ID, password, salt),
                                       f"{big_a:x}")
    block = base64.b64encode(secrets.token_bytes(64)).decode()
    challenge = {"SALT": salt, "SRP_B": f"{server.big_b:x}", "SECRET_BLOCK": block,
                 "USER_ID_FOR_SRP": USER_ID, "USERNAME": USER_ID}
    return challenge, server


def _accepts(server: cognito_srp.ServerSession, challenge: dict[str, str], signature: str,
             ts: str) -> bool:
    return server.check(pool_id=POOL, user_id=USER_ID, secret_block=challenge["SECRET_BLOCK"],
                        timestamp=ts, signature=signature)


def test_constants_match_pycognito() -> None:
    assert srp.N_HEX == aws_srp.N_HEX
    helper = aws_srp.AWSSRP(username="u", password="p", pool_id=POOL, client_id="c",
                            client=object())
    assert srp.K == cognito_srp.K == helper.val_k
    assert srp.G == cognito_srp.G == helper.val_g
    assert cognito_srp.N == srp.N == int(aws_srp.N_HEX, 16)


@pytest.mark.parametrize("value", [0x1, 0xF, 0x80, 0x7F, 0x8000, 0x123, 2**3071, srp.N - 1])
def test_pad_hex_matches_pycognito(value: int) -> None:
    assert srp.pad_hex(value) == aws_srp.pad_hex(value)
    assert srp.pad_hex(f"{value:x}") == aws_srp.pad_hex(f"{value:x}")


def test_timestamp_format() -> None:
    assert srp.timestamp(NOW) == "Thu Mar 5 07:08:09 UTC 2026"
    assert srp.timestamp(NOW) == aws_srp.AWSSRP.get_cognito_formatted_timestamp(NOW)
    # a non-UTC aware time is converted, not printed as if it were UTC
    plus_two = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert srp.timestamp(plus_two) == "Thu Mar 5 07:08:09 UTC 2026"


def test_secret_hash_matches_pycognito() -> None:
    theirs = aws_srp.AWSSRP.get_secret_hash("alice@example.com", "client123", "s3cr3t")
    assert srp.secret_hash("alice@example.com", "client123", "s3cr3t") == theirs
    assert cognito_srp.secret_hash("alice@example.com", "client123", "s3cr3t") == theirs


@pytest.mark.parametrize("when", [NOW, dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
                                  dt.datetime(2024, 2, 29, 0, 0, 0, tzinfo=dt.UTC)])
def test_fake_reads_pycognitos_timestamps(when: dt.datetime) -> None:
    theirs = aws_srp.AWSSRP.get_cognito_formatted_timestamp(when)
    assert cognito_srp.parse_timestamp(theirs) == (when, theirs)
    padded = theirs.replace(f" {when.day} ", f" {when.day:02d} ")
    assert cognito_srp.parse_timestamp(padded) == (when, theirs)  # read, then signed canonical


# salts whose hex has a leading zero byte or a top bit set are padded differently
SALTS = [None, None, "000a" + "5c" * 14, "8f" + "01" * 15, "0" + "7" * 31]


@pytest.mark.parametrize("salt", SALTS)
def test_signature_matches_pycognito_byte_for_byte(
        salt: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    password = f"Correct-Horse-{salt}-ünïcode"
    a, big_a = srp.generate_a()
    challenge, server = _server_challenge(password, big_a, salt)
    ours = srp.password_claim(
        pool_id=POOL, user_id=USER_ID, password=password, a=a, big_a=big_a,
        big_b_hex=challenge["SRP_B"], salt_hex=challenge["SALT"],
        secret_block=challenge["SECRET_BLOCK"], ts=srp.timestamp(NOW))
    theirs = _pycognito(password, a, challenge, monkeypatch)
    assert theirs["TIMESTAMP"] == srp.timestamp(NOW)
    assert ours == theirs["PASSWORD_CLAIM_SIGNATURE"]
    # and the fake's server, independent of both, accepts that proof
    assert _accepts(server, challenge, theirs["PASSWORD_CLAIM_SIGNATURE"], srp.timestamp(NOW))


@pytest.mark.parametrize("salt", SALTS[2:])
def test_fake_server_refuses_pycognitos_proof_of_a_wrong_password(
        salt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, big_a = srp.generate_a()
    challenge, server = _server_challenge("right-password", big_a, salt)
    theirs = _pycognito("wrong-password", a, challenge, monkeypatch)
    assert not _accepts(server, challenge, theirs["PASSWORD_CLAIM_SIGNATURE"],
                        srp.timestamp(NOW))


def test_generate_a_is_g_to_the_a() -> None:
    a, big_a = srp.generate_a(b"\x01" * 128)
    assert a == int.from_bytes(b"\x01" * 128, "big") % srp.N
    assert big_a == pow(2, a, srp.N)
    assert srp.generate_a()[0] != srp.generate_a()[0]


def _claim(password: str, a: int, big_a: int, challenge: dict[str, str]) -> str:
    return srp.password_claim(
        pool_id=POOL, user_id=USER_ID, password=password, a=a, big_a=big_a,
        big_b_hex=challenge["SRP_B"], salt_hex=challenge["SALT"],
        secret_block=challenge["SECRET_BLOCK"], ts=srp.timestamp(NOW))


def test_fake_server_accepts_right_password_and_rejects_wrong_one() -> None:
    a, big_a = srp.generate_a()
    challenge, server = _server_challenge("right-password", big_a)
    right = _claim("right-password", a, big_a, challenge)
    wrong = _claim("wrong-password", a, big_a, challenge)
    assert right != wrong
    ts = srp.timestamp(NOW)
    assert _accepts(server, challenge, right, ts)
    assert not _accepts(server, challenge, wrong, ts)
    # the timestamp and the secret block are part of the signed message
    assert not _accepts(server, challenge, right, "Thu Mar 5 07:08:10 UTC 2026")
    other = {**challenge, "SECRET_BLOCK": base64.b64encode(b"x" * 64).decode()}
    assert not _accepts(server, other, right, ts)
    assert not _accepts(server, {**challenge, "SECRET_BLOCK": "not base64!"}, right, ts)


def test_malicious_values_are_refused() -> None:
    a, big_a = srp.generate_a()
    with pytest.raises(srp.SrpError):
        srp.password_claim(pool_id=POOL, user_id=USER_ID, password="p", a=a, big_a=big_a,
                           big_b_hex=srp.N_HEX, salt_hex="00ff", secret_block="", ts="t")
    for big_a_hex in ("0", srp.N_HEX, f"{2 * srp.N:x}", "zz", ""):
        with pytest.raises(ValueError):
            cognito_srp.ServerSession(12345, big_a_hex)
