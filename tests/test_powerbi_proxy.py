"""The Power BI REST proxy end to end: real requests and MSAL over sockets to the Entra and Power BI emulators.

Every refusal is checked to happen before any call to Power BI (the emulator's request log stays empty).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.powerbi import PowerBIEmulator
from tests.conftest import ALICE, API, TENANT, Env, World, assert_problem, embed_settings

Call = Callable[..., HostResponse]
BASE = "/api/powerbi/v1.0/myorg"


def proxy_settings(entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, **extra: str) -> dict[str, str]:
    return embed_settings(entra, powerbi, world, POWERBI_PROXY_ENABLED="true", **extra)


@pytest.fixture
def proxy_env(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World) -> Env:
    env.set(**proxy_settings(entra, powerbi, world))
    return env


def user(entra: EntraEmulator, username: str = ALICE) -> dict[str, str]:
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=username, scopes="access_as_user")
    return {"Authorization": f"Bearer {token}"}


def query(call: Call, headers: dict[str, str], workspace: str, dataset: str, dax: str = "EVALUATE Sales",
          **body: Any) -> HostResponse:
    return call("POST", f"{BASE}/groups/{workspace}/datasets/{dataset}/executeQueries", headers=headers,
                json={"queries": [{"query": dax}], **body})


def upstream_claims(powerbi: PowerBIEmulator) -> dict[str, Any]:
    """The claims of the Azure AD token the last call to Power BI carried."""
    headers = {k.lower(): v for k, v in powerbi.requests[-1].headers.items()}
    token = headers["authorization"].split(" ", 1)[1]
    return dict(jwt.decode(token, options={"verify_signature": False}))


def rows(response: HostResponse) -> list[dict[str, Any]]:
    assert response.status == 200, response.text
    return list(response.json()["results"][0]["tables"][0]["rows"])


# -- forwarding ------------------------------------------------------------------------------------------------


def test_every_default_read_operation_is_forwarded_with_the_service_principal_token(
        proxy_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    ws, report, dataset = world.sales, world.plain_report, world.plain_dataset
    cases = {
        f"groups/{ws}/reports": f"/v1.0/myorg/groups/{ws}/reports",
        f"groups/{ws}/reports/{report}": f"/v1.0/myorg/groups/{ws}/reports/{report}",
        f"groups/{ws}/reports/{report}/pages": f"/v1.0/myorg/groups/{ws}/reports/{report}/pages",
        f"groups/{ws}/datasets": f"/v1.0/myorg/groups/{ws}/datasets",
        f"groups/{ws}/datasets/{dataset}": f"/v1.0/myorg/groups/{ws}/datasets/{dataset}",
        f"Groups/{ws.upper()}/Datasets/{dataset}/Refreshes?$top=2":
            f"/v1.0/myorg/groups/{ws}/datasets/{dataset}/refreshes",
    }
    for path, upstream in cases.items():
        powerbi.reset_counters()
        response = call("GET", f"{BASE}/{path}", headers=user(entra))
        assert response.status == 200, (path, response.text)
        assert response.header("content-type", ) == "application/json"
        assert response.header("RequestId"), "Power BI's request id is passed on"
        assert response.header("cache-control") == "no-store"
        assert [r.path for r in powerbi.requests] == [upstream], "the path is rebuilt from the operation's template"
        assert upstream_claims(powerbi)["idtyp"] == "app", "the broker's own token, never the caller's"
        assert "accessToken" not in response.text
    refreshes = call("GET", f"{BASE}/groups/{ws}/datasets/{dataset}/refreshes?$top=2", headers=user(entra))
    assert len(refreshes.json()["value"]) == 2, "$top is passed on"
    listed = call("GET", f"{BASE}/groups/{ws}/reports", headers=user(entra)).json()["value"]
    assert {r["id"] for r in listed} == {world.plain_report, world.second_report, world.rls_report}


def test_execute_queries_under_client_credentials(proxy_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                  world: World, call: Call) -> None:
    response = query(call, user(entra), world.sales, world.plain_dataset, serializerSettings={"includeNulls": True})
    assert rows(response) == [{"[User]": "", "[Dataset]": "Plain"}]
    assert response.header("X-Proxy-Cache") == "miss"
    sent = powerbi.requests[-1]
    assert sent.path.endswith("/executeQueries") and upstream_claims(powerbi)["idtyp"] == "app"
    expected = {"queries": [{"query": "EVALUATE Sales"}], "serializerSettings": {"includeNulls": True}}
    assert json.loads(sent.raw_body) == expected


def test_rls_dataset_under_client_credentials_is_refused_before_the_query(
        proxy_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    problem = assert_problem(query(call, user(entra), world.sales, world.rls_dataset), 403,
                             "powerbi_proxy_rls_not_supported")
    assert "service principals" in problem["detail"] and problem["setting"] == "POWERBI_GRANT_TYPE"
    assert powerbi.execute_queries_calls() == 0
    assert powerbi.dataset_lookups() == 1, "RLS is read from the dataset's metadata"
    query(call, user(entra), world.sales, world.rls_dataset)
    assert powerbi.dataset_lookups() == 1, "the metadata is cached"


@pytest.mark.parametrize("grant", ["client_credentials", "on_behalf_of"])
def test_impersonated_user_name_from_a_request_is_refused(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                          world: World, call: Call, grant: str) -> None:
    env.set(**proxy_settings(entra, powerbi, world, POWERBI_GRANT_TYPE=grant))
    response = query(call, user(entra), world.sales, world.plain_dataset, impersonatedUserName="ceo@contoso.com")
    assert_problem(response, 403, "powerbi_proxy_impersonation_refused")
    assert powerbi.requests == []


# -- refusals before any upstream call ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "groups/{ws}/reports/{report}/../../datasets", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}/./reports", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}//reports", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}%2Freports", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}%252Freports", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}%5Creports", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}/reports/{report}%2F..%2F..%2Fdatasets", 400, "powerbi_proxy_path_invalid"),
    ("GET", "groups/{ws}/reports/not-a-guid", 400, "powerbi_proxy_id_invalid"),
    ("GET", "reports", 403, "powerbi_proxy_operation_not_allowed"),
    ("GET", "datasets/{dataset}", 403, "powerbi_proxy_operation_not_allowed"),
    ("GET", "groups", 403, "powerbi_proxy_operation_not_allowed"),
    ("GET", "groups/{ws}", 403, "powerbi_proxy_operation_not_allowed"),
    ("GET", "groups/{ws}/datasets/{dataset}/datasources", 403, "powerbi_proxy_operation_not_allowed"),
    ("GET", "groups/{ws}/dashboards", 403, "powerbi_proxy_operation_not_allowed"),
    ("POST", "groups/{ws}/datasets/{dataset}/refreshes", 403, "powerbi_proxy_operation_not_allowed"),
    ("POST", "GenerateToken", 403, "powerbi_proxy_operation_not_allowed"),
    ("GET", "groups/{ws}/datasets/{dataset}/executeQueries", 403, "powerbi_proxy_operation_not_allowed"),
    ("DELETE", "groups/{ws}/datasets/{dataset}", 405, "method_not_allowed"),
    ("PATCH", "groups/{ws}/reports/{report}", 405, "method_not_allowed"),
    ("GET", "groups/{other}/reports", 403, "powerbi_proxy_workspace_not_allowed"),
    ("GET", "groups/{ws}/reports?$filter=name", 400, "powerbi_proxy_query_parameter_not_allowed"),
    ("GET", "groups/{ws}/datasets/{dataset}/refreshes?$top=all", 400,
     "powerbi_proxy_query_parameter_not_allowed"),
])
def test_everything_else_is_refused_before_any_upstream_call(
        proxy_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call,
        method: str, path: str, status: int, code: str) -> None:
    url = f"{BASE}/" + path.format(ws=world.sales, report=world.plain_report, dataset=world.plain_dataset,
                                   other=world.other)
    assert_problem(call(method, url, headers=user(entra)), status, code)
    assert powerbi.requests == []


def test_paths_outside_v1_myorg_and_strangers(proxy_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                              world: World, call: Call) -> None:
    assert_problem(call("GET", f"/api/powerbi/v2.0/myorg/groups/{world.sales}/reports", headers=user(entra)), 403,
                   "powerbi_proxy_operation_not_allowed")
    assert_problem(call("GET", "/api/powerbi", headers=user(entra)), 403, "powerbi_proxy_operation_not_allowed")
    # Authentication comes first: a stranger learns nothing about paths or the allow-lists.
    assert_problem(call("GET", f"{BASE}/groups/{world.other}/reports"), 401, "caller_token_missing")
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/..%2Freports"), 401, "caller_token_missing")
    assert powerbi.requests == []


def test_the_function_key_query_parameter_is_never_passed_on(proxy_env: Env, entra: EntraEmulator, world: World,
                                                             powerbi: PowerBIEmulator, call: Call) -> None:
    response = call("GET", f"{BASE}/groups/{world.sales}/reports?code=a-function-key", headers=user(entra))
    assert response.status == 200, response.text
    assert powerbi.requests[-1].query == {}


@pytest.mark.parametrize(("body", "code"), [
    ({"queries": []}, "powerbi_proxy_query_invalid"),
    ({"queries": [{"query": "EVALUATE A"}, {"query": "EVALUATE B"}]}, "powerbi_proxy_query_invalid"),
    ({"queries": [{"query": "EVALUATE A", "extra": 1}]}, "powerbi_proxy_query_invalid"),
    ({"queries": [{"query": " "}]}, "powerbi_proxy_query_invalid"),
    ({"queries": "EVALUATE A"}, "powerbi_proxy_query_invalid"),
    ({}, "powerbi_proxy_query_invalid"),
    ({"queries": [{"query": "EVALUATE A"}], "serializerSettings": {"includeNulls": "yes"}},
     "powerbi_proxy_query_invalid"),
    ({"queries": [{"query": "EVALUATE A"}], "datasetId": "x"}, "unknown_field"),
])
def test_execute_queries_bodies_are_validated(proxy_env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                              world: World, call: Call, body: dict[str, Any], code: str) -> None:
    url = f"{BASE}/groups/{world.sales}/datasets/{world.plain_dataset}/executeQueries"
    assert_problem(call("POST", url, headers=user(entra), json=body), 400, code)
    assert powerbi.execute_queries_calls() == 0


def test_report_and_dataset_allow_lists_apply_to_items_and_lists(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.plain_report))
    reports = call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra))
    assert [r["id"] for r in reports.json()["value"]] == [world.plain_report], "the list is filtered"
    datasets = call("GET", f"{BASE}/groups/{world.sales}/datasets", headers=user(entra))
    assert [d["id"] for d in datasets.json()["value"]] == [world.plain_dataset], "only datasets of allowed reports"
    calls = len(powerbi.requests)
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports/{world.second_report}", headers=user(entra)),
                   403, "powerbi_proxy_report_not_allowed")
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports/{world.second_report}/pages",
                        headers=user(entra)), 403, "powerbi_proxy_report_not_allowed")
    assert_problem(query(call, user(entra), world.sales, world.rls_dataset), 403, "powerbi_proxy_dataset_not_allowed")
    assert len(powerbi.requests) == calls, "refused from the cached report metadata, no upstream call"
    assert rows(query(call, user(entra), world.sales, world.plain_dataset))  # backs the allowed report
    env.set(**proxy_settings(entra, powerbi, world, EMBED_ALLOWED_DATASETS=world.rls_dataset))
    datasets = call("GET", f"{BASE}/groups/{world.sales}/datasets", headers=user(entra))
    assert [d["id"] for d in datasets.json()["value"]] == [world.rls_dataset]
    assert_problem(query(call, user(entra), world.sales, world.plain_dataset), 403, "powerbi_proxy_dataset_not_allowed")


def test_operations_can_be_widened_and_narrowed(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                world: World, call: Call) -> None:
    env.set(**proxy_settings(entra, powerbi, world,
                             POWERBI_PROXY_OPERATIONS="executequeriesingroup, GetDatasourcesInGroup"))
    datasources = call("GET", f"{BASE}/groups/{world.sales}/datasets/{world.plain_dataset}/datasources",
                       headers=user(entra))
    assert datasources.status == 200 and datasources.json()["value"][0]["datasourceType"] == "Sql"
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)), 403,
                   "powerbi_proxy_operation_not_allowed")
    assert rows(query(call, user(entra), world.sales, world.plain_dataset))


def test_the_proxy_is_off_by_default_and_refuses_anonymous_callers(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    problem = assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)), 404,
                             "powerbi_proxy_disabled")
    assert problem["setting"] == "POWERBI_PROXY_ENABLED"
    env.set(**proxy_settings(entra, powerbi, world, CALLER_AUTH="anonymous"))
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports"), 403, "powerbi_proxy_anonymous_refused")
    warnings = call("GET", "/api/health").json()["warnings"]
    assert any(w["setting"] == "POWERBI_PROXY_ALLOW_ANONYMOUS" for w in warnings)
    assert powerbi.requests == []
    env.set(**proxy_settings(entra, powerbi, world, CALLER_AUTH="anonymous", POWERBI_PROXY_ALLOW_ANONYMOUS="true"))
    assert call("GET", f"{BASE}/groups/{world.sales}/reports").status == 200


@pytest.mark.parametrize(("settings", "setting"), [
    ({"EMBED_ALLOWED_WORKSPACES": None}, "EMBED_ALLOWED_WORKSPACES"),
    ({"POWERBI_PROXY_OPERATIONS": "GetReportsInGroup,DeleteDataset"}, "POWERBI_PROXY_OPERATIONS"),
    ({"POWERBI_PROXY_QUERIES_PER_MINUTE": "121"}, "POWERBI_PROXY_QUERIES_PER_MINUTE"),
    ({"POWERBI_PROXY_MAX_RESPONSE_BYTES": "lots"}, "POWERBI_PROXY_MAX_RESPONSE_BYTES"),
    ({"POWERBI_PROXY_QUERY_CACHE_SECONDS": "-1"}, "POWERBI_PROXY_QUERY_CACHE_SECONDS"),
])
def test_invalid_proxy_settings_are_named(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                          call: Call, settings: dict[str, str | None], setting: str) -> None:
    env.set(**{**proxy_settings(entra, powerbi, world), **settings})
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert setting in [p["setting"] for p in problem["problems"] if p["severity"] == "error"]
    assert_problem(call("GET", f"{BASE}/groups/{world.sales}/reports", headers=user(entra)), 503,
                   "configuration_invalid")


def test_the_doctor_describes_the_proxy_and_warns_about_rls_datasets(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
        capsys: pytest.CaptureFixture[str]) -> None:
    from token_broker.doctor.cli import main

    env.set(**proxy_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=f"{world.plain_report},{world.rls_report}"))
    main(["--json"])
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["powerbi_proxy"]["status"] == "pass" and "ExecuteQueriesInGroup" in checks["powerbi_proxy"]["detail"]
    warning = checks[f"powerbi_proxy:dataset:{world.rls_dataset}"]
    assert warning["status"] == "warn" and warning["code"] == "powerbi_proxy_rls_not_supported"
    assert f"powerbi_proxy:dataset:{world.plain_dataset}" not in checks
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.rls_report))
    main(["--json"])
    assert not [c for c in json.loads(capsys.readouterr().out) if c["check"].startswith("powerbi_proxy")]
