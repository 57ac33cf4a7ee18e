"""Multitenancy with Power BI service principal profiles: one customer never sees another's content.

Every test runs the function app against the Entra ID and Power BI emulators over real sockets. Customers A and
B each have a profile owned by the broker's service principal and a workspace owned by that profile; a third
workspace belongs to both profiles (so a cache shared between them would show). The emulator's request log is
the witness: in profile mode every Power BI call carries the caller's customer's ``X-PowerBI-Profile-Id``, and
no call made for a caller of A ever carries B's.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from devtools.appconfig import AppConfigurationEmulator
from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity
from devtools.powerbi import POWERBI_RESOURCE, PowerBIEmulator
from tests.conftest import ALICE, API, CLIENT_ID, ROOT, TENANT, Env, World, assert_problem, embed_settings

Call = Callable[..., HostResponse]
PROFILE_HEADER = "x-powerbi-profile-id"
ROUTES = ("token", "embed-token", "report-embed", "proxy")


class Tenants:
    """Two customers' profiles, each with its own workspace and report, and one workspace both profiles share."""

    def __init__(self, powerbi: PowerBIEmulator, sp_oid: str) -> None:
        self.sp_oid = sp_oid
        self.profile_a = powerbi.add_profile(sp_oid, "Customer A")
        self.profile_b = powerbi.add_profile(sp_oid, "Customer B")
        self.ws_a = powerbi.add_workspace(name="A", members={self.profile_a})
        self.ws_b = powerbi.add_workspace(name="B", members={self.profile_b})
        self.dataset_a = powerbi.add_dataset(self.ws_a, name="A data")
        self.dataset_b = powerbi.add_dataset(self.ws_b, name="B data")
        self.report_a = powerbi.add_report(self.ws_a, name="A report", dataset_id=self.dataset_a)
        self.report_b = powerbi.add_report(self.ws_b, name="B report", dataset_id=self.dataset_b)
        self.ws_both = powerbi.add_workspace(name="Both", members={self.profile_a, self.profile_b})
        self.dataset_both = powerbi.add_dataset(self.ws_both, name="Shared data")
        self.report_both = powerbi.add_report(self.ws_both, name="Shared report", dataset_id=self.dataset_both)

    def report(self, customer: str) -> tuple[str, str]:
        return (self.ws_a, self.report_a) if customer == "a" else (self.ws_b, self.report_b)


@pytest.fixture(scope="session")
def tenants(_powerbi_session: PowerBIEmulator, _entra_session: EntraEmulator, world: World) -> Tenants:
    sp_token = _entra_session.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID)
    return Tenants(_powerbi_session, jwt.decode(sp_token, options={"verify_signature": False})["oid"])


def profiles(tenants: Tenants, *, own_workspaces: bool) -> str:
    if not own_workspaces:
        return json.dumps({"customer-a": tenants.profile_a, "customer-b": tenants.profile_b})
    return json.dumps({"customer-a": {"profileId": tenants.profile_a, "workspaces": [tenants.ws_a, tenants.ws_both]},
                       "customer-b": {"profileId": tenants.profile_b, "workspaces": [tenants.ws_b, tenants.ws_both]}})


def profile_settings(entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, *,
                     own_workspaces: bool = True, **extra: str) -> dict[str, str]:
    """Profile mode; with ``own_workspaces`` False the only broker-side list is the global one (all three)."""
    allowed = "" if own_workspaces else f"{tenants.ws_a},{tenants.ws_b},{tenants.ws_both}"
    return {**embed_settings(entra, powerbi, world), "EMBED_ALLOWED_WORKSPACES": allowed,
            "POWERBI_PROFILE_CLAIM": "customer", "POWERBI_PROFILES": profiles(tenants, own_workspaces=own_workspaces),
            "POWERBI_PROXY_ENABLED": "true", "EMBED_RLS_ROLES": "", **extra}


def caller(entra: EntraEmulator, customer: Any, username: str = ALICE) -> dict[str, str]:
    extra = {"customer": customer} if customer is not None else {}
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=username,
                                     roles=["Report.Viewer"], scopes="access_as_user", extra_claims=extra or None)
    return {"Authorization": f"Bearer {token}"}


