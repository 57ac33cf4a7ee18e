"""RefreshingCache: single flight, refresh margin, stale-while-failing and bounded size, with real threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from token_broker.support.bounded import BoundedMap
from token_broker.support.cache import RefreshingCache
from token_broker.support.errors import UpstreamUnavailableError


@dataclass(frozen=True)
class Value:
    name: str
    expires_on: float


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, *, margin: float = 300, max_entries: int = 100) -> RefreshingCache[Value]:
    return RefreshingCache(refresh_margin=margin, max_entries=max_entries, wait_timeout=5, clock=clock)


def test_fresh_values_are_served_without_fetching_again() -> None:
    clock, calls = Clock(), []
    cache = make(clock)

    def fetch() -> Value:
        calls.append(1)
        return Value("a", clock.now + 3600)

    assert cache.get("k", fetch) is cache.get("k", fetch)
    assert len(calls) == 1


def test_a_value_inside_the_margin_is_refreshed() -> None:
    clock = Clock()
    cache = make(clock, margin=300)
    first = cache.get("k", lambda: Value("old", clock.now + 3600))
    clock.now += 3600 - 299
    second = cache.get("k", lambda: Value("new", clock.now + 3600))
    assert (first.name, second.name) == ("old", "new")


def test_short_lived_values_are_refreshed_at_half_life_not_on_every_call() -> None:
    clock, calls = Clock(), []
    cache = make(clock, margin=300)

    def fetch() -> Value:
        calls.append(1)
        return Value("short", clock.now + 120)  # shorter than the margin itself

    cache.get("k", fetch)
    clock.now += 59
    cache.get("k", fetch)
    assert len(calls) == 1
    clock.now += 2
    cache.get("k", fetch)
    assert len(calls) == 2


def test_concurrent_cold_requests_make_one_fetch_and_share_its_result() -> None:
    clock = Clock()
    cache = make(clock)
    started, release, calls = threading.Event(), threading.Event(), []

    def fetch() -> Value:
        calls.append(1)
        started.set()
        release.wait(5)
        return Value("v", clock.now + 3600)

    results: list[Value] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", fetch))) for _ in range(50)]
    for t in threads:
        t.start()
    started.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    assert len(results) == 50 and len({id(r) for r in results}) == 1


def test_concurrent_waiters_share_the_leaders_failure() -> None:
    clock = Clock()
    cache = make(clock)
    release, calls, errors = threading.Event(), [], []

    def fetch() -> Value:
        calls.append(1)
        release.wait(5)
        raise UpstreamUnavailableError("down")

    def call() -> None:
        try:
            cache.get("k", fetch)
        except UpstreamUnavailableError as err:
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    assert len(errors) == 20


def test_a_failed_refresh_serves_the_still_valid_value_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    clock, calls = Clock(), []
    cache = make(clock, margin=300)
    cache.get("k", lambda: Value("cached", clock.now + 3600))
    clock.now += 3400  # 200 s left: due for refresh, still valid

    def failing() -> Value:
        calls.append(1)
        raise UpstreamUnavailableError("down")

    assert cache.get("k", failing).name == "cached"
    assert cache.get("k", failing).name == "cached"
    assert len(calls) == 1, "a second refresh attempt during the back-off would hammer the outage"
    assert any("serving the cached one" in r.getMessage() for r in caplog.records)
    clock.now += 11
    assert cache.get("k", lambda: Value("recovered", clock.now + 3600)).name == "recovered"


def test_an_expired_value_is_never_served_when_the_refresh_fails() -> None:
    clock = Clock()
    cache = make(clock)
    cache.get("k", lambda: Value("cached", clock.now + 100))
    clock.now += 90  # 10 s left: below the minimum validity

    def failing() -> Value:
        raise UpstreamUnavailableError("down")

    with pytest.raises(UpstreamUnavailableError):
        cache.get("k", failing)


def test_size_is_bounded_and_the_oldest_key_goes_first() -> None:
    clock = Clock()
    cache = make(clock, max_entries=3)
    for key in "abcd":
        cache.get(key, lambda key=key: Value(key, clock.now + 3600))
    assert len(cache) == 3
    assert cache.peek("a") is None and cache.peek("d") is not None


def test_discard_forgets_a_key() -> None:
    clock = Clock()
    cache = make(clock)
    cache.get("k", lambda: Value("v", clock.now + 3600))
    cache.discard("k")
    assert cache.peek("k") is None


# -- BoundedMap: the one LRU/TTL map (cache entries, Power BI metadata, verified claims, rate-limit buckets) --


def test_bounded_map_evicts_the_least_recently_used_key() -> None:
    items: BoundedMap[str, int] = BoundedMap(2)
    items.put("a", 1)
    items.put("b", 2)
    assert items.get("a") == 1  # a read is not a use: "a" is still the oldest
    items.put("c", 3)
    assert (items.get("a"), items.get("b"), items.get("c"), len(items)) == (None, 2, 3, 2)
    items.touch("b")  # a use: now "c" is the oldest
    items.put("d", 4)
    assert (items.get("b"), items.get("c"), items.get("d")) == (2, None, 4)
    assert items.pop("b") == 2 and items.pop("b") is None and len(items) == 1


def test_bounded_map_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    items: BoundedMap[str, str] = BoundedMap(10, ttl=300, clock=clock)
    items.put("report", "url")
    clock.now += 299
    assert items.get("report") == "url"
    clock.now += 1
    assert items.get("report") is None
    items.put("report", "new url")  # putting again starts a new lifetime
    clock.now += 299
    assert items.get("report") == "new url"


def test_bounded_map_stays_bounded_under_concurrent_writers() -> None:
    items: BoundedMap[tuple[int, int], int] = BoundedMap(50)

    def write(worker: int) -> None:
        for n in range(2_000):
            items.put((worker, n), n)
            items.touch((worker, n - 1))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(items) == 50


def test_bounded_map_refuses_a_bound_below_one() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        BoundedMap(0)
