"""Values shared by a fleet: what a strategy's value becomes in a store that holds only bytes.

The refresh core keeps values through its `Store` protocol (proxy/credentials/refresh.py). A
shared store (Redis, proxy/credentials/redis_store.py) knows only keys, bytes, TTLs and a lock;
this module sits between the two, so that neither the store nor the refresher knows what a
Cognito token is:

- **keys**: one per credential and value kind, derived from the credential's settings, secrets
  included, so that processes with the same settings meet at the same entry and different
  settings never do. The settings go through scrypt first: a key is public to whoever can read
  Redis, and a plain hash of settings whose only secret is a user's password would let them try
  passwords offline. No user or pool name appears in a key.
- **values**: JSON of the strategy's codec, sealed with AES-256-GCM under a key derived (HKDF)
  from `token_cache.encryption_key` and the credential's settings, with the Redis key as
  associated data (an entry copied to another key does not open). An entry that does not open
  or parse is a miss, logged once.

A strategy shares its value by giving the refresher a `Codec`: a name (with a version) and two
functions between the value and a JSON-able dict. For example, a strategy whose value is a
token string and an expiry-less extra:

    CODEC = Codec("command/1", lambda v: {"out": v.text}, lambda d: Output(str(d["out"])))

    def share(self, slot: SharedSlot) -> None:
        self._core.share(slot.store(CODEC), slot.key(CODEC))

Secrets go into the dict in clear (the whole dict is encrypted); bump the version in the name
when the dict's shape changes, and members of different versions simply do not share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from proxy.credentials.clock import Clock, SystemClock
from proxy.credentials.refresh import Stored
from proxy.secret import Secret

if TYPE_CHECKING:
    # cryptography (~10 ms to import) is imported where a value is sealed or opened: the
    # strategies import this module for Codec and SharedSlot with or without a token_cache.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("authproxy.token_cache")

V = TypeVar("V")

_SALT = b"authproxy token_cache v1"
# scrypt's cost for a key: ~16 MiB and a few tens of ms, once per credential at start (or when
# a reload brings a new one), and as much again per guess for whoever tries to recover a
# password from a key they read in Redis.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024}
_FORMAT = b"\x01"  # first byte of every value: the envelope's version
# A stored value outlives its expiry by this long in Redis, so that what came with it (a
# refresh token, an identity id) still serves a fleet that restarts after a long stop.
KEEP_AFTER_EXPIRY = 86400.0
STATS = ("hits", "misses", "undecryptable", "lock_waits")


@dataclass(frozen=True)
class Codec(Generic[V]):
    """How one strategy's value becomes a JSON-able dict for a shared store, and back."""

    name: str  # "cognito-token/1": the kind and version of the dict's shape
    encode: Callable[[V], dict[str, Any]]
    decode: Callable[[dict[str, Any]], V]  # may raise KeyError/ValueError/TypeError: a miss


class ByteStore(Protocol):
    """What a shared store offers (Redis): it answers None, drops a put and yields True from
    `lock` while it is unreachable, so its trouble never reaches a request."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """JSON-able, no secret: `state` is ok, degraded or starting."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, data: bytes, ttl: float) -> None: ...

    def lock(self, key: str, ttl: float) -> AbstractAsyncContextManager[bool]: ...