def request_route(call: Call, route: str, headers: dict[str, str], workspace: str, report: str) -> HostResponse:
    if route == "token":
        return call("GET", "/api/token", headers=headers)
    if route == "embed-token":
        return call("POST", "/api/embed-token", headers=headers,
                    json={"reports": [{"id": report}], "workspaceId": workspace})
    if route == "report-embed":
        return call("GET", f"/api/reports/{report}/embed?workspaceId={workspace}", headers=headers)
    return call("GET", f"/api/powerbi/v1.0/myorg/groups/{workspace}/reports/{report}", headers=headers)


def api_calls(powerbi: PowerBIEmulator) -> list[dict[str, str]]:
    """The headers of every Power BI REST call the emulator received (lower-cased names)."""
    return [{k.lower(): v for k, v in r.headers.items()} for r in powerbi.requests if r.path.startswith("/v1.0/")]


def profiles_seen(powerbi: PowerBIEmulator) -> list[str | None]:
    return [headers.get(PROFILE_HEADER) for headers in api_calls(powerbi)]


# -- each customer gets its own content, as its own profile ------------------------------------------------------


@pytest.mark.parametrize("own_workspaces", [True, False])
@pytest.mark.parametrize("customer", ["a", "b"])
def test_a_caller_embeds_its_customers_report_and_every_power_bi_call_carries_its_profile(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call,
    customer: str, own_workspaces: bool
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants, own_workspaces=own_workspaces))
    profile = tenants.profile_a if customer == "a" else tenants.profile_b
    workspace, report = tenants.report(customer)
    headers = caller(entra, f"customer-{customer}")
    for route in ("embed-token", "report-embed", "proxy"):
        response = request_route(call, route, headers, workspace, report)
        assert response.status == 200, response.text
        if route != "proxy":
            grant = powerbi.embed_token_info(response.json()["token"])
            assert grant["caller_oid"] == profile and grant["reports"] == [report]
    seen = profiles_seen(powerbi)
    assert seen and set(seen) == {profile}  # GenerateToken, Get Report, Get Dataset and the proxy's call


def test_a_profile_header_sent_by_the_caller_is_never_passed_on(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants))
    headers = {**caller(entra, "customer-a"), "X-PowerBI-Profile-Id": tenants.profile_b}
    for route in ("embed-token", "proxy"):
        assert request_route(call, route, headers, tenants.ws_a, tenants.report_a).status == 200
        assert_problem(request_route(call, route, headers, tenants.ws_b, tenants.report_b), 403,
                       "embed_workspace_not_allowed" if route == "embed-token" else
                       "powerbi_proxy_workspace_not_allowed")
    assert set(profiles_seen(powerbi)) == {tenants.profile_a}


# -- cross-customer isolation, every endpoint --------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_caller_of_a_asking_for_bs_content_is_refused_before_power_bi_with_customer_workspace_lists(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call, route: str
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants))
    response = request_route(call, route, caller(entra, "customer-a"), tenants.ws_b, tenants.report_b)
    code = {"token": "token_refused_profile_mode", "embed-token": "embed_workspace_not_allowed",
            "report-embed": "embed_workspace_not_allowed", "proxy": "powerbi_proxy_workspace_not_allowed"}[route]
    assert_problem(response, 403, code)
    assert api_calls(powerbi) == []
    assert entra.token_requests() == 0  # not even the service principal's token was needed


@pytest.mark.parametrize("route", ["embed-token", "report-embed", "proxy"])
def test_with_only_the_global_list_power_bi_refuses_bs_content_to_as_profile(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call, route: str
) -> None:
    """The second wall: B's workspace is globally allowed, but A's profile is no member of it."""
    env.set(**profile_settings(entra, powerbi, world, tenants, own_workspaces=False))
    response = request_route(call, route, caller(entra, "customer-a"), tenants.ws_b, tenants.report_b)
    assert response.status in (401, 403, 404, 502), response.text
    assert "token" not in response.json()
    # A's report id asked for in A's workspace by B's caller: not found for B's profile either.
    response = request_route(call, route, caller(entra, "customer-b"), tenants.ws_a, tenants.report_a)
    assert response.status in (401, 403, 404, 502), response.text
    seen = profiles_seen(powerbi)
    assert seen and None not in seen
    first, second = seen[: seen.index(tenants.profile_b)], seen[seen.index(tenants.profile_b):]
    assert set(first) == {tenants.profile_a} and set(second) == {tenants.profile_b}
    assert powerbi.generate_token_calls() == 0


