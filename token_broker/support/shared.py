"""What the caches and limiters need from a tier shared between instances, as protocols.

The product's caches (:mod:`token_broker.powerbi.embed`), the per-caller rate limit
(:mod:`token_broker.callers.rate_limit`) and the executeQueries budget (:mod:`token_broker.powerbi.query_budget`)
depend only on these; :mod:`token_broker.shared` implements them on Redis and :mod:`token_broker.broker`
injects that implementation when ``CACHE_REDIS_HOST`` is set. Every method answers "unavailable" instead of
raising when the shared tier fails: the caller then does what a single instance does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

V = TypeVar("V")


class SharedCache(Protocol):
    """A cache shared by every instance, in front of an upstream fetch."""

    def get_or_fetch(self, namespace: str, key: Hashable, fetch: Callable[[], V], *, encode: Callable[[V], bytes],
                     decode: Callable[[bytes], V], ttl: Callable[[V], float]) -> V:
        """The value of ``key`` from the shared tier, or ``fetch()``'s (stored for ``ttl(value)`` seconds).

        Across instances one fetch per key at a time (a bounded wait for another instance's fetch); when the
        shared tier fails, ``fetch()`` is called as if it were not there.
        """
        ...


class SharedCounters(Protocol):
    """Counters shared by every instance. ``None``: the tier is unavailable now; count locally instead."""

    def take_rate(self, namespace: str, key: Hashable, *, per_minute: int) -> float | None:
        """A token bucket of ``per_minute`` refilled over a minute (GCRA): 0 taken, else seconds to wait."""
        ...

    def take_window(self, namespace: str, key: Hashable, *, limit: int, seconds: float) -> float | None:
        """At most ``limit`` in any ``seconds`` (sliding window): 0 taken, else seconds to wait."""
        ...
