"""The fake Cognito's server side of SRP and its SECRET_HASH check, written from COGNITO.md and
RFC 5054 without importing `proxy.credentials.srp`: if the two shared code, a misreading of
Cognito's variant would be on both sides and every test would still pass. tests/test_srp.py
checks this module against pycognito's client as well as against ours.

A pool stores v = g^x (never the password); the server answers InitiateAuth with
B = k*v + g^b, derives S = (A * v^u)^b, and checks PASSWORD_CLAIM_SIGNATURE with the key
HKDF gives for S.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
import secrets

# RFC 3526 group 15 (3072 bits), the prime every Cognito pool uses; g = 2.
_N_HEX = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E34"
    "04DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F4"
    "06B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8"
    "FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E"
    "462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2"
    "261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3"
    "970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64"
    "521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2"
    "CAFFFFFFFFFFFFFFFF"
)
N = int(_N_HEX, 16)
G = 2


def _padded(value: int) -> bytes:
    """A big integer as Cognito hashes it: big-endian bytes with a leading zero byte when the top
    bit is set (Java's BigInteger.toByteArray, i.e. a positive two's-complement number)."""
    length = value.bit_length() // 8 + 1  # one more byte than needed whenever bit 8k-1 is set
    return value.to_bytes(max(length, 1), "big")


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha256(b"".join(parts)).digest(), "big")


# k = H(N | g), both as Cognito pads them ("00" + N_HEX + "02" in hex, one string).
K = _h(_padded(N) + bytes([G]))


def _short_pool(pool_id: str) -> str:
    return pool_id.split("_", 1)[1]


def _salt_bytes(salt_hex: str) -> bytes:
    """The SALT goes into x as the hex *string* the pool sent, padded the same way: its leading
    zero bytes count, so it cannot go through an integer (a salt "000a.." would lose one)."""
    if len(salt_hex) % 2:
        salt_hex = "0" + salt_hex
    elif salt_hex[:1] in tuple("89abcdefABCDEF"):
        salt_hex = "00" + salt_hex
    return bytes.fromhex(salt_hex)


def _x(pool_id: str, user_id: str, password: str, salt_hex: str) -> int:
    inner = hashlib.sha256(f"{_short_pool(pool_id)}{user_id}:{password}".encode()).hexdigest()
    return _h(_salt_bytes(salt_hex), bytes.fromhex(inner))


def verifier(pool_id: str, user_id: str, password: str, salt_hex: str) -> int:
    """v = g^x: what a pool keeps instead of the password."""
    return pow(G, _x(pool_id, user_id, password, salt_hex), N)


class ServerSession:
    """One PASSWORD_VERIFIER exchange from the server's side: a fresh b and B = k*v + g^b."""

    def __init__(self, verifier_value: int, big_a_hex: str) -> None:
        big_a = int(big_a_hex, 16)  # ValueError for junk: the caller answers InvalidParameter
        if big_a % N == 0:
            raise ValueError("SRP_A % N == 0")  # A = 0 would let anyone compute S
        self._v, self._a = verifier_value, big_a
        self._b = secrets.randbelow(N - 1) + 1
        self.big_b = (K * verifier_value + pow(G, self._b, N)) % N

    def key(self) -> bytes:
        u = _h(_padded(self._a), _padded(self.big_b))
        s = pow(self._a * pow(self._v, u, N), self._b, N)
        # HKDF-SHA256 with salt = u and a single 32-byte block, truncated to 16 bytes.
        prk = hmac.new(_padded(u), _padded(s), hashlib.sha256).digest()
        return hmac.new(prk, b"Caldera Derived Key\x01", hashlib.sha256).digest()[:16]

    def check(self, *, pool_id: str, user_id: str, secret_block: str, timestamp: str,
              signature: str) -> bool:
        """Whether the client's PASSWORD_CLAIM_SIGNATURE proves it knows the password."""
        try:
            block = base64.b64decode(secret_block, validate=True)
        except (binascii.Error, ValueError):
            return False
        msg = _short_pool(pool_id).encode() + user_id.encode() + block + timestamp.encode()
        expected = base64.b64encode(hmac.new(self.key(), msg, hashlib.sha256).digest()).decode()
        return hmac.compare_digest(expected.encode(), signature.encode())


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TIMESTAMP = re.compile(r"([A-Z][a-z]{2}) ([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) "
                        r"UTC (\d{4})")


def parse_timestamp(text: str) -> tuple[dt.datetime, str] | None:
    """Cognito reads TIMESTAMP with Java's `EEE MMM d HH:mm:ss z yyyy` (English) and signs what
    it parsed, not the string it got: a zero-padded day or a wrong weekday parses, but the
    signature over the canonical form no longer matches (measured on AWS: NotAuthorized, not
    InvalidParameter). Returns (time, canonical string), or None when it cannot be read."""
    m = _TIMESTAMP.fullmatch(text)
    if not m or m[1] not in _DAYS or m[2] not in _MONTHS:
        return None
    try:
        when = dt.datetime(int(m[7]), _MONTHS.index(m[2]) + 1, int(m[3]), int(m[4]), int(m[5]),
                           int(m[6]), tzinfo=dt.UTC)
    except ValueError:  # Feb 30, 25:00:00
        return None
    canonical = (f"{_DAYS[when.weekday()]} {_MONTHS[when.month - 1]} {when.day} "
                 f"{when:%H:%M:%S} UTC {when.year}")
    return when, canonical


def secret_hash(username: str, client_id: str, client_secret: str) -> str:
    """base64(HMAC-SHA256(key=client secret, message=username + client id))."""
    mac = hmac.new(client_secret.encode(), username.encode() + client_id.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()