def test_no_cache_entry_is_shared_between_profiles(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    """A report both profiles can see: each customer gets its own embed token, metadata and query result."""
    env.set(**profile_settings(entra, powerbi, world, tenants, POWERBI_PROXY_QUERY_CACHE_SECONDS="60"))
    tokens: dict[str, str] = {}
    query = {"queries": [{"query": "EVALUATE GENERATESERIES(1, 3)"}]}
    path = f"/api/powerbi/v1.0/myorg/groups/{tenants.ws_both}/datasets/{tenants.dataset_both}/executeQueries"
    for customer in ("a", "b", "a", "b"):
        headers = caller(entra, f"customer-{customer}")
        response = request_route(call, "embed-token", headers, tenants.ws_both, tenants.report_both)
        assert response.status == 200, response.text
        tokens.setdefault(customer, response.json()["token"])
        assert response.json()["token"] == tokens[customer]  # the second time: this customer's cached token
        answer = call("POST", path, headers=headers, json=query)
        assert answer.status == 200, answer.text
    assert tokens["a"] != tokens["b"]
    assert powerbi.embed_token_info(tokens["a"])["caller_oid"] == tenants.profile_a
    assert powerbi.embed_token_info(tokens["b"])["caller_oid"] == tenants.profile_b
    assert powerbi.generate_token_calls() == 2 and powerbi.execute_queries_calls() == 2
    assert powerbi.report_lookups() == 2  # metadata cached per profile, never across
    execute = [h.get(PROFILE_HEADER) for r, h in zip(powerbi.requests, [
        {k.lower(): v for k, v in r.headers.items()} for r in powerbi.requests], strict=True)
        if r.path.lower().endswith("/executequeries")]
    assert execute == [tenants.profile_a, tenants.profile_b]


# -- callers without a customer --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("customer", "code"), [(None, "caller_customer_missing"), ("", "caller_customer_missing"),
                                                ("customer-z", "caller_customer_unknown")])
def test_a_caller_without_a_mapped_customer_is_refused_before_any_upstream_call(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call, route: str,
    customer: str | None, code: str
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants))
    response = request_route(call, route, caller(entra, customer), tenants.ws_a, tenants.report_a)
    assert_problem(response, 403, code)
    assert api_calls(powerbi) == [] and entra.token_requests() == 0


def test_a_claim_that_is_not_a_string_names_no_customer(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants))
    for value in (["customer-a"], {"id": "customer-a"}, 7):
        response = request_route(call, "embed-token", caller(entra, value), tenants.ws_a,
                                 tenants.report_a)
        assert_problem(response, 403, "caller_customer_missing")
    assert api_calls(powerbi) == []


def test_the_tenant_id_claim_can_name_the_customer(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants, POWERBI_PROFILE_CLAIM="tid",
                               POWERBI_PROFILES=json.dumps({TENANT: tenants.profile_a}),
                               EMBED_ALLOWED_WORKSPACES=tenants.ws_a))
    response = request_route(call, "embed-token", caller(entra, None), tenants.ws_a, tenants.report_a)
    assert response.status == 200, response.text
    assert set(profiles_seen(powerbi)) == {tenants.profile_a}


# -- caller modes and grant types ------------------------------------------------------------------------------


def easyauth_principal(**claims: str) -> dict[str, str]:
    items = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "0ff1ce00-0000-4000-8000-"
              "0000000a11ce"}, {"typ": "preferred_username", "val": ALICE},
             *({"typ": k, "val": v} for k, v in claims.items())]
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": items}
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(document).encode()).decode(),
            "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}


