"""Two product processes sharing one Redis: the second gets the first's embed token (one GenerateToken), and the
per-caller rate limit and the executeQueries budget hold across both.

Each instance is ``python -m devtools.instance``: the function app through its own index, with the app settings
in its environment, against this session's emulators (Entra ID, managed identity, Key Vault, Power BI) and a
real redis-server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

from devtools.entra import EntraEmulator
from devtools.instance import Instance, instance_environ
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from tests.conftest import ALICE, BOB, Env, World, embed_settings, shared_settings
from tests.test_shared_cache import user

pytestmark = pytest.mark.slow


@pytest.fixture
def two_instances(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, redis_server: RedisServer,
                  cache_key_uri: str, shared_identity: str) -> Iterator[Callable[..., list[Instance]]]:
    started: list[Instance] = []

    def start(**extra: str) -> list[Instance]:
        env.set(**embed_settings(entra, powerbi, world), **shared_settings(redis_server, cache_key_uri,
                                                                           shared_identity), **extra)
        environ = instance_environ({}, base=os.environ)  # the settings and the emulators' CA and identity
        started.extend(Instance(environ) for _ in range(2))
        return started[-2:]

    yield start
    for instance in started:
        instance.close()


def embed_request(world: World, report: str) -> dict[str, object]:
    return {"reports": [{"id": report}], "workspaceId": world.sales}


def test_the_second_process_gets_the_embed_token_from_redis(two_instances: Callable[..., list[Instance]],
                                                            entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                            world: World) -> None:
    first, second = two_instances()
    headers = user(entra)
    a = first.request("POST", "/api/embed-token", headers=headers, json_body=embed_request(world, world.rls_report))
    assert a["status"] == 200, a["body"]
    b = second.request("POST", "/api/embed-token", headers=headers, json_body=embed_request(world, world.rls_report))
    assert b["status"] == 200, b["body"]
    assert json.loads(b["body"])["token"] == json.loads(a["body"])["token"]
    assert powerbi.generate_token_calls() == 1
    # Another user's request in the second process is its own entry: a second GenerateToken.
    c = second.request("POST", "/api/embed-token", headers=user(entra, BOB, roles=("Report.Viewer",)),
                       json_body=embed_request(world, world.rls_report))
    assert c["status"] == 200 and json.loads(c["body"])["token"] != json.loads(a["body"])["token"]
    assert powerbi.generate_token_calls() == 2


def test_the_rate_limit_holds_across_processes(two_instances: Callable[..., list[Instance]], entra: EntraEmulator,
                                               world: World) -> None:
    first, second = two_instances(CALLER_RATE_LIMIT_PER_MINUTE="4")
    headers = user(entra, ALICE)
    statuses = [(first if n % 2 else second).request("GET", "/api/token", headers=headers)["status"]
                for n in range(5)]
    assert statuses == [200, 200, 200, 200, 429], statuses
    assert second.request("GET", "/api/token", headers=user(entra, BOB))["status"] != 429  # per caller


def test_the_query_budget_holds_across_processes(two_instances: Callable[..., list[Instance]], entra: EntraEmulator,
                                                 powerbi: PowerBIEmulator, world: World) -> None:
    first, second = two_instances(POWERBI_PROXY_ENABLED="true", POWERBI_PROXY_QUERIES_PER_MINUTE="3",
                                  POWERBI_PROXY_QUERY_CACHE_SECONDS="0")
    url = f"/api/powerbi/v1.0/myorg/groups/{world.sales}/datasets/{world.plain_dataset}/executeQueries"
    statuses = []
    for n in range(4):
        answer = (first if n % 2 else second).request(
            "POST", url, headers=user(entra, ALICE if n % 2 else BOB),
            json_body={"queries": [{"query": f"EVALUATE T{n}"}]})
        statuses.append(answer["status"])
    assert statuses == [200, 200, 200, 429], statuses
    assert powerbi.execute_queries_calls() == 3  # the service principal's budget, counted once for both processes
