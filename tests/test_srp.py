"""proxy/credentials/srp.py against pycognito's independent implementation, and against itself
(the server-side verification the fake Cognito relies on)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import types

import pytest

from proxy.credentials import srp

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


def _server_challenge(password: str, big_a: int) -> tuple[dict[str, str], int, int, int]:
    salt = secrets.token_hex(16)
    verifier = srp.make_verifier(POOL, USER_ID, password, salt)
    b = int.from_bytes(secrets.token_bytes(128), "big") % srp.N
    big_b = srp.server_b(verifier, b)
    block = base64.b64encode(secrets.token_bytes(64)).decode()
    challenge = {"SALT": salt, "SRP_B": f"{big_b:x}", "SECRET_BLOCK": block,
                 "USER_ID_FOR_SRP": USER_ID, "USERNAME": USER_ID}
    return challenge, verifier, b, big_b


def test_constants_match_pycognito() -> None:
    assert srp.N_HEX == aws_srp.N_HEX
    helper = aws_srp.AWSSRP(username="u", password="p", pool_id=POOL, client_id="c",
                            client=object())
    assert srp.K == helper.val_k
    assert srp.G == helper.val_g


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
    assert (srp.secret_hash("alice@example.com", "client123", "s3cr3t")
            == aws_srp.AWSSRP.get_secret_hash("alice@example.com", "client123", "s3cr3t"))


@pytest.mark.parametrize("trial", range(5))
def test_signature_matches_pycognito_byte_for_byte(
        trial: int, monkeypatch: pytest.MonkeyPatch) -> None:
    password = f"Correct-Horse-{trial}-ünïcode"
    a, big_a = srp.generate_a()
    challenge, *_ = _server_challenge(password, big_a)
    ours = srp.password_claim(
        pool_id=POOL, user_id=USER_ID, password=password, a=a, big_a=big_a,
        big_b_hex=challenge["SRP_B"], salt_hex=challenge["SALT"],
        secret_block=challenge["SECRET_BLOCK"], ts=srp.timestamp(NOW))
    theirs = _pycognito(password, a, challenge, monkeypatch)
    assert theirs["TIMESTAMP"] == srp.timestamp(NOW)
    assert ours == theirs["PASSWORD_CLAIM_SIGNATURE"]


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


def test_server_accepts_right_password_and_rejects_wrong_one() -> None:
    a, big_a = srp.generate_a()
    challenge, verifier, b, big_b = _server_challenge("right-password", big_a)
    right = _claim("right-password", a, big_a, challenge)
    wrong = _claim("wrong-password", a, big_a, challenge)
    assert right != wrong

    def verify(signature: str, ts: str = srp.timestamp(NOW)) -> bool:
        return srp.verify_password_claim(
            pool_id=POOL, user_id=USER_ID, verifier=verifier, b=b, big_b=big_b,
            big_a_hex=f"{big_a:x}", secret_block=challenge["SECRET_BLOCK"], ts=ts,
            signature=signature)

    assert verify(right)
    assert not verify(wrong)
    # the timestamp is part of the signed message
    assert not verify(right, ts="Thu Mar 5 07:08:10 UTC 2026")


def test_malicious_values_are_refused() -> None:
    a, big_a = srp.generate_a()
    with pytest.raises(srp.SrpError):
        srp.password_claim(pool_id=POOL, user_id=USER_ID, password="p", a=a, big_a=big_a,
                           big_b_hex=srp.N_HEX, salt_hex="00ff", secret_block="", ts="t")
    with pytest.raises(srp.SrpError):
        srp.verify_password_claim(pool_id=POOL, user_id=USER_ID, verifier=5, b=7, big_b=9,
                                  big_a_hex="0", secret_block="", ts="t", signature="")
