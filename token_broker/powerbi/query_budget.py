"""Power BI's query budget, respected: a per-identity sliding window and a short-lived result cache.

Power BI allows 120 query requests per minute per user, whatever the dataset (Datasets - Execute Queries,
Limitations). In "app owns data" every browser user calls as the one service principal (or master user),
so they all share that budget. :class:`QueryBudget` counts the executeQueries calls the broker makes per
Power BI identity (the key of :meth:`TokenService.minted_for`) over the last 60 seconds and refuses with
``429`` and ``Retry-After`` before Power BI would. :class:`QueryResults` keeps results for
``POWERBI_PROXY_QUERY_CACHE_SECONDS``, bounded, with one upstream call for identical concurrent queries.

With a shared tier (``CACHE_REDIS_HOST``) the budget is counted in Redis (a sliding-window script), so it
holds across every instance; while Redis is unavailable, and always for the result cache, state is per
instance (with N instances the budget is then N times the setting; see docs/SECURITY.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import NoReturn

from ..support.cache import RefreshingCache
from ..support.errors import RateLimitedError
from ..support.shared import SharedCounters

WINDOW_SECONDS = 60.0
MAX_IDENTITIES = 10_000


class QueryBudget:
    """At most ``per_minute`` calls per key in any 60-second window; the least recently used keys are dropped."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 shared: SharedCounters | None = None) -> None:
        self._per_minute = per_minute
        self._shared = shared
        self._clock = clock
        self._calls: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> None:
        """Count one call for ``key`` or raise :class:`RateLimitedError` (429, ``Retry-After``)."""
        if self._shared is not None:
            waited = self._shared.take_window("query budget", key, limit=self._per_minute, seconds=WINDOW_SECONDS)
            if waited is not None:
                if waited <= 0:
                    return
                self._refuse(max(1, math.ceil(waited)))
        now = self._clock()
        with self._lock:
            calls = self._calls.get(key)
            if calls is None:
                calls = self._calls[key] = deque()
                while len(self._calls) > MAX_IDENTITIES:
                    self._calls.popitem(last=False)
            else:
                self._calls.move_to_end(key)
            while calls and calls[0] <= now - WINDOW_SECONDS:
                calls.popleft()
            if len(calls) < self._per_minute:
                calls.append(now)
                return
            wait = max(1, math.ceil(calls[0] + WINDOW_SECONDS - now))
        self._refuse(wait)

    def _refuse(self, wait: int) -> NoReturn:
        raise RateLimitedError(
            f"This broker keeps Power BI's executeQueries budget (120 per minute per user; "
            f"POWERBI_PROXY_QUERIES_PER_MINUTE={self._per_minute} here) for the identity it queries as, and it is "
            f"used up for now; retry after {wait} seconds.", code="powerbi_proxy_query_budget_exhausted",
            retry_after=wait, title="Power BI query budget used up")


@dataclass(frozen=True)
class QueryResult:
    """A Power BI answer kept for reuse: status, content type, body, Power BI's request id."""

    status: int
    content_type: str
    body: bytes = field(repr=False)
    request_id: str | None
    expires_on: float


class QueryResults:
    """Results of identical queries (same principal, dataset, body, identity) reused for ``seconds``."""

    def __init__(self, *, seconds: int, max_entries: int, wait_timeout: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self._clock = clock
        # refresh_margin=0: an entry is served until its expiry, never after; waiters share the one fetch.
        self._cache: RefreshingCache[QueryResult] = RefreshingCache(
            refresh_margin=0, max_entries=max_entries, wait_timeout=wait_timeout, clock=clock, name="query result")

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: Hashable, fetch: Callable[[float], QueryResult]) -> QueryResult:
        """The cached result for ``key``, or ``fetch(expires_on)``'s, fetched once for concurrent callers."""
        if not self.seconds:
            return fetch(self._clock())
        return self._cache.get(key, lambda: fetch(self._clock() + self.seconds))
