"""Redis failing under the broker: frozen (SIGSTOP), killed, restarted, refusing the password, full (OOM).

Every request still succeeds (memory caches and upstream take over), a dead Redis costs one timeout per circuit
breaker interval, and each failure is counted. All against real redis-server processes on loopback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from devtools.tls import DevCertificateAuthority
from tests.conftest import CACHE_USERS, Env, World, embed_settings, shared_settings
from tests.test_shared_cache import embed, user
from token_broker import runtime
from token_broker.shared.breaker import OPEN_SECONDS
from token_broker.shared.connection import COMMAND_TIMEOUT, CONNECT_TIMEOUT

Call = Callable[..., HostResponse]


@pytest.fixture
def shared_env(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, redis_server: RedisServer,
               cache_key_uri: str, shared_identity: str) -> Env:
    env.set(**embed_settings(entra, powerbi, world), **shared_settings(redis_server, cache_key_uri, shared_identity))
    return env


def connection() -> Any:
    shared = runtime.current_broker().shared
    assert shared is not None
    return shared.connection


def timed(call: Call, headers: dict[str, str], report: str, workspace: str) -> tuple[HostResponse, float]:
    started = time.perf_counter()
    response = embed(call, headers, report, workspace)
    return response, time.perf_counter() - started


def test_a_frozen_redis_costs_one_timeout_per_breaker_interval(shared_env: Env, entra: EntraEmulator, world: World,
                                                               call: Call, redis_server: RedisServer,
                                                               powerbi: PowerBIEmulator) -> None:
    warm = embed(call, user(entra), world.plain_report, world.sales)  # connections open, key read
    assert warm.status == 200
    redis_server.freeze()
    try:
        slowest = 0.0
        reports = [world.plain_report, world.second_report, world.rls_report]
        for username in CACHE_USERS:
            for report in reports:
                response, seconds = timed(call, user(entra, username), report, world.sales)
                assert response.status == 200, response.text
                slowest = max(slowest, seconds)
        assert connection().failures == 1  # one timeout, then the breaker skips Redis
        assert connection().breaker.is_open
        assert slowest < 0.25 + COMMAND_TIMEOUT + 1.0  # no retries with backoff (11.6 s with redis-py's defaults)
    finally:
        redis_server.thaw()


def test_the_breaker_probes_again_after_its_interval(shared_env: Env, entra: EntraEmulator, world: World,
                                                     call: Call, redis_server: RedisServer,
                                                     powerbi: PowerBIEmulator) -> None:
    assert embed(call, user(entra), world.plain_report, world.sales).status == 200
    redis_server.kill()
    assert embed(call, user(entra, CACHE_USERS[0]), world.rls_report, world.sales).status == 200
    breaker = connection().breaker
    assert breaker.is_open
    redis_server.start()
    breaker._open_until = time.monotonic() - 0.01  # the interval has passed (waiting 10 s is not a test)
    runtime_connection = connection()
    response = embed(call, user(entra, CACHE_USERS[1]), world.rls_report, world.sales)
    assert response.status == 200
    assert not runtime_connection.breaker.is_open  # the probe succeeded: closed again
    assert redis_server.client().dbsize() > 0  # type: ignore[attr-defined]
    assert OPEN_SECONDS >= 1


def test_redis_killed_and_restarted_mid_load_fails_no_request(shared_env: Env, entra: EntraEmulator, world: World,
                                                              call: Call, redis_server: RedisServer,
                                                              powerbi: PowerBIEmulator) -> None:
    headers = [user(entra, username) for username in CACHE_USERS]
    reports = [world.plain_report, world.second_report, world.rls_report]
    results: list[tuple[int, float]] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():  # new keys all along (lifetimes, users, reports): every L1 miss goes to Redis
            started = time.perf_counter()
            response = call("POST", "/api/embed-token", headers=headers[(worker + n) % len(headers)],
                            json={"reports": [{"id": reports[n % len(reports)]}], "workspaceId": world.sales,
                                  "lifetimeMinutes": 10 + (worker * 997 + n) % 50})
            results.append((response.status, time.perf_counter() - started))
            n += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        redis_server.freeze()
        time.sleep(0.6)
        redis_server.kill()
        time.sleep(0.3)
        redis_server.start()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    statuses = [status for status, _ in results]
    assert len(statuses) > 20 and set(statuses) == {200}, set(statuses)
    # One connect or command timeout at most (redis-py's default retries took 11.6 s), plus slack for a busy CI.
    assert max(seconds for _, seconds in results) < CONNECT_TIMEOUT + COMMAND_TIMEOUT + 3.0


def test_a_wrong_redis_password_fails_no_request(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                 world: World, ca: DevCertificateAuthority, cache_key_uri: str,
                                                 shared_identity: str, call: Call,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca.ca_bundle_path)  # the dev CA signs the Redis server's certificate
    with RedisServer(password="right-Passw0rd-redis", tls_ca=ca) as server:
        settings = {**shared_settings(server, cache_key_uri, shared_identity), "CACHE_REDIS_AUTH": "password"}
        env.set(**embed_settings(entra, powerbi, world), **settings, CACHE_REDIS_PASSWORD="wrong-Passw0rd-redis")
        response = embed(call, user(entra), world.plain_report, world.sales)
        assert response.status == 200, response.text
        assert connection().failures >= 1
        env.set(**embed_settings(entra, powerbi, world), **settings, CACHE_REDIS_PASSWORD="right-Passw0rd-redis")
        response = embed(call, user(entra), world.second_report, world.sales)
        assert response.status == 200, response.text
        assert connection().failures == 0
        assert server.client().dbsize() > 0  # type: ignore[attr-defined]  # TLS + password: stored


@pytest.fixture
def full_redis() -> Iterator[RedisServer]:
    with RedisServer(maxmemory="1mb") as server:
        client: Any = server.client()
        filler = b"x" * 16_384
        with pytest.raises(Exception, match="maxmemory"):  # redis-py's OutOfMemoryError
            for n in range(10_000):
                client.set(f"filler-{n}", filler)
        yield server


def test_a_full_redis_fails_no_request(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                       full_redis: RedisServer, cache_key_uri: str, shared_identity: str,
                                       call: Call) -> None:
    env.set(**embed_settings(entra, powerbi, world), **shared_settings(full_redis, cache_key_uri, shared_identity))
    for username in CACHE_USERS[:3]:
        response = embed(call, user(entra, username), world.rls_report, world.sales)
        assert response.status == 200, response.text
    assert connection().failures >= 1  # SET answered OOM
    assert not connection().breaker.is_open  # Redis answered: reads go on, no timeout to spare
