"""The proxy's identities per grant, its query budget and result cache, size cap and Power BI's errors.

Real MSAL (client credentials, password, on-behalf-of) and requests over sockets to the emulators; the
figures (1,000 queries, p50/p99) are in ``python -m benchmarks``, not here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import jwt
import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.powerbi import PowerBIEmulator
from tests.conftest import (
    ALICE,
    BOB,
    MASTER_PASSWORD,
    MASTER_USER,
    POWERBI_RESOURCE,
    TENANT,
    Env,
    World,
    assert_problem,
)
from tests.test_powerbi_proxy import BASE, proxy_settings, query, rows, upstream_claims, user

Call = Callable[..., HostResponse]


def oid_of(entra: EntraEmulator, username: str) -> str:
    token = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, subject_username=username)
    return str(jwt.decode(token, options={"verify_signature": False})["oid"])


@pytest.fixture
def members(entra: EntraEmulator, powerbi: PowerBIEmulator, world: World) -> Iterator[None]:
    """Alice, Bob and the master user are members of Sales (for the password and on-behalf-of grants)."""
    oids = [oid_of(entra, name) for name in (ALICE, BOB, MASTER_USER)]
    for oid in oids:
        powerbi.grant(world.sales, oid)
    yield
    for oid in oids:
        powerbi.revoke(world.sales, oid)


# -- identity per grant --------------------------------------------------------------------------------------


def test_password_grant_impersonates_the_verified_caller_on_rls_datasets(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, members: None,
        needs_port_443: None) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=MASTER_USER,
                             POWERBI_PASSWORD=MASTER_PASSWORD))
    assert rows(query(call, user(entra, ALICE), world.sales, world.rls_dataset)) == [
        {"[User]": ALICE, "[Dataset]": "Secured"}]
    sent = json.loads(powerbi.requests[-1].raw_body)
    assert sent["impersonatedUserName"] == ALICE and upstream_claims(powerbi)["upn"] == MASTER_USER
    assert rows(query(call, user(entra, BOB), world.sales, world.rls_dataset)) == [
        {"[User]": BOB, "[Dataset]": "Secured"}], "Bob never gets Alice's cached rows"
    assert powerbi.execute_queries_calls() == 2
    plain = query(call, user(entra, BOB), world.sales, world.plain_dataset)
    assert rows(plain)[0]["[User]"] == MASTER_USER
    assert "impersonatedUserName" not in json.loads(powerbi.requests[-1].raw_body), "no identity without RLS"
    spoof = query(call, user(entra, BOB), world.sales, world.rls_dataset, impersonatedUserName=ALICE)
    assert_problem(spoof, 403, "powerbi_proxy_impersonation_refused")
    assert powerbi.execute_queries_calls() == 3


def test_on_behalf_of_queries_as_each_user_with_their_own_cache(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, members: None) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_GRANT_TYPE="on_behalf_of"))
    for name in (ALICE, BOB, ALICE):
        assert rows(query(call, user(entra, name), world.sales, world.rls_dataset))[0]["[User]"] == name
        assert "impersonatedUserName" not in json.loads(powerbi.requests[-1].raw_body)
    assert powerbi.execute_queries_calls() == 2, "Alice's second query came from her own cache entry"
    listed = call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra, BOB))
    assert listed.status == 200 and upstream_claims(powerbi)["upn"] == BOB, "Bob's own token"


def test_on_behalf_of_a_user_without_access_gets_power_bi_s_answer(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    """Bob is not a member of Sales here: Power BI itself refuses his own token (never the broker's)."""
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_GRANT_TYPE="on_behalf_of"))
    response = call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra, BOB))
    problem = assert_problem(response, 502, "powerbi_not_authorized")
    assert problem["powerBiRequestId"]


# -- cache and budget ----------------------------------------------------------------------------------------


def test_identical_queries_are_answered_from_the_cache_and_concurrent_ones_share_one_call(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world))
    headers = [user(entra, name) for name in (ALICE, BOB)]
    powerbi.set_latency(0.3, path_prefix="/v1.0/myorg/groups")
    results: list[HostResponse] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        response = query(call, headers[n % 2], world.sales, world.plain_dataset)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    powerbi.set_latency(0.0, path_prefix="/v1.0/myorg/groups")
    assert [r.status for r in results] == [200] * 20
    assert powerbi.execute_queries_calls() == 1, "one Power BI call for 20 identical concurrent queries"
    assert len({r.body for r in results}) == 1
    assert query(call, headers[0], world.sales, world.plain_dataset).header("X-Proxy-Cache") == "hit"
    assert query(call, headers[0], world.sales, world.plain_dataset, "EVALUATE Other").header("X-Proxy-Cache") == "miss"
    assert powerbi.execute_queries_calls() == 2


