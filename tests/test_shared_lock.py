"""The shared tier's parts on a real redis-server: cross-instance single flight, a lock holder that dies, the
circuit breaker, the shared counters (GCRA rate limit, sliding-window query budget) and their fallback.

Each "instance" here is its own :class:`RedisConnection` (its own connection pool), as in separate processes;
the processes themselves are in tests/test_shared_instances.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from devtools.redis_server import RedisServer
from tests.conftest import ROOT, new_cache_key
from token_broker.callers.rate_limit import RateLimiter
from token_broker.config.identity import AppIdentity
from token_broker.config.shared_cache import SharedCacheSettings
from token_broker.powerbi.query_budget import QueryBudget
from token_broker.shared.breaker import CircuitBreaker
from token_broker.shared.cache import SharedCacheTier
from token_broker.shared.connection import RedisConnection
from token_broker.shared.counters import SharedCountersTier
from token_broker.shared.keyring import KeyringSource
from token_broker.shared.keys import canonical
from token_broker.support.errors import RateLimitedError

KEY = new_cache_key()


class Instance:
    """One instance's shared tier over ``server``."""

    def __init__(self, server: RedisServer, *, lock_seconds: float = 2.0, key: str = KEY) -> None:
        settings = SharedCacheSettings(host=server.host, port=server.port, auth="none", key_uri="https://v/secrets/k")
        self.connection = RedisConnection(settings, AppIdentity())
        self.keys = KeyringSource(lambda: [("v1", key)])
        self.cache = SharedCacheTier(self.connection, self.keys, lock_seconds=lock_seconds)
        self.counters = SharedCountersTier(self.connection, self.keys)

    def get(self, key: Any, fetch: Callable[[], str]) -> str:
        return self.cache.get_or_fetch("embed token", key, fetch, encode=str.encode, decode=bytes.decode,
                                       ttl=lambda _v: 60.0)


class Upstream:
    """A slow upstream that counts its calls."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.calls = 0
        self._seconds = seconds
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self._seconds)
        return f"value-{n}"


def test_one_upstream_call_across_instances(redis_server: RedisServer) -> None:
    instances = [Instance(redis_server) for _ in range(6)]
    upstream = Upstream()
    results: list[str] = []
    threads = [threading.Thread(target=lambda i=i: results.append(i.get(("sp", "report-1"), upstream)))
               for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert upstream.calls == 1
    assert results == ["value-1"] * 6
    assert redis_server.client().keys("tb:lock:*") == []  # type: ignore[attr-defined]  # released


_HOLDER = """
import sys, time
from tests.test_shared_lock import Instance
from devtools.redis_server import RedisServer
server = RedisServer.__new__(RedisServer)
server.host, server.port = "127.0.0.1", int(sys.argv[1])
def fetch():
    print("locked", flush=True)
    time.sleep(60)  # killed here, holding the lock
    return "never"
Instance(server, lock_seconds=1.5, key=sys.argv[2]).get(("sp", "report-2"), fetch)
"""


def test_a_lock_holder_that_died_blocks_nobody_longer_than_its_lock(redis_server: RedisServer) -> None:
    """Another process takes the lock through the product's code and is killed (SIGKILL) while fetching."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(redis_server.port), KEY], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        assert redis_server.client().keys("tb:lock:*")  # type: ignore[attr-defined]  # left behind
        upstream = Upstream(0.0)
        assert Instance(redis_server, lock_seconds=1.5).get(("sp", "report-2"), upstream) == "value-1"
        waited = time.monotonic() - killed
        assert upstream.calls == 1
        assert 0.3 < waited < 3.0  # it waited for the dead holder's lock (1.5 s from when it was taken), not longer
    finally:
        if holder.poll() is None:
            holder.kill()
        if holder.stdout is not None:
            holder.stdout.close()


def test_the_lock_is_released_when_the_upstream_call_fails(redis_server: RedisServer) -> None:
    instance = Instance(redis_server)

    def failing() -> str:
        raise RuntimeError("upstream down")

    with pytest.raises(RuntimeError):
        instance.get(("sp", "report-3"), failing)
    assert redis_server.client().keys("tb:lock:*") == []  # type: ignore[attr-defined]
    assert instance.get(("sp", "report-3"), Upstream(0.0)) == "value-1"


