"""Cognito's SRP-6a variant (USER_SRP_AUTH + PASSWORD_VERIFIER), as pure functions.

The client side only (`generate_a`, `password_claim`), used by the token source and `login`.
The fake Cognito's server side is its own code (proxy/fakes/cognito_srp.py): a fake that
verified with these functions would agree with any mistake in them.

Cognito's choices, which must be matched byte for byte (amazon-cognito-identity-js
AuthenticationHelper): N is the 3072-bit RFC 3526 prime, g = 2, H = SHA-256 over the bytes of
*padded hex strings*, x includes the pool's short id, and the session key is 16 bytes of HKDF
with the info string "Caldera Derived Key".
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

N_HEX = (
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
N = int(N_HEX, 16)
G = 2
_INFO = b"Caldera Derived Key\x01"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SrpError(ValueError):
    """The peer sent a value that would make the exchange insecure (B % N == 0, u == 0)."""


def pad_hex(value: int | str) -> str:
    """Hex as Cognito hashes it: even length, and a leading 00 when the top bit is set so the
    number reads as positive."""
    text = value if isinstance(value, str) else f"{value:x}"
    if len(text) % 2:
        return "0" + text
    return "00" + text if text[0] in "89abcdefABCDEF" else text


def _hash_hex(hex_text: str) -> str:
    return hashlib.sha256(bytes.fromhex(hex_text)).hexdigest()


K = int(_hash_hex("00" + N_HEX + "02"), 16)


def generate_a(random_bytes: bytes | None = None) -> tuple[int, int]:
    """(a, A): a fresh private value and the public `A = g^a mod N` sent as SRP_A (in hex)."""
    a = int.from_bytes(random_bytes or secrets.token_bytes(128), "big") % N
    big_a = pow(G, a, N)
    if big_a % N == 0:  # only for a == 0; reject rather than leak the password hash
        raise SrpError("A % N == 0")
    return a, big_a


def _u(big_a: int, big_b: int) -> int:
    u = int(_hash_hex(pad_hex(big_a) + pad_hex(big_b)), 16)
    if u == 0:
        raise SrpError("u == 0")
    return u


def _x(pool_id: str, user_id: str, password: str, salt_hex: str) -> int:
    pool = pool_id.split("_", 1)[1]
    inner = hashlib.sha256(f"{pool}{user_id}:{password}".encode()).hexdigest()
    return int(_hash_hex(pad_hex(salt_hex) + inner), 16)


def _hkdf(s: int, u: int) -> bytes:
    prk = hmac.new(bytes.fromhex(pad_hex(u)), bytes.fromhex(pad_hex(s)), hashlib.sha256).digest()
    return hmac.new(prk, _INFO, hashlib.sha256).digest()[:16]


def timestamp(now: dt.datetime | None = None) -> str:
    """`Thu Mar 5 07:08:09 UTC 2026`: English names, day of month not padded (Cognito rejects
    locale-dependent strftime output and a zero-padded day)."""
    t = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return (f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} UTC {t.year}")


def _signature(key: bytes, pool_id: str, user_id: str, secret_block: str, ts: str) -> str:
    msg = (pool_id.split("_", 1)[1].encode() + user_id.encode()
           + base64.b64decode(secret_block) + ts.encode())
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def password_claim(*, pool_id: str, user_id: str, password: str, a: int, big_a: int,
                   big_b_hex: str, salt_hex: str, secret_block: str, ts: str) -> str:
    """The client's PASSWORD_CLAIM_SIGNATURE for a PASSWORD_VERIFIER challenge.
    `user_id` is the challenge's USER_ID_FOR_SRP, not what the user typed."""
    big_b = int(big_b_hex, 16)
    if big_b % N == 0:
        raise SrpError("B % N == 0")
    u = _u(big_a, big_b)
    x = _x(pool_id, user_id, password, salt_hex)
    s = pow(big_b - K * pow(G, x, N), a + u * x, N)
    return _signature(_hkdf(s, u), pool_id, user_id, secret_block, ts)


def secret_hash(username: str, client_id: str, client_secret: str) -> str:
    """SECRET_HASH, sent whenever the app client has a secret."""
    digest = hmac.new(client_secret.encode(), (username + client_id).encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()
