"""Per-caller rate limit: a token bucket per caller, in memory, with a bounded number of callers.

Each caller may make ``CALLER_RATE_LIMIT_PER_MINUTE`` requests in a burst and earns them back
evenly over a minute. At most ``CALLER_RATE_LIMIT_MAX_CALLERS`` buckets are kept; the least recently
seen caller's bucket is dropped first (that caller starts again with a full bucket), so memory stays
bounded however many distinct callers arrive.

With a shared tier (``CACHE_REDIS_HOST``) the bucket lives in Redis (a GCRA script; the same burst and refill),
so the limit holds across every instance; while Redis is unavailable the per-instance buckets take over (with N
instances a caller can then make up to N times the limit, as without Redis).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from ..support import telemetry
from ..support.bounded import BoundedMap
from ..support.errors import RateLimitedError
from ..support.shared import SharedCounters


class RateLimiter:
    """Token buckets keyed by caller."""

    def __init__(self, per_minute: int, *, max_callers: int, clock: Callable[[], float] = time.monotonic,
                 shared: SharedCounters | None = None) -> None:
        self._per_minute = per_minute
        self._shared = shared
        self._capacity = float(per_minute)
        self._refill_per_second = per_minute / 60.0
        self._clock = clock
        self._buckets: BoundedMap[str, list[float]] = BoundedMap(max_callers)  # key -> [tokens, updated at]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, caller_key: str) -> None:
        """Take one request from the caller's bucket or raise :class:`RateLimitedError`."""
        if self._shared is not None:
            wait = self._shared.take_rate("rate limit", caller_key, per_minute=self._per_minute)
            if wait is not None:
                if wait <= 0:
                    return
                self._refuse(wait)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(caller_key)
            if bucket is None:
                bucket = [self._capacity, now]
                self._buckets.put(caller_key, bucket)
            else:
                self._buckets.touch(caller_key)
                bucket[0] = min(self._capacity, bucket[0] + (now - bucket[1]) * self._refill_per_second)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return
            wait = (1.0 - bucket[0]) / self._refill_per_second
        self._refuse(wait)

    def _refuse(self, wait: float) -> NoReturn:
        telemetry.rate_limited()
        raise RateLimitedError(
            f"This caller may make {int(self._capacity)} token requests per minute; retry after "
            f"{math.ceil(wait)} seconds.", retry_after=math.ceil(wait),
        )