def test_another_holders_lock_is_never_released(redis_server: RedisServer) -> None:
    instance = Instance(redis_server, lock_seconds=1.0)
    key = ("sp", "report-4")
    name = instance.keys.current().names("embed token", canonical(key))[0]
    lock = b"tb:lock:" + name.partition(b":")[2]
    client: Any = redis_server.client()

    def slow_then_steal() -> str:
        time.sleep(1.2)  # our lock expires meanwhile and another instance takes it
        client.set(lock, "other-holder", px=5000)
        return "value"

    assert instance.get(key, slow_then_steal) == "value"
    assert client.get(lock) == b"other-holder"  # the token-checked release left it alone


def test_the_breaker_opens_after_a_failure_and_probes_once_per_interval() -> None:
    now = [100.0]
    breaker = CircuitBreaker(open_seconds=10, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] += 10
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.failure()
    assert not breaker.allow()
    now[0] += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow() and not breaker.is_open


def test_the_rate_limit_is_shared_and_falls_back_to_the_instance(redis_server: RedisServer) -> None:
    limiters = [RateLimiter(5, max_callers=10, shared=Instance(redis_server).counters) for _ in range(2)]
    for n in range(5):
        limiters[n % 2].check("caller-a")  # 5 across two instances: the whole budget
    for limiter in limiters:
        with pytest.raises(RateLimitedError) as refused:
            limiter.check("caller-a")
        assert 1 <= refused.value.retry_after <= 12
    limiters[0].check("caller-b")  # per caller
    redis_server.kill()
    try:
        for _ in range(5):
            limiters[1].check("caller-a")  # Redis is gone: the instance's own bucket, full
        with pytest.raises(RateLimitedError):
            limiters[1].check("caller-a")
    finally:
        redis_server.start()


def test_the_query_budget_is_shared_across_instances(redis_server: RedisServer) -> None:
    budgets = [QueryBudget(4, shared=Instance(redis_server).counters) for _ in range(2)]
    identity = ("tenant", "client", "sp")
    for n in range(4):
        budgets[n % 2].take(identity)
    for budget in budgets:
        with pytest.raises(RateLimitedError) as refused:
            budget.take(identity)
        assert refused.value.code == "powerbi_proxy_query_budget_exhausted"
        assert 1 <= refused.value.retry_after <= 60
    budgets[0].take(("tenant", "client", "another user"))


def test_counter_names_reveal_nothing(redis_server: RedisServer) -> None:
    counters = Instance(redis_server).counters
    assert counters.take_rate("rate limit", "alice@contoso.com", per_minute=10) == 0
    assert counters.take_window("query budget", ("tenant-id", "alice@contoso.com"), limit=10, seconds=60) == 0
    names = b" ".join(redis_server.client().keys("*"))  # type: ignore[attr-defined]
    assert b"alice" not in names and b"tenant" not in names and b"contoso" not in names


def test_the_keyring_picks_up_a_rotation_and_keeps_its_keys_when_key_vault_fails() -> None:
    from token_broker.shared.keyring import REFRESH_SECONDS
    from token_broker.support.errors import KeyVaultError

    now = [0.0]
    versions = [[("v1", new_cache_key())]]
    failing = [False]

    def read() -> list[tuple[str, str]]:
        if failing[0]:
            raise KeyVaultError("the vault is unreachable", code="keyvault_unreachable")
        return list(versions[-1])

    source = KeyringSource(read, clock=lambda: now[0])
    first = source.current()
    name = first.names("embed token", canonical(("sp", "r")))[0]
    blob = first.encrypt(name, b"value")
    versions.append([("v2", new_cache_key()), versions[0][0]])  # rotated: v2 newest, v1 previous
    now[0] += REFRESH_SECONDS - 1
    assert source.current().newest.version == "v1"  # not yet listed again
    now[0] += 2
    rotated = source.current()
    assert [v.version for v in rotated.versions] == ["v2", "v1"]
    assert rotated.decrypt(name, blob) == b"value"  # the previous version still decrypts
    new_name = rotated.names("embed token", canonical(("sp", "r")))[0]
    assert new_name != name and rotated.decrypt(new_name, rotated.encrypt(new_name, b"x")) == b"x"
    failing[0] = True
    now[0] += REFRESH_SECONDS + 1
    assert source.current() is rotated  # a failed refresh keeps the keys already loaded
    assert source.problem is None
