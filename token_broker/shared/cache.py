"""The L2 cache on Redis: encrypted values under HMAC key names, one upstream fetch per key across instances.

Behind each process's own single-flight memory cache (:class:`~token_broker.support.cache.RefreshingCache`, the
L1), so one thread per process and key reaches this code. A lookup is one ``MGET`` of the key's name under
the newest and the previous key version. On a miss the instance takes a short lock (``SET NX PX``, released
by a script that checks the lock's token); the others poll for the value a bounded time (the lock's expiry),
then mint themselves, so a lock holder that died blocks nobody longer than its lock lives.

Any Redis failure turns into a plain ``fetch()`` (see :mod:`token_broker.shared.connection`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ..support import telemetry
from ..support.errors import BrokerError, ConfigurationError
from .connection import UNAVAILABLE, RedisConnection
from .keyring import Keyring, KeyringSource
from .keys import canonical

log = logging.getLogger(__name__)

V = TypeVar("V")
#: A value living less than this (after the refresh margin) is not worth storing.
MINIMUM_TTL_SECONDS = 1.0
#: Poll interval while another instance fetches: starts here, doubles up to POLL_MAX.
POLL_START = 0.01
POLL_MAX = 0.1
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedCacheTier:
    """:class:`~token_broker.support.shared.SharedCache` on Redis."""

    def __init__(self, connection: RedisConnection, keys: KeyringSource, *, lock_seconds: float,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = connection
        self._keys = keys
        self._lock_ms = max(1000, int(lock_seconds * 1000))
        self._sleep = sleep
        self._clock = clock
        self._release: Any = None
        self._attributes: dict[str, dict[str, str]] = {}

    def get_or_fetch(self, namespace: str, key: Hashable, fetch: Callable[[], V], *, encode: Callable[[V], bytes],
                     decode: Callable[[bytes], V], ttl: Callable[[V], float]) -> V:
        attributes = self._attributes.get(namespace) or self._attributes.setdefault(
            namespace, telemetry.cache_attributes(f"{namespace} shared"))
        try:
            keyring = self._keys.current()
        except ConfigurationError:
            raise  # no usable key: fail closed, never store in the clear
        except BrokerError:  # a passing Key Vault failure (logged by the keyring): as if there were no Redis
            telemetry.cache_lookup(attributes, "unavailable")
            return fetch()
        names = keyring.names(namespace, canonical(key))
        found = self._read(keyring, names, decode)
        if found is UNAVAILABLE:
            telemetry.cache_lookup(attributes, "unavailable")
            return fetch()
        if found is not None:
            telemetry.cache_lookup(attributes, "hit")
            return found  # type: ignore[no-any-return]  # not UNAVAILABLE, not None: a V
        return self._single_flight(keyring, names, fetch, encode, decode, ttl, attributes)

    def _read(self, keyring: Keyring, names: list[bytes], decode: Callable[[bytes], V]) -> Any:
        """The value (newest version first), None on a miss, or UNAVAILABLE."""
        blobs = self._redis.call("mget", lambda r: r.mget(names))
        if blobs is UNAVAILABLE:
            return UNAVAILABLE
        for name, blob in zip(names, blobs, strict=False):  # type: ignore[arg-type]
            if blob is None:
                continue
            plain = keyring.decrypt(name, blob)
            if plain is None:
                continue  # another key version, or not ours: a miss
            try:
                return decode(plain)
            except (ValueError, KeyError, TypeError):
                log.warning("A shared cache value did not decode; treating it as a miss")
        return None

    def _single_flight(self, keyring: Keyring, names: list[bytes], fetch: Callable[[], V],
                       encode: Callable[[V], bytes], decode: Callable[[bytes], V], ttl: Callable[[V], float],
                       attributes: dict[str, str]) -> V:
        lock = b"tb:lock:" + names[0].partition(b":")[2]
        token = secrets.token_hex(16)
        deadline = self._clock() + self._lock_ms / 1000
        poll = POLL_START
        while True:
            taken = self._redis.call("lock", lambda r: r.set(lock, token, nx=True, px=self._lock_ms))
            if taken is UNAVAILABLE:
                telemetry.cache_lookup(attributes, "unavailable")
                return fetch()
            if taken:
                # Another instance may have stored the value and released its lock since our first read.
                found = self._read(keyring, names, decode)
                if found is not None and found is not UNAVAILABLE:
                    self._unlock(lock, token)
                    telemetry.cache_lookup(attributes, "coalesced")
                    return found  # type: ignore[no-any-return]
                telemetry.cache_lookup(attributes, "miss")
                try:
                    value = fetch()
                    self._store(keyring, names[0], value, encode, ttl)
                finally:
                    self._unlock(lock, token)
                return value
            if self._clock() >= deadline:  # the holder is slow or dead: do not wait longer than its lock
                telemetry.cache_lookup(attributes, "miss")
                value = fetch()
                self._store(keyring, names[0], value, encode, ttl)
                return value
            self._sleep(poll)
            poll = min(poll * 2, POLL_MAX)
            found = self._read(keyring, names, decode)
            if found is UNAVAILABLE:
                telemetry.cache_lookup(attributes, "unavailable")
                return fetch()
            if found is not None:
                telemetry.cache_lookup(attributes, "coalesced")
                return found  # type: ignore[no-any-return]

    def _store(self, keyring: Keyring, name: bytes, value: V, encode: Callable[[V], bytes],
               ttl: Callable[[V], float]) -> None:
        seconds = ttl(value)
        if seconds < MINIMUM_TTL_SECONDS:
            return
        blob = keyring.encrypt(name, encode(value))
        self._redis.call("set", lambda r: r.set(name, blob, px=int(seconds * 1000)))

    def _unlock(self, lock: bytes, token: str) -> None:
        def release(client: Any) -> Any:
            if self._release is None:
                self._release = client.register_script(_RELEASE)
            return self._release(keys=[lock], args=[token], client=client)

        self._redis.call("unlock", release)
