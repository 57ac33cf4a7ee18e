"""Embed tokens end to end: the Power BI emulator, real MSAL and the Entra emulator, through the function app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.powerbi import PowerBIEmulator
from tests.conftest import ALICE, API, BOB, CACHE_USERS, TENANT, Env, World, assert_problem, embed_settings
from token_broker import runtime

Call = Callable[..., HostResponse]


@pytest.fixture
def embed_env(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World) -> Env:
    env.set(**embed_settings(entra, powerbi, world))
    return env


def user(entra: EntraEmulator, username: str = ALICE, **claims: Any) -> dict[str, str]:
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=username,
                                     scopes="access_as_user", extra_claims=claims or None)
    return {"Authorization": f"Bearer {token}"}


def embed(call: Call, headers: dict[str, str], **body: Any) -> HostResponse:
    return call("POST", "/api/embed-token", headers=headers, json=body)


def expires_in(response: HostResponse) -> float:
    stamp = datetime.strptime(response.json()["expiresOn"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return stamp.timestamp() - time.time()


# -- the happy paths -------------------------------------------------------------------------------------------


def test_one_report_without_rls(embed_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                call: Call) -> None:
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales)
    assert response.status == 200, response.text
    body = response.json()
    assert set(body) == {"token", "tokenId", "expiresOn", "reports"}
    assert body["reports"] == [{"id": world.plain_report, "name": "Overview", "datasetId": world.plain_dataset,
                                "workspaceId": world.sales,
                                "embedUrl": body["reports"][0]["embedUrl"]}]
    assert f"reportId={world.plain_report}" in body["reports"][0]["embedUrl"]
    info = powerbi.embed_token_info(body["token"])
    assert info["reports"] == [world.plain_report] and info["datasets"] == [world.plain_dataset]
    assert info["identities"] == [] and info["token_id"] == body["tokenId"]
    assert 3500 < expires_in(response) <= 3600
    assert powerbi.generate_token_requests[-1]["lifetimeInMinutes"] == 60
    assert "targetWorkspaces" not in powerbi.generate_token_requests[-1]


def test_the_one_report_route_and_the_default_workspace(embed_env: Env, entra: EntraEmulator, world: World,
                                                        powerbi: PowerBIEmulator, call: Call) -> None:
    embed_env.set(**embed_settings(entra, powerbi, world, POWERBI_WORKSPACE_ID=world.sales))
    response = call("GET", f"/api/reports/{world.plain_report}/embed", headers=user(entra))
    assert response.status == 200, response.text
    assert response.json()["reports"][0]["workspaceId"] == world.sales
    explicit = call("GET", f"/api/reports/{world.plain_report}/embed?workspaceId={world.sales}",
                    headers=user(entra))
    assert explicit.status == 200 and explicit.json()["token"] == response.json()["token"]


def test_several_reports_and_an_extra_dataset(embed_env: Env, entra: EntraEmulator, world: World,
                                              powerbi: PowerBIEmulator, call: Call) -> None:
    response = embed(call, user(entra), reports=[{"id": world.second_report}, {"id": world.plain_report}],
                     datasets=[{"id": world.rls_dataset}], workspaceId=world.sales)
    assert response.status == 200, response.text
    assert {r["id"] for r in response.json()["reports"]} == {world.plain_report, world.second_report}
    sent = powerbi.generate_token_requests[-1]
    assert {d["id"] for d in sent["datasets"]} == {world.plain_dataset, world.rls_dataset}
    assert sent["identities"][0]["datasets"] == [world.rls_dataset]


def test_row_level_security_identity_comes_from_the_verified_caller(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call
) -> None:
    embed_env.set(**embed_settings(entra, powerbi, world, EMBED_RLS_ROLES="Auditor;Report.Viewer=Region",
                                   EMBED_RLS_CUSTOM_DATA_CLAIM="ctry"))
    response = call("POST", "/api/embed-token?username=mallory@contoso.com", headers=user(entra, ALICE, ctry="NL"),
                    json={"reports": [{"id": world.rls_report}], "workspaceId": world.sales})
    assert response.status == 200, response.text
    identities = powerbi.embed_token_info(response.json()["token"])["identities"]
    assert identities == [{"username": ALICE, "roles": ["Auditor", "Region"], "datasets": [world.rls_dataset],
                           "customData": "NL"}]


def test_rls_without_a_role_for_the_caller_is_403_before_generate_token(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call
) -> None:
    response = embed(call, user(entra, BOB), reports=[{"id": world.rls_report}], workspaceId=world.sales)
    problem = assert_problem(response, 403, "embed_rls_roles_missing")
    assert "EMBED_RLS_ROLES" in problem["detail"]
    assert powerbi.generate_token_calls() == 0


def test_rls_needs_a_caller_with_a_username(embed_env: Env, entra: EntraEmulator, world: World,
                                            powerbi: PowerBIEmulator, call: Call) -> None:
    embed_env.set(**embed_settings(entra, powerbi, world, CALLER_AUTH="anonymous"))
    response = embed(call, {}, reports=[{"id": world.rls_report}], workspaceId=world.sales)
    assert_problem(response, 403, "embed_identity_required")
    assert embed(call, {}, reports=[{"id": world.plain_report}], workspaceId=world.sales).status == 200


def test_allow_edit_needs_the_setting_and_the_role(embed_env: Env, entra: EntraEmulator, world: World,
                                                   powerbi: PowerBIEmulator, call: Call) -> None:
    body = {"reports": [{"id": world.plain_report, "allowEdit": True}], "workspaceId": world.sales}
    assert_problem(call("POST", "/api/embed-token", headers=user(entra), json=body), 403, "embed_edit_not_allowed")
    embed_env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOW_EDIT="true", EMBED_EDIT_ROLE="Report.Viewer"))
    assert_problem(call("POST", "/api/embed-token", headers=user(entra, BOB), json=body), 403,
                   "embed_edit_not_allowed")
    response = call("POST", "/api/embed-token", headers=user(entra, ALICE), json=body)
    assert response.status == 200, response.text
    sent = powerbi.generate_token_requests[-1]
    assert sent["reports"] == [{"id": world.plain_report, "allowEdit": True}]
    assert sent["targetWorkspaces"] == [{"id": world.sales}]
    assert powerbi.report_lookups() == 1, "refusals happen before any Power BI call"


# -- authorization happens before any Power BI call ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["workspace", "report"])
def test_content_outside_the_allow_lists_is_403_before_any_power_bi_call(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call, case: str
) -> None:
    if case == "workspace":
        response = embed(call, user(entra), reports=[{"id": world.other_report}], workspaceId=world.other)
        assert_problem(response, 403, "embed_workspace_not_allowed")
    else:
        embed_env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.plain_report))
        response = embed(call, user(entra), reports=[{"id": world.second_report}], workspaceId=world.sales)
        assert_problem(response, 403, "embed_report_not_allowed")
    assert powerbi.report_lookups() == powerbi.generate_token_calls() == 0
    assert entra.token_requests() == 0


def test_embed_tokens_need_allowed_workspaces(env: Env, entra: EntraEmulator, world: World,
                                              powerbi: PowerBIEmulator, call: Call) -> None:
    env.set(POWERBI_API_URL=powerbi.api_url)
    response = call("POST", "/api/embed-token", json={"reports": [{"id": world.plain_report}],
                                                       "workspaceId": world.sales})
    problem = assert_problem(response, 503, "embed_not_configured")
    assert problem["setting"] == "EMBED_ALLOWED_WORKSPACES"


@pytest.mark.parametrize(("body", "code"), [
    ({}, "invalid_embed_request"),
    ({"reports": []}, "invalid_embed_request"),
    ({"reports": [{"id": "not-a-guid"}]}, "invalid_embed_request"),
    ({"reports": [{"id": "{report}", "colour": "red"}]}, "unknown_field"),
    ({"reports": [{"id": "{report}"}], "identities": [{"username": "x"}]}, "unknown_field"),
    ({"reports": [{"id": "{report}"}] * 51}, "embed_limit_exceeded"),
    ({"reports": [{"id": "{report}"}, {"id": "{report}"}]}, "invalid_embed_request"),
    ({"reports": [{"id": "{report}", "allowEdit": "yes"}]}, "invalid_embed_request"),
    ({"reports": [{"id": "{report}"}], "lifetimeMinutes": 0}, "invalid_embed_request"),
    ({"reports": [{"id": "{report}"}], "lifetimeMinutes": True}, "invalid_embed_request"),
    ({"reports": "{report}"}, "invalid_embed_request"),
    ({"reports": [{"id": "{report}"}], "datasets": [{"id": "x"}]}, "invalid_embed_request"),
])
def test_bad_embed_requests_are_400(embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator,
                                    call: Call, body: dict[str, Any], code: str) -> None:
    text = repr(body).replace("{report}", world.plain_report)
    payload = eval(text)  # noqa: S307 - the test's own literal with the id substituted
    if "reports" in payload and isinstance(payload["reports"], list) and payload["reports"]:
        payload.setdefault("workspaceId", world.sales)
    status = 400
    assert_problem(embed(call, user(entra), **payload), status, code)
    assert powerbi.generate_token_calls() == 0


def test_a_report_without_a_workspace_is_400(embed_env: Env, entra: EntraEmulator, world: World, call: Call) -> None:
    problem = assert_problem(embed(call, user(entra), reports=[{"id": world.plain_report}]), 400, "workspace_required")
    assert "POWERBI_WORKSPACE_ID" in problem["detail"]


def test_route_values_are_validated(embed_env: Env, entra: EntraEmulator, call: Call) -> None:
    assert_problem(call("GET", "/api/reports/not-a-guid/embed", headers=user(entra)), 400, "invalid_embed_request")
    assert_problem(call("GET", f"/api/reports/{'1' * 8}-1111-1111-1111-{'1' * 12}/embed?colour=red",
                        headers=user(entra)), 400, "unknown_field")


# -- caching, single flight, lifetimes ---------------------------------------------------------------------------------


def test_repeated_requests_share_one_generate_token_call(embed_env: Env, entra: EntraEmulator, world: World,
                                                         powerbi: PowerBIEmulator, call: Call) -> None:
    headers = user(entra)
    tokens = {embed(call, headers, reports=[{"id": world.plain_report}], workspaceId=world.sales).json()["token"]
              for _ in range(100)}
    assert len(tokens) == 1
    assert powerbi.generate_token_calls() == 1
    assert powerbi.report_lookups() == 1 and powerbi.dataset_lookups() == 1
    assert entra.token_requests(grant_type="client_credentials") == 1


def test_different_identities_get_different_tokens(embed_env: Env, entra: EntraEmulator, world: World,
                                                   powerbi: PowerBIEmulator, call: Call) -> None:
    embed_env.set(**embed_settings(entra, powerbi, world, EMBED_RLS_ROLES="Region"))
    body = {"reports": [{"id": world.rls_report}], "workspaceId": world.sales}
    alice = call("POST", "/api/embed-token", headers=user(entra, ALICE), json=body).json()["token"]
    bob = call("POST", "/api/embed-token", headers=user(entra, BOB), json=body).json()["token"]
    assert alice != bob
    assert powerbi.embed_token_info(bob)["identities"][0]["username"] == BOB


def test_concurrent_cold_requests_make_one_generate_token_call(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call
) -> None:
    powerbi.latency = 0.1
    headers, statuses = user(entra), []
    barrier = threading.Barrier(20)

    def one() -> None:
        barrier.wait()
        statuses.append(embed(call, headers, reports=[{"id": world.plain_report}], workspaceId=world.sales).status)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 20
    assert powerbi.generate_token_calls() == 1


def test_a_short_azure_ad_token_is_replaced_before_a_long_embed_token(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call
) -> None:
    entra.access_token_lifetime = 600  # the cached Azure AD token has 10 minutes left
    assert call("GET", "/api/token").status == 401  # jwt mode: warm up with an authenticated call instead
    assert call("GET", "/api/token", headers=user(entra)).status == 200
    entra.access_token_lifetime = 75 * 60
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales,
                     lifetimeMinutes=60)
    assert response.status == 200, response.text
    assert 59 * 60 < expires_in(response) <= 60 * 60, "the embed token was cut short by a stale Azure AD token"
    assert entra.token_requests(grant_type="client_credentials") == 2


def test_an_azure_ad_token_shorter_than_the_request_does_not_loop(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call
) -> None:
    entra.access_token_lifetime = 30 * 60
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales,
                     lifetimeMinutes=60)
    assert response.status == 200
    assert 29 * 60 < expires_in(response) <= 30 * 60, "expiresOn must be what Power BI returned"
    embed(call, user(entra), reports=[{"id": world.second_report}], workspaceId=world.sales, lifetimeMinutes=60)
    assert entra.token_requests(grant_type="client_credentials") == 1


def test_the_embed_cache_is_bounded(embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator,
                                    call: Call) -> None:
    embed_env.set(**embed_settings(entra, powerbi, world, EMBED_CACHE_MAX_ENTRIES="3", EMBED_RLS_ROLES="Region"))
    for username in CACHE_USERS:
        assert embed(call, user(entra, username), reports=[{"id": world.rls_report}],
                     workspaceId=world.sales).status == 200
    assert runtime.current_broker().embed.cached_tokens == 3


# -- Power BI's errors ----------------------------------------------------------------------------------------------


def test_unknown_report_is_404_with_the_power_bi_request_id(embed_env: Env, entra: EntraEmulator, world: World,
                                                           call: Call) -> None:
    missing = "0f0f0f0f-0000-4000-8000-000000000404"
    problem = assert_problem(embed(call, user(entra), reports=[{"id": missing}], workspaceId=world.sales), 404,
                             "powerbi_not_found")
    assert problem["powerBiRequestId"]


def test_service_principals_disabled_is_502_with_the_fix(embed_env: Env, entra: EntraEmulator, world: World,
                                                         powerbi: PowerBIEmulator, call: Call) -> None:
    powerbi.service_principals_enabled = False
    problem = assert_problem(embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales),
                             502, "powerbi_not_authorized")
    assert "Service principals can call Fabric public APIs" in problem["detail"]


def test_throttling_is_retried_within_the_cap(embed_env: Env, entra: EntraEmulator, world: World,
                                              powerbi: PowerBIEmulator, call: Call) -> None:
    powerbi.throttle_next(1, retry_after=1)
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales)
    assert response.status == 200, response.text


def test_long_throttling_is_429_with_retry_after(embed_env: Env, entra: EntraEmulator, world: World,
                                                 powerbi: PowerBIEmulator, call: Call) -> None:
    powerbi.throttle_next(1, retry_after=120)
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales)
    problem = assert_problem(response, 429, "powerbi_throttled")
    assert response.header("retry-after") == "120" and problem["powerBiRequestId"]


def test_power_bi_server_errors_are_retried_then_503(embed_env: Env, entra: EntraEmulator, world: World,
                                                     powerbi: PowerBIEmulator, call: Call) -> None:
    powerbi.inject_fault(503, count=None)
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales)
    assert_problem(response, 503, "powerbi_unavailable")
    assert powerbi.report_lookups() == 3, "two retries, then the error"


def test_shared_capacity_quota_is_explained(embed_env: Env, entra: EntraEmulator, world: World,
                                            powerbi: PowerBIEmulator, call: Call) -> None:
    limit = powerbi.shared_capacity_embed_token_limit
    powerbi.shared_capacity_embed_token_limit = 0
    try:
        response = embed(call, user(entra), reports=[{"id": world.shared_report}], workspaceId=world.shared)
    finally:
        powerbi.shared_capacity_embed_token_limit = limit
    assert "capacity" in assert_problem(response, 503, "powerbi_embed_quota_exceeded")["detail"]


def test_a_token_power_bi_calls_expired_is_replaced_once(
    embed_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call
) -> None:
    """Power BI judges the Azure AD token expired (clock skew, revocation): the broker gets a fresh one."""
    from devtools.emulator_server import Fault

    powerbi.inject_fault(Fault.http(403, {"error": {"code": "TokenExpired", "message": "Access token has expired, "
                                                    "resubmit with a new access token"}}),
                         path_prefix="/v1.0/myorg/GenerateToken")
    response = embed(call, user(entra), reports=[{"id": world.plain_report}], workspaceId=world.sales)
    assert response.status == 200, response.text
    assert entra.token_requests(grant_type="client_credentials") == 2
    assert powerbi.generate_token_calls() == 2