def test_the_cache_can_be_turned_off(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                     call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_PROXY_QUERY_CACHE_SECONDS="0"))
    for _ in range(3):
        assert rows(query(call, user(entra), world.sales, world.plain_dataset))
    assert powerbi.execute_queries_calls() == 3


def test_the_query_budget_answers_429_before_power_bi_would(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                            world: World, call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_PROXY_QUERIES_PER_MINUTE="3"))
    for n in range(3):
        caller = user(entra, ALICE if n % 2 else BOB)
        assert rows(query(call, caller, world.sales, world.plain_dataset, f"EVALUATE T{n}"))
    refused = query(call, user(entra), world.sales, world.plain_dataset, "EVALUATE T9")
    problem = assert_problem(refused, 429, "powerbi_proxy_query_budget_exhausted")
    assert 1 <= int(refused.header("Retry-After") or 0) <= 60
    assert "120" in problem["detail"]
    assert powerbi.execute_queries_calls() == 3, "all browser users share the service principal's budget"
    assert rows(query(call, user(entra), world.sales, world.plain_dataset, "EVALUATE T1")), "cached: no budget needed"


def test_the_per_caller_rate_limit_applies(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                           call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, CALLER_RATE_LIMIT_PER_MINUTE="2"))
    for _ in range(2):
        assert call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)).status == 200
    limited = call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra))
    assert_problem(limited, 429, "rate_limited")
    assert call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra, BOB)).status == 200


# -- size cap and Power BI's errors -------------------------------------------------------------------------------


def test_large_answers_are_capped(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                  call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_PROXY_MAX_RESPONSE_BYTES="1024"))
    small = query(call, user(entra), world.sales, world.plain_dataset, "EVALUATE GENERATESERIES(1, 10)")
    assert len(rows(small)) == 10
    big = query(call, user(entra), world.sales, world.plain_dataset, "EVALUATE GENERATESERIES(1, 5000)")
    problem = assert_problem(big, 502, "powerbi_response_too_large")
    assert problem["setting"] == "POWERBI_PROXY_MAX_RESPONSE_BYTES" and problem["powerBiRequestId"]
    assert len(big.body) < 2048
    listed = call("GET", f"{BASE}/groups/{world.sales}/datasets", headers=user(entra))
    assert_problem(listed, 502, "powerbi_response_too_large")  # a list over the cap too


def test_power_bi_errors_become_problems_with_its_request_id(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                             world: World, call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_PROXY_QUERY_CACHE_SECONDS="0"))
    assert rows(query(call, user(entra), world.sales, world.plain_dataset))  # metadata cached
    powerbi.throttle_next(1, retry_after=17)
    throttled = query(call, user(entra), world.sales, world.plain_dataset)
    problem = assert_problem(throttled, 429, "powerbi_throttled")
    assert throttled.header("Retry-After") == "17" and problem["powerBiRequestId"]
    dax = assert_problem(query(call, user(entra), world.sales, world.plain_dataset, "SELECT 1"), 400,
                         "powerbi_bad_request")
    assert dax["powerBiErrorCode"] == "DatasetExecuteQueriesError" and dax["powerBiRequestId"]
    powerbi.inject_fault(500, path_prefix="/v1.0/myorg/groups")
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)), 503,
                   "powerbi_unavailable")
    unknown = "00000000-0000-4000-8000-000000000001"
    assert_problem(query(call, user(entra), world.sales, unknown), 404, "powerbi_not_found")
    powerbi.inject_fault("reset", path_prefix="/v1.0/myorg/groups")
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)), 503,
                   "powerbi_unreachable")


def test_a_slow_power_bi_is_bounded_by_the_timeout(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                   world: World, call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_HTTP_TIMEOUT_SECONDS="1"))
    assert call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)).status == 200
    powerbi.inject_fault("hang", path_prefix="/v1.0/myorg/groups")
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)), 504, "powerbi_timeout")


def test_power_bi_s_own_query_limit_is_passed_through(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                      world: World, call: Call) -> None:
    """Power BI's 429 (its 120 queries per minute per user, lowered here) reaches the caller with Retry-After."""
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_PROXY_QUERY_CACHE_SECONDS="0"))
    powerbi.reset_query_limits()
    powerbi.queries_per_minute = 2
    try:
        for _ in range(2):
            assert rows(query(call, user(entra), world.sales, world.plain_dataset))
        limited = query(call, user(entra), world.sales, world.plain_dataset)
        problem = assert_problem(limited, 429, "powerbi_throttled")
        assert 1 <= int(limited.header("Retry-After") or 0) <= 60 and problem["powerBiRequestId"]
        assert powerbi.query_limit_hits() == 1
    finally:
        powerbi.queries_per_minute = PowerBIEmulator.queries_per_minute
        powerbi.reset_query_limits()
