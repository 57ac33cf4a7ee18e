"""A bounded, single-flight cache of expiring values (access tokens, later embed tokens).

* Fresh values (more than ``refresh_margin`` seconds left) are served from memory without a lock.
* On a miss or when a value enters its refresh margin, exactly one thread (the leader) fetches;
  concurrent callers wait for that one fetch, or, while the old value is still valid, keep getting
  the old value without waiting.
* When a refresh fails while the old value is still valid, the old value is served, a warning is
  logged, and the next refresh attempt waits a few seconds so that an outage is not hammered.
* At most ``max_entries`` keys are kept; the least recently refreshed key is evicted first.

MSAL does none of this: 50 concurrent cold calls make 50 token requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from . import telemetry
from .bounded import BoundedMap
from .errors import UpstreamTimeoutError

log = logging.getLogger(__name__)

#: A value with less than this many seconds left (or half the refresh margin, if smaller) is never served.
MINIMUM_VALIDITY_SECONDS = 30.0
#: A demand capped to the longest lifetime upstream issues still wants a value at most this much older.
LONGEST_AVAILABLE_SLACK_SECONDS = 60.0
#: After a failed refresh, wait this long (or a quarter of the margin, if smaller) before trying again.
FAILURE_BACKOFF_SECONDS = 10.0


class Expiring(Protocol):
    """Anything with an absolute expiry time in epoch seconds."""

    @property
    def expires_on(self) -> float: ...


V = TypeVar("V", bound=Expiring)


class _Flight(Generic[V]):
    """One in-progress fetch that other threads can wait on."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None

    def wait(self, timeout: float) -> V:
        if not self.done.wait(timeout):
            raise UpstreamTimeoutError("The token request already in progress did not finish in time.")
        if self.error is not None:
            raise self.error
        if self.value is None:  # done is set only after value or error
            raise UpstreamTimeoutError("The token request already in progress ended without a token.")
        return self.value


class _Entry(Generic[V]):
    # ``cached`` is replaced as one tuple so the lock-free hot path never sees a value with
    # another value's refresh time.
    __slots__ = ("cached", "flight", "longest_available", "retry_not_before")

    def __init__(self) -> None:
        self.cached: tuple[V, float] | None = None  # (value, refresh at)
        self.flight: _Flight[V] | None = None
        self.retry_not_before = 0.0
        # Lifetime of a value fetched to satisfy a min_remaining demand: longer demands are capped to it,
        # since asking upstream again would only return another value of the same lifetime.
        self.longest_available = 0.0

    @property
    def value(self) -> V | None:
        cached = self.cached
        return cached[0] if cached is not None else None