def test_easyauth_callers_are_mapped_by_their_claims_too(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    env.set(**profile_settings(entra, powerbi, world, tenants, CALLER_AUTH="easyauth",
                               CALLER_EASYAUTH_ALLOW_LOCAL="true"))
    ok = request_route(call, "embed-token", easyauth_principal(customer="customer-b"), tenants.ws_b, tenants.report_b)
    assert ok.status == 200, ok.text
    assert_problem(request_route(call, "embed-token", easyauth_principal(customer="customer-b"), tenants.ws_a,
                                 tenants.report_a), 403, "embed_workspace_not_allowed")
    assert_problem(request_route(call, "embed-token", easyauth_principal(), tenants.ws_b, tenants.report_b), 403,
                   "caller_customer_missing")
    assert set(profiles_seen(powerbi)) == {tenants.profile_b}


@pytest.mark.parametrize(("changes", "setting"), [
    ({"CALLER_AUTH": "anonymous"}, "CALLER_AUTH"),
    ({"CALLER_AUTH": "function_key"}, "CALLER_AUTH"),
    ({"POWERBI_GRANT_TYPE": "on_behalf_of"}, "POWERBI_GRANT_TYPE"),
    ({"POWERBI_GRANT_TYPE": "password", "POWERBI_USERNAME": "pbi-master@contoso.com",
      "POWERBI_PASSWORD": "master-Passw0rd!value"}, "POWERBI_GRANT_TYPE"),
])
def test_profiles_with_an_unverified_caller_mode_or_a_user_grant_are_refused_at_start(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call,
    changes: dict[str, str], setting: str
) -> None:
    env.set(**{**profile_settings(entra, powerbi, world, tenants), **changes})
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    named = [p for p in problem["problems"] if p["severity"] == "error" and p["setting"] == setting]
    assert named and ("profile" in named[0]["message"].lower()), problem
    assert tenants.profile_a not in json.dumps(problem)  # no mapping value echoed
    response = request_route(call, "embed-token", caller(entra, "customer-a"), tenants.ws_a, tenants.report_a)
    assert response.status == 503
    assert api_calls(powerbi) == [] and entra.token_requests() == 0


def test_without_profile_settings_nothing_changes(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    response = request_route(call, "embed-token", caller(entra, "customer-a"), world.sales, world.plain_report)
    assert response.status == 200, response.text
    assert call("GET", "/api/token", headers=caller(entra, "customer-a")).status == 200
    assert "profiles" not in call("GET", "/api/health").json()
    assert set(profiles_seen(powerbi)) == {None}


# -- settings sources ------------------------------------------------------------------------------------------


def test_profiles_from_app_configuration_key_values(
    env: Env, _store_session: AppConfigurationEmulator, app_identity: ManagedIdentity, vault: KeyVaultEmulator,
    entra: EntraEmulator,
    powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    store = _store_session
    store.grant_data_reader(app_identity.principal_id)
    store.set("TokenBroker:Sentinel", "1")
    store.set("TokenBroker:Profiles:customer-a", tenants.profile_a)
    store.set("TokenBroker:Profiles:customer-b", json.dumps({"profileId": tenants.profile_b,
                                                             "workspaces": [tenants.ws_b]}),
              content_type="application/json")
    store.set("TokenBroker:POWERBI_PROFILE_CLAIM", "customer")
    try:
        settings = profile_settings(entra, powerbi, world, tenants,
                                    EMBED_ALLOWED_WORKSPACES=f"{tenants.ws_a},{tenants.ws_b}")
        del settings["POWERBI_PROFILES"], settings["POWERBI_PROFILE_CLAIM"]
        env.set(**settings, AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id)
        health = call("GET", "/api/health").json()
        assert health["profiles"] == {"claim": "customer", "customers": 2, "source": "App Configuration"}, health
        for customer in ("a", "b"):
            workspace, report = tenants.report(customer)
            response = request_route(call, "embed-token", caller(entra, f"customer-{customer}"), workspace, report)
            assert response.status == 200, response.text
        # B's own list (from the JSON value) holds B to its workspace within the global list; A has only the global.
        assert_problem(request_route(call, "embed-token", caller(entra, "customer-b"), tenants.ws_a,
                                     tenants.report_a), 403, "embed_workspace_not_allowed")
        assert profiles_seen(powerbi).count(tenants.profile_a) and profiles_seen(powerbi).count(tenants.profile_b)
        # Both forms at once: a configuration error naming the setting.
        env.set(**settings, POWERBI_PROFILES=profiles(tenants, own_workspaces=False),
                AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id)
        problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
        assert any(p["setting"] == "POWERBI_PROFILES" and "one of the two" in p["message"]
                   for p in problem["problems"])
    finally:
        for key in ("Profiles:customer-a", "Profiles:customer-b", "POWERBI_PROFILE_CLAIM"):
            store.delete(f"TokenBroker:{key}")


def test_a_customer_onboarded_in_app_configuration_is_served_after_the_sentinel_changes(
    env: Env, _store_session: AppConfigurationEmulator, app_identity: ManagedIdentity, vault: KeyVaultEmulator,
    entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    store = _store_session
    store.grant_data_reader(app_identity.principal_id)
    store.set("TokenBroker:Sentinel", "1")
    store.set("TokenBroker:Profiles:customer-a", tenants.profile_a)
    try:
        settings = profile_settings(entra, powerbi, world, tenants, own_workspaces=False)
        del settings["POWERBI_PROFILES"]
        env.set(**settings, AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id,
                AZURE_APPCONFIG_REFRESH_SECONDS="1")
        b = caller(entra, "customer-b")
        assert_problem(request_route(call, "embed-token", b, tenants.ws_b, tenants.report_b), 403,
                       "caller_customer_unknown")
        store.set("TokenBroker:Profiles:customer-b", tenants.profile_b)
        store.set("TokenBroker:Sentinel", "2")
        time.sleep(1.2)
        call("GET", "/api/health")  # this request performs the due sentinel check
        response = request_route(call, "embed-token", b, tenants.ws_b, tenants.report_b)
        assert response.status == 200, response.text
        assert set(profiles_seen(powerbi)) == {tenants.profile_b}
    finally:
        for key in ("Profiles:customer-a", "Profiles:customer-b"):
            store.delete(f"TokenBroker:{key}")


def test_power_bi_requests_are_built_only_from_a_powerbi_access() -> None:
    """The structural half of "no call goes out without the profile": one place builds Power BI's headers, and
    the services that act for callers get their PowerBIAccess only from access_for (the caller's profile)."""
    package = ROOT / "token_broker"
    builds_headers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                            if 'f"Bearer {' in p.read_text() and p.parts[-2] in ("powerbi",))
    assert builds_headers == ["powerbi/access.py"]
    for service in ("powerbi/embed.py", "powerbi/proxy.py"):
        text = (package / service).read_text()
        assert "PowerBIAccess(" not in text and "token_for(" not in text and "access_for(" in text


def test_profile_mode_answers_are_the_documented_ones(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, tenants: Tenants, call: Call
) -> None:
    from tests.test_openapi import assert_conforms, load_spec

    spec = load_spec()
    env.set(**profile_settings(entra, powerbi, world, tenants))
    assert_conforms(spec, "/api/health", "get", call("GET", "/api/health"))
    assert_conforms(spec, "/api/token", "get", call("GET", "/api/token", headers=caller(entra, "customer-a")))
    for customer in (None, "customer-z", "customer-a"):
        response = call("POST", "/api/embed-token", headers=caller(entra, customer),
                        json={"reports": [{"id": tenants.report_b}], "workspaceId": tenants.ws_b})
        assert response.status == 403
        assert_conforms(spec, "/api/embed-token", "post", response)
    ok = call("POST", "/api/embed-token", headers=caller(entra, "customer-a"),
              json={"reports": [{"id": tenants.report_a}], "workspaceId": tenants.ws_a})
    assert_conforms(spec, "/api/embed-token", "post", ok)


def test_the_offline_stack_runs_in_profile_mode() -> None:
    """``python -m devtools --caller-auth jwt --profiles``: the sample's calls work as the demo customer's profile."""
    import requests

    from devtools.offline_stack import PROFILE_ID, REPORT_ID, OfflineStack, OfflineStackError

    with pytest.raises(OfflineStackError, match="--caller-auth jwt"):
        OfflineStack(port=0, caller_auth="anonymous", profiles=True).start()
    with OfflineStack(port=0, caller_auth="jwt", profiles=True) as stack:
        headers = {"Authorization": f"Bearer {stack.user_token()}"}
        assert "Profile mode" in stack.banner()
        embed = requests.get(f"{stack.url}/api/reports/{REPORT_ID}/embed", headers=headers, timeout=10)
        assert embed.status_code == 200, embed.text
        assert stack.powerbi.embed_token_info(embed.json()["token"])["caller_oid"] == PROFILE_ID
        refused = requests.get(f"{stack.url}/api/token", headers=headers, timeout=10)
        assert refused.status_code == 403 and refused.json()["code"] == "token_refused_profile_mode"
        seen = [{k.lower(): v for k, v in r.headers.items()}.get(PROFILE_HEADER) for r in stack.powerbi.requests
                if r.path.startswith("/v1.0/")]
        assert seen and set(seen) == {PROFILE_ID}
