"""Measurement primitives: timed loops, percentiles and releasing many threads at once.

Timings use :func:`time.perf_counter_ns` (monotonic, the finest clock Python has). The garbage
collector stays on: production runs with it, so its pauses belong in the tail latencies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

NS_PER_MS = 1_000_000


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (``fraction`` 0.5 is the median)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True)
class LoopResult:
    """One run of a timed loop: per-call latencies and the loop's throughput."""

    p50_ms: float
    p99_ms: float
    per_second: float
    calls: int


def timed_loop(call: Callable[[], object], iterations: int, *, check: Callable[[object], None]) -> LoopResult:
    """Call ``call`` ``iterations`` times on this thread, timing each call.

    ``check`` validates each result outside the timed region (a benchmark of failing requests would
    be worthless); it raises to abort the run.
    """
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(iterations):
        before = clock()
        result = call()
        samples.append(clock() - before)
        check(result)
    elapsed = clock() - started
    samples.sort()
    return LoopResult(
        p50_ms=percentile(samples, 0.50) / NS_PER_MS,
        p99_ms=percentile(samples, 0.99) / NS_PER_MS,
        # The whole loop, checks included, so that this is what one thread really sustains.
        per_second=iterations / (elapsed / 1e9),
        calls=iterations,
    )


def release_together(count: int, call: Callable[[], T], *, before_release: Callable[[], None] | None = None,
                     timeout: float = 120.0) -> list[T]:
    """Run ``call`` on ``count`` threads released at the same instant; return their results.

    The threads are started first and wait at a barrier, so thread creation does not spread the
    requests out. ``before_release`` runs on this thread while they wait (e.g. to sleep until a
    token reaches its refresh point). The first exception raised by any thread is re-raised.
    """
    barrier = threading.Barrier(count + 1)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = call()
        except BaseException as err:  # re-raised on the main thread below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        if before_release is not None:
            before_release()
        barrier.wait(timeout)
    except BaseException:
        barrier.abort()  # wake the waiting threads (they see BrokenBarrierError) instead of leaving them
        raise
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"{count} concurrent calls did not finish within {timeout} s")
    return [r for r in results if r is not None]