def settings_material(config: Any, among: Mapping[str, Any] | None = None) -> bytes:
    """The settings of a credential config as canonical bytes, secrets revealed (never logged:
    they only ever go through scrypt). Its name is left out (two names for the same settings
    share); a credential it builds on (`login`) is put in by its settings, since the same name
    can stand for different settings on two members."""
    data = _plain(config)
    data.pop("name", None)
    for key in ("login",):
        dep = data.get(key)
        if isinstance(dep, str) and among is not None and dep in among:
            data[key] = json.loads(settings_material(among[dep], among))
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return {"secret": value.reveal()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class SharedCache:
    """The fleet's cache as the credentials see it: one ByteStore, the key prefix and the
    encryption key; `slot()` gives one credential its keys."""

    def __init__(self, backend: ByteStore, *, key_prefix: str,
                 encryption_key: Secret | None, clock: Clock | None = None) -> None:
        self.backend = backend
        self._prefix = key_prefix
        self._secret = encryption_key.reveal().encode() if encryption_key else b""
        self._clock: Clock = clock or SystemClock()
        self.stats: dict[str, Counter[str]] = {}  # by credential name, for metrics

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    def status(self) -> dict[str, Any]:
        return self.backend.status() | {"credentials": {
            name: dict(stats) for name, stats in self.stats.items()}}

    def slot(self, name: str, material: bytes) -> SharedSlot:
        stats = self.stats.setdefault(name, Counter({k: 0 for k in STATS}))
        return SharedSlot(self, name, material, stats)

    def _seal_key(self, material_key: bytes) -> AESGCM:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return AESGCM(HKDF(hashes.SHA256(), 32, salt=_SALT, info=b"value key").derive(
            self._secret + material_key))


class SharedSlot:
    """One credential's place in the shared cache: its keys and its value key, derived once."""

    def __init__(self, cache: SharedCache, name: str, material: bytes,
                 stats: Counter[str]) -> None:
        self.cache, self.name, self.stats = cache, name, stats
        self._material = material
        self._derived: tuple[bytes, AESGCM] | None = None

    def _keys(self) -> tuple[bytes, AESGCM]:
        """Derived on first use: a strategy that keeps nothing in the fleet's cache (static)
        costs no scrypt."""
        if self._derived is None:
            derived = hashlib.scrypt(self._material, salt=_SALT, dklen=48, **_SCRYPT)
            # The first part names the entries; the rest, never stored, goes into the value
            # key, so that without encryption_key (loopback) the settings' secrets still
            # protect the value.
            self._derived = derived[:16], self.cache._seal_key(derived[16:])
            self._material = b""
        return self._derived

    @property
    def aead(self) -> AESGCM:
        return self._keys()[1]

    def key(self, codec: Codec[Any]) -> str:
        digest = hashlib.sha256(self._keys()[0] + codec.name.encode()).hexdigest()[:32]
        return f"{self.cache._prefix}{digest}"

    def store(self, codec: Codec[V]) -> SharedStore[V]:
        return SharedStore(self, codec)


class SharedStore(Generic[V]):
    """A refresh.Store over a ByteStore: one credential's values, encoded and sealed."""

    def __init__(self, slot: SharedSlot, codec: Codec[V]) -> None:
        self._slot, self._codec = slot, codec
        self._backend = slot.cache.backend
        self._clock = slot.cache._clock
        self.key = slot.key(codec)
        self._aad = f"{self.key}|{codec.name}".encode()
        self._warned = False

    async def get(self, key: str) -> Stored[V] | None:
        from cryptography.exceptions import InvalidTag

        data = await self._backend.get(self.key)
        stats = self._slot.stats
        if data is None:
            stats["misses"] += 1
            return None
        try:
            if data[:1] != _FORMAT:
                raise InvalidTag
            plain = self._slot.aead.decrypt(data[1:13], data[13:], self._aad)
        except InvalidTag:
            stats["undecryptable"] += 1
            self._warn("does not decrypt: does every member have the same "
                       "token_cache.encryption_key?")
            return None
        try:
            envelope = json.loads(plain)
            item = Stored(self._codec.decode(envelope["value"]), float(envelope["expires_at"]))
        except (ValueError, KeyError, TypeError) as e:
            stats["undecryptable"] += 1
            self._warn(f"cannot be read ({type(e).__name__}): written by another version?")
            return None
        stats["hits"] += 1
        self._warned = False  # a later bad entry is worth a line again
        return item

    async def put(self, key: str, item: Stored[V]) -> None:
        plain = json.dumps({"expires_at": item.expires_at,
                            "value": self._codec.encode(item.value)}).encode()
        nonce = os.urandom(12)
        data = _FORMAT + nonce + self._slot.aead.encrypt(nonce, plain, self._aad)
        ttl = max(item.expires_at - self._clock.time(), 0.0) + KEEP_AFTER_EXPIRY
        await self._backend.put(self.key, data, ttl)

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        async with self._backend.lock(self.key + ":lock", ttl) as ours:
            if not ours:
                self._slot.stats["lock_waits"] += 1
            yield ours

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("token_cache: the shared entry of credential %s %s; ignoring it (this "
                        "process fetches its own)", self._slot.name, why)
