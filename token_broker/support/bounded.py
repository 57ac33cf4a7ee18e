"""The one bounded map of the broker: at most ``max_entries`` keys, least recently used evicted first,
optionally with a time to live per entry.

Every in-memory map whose keys callers choose (tokens, callers, reports) is one of these, so memory stays
bounded however many distinct keys arrive: the token and embed caches' entries
(:class:`~token_broker.support.cache.RefreshingCache`), Power BI metadata, verified caller tokens and the
rate limiter's buckets. Reads take no lock (a dict read is atomic) and do not count as a use; writes,
:meth:`touch` and :meth:`pop` take the map's lock. What "recently used" means is the owner's choice: it
calls :meth:`touch` when a key was used.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A thread-safe LRU map of at most ``max_entries`` keys; with ``ttl``, entries expire that many seconds
    after they were put."""

    __slots__ = ("_clock", "_items", "_lock", "_max_entries", "_ttl")

    def __init__(self, max_entries: int, *, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()  # key -> (expires at, value)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        """The value of ``key`` (None if absent or expired); no lock, not counted as a use."""
        item = self._items.get(key)
        if item is None or (self._ttl is not None and item[0] <= self._clock()):
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        """Set ``key`` (now the most recently used), evicting the least recently used keys over the bound."""
        expires = self._clock() + self._ttl if self._ttl is not None else 0.0
        with self._lock:
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max_entries:
                self._items.popitem(last=False)

    def touch(self, key: K) -> None:
        """Mark ``key`` as the most recently used, if present."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None."""
        with self._lock:
            item = self._items.pop(key, None)
        return item[1] if item is not None else None
