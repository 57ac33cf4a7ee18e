"""Profile mode (issue 19) with the shared cache tier on Redis (issue 18): the L2 never carries one customer's
embed token, metadata or query budget to another, and a new instance still serves each customer its own.

"A new instance" is a broker rebuilt from the same settings (``runtime.reset()``): empty memory caches, the
same redis-server. The L2 keys derive from the L1 keys, which start with ``TokenService.minted_for(caller)``;
in profile mode that names the profile, so this is the seam these tests press on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from tests.conftest import Env, World, shared_settings
from tests.test_multitenancy import PROFILE_HEADER, Tenants, caller, profile_settings, request_route, tenants
from token_broker import runtime

Call = Callable[..., HostResponse]
__all__ = ["tenants"]  # the session fixture, used here by name


def profiled_calls(powerbi: PowerBIEmulator, suffix: str) -> list[str | None]:
    """The profile header of every Power BI call whose path ends with ``suffix``, in order."""
    return [{k.lower(): v for k, v in r.headers.items()}.get(PROFILE_HEADER) for r in powerbi.requests
            if r.path.lower().endswith(suffix.lower())]


def test_a_new_instance_serves_each_customer_its_own_l2_entry_and_never_another_customers(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call,
    redis_server: RedisServer, cache_key_uri: str, shared_identity: str,
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants),
            **shared_settings(redis_server, cache_key_uri, shared_identity))
    a = request_route(call, "embed-token", caller(entra, "customer-a"), tenants.ws_both, tenants.report_both)
    assert a.status == 200, a.text
    runtime.reset()  # another instance: only Redis remembers A's token
    b = request_route(call, "embed-token", caller(entra, "customer-b"), tenants.ws_both, tenants.report_both)
    assert b.status == 200, b.text
    assert b.json()["token"] != a.json()["token"], "customer B must not get customer A's embed token from Redis"
    assert powerbi.embed_token_info(b.json()["token"])["caller_oid"] == tenants.profile_b
    runtime.reset()
    again = request_route(call, "embed-token", caller(entra, "customer-a"), tenants.ws_both, tenants.report_both)
    assert again.status == 200 and again.json()["token"] == a.json()["token"], "A's own entry is served from Redis"
    assert powerbi.generate_token_calls() == 2
    assert profiled_calls(powerbi, "/GenerateToken") == [tenants.profile_a, tenants.profile_b]
    assert profiled_calls(powerbi, f"/reports/{tenants.report_both}") == [tenants.profile_a, tenants.profile_b], \
        "metadata is looked up once per profile, never reused across profiles"
    client: Any = redis_server.client()
    assert len(client.keys("tb:embed token:*")) == 2


def test_the_shared_query_budget_is_per_profile(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call,
    redis_server: RedisServer, cache_key_uri: str, shared_identity: str,
) -> None:
    """Customer A spending its executeQueries budget leaves customer B's untouched, across instances."""
    env.set(**profile_settings(entra, powerbi, world, tenants, POWERBI_PROXY_QUERIES_PER_MINUTE="2",
                               POWERBI_PROXY_QUERY_CACHE_SECONDS="0"),
            **shared_settings(redis_server, cache_key_uri, shared_identity))
    path = f"/api/powerbi/v1.0/myorg/groups/{tenants.ws_both}/datasets/{tenants.dataset_both}/executeQueries"
    query = {"queries": [{"query": "EVALUATE GENERATESERIES(1, 3)"}]}

    def ask(customer: str) -> int:
        return call("POST", path, headers=caller(entra, f"customer-{customer}"), json=query).status

    assert [ask("a"), ask("a")] == [200, 200]
    runtime.reset()  # the budget lives in Redis, not in the instance
    assert ask("a") == 429
    assert [ask("b"), ask("b")] == [200, 200]
    assert profiled_calls(powerbi, "/executeQueries") == [tenants.profile_a] * 2 + [tenants.profile_b] * 2