class RefreshingCache(Generic[V]):
    """Keyed single-flight cache of :class:`Expiring` values. See the module docstring."""

    def __init__(
        self,
        *,
        refresh_margin: float,
        max_entries: int,
        wait_timeout: float,
        clock: Callable[[], float] = time.time,
        name: str = "token",
    ) -> None:
        self._margin = refresh_margin
        self._wait_timeout = wait_timeout
        self._backoff = min(FAILURE_BACKOFF_SECONDS, refresh_margin / 4)
        self._minimum_validity = min(MINIMUM_VALIDITY_SECONDS, refresh_margin / 2)
        self._clock = clock
        self._name = name
        self._attributes = telemetry.cache_attributes(name)
        self._entries: BoundedMap[Hashable, _Entry[V]] = BoundedMap(max_entries)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, fetch: Callable[[], V], *, min_remaining: float = 0.0) -> V:
        """Return a fresh value for ``key``, calling ``fetch`` at most once across threads.

        ``min_remaining``: the value must also stay valid this many seconds (an embed token cannot outlive
        the Azure AD token that creates it). When a fetch made for such a demand returns a shorter-lived
        value, that lifetime is what upstream issues: later demands are capped to it (less a minute), so
        requests never loop asking for longer values than exist.
        """
        entry = self._entries.get(key)
        if entry is not None:
            cached = entry.cached
            if cached is not None and cached[1] > (now := self._clock()) and (
                not min_remaining or cached[0].expires_on - now >= min_remaining
            ):
                telemetry.cache_lookup(self._attributes, "hit")
                return cached[0]  # the hot path: no lock
        return self._get_slow(key, fetch, min_remaining)

    def peek(self, key: Hashable) -> V | None:
        """The cached value for ``key`` whatever its age, or None."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def discard(self, key: Hashable) -> None:
        """Forget ``key`` (for example after the upstream service said the value is no longer valid)."""
        with self._lock:
            self._entries.pop(key)

    def _refresh_at(self, value: V) -> float:
        # A value that lives shorter than twice the margin is refreshed at half its remaining life,
        # so short-lived upstream tokens do not turn every request into a fetch.
        remaining = value.expires_on - self._clock()
        return value.expires_on - min(self._margin, max(remaining, 0.0) / 2)

    def _usable(self, value: V | None, now: float) -> bool:
        return value is not None and value.expires_on - self._minimum_validity > now

    def _fresh(self, entry: _Entry[V], now: float, min_remaining: float) -> V | None:
        cached = entry.cached
        if cached is None or cached[1] <= now:
            return None
        if entry.longest_available:
            min_remaining = min(min_remaining, entry.longest_available - LONGEST_AVAILABLE_SLACK_SECONDS)
        return cached[0] if cached[0].expires_on - now >= min_remaining else None

    def _get_slow(self, key: Hashable, fetch: Callable[[], V], min_remaining: float = 0.0) -> V:
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry()
                self._entries.put(key, entry)  # the least recently refreshed key goes over the bound
            fresh = self._fresh(entry, now, min_remaining)
            if fresh is not None:
                telemetry.cache_lookup(self._attributes, "hit")
                return fresh
            value = entry.value
            stale = value if value is not None and self._usable(value, now) else None
            if entry.flight is None:
                if stale is not None and now < entry.retry_not_before:
                    telemetry.cache_lookup(self._attributes, "stale_served")
                    return stale  # backing off after a failed refresh
                flight: _Flight[V] = _Flight()
                entry.flight = flight
                leader = True
            else:
                flight = entry.flight
                leader = False
        if not leader:
            if stale is not None and not min_remaining:
                telemetry.cache_lookup(self._attributes, "stale_served")
                return stale  # someone is refreshing; the current value is still good
            telemetry.cache_lookup(self._attributes, "coalesced")
            return flight.wait(self._wait_timeout)
        return self._lead(key, entry, flight, fetch, stale, min_remaining)

    def _lead(self, key: Hashable, entry: _Entry[V], flight: _Flight[V], fetch: Callable[[], V], stale: V | None,
              min_remaining: float) -> V:
        try:
            fresh = fetch()
        except BaseException as err:
            with self._lock:
                entry.flight = None
                if stale is not None:
                    entry.retry_not_before = self._clock() + self._backoff
            flight.error = err
            flight.done.set()
            if stale is not None and isinstance(err, Exception):
                telemetry.cache_lookup(self._attributes, "stale_served")  # the refresh failed
                log.warning(
                    "Refreshing the cached %s failed (%s); serving the cached one, valid for %d more seconds",
                    self._name, getattr(err, "code", type(err).__name__), stale.expires_on - self._clock(),
                )
                return stale
            telemetry.cache_lookup(self._attributes, "miss")
            raise
        telemetry.cache_lookup(self._attributes, "miss")
        with self._lock:
            entry.cached = (fresh, self._refresh_at(fresh))
            if min_remaining:
                lifetime = fresh.expires_on - self._clock()
                entry.longest_available = lifetime if lifetime < min_remaining else 0.0
            entry.flight = None
            entry.retry_not_before = 0.0
            self._entries.touch(key)
        flight.value = fresh
        flight.done.set()
        return fresh
