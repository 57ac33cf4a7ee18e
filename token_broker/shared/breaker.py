"""A circuit breaker: after a failure, skip the shared tier for a while; then let one call probe it.

A dead or frozen Redis thus costs one timeout per ``open_seconds`` on each instance, not one per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Seconds the breaker stays open after a failure.
OPEN_SECONDS = 10.0


class CircuitBreaker:
    """Closed (calls go through), open (calls are skipped) or half-open (one probe call at a time)."""

    def __init__(self, *, open_seconds: float = OPEN_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._open_seconds = open_seconds
        self._clock = clock
        self._open_until = 0.0
        self._probing_until = 0.0
        self._lock = threading.Lock()
        self.opened = 0  # times the breaker opened (tests, doctor)

    @property
    def is_open(self) -> bool:
        return self._open_until > 0.0

    def allow(self) -> bool:
        """True when a call may go to the shared tier now."""
        if self._open_until == 0.0:
            return True  # closed: the hot path takes no lock
        now = self._clock()
        with self._lock:
            if now < self._open_until or now < self._probing_until:
                return False
            self._probing_until = now + self._open_seconds  # one probe; a hung probe frees the slot later
            return True

    def success(self) -> None:
        if self._open_until:
            with self._lock:
                self._open_until = self._probing_until = 0.0

    def failure(self) -> None:
        with self._lock:
            if not self._open_until or self._probing_until:
                self.opened += 1
            self._open_until = self._clock() + self._open_seconds
            self._probing_until = 0.0
