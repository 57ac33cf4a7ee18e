"""Security at the seams: where two features meet, no caller gets past its limits.

For each pair (settings source x caller mode), (grant type x cache) and (allow-list x item kind), a caller
must never receive a value minted for another principal, or for an item outside its allow-lists. Each
finding of the security review this suite was written for has a test here that failed before its fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.appconfig import AppConfigurationEmulator
from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from tests.conftest import (
    ALICE,
    API,
    BOB,
    CLIENT_ID,
    ROOT,
    TENANT,
    Env,
    World,
    assert_problem,
    embed_settings,
    shared_settings,
)
from token_broker import runtime

Call = Callable[..., HostResponse]
OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CAROL = "carol@contoso.com"
TOKEN_ROUTES = ("token", "embed-token", "report-embed")


def bearer(entra: EntraEmulator, username: str, *, roles: tuple[str, ...] = ("Report.Viewer",),
           **claims: Any) -> dict[str, str]:
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=username, roles=list(roles),
                                     scopes="access_as_user", extra_claims=claims or None)
    return {"Authorization": f"Bearer {token}"}


def call_route(call: Call, route: str, world: World, headers: dict[str, str] | None = None) -> HostResponse:
    if route == "token":
        return call("GET", "/api/token", headers=headers or {})
    if route == "embed-token":
        return call("POST", "/api/embed-token", headers=headers or {},
                    json={"reports": [{"id": world.plain_report}], "workspaceId": world.sales})
    return call("GET", f"/api/reports/{world.plain_report}/embed?workspaceId={world.sales}", headers=headers or {})


# -- settings source x caller mode ---------------------------------------------------------------------------------


@pytest.fixture
def store(_store_session: AppConfigurationEmulator, app_identity: ManagedIdentity, vault: KeyVaultEmulator,
          entra: EntraEmulator) -> Iterator[AppConfigurationEmulator]:
    """The session's store, readable by the app's identity (the app runs 'on App Service' with it)."""
    store = _store_session
    store.grant_data_reader(app_identity.principal_id)
    store.set("TokenBroker:Sentinel", "1")
    store.clear_faults()
    yield store
    store.delete("TokenBroker:CALLER_AUTH")
    store.delete("TokenBroker:HEALTH_DETAILS")


@pytest.mark.parametrize("mode", ["jwt", "easyauth", "function_key", "anonymous"])
def test_a_caller_mode_only_in_the_store_is_ignored_and_the_token_routes_fail_closed(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, entra: EntraEmulator,
    powerbi: PowerBIEmulator, world: World, call: Call, mode: str
) -> None:
    """Before: the broker took CALLER_AUTH from the store while the host indexed the routes from the environment."""
    store.set("TokenBroker:CALLER_AUTH", mode)
    env.set(**{**embed_settings(entra, powerbi, world), "CALLER_AUTH": None},
            AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id)
    for route in TOKEN_ROUTES:
        assert_problem(call_route(call, route, world, bearer(entra, ALICE)), 503, "caller_auth_not_configured")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    ignored = [p for p in problem["problems"]
               if p["severity"] == "warning" and "TokenBroker:CALLER_AUTH" in p["message"]]
    assert ignored and ignored[0]["setting"] == "CALLER_AUTH"
    assert entra.token_requests() == 0 and powerbi.generate_token_calls() == 0


def test_bootstrap_settings_in_the_store_never_change_how_the_store_is_reached(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    store.set("TokenBroker:HEALTH_DETAILS", "false")
    env.set(AZURE_APPCONFIG_ENDPOINT=store.endpoint, AZURE_CLIENT_ID=app_identity.client_id)
    health = call("GET", "/api/health").json()  # HEALTH_DETAILS=true in the app settings still holds
    assert health["settingsSource"] == "app settings + App Configuration"
    assert [w["setting"] for w in health["warnings"] if "App Configuration is ignored" in w["message"]] == [
        "HEALTH_DETAILS"]


@pytest.mark.parametrize("route", TOKEN_ROUTES)
def test_function_key_mode_on_routes_indexed_anonymous_is_503_never_200(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, route: str
) -> None:
    """The session's host indexed the token routes ANONYMOUS; a broker running function_key must not trust it."""
    env.set(**{**embed_settings(entra, powerbi, world), "CALLER_AUTH": "function_key"})
    problem = assert_problem(call_route(call, route, world), 503, "caller_auth_level_mismatch")
    assert problem["setting"] == "CALLER_AUTH" and "restart" in problem["problems"][0]["message"]
    assert entra.token_requests() == 0 and powerbi.generate_token_calls() == 0


STORE_SCRIPT = textwrap.dedent("""
    import json
    import function_app
    from devtools.functions_host import FunctionsHost
    host = FunctionsHost(function_app.app, function_keys={"default": "the-function-key-value"})
    levels = {f.name: str(f.auth_level).upper() for f in host.functions}
    key = {"x-functions-key": "the-function-key-value"}
    statuses = [host.invoke("GET", "/api/token").status, host.invoke("GET", "/api/token", headers=key).status,
                host.invoke("POST", "/api/embed-token", json={}).status]
    print(json.dumps({"levels": levels, "statuses": statuses}))
""")


@pytest.mark.parametrize("in_app_settings", [False, True])
def test_function_key_from_the_store_never_serves_a_token_without_a_key(
    env: Env, store: AppConfigurationEmulator, app_identity: ManagedIdentity, in_app_settings: bool
) -> None:
    """The deployment of the review: CALLER_AUTH=function_key in App Configuration, a fresh worker process."""
    store.set("TokenBroker:CALLER_AUTH", "function_key")
    env.set(CALLER_AUTH="function_key" if in_app_settings else None, AZURE_APPCONFIG_ENDPOINT=store.endpoint,
            AZURE_CLIENT_ID=app_identity.client_id)
    result = subprocess.run([sys.executable, "-c", STORE_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ), timeout=120, check=True)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    token_level = outcome["levels"]["token"]
    if in_app_settings:
        assert token_level == "FUNCTION"
        assert outcome["statuses"][:2] == [401, 200]  # the host checks the key, the broker trusts it
    else:
        assert token_level == "ANONYMOUS"
        assert outcome["statuses"] == [503, 503, 503]  # never 200: CALLER_AUTH is not set where it counts


# -- health: details only for callers that pass CALLER_AUTH ---------------------------------------------------------


def test_unauthenticated_health_says_only_ok_or_not_ok(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(HEALTH_DETAILS=None, CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API)
    assert call("GET", "/api/health").json() == {"status": "ok"}
    detailed = call("GET", "/api/health", headers=bearer(entra, ALICE)).json()
    assert detailed["callerAuth"] == "jwt" and detailed["grantType"] == "client_credentials"
    env.set(HEALTH_DETAILS=None, CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API,
            POWERBI_CLIENT_ID="a-secret-pasted-into-the-wrong-setting")
    for path in ("/api/health", "/api/token"):
        problem = assert_problem(call("GET", path), 503, "configuration_invalid")
        assert "problems" not in problem and "setting" not in problem
        assert "POWERBI_CLIENT_ID" not in json.dumps(problem)
    env.set(HEALTH_DETAILS="true", POWERBI_CLIENT_ID="a-secret-pasted-into-the-wrong-setting")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert problem["setting"] == "POWERBI_CLIENT_ID"
    assert "a-secret-pasted" not in json.dumps(problem), "problems name the setting, never echo its value"



def test_health_probes_use_none_of_the_callers_rate_limit(env: Env, entra: EntraEmulator, call: Call) -> None:
    """A monitor probing /api/health with a caller's token sees details and leaves that caller's requests alone."""
    env.set(HEALTH_DETAILS=None, CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API,
            CALLER_RATE_LIMIT_PER_MINUTE="2")
    headers = bearer(entra, ALICE)
    for _ in range(5):
        assert call("GET", "/api/health", headers=headers).json()["callerAuth"] == "jwt"
    assert [call("GET", "/api/token", headers=headers).status for _ in range(3)] == [200, 200, 429]
    limited = call("GET", "/api/health", headers=headers).json()
    assert limited["callerAuth"] == "jwt", "a rate-limited caller is still verified"


def test_health_lists_the_anonymous_mode_warning(env: Env, call: Call) -> None:
    warnings = call("GET", "/api/health").json()["warnings"]
    assert any(w["setting"] == "CALLER_AUTH" and "anyone who can reach" in w["message"] for w in warnings)


# -- grant type x cache ------------------------------------------------------------------------------------------------


@pytest.fixture
def obo_world(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World) -> Iterator[dict[str, str]]:
    """Alice may see the Sales workspace in Power BI; Carol (a user of this suite only) may not."""
    import jwt

    alice_token = bearer(entra, ALICE)["Authorization"].split()[1]
    oids = {ALICE: jwt.decode(alice_token, options={"verify_signature": False})["oid"],  # the session's Alice
            CAROL: entra.add_user(TENANT, CAROL, "user-Passw0rd!value")}
    powerbi.grant(world.sales, oids[ALICE])
    yield oids
    powerbi.revoke(world.sales, oids[ALICE])


@pytest.mark.parametrize("username_claim", ["email", "preferred_username"])
def test_on_behalf_of_embed_tokens_are_never_shared_between_users(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call,
    obo_world: dict[str, str], username_claim: str
) -> None:
    """Before: with no username claim, identity was None for everyone, and Carol got Alice's embed token."""
    env.set(**{**embed_settings(entra, powerbi, world, CALLER_USERNAME_CLAIM=username_claim),
               "CALLER_JWT_AUDIENCE": f"api://{CLIENT_ID}"}, POWERBI_GRANT_TYPE="on_behalf_of")
    body = {"reports": [{"id": world.plain_report}], "workspaceId": world.sales}
    alice = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
    assert alice.status == 200, alice.text
    carol = call("POST", "/api/embed-token", headers=bearer(entra, CAROL), json=body)
    assert alice.json()["token"] not in carol.text
    assert_problem(carol, 502, "powerbi_not_authorized")  # Power BI itself refused Carol: her own token was used
    assert entra.token_requests(grant_type=OBO) == 2, "each user's token was exchanged, never shared"
    assert powerbi.report_lookups() == 2, "the report metadata cache is per principal on-behalf-of"


def test_on_behalf_of_token_cache_is_per_principal(
    env: Env, entra: EntraEmulator, call: Call, obo_world: dict[str, str]
) -> None:
    env.set(CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=f"api://{CLIENT_ID}",
            POWERBI_GRANT_TYPE="on_behalf_of")
    import jwt

    def upn(headers: dict[str, str]) -> str:
        response = call("GET", "/api/token", headers=headers)
        assert response.status == 200, response.text
        return str(jwt.decode(response.json()["accessToken"], options={"verify_signature": False})["upn"])

    assert upn(bearer(entra, ALICE)) == ALICE
    assert upn(bearer(entra, CAROL)) == CAROL
    assert upn(bearer(entra, ALICE)) == ALICE  # a second token of Alice's: her cached token, nobody else's
    assert entra.token_requests(grant_type=OBO) == 2


@pytest.mark.parametrize("route", ["embed-token", "report-embed", "token"])
def test_anonymous_on_behalf_of_without_a_bearer_is_401_not_a_shared_token(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call,
    obo_world: dict[str, str], route: str
) -> None:
    """Before: a cold request hit an assert (500); a warm one got another user's cached embed token."""
    env.set(**embed_settings(entra, powerbi, world, CALLER_AUTH="anonymous"), POWERBI_GRANT_TYPE="on_behalf_of")
    alice = call_route(call, route, world, bearer(entra, ALICE))
    assert alice.status == 200, alice.text
    problem = assert_problem(call_route(call, route, world), 401, "caller_token_missing")
    assert "Bearer" in problem["detail"]


def test_client_credentials_embed_tokens_are_keyed_by_effective_identity(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    body = {"reports": [{"id": world.rls_report}], "workspaceId": world.sales}
    alice = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
    assert alice.status == 200, alice.text
    again = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
    assert again.json()["token"] == alice.json()["token"]
    entra.add_user(TENANT, "dave@contoso.com", "user-Passw0rd!value", roles=["Report.Viewer"])
    dave = call("POST", "/api/embed-token", headers=bearer(entra, "dave@contoso.com", roles=("Report.Viewer",)),
                json=body)
    assert dave.status == 200, dave.text
    assert dave.json()["token"] != alice.json()["token"]
    assert powerbi.embed_token_info(dave.json()["token"])["identities"][0]["username"] == "dave@contoso.com"


# -- allow-list x item kind --------------------------------------------------------------------------------------


def embed(call: Call, entra: EntraEmulator, **body: Any) -> HostResponse:
    return call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)


def test_a_dataset_that_backs_no_allowed_report_is_refused(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Before: with EMBED_ALLOWED_REPORTS=R, naming any dataset D of an allowed workspace granted it."""
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.plain_report))
    response = embed(call, entra, reports=[{"id": world.plain_report}], datasets=[{"id": world.rls_dataset}],
                     workspaceId=world.sales)
    problem = assert_problem(response, 403, "embed_dataset_not_allowed")
    assert world.rls_dataset in problem["detail"]
    assert powerbi.generate_token_calls() == 0 and powerbi.dataset_lookups() == 0


def test_a_dataset_backing_the_report_or_listed_is_allowed(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.plain_report))
    backing = embed(call, entra, reports=[{"id": world.plain_report}], datasets=[{"id": world.plain_dataset}],
                    workspaceId=world.sales)
    assert backing.status == 200, backing.text
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.plain_report,
                             EMBED_ALLOWED_DATASETS=world.rls_dataset))
    listed = embed(call, entra, reports=[{"id": world.plain_report}], datasets=[{"id": world.rls_dataset}],
                   workspaceId=world.sales)
    assert listed.status == 200, listed.text
    assert world.rls_dataset in powerbi.embed_token_info(listed.json()["token"])["datasets"]


def test_the_dataset_allow_list_alone_also_covers_every_dataset(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_DATASETS=world.plain_dataset))
    response = embed(call, entra, reports=[{"id": world.second_report}], datasets=[{"id": world.rls_dataset}],
                     workspaceId=world.sales)
    assert_problem(response, 403, "embed_dataset_not_allowed")
    assert powerbi.generate_token_calls() == 0


def test_a_dataset_workspace_outside_the_allow_list_is_refused_before_any_call(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    response = embed(call, entra, reports=[{"id": world.plain_report, "workspaceId": world.sales}],
                     datasets=[{"id": world.rls_dataset}], workspaceId=world.other)
    assert_problem(response, 403, "embed_workspace_not_allowed")
    assert powerbi.report_lookups() == 0 and entra.token_requests() == 0


def test_edit_target_workspaces_stay_inside_the_allow_list(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOW_EDIT="true", EMBED_EDIT_ROLE="Report.Viewer"))
    response = embed(call, entra, reports=[{"id": world.other_report, "allowEdit": True}], workspaceId=world.other)
    assert_problem(response, 403, "embed_workspace_not_allowed")
    ok = embed(call, entra, reports=[{"id": world.plain_report, "allowEdit": True}], workspaceId=world.sales)
    assert ok.status == 200, ok.text
    targets = {t["id"] for t in powerbi.generate_token_requests[-1]["targetWorkspaces"]}
    assert targets <= {world.sales, world.shared}


def test_the_report_route_applies_the_report_allow_list(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    env.set(**embed_settings(entra, powerbi, world, EMBED_ALLOWED_REPORTS=world.plain_report))
    response = call("GET", f"/api/reports/{world.second_report}/embed?workspaceId={world.sales}",
                    headers=bearer(entra, BOB))
    assert_problem(response, 403, "embed_report_not_allowed")
    assert powerbi.report_lookups() == 0


# -- authenticate before anything else ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/token", b"{not json"),
    ("POST", "/api/embed-token", b"{not json"),
    ("POST", "/api/embed-token", b'{"reports": [{"id": "x"}]}'),
    ("GET", "/api/reports/not-a-guid/embed", None),
])
def test_every_route_authenticates_before_reading_the_request(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, method: str, path: str,
    body: bytes | None
) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    headers = {"Content-Type": "application/json"}
    response = call(method, path, headers=headers, body=body) if body is not None else call(method, path)
    assert_problem(response, 401, "caller_token_missing")


def test_a_huge_json_integer_is_400_not_500(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                           call: Call) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    body = b'{"reports": [{"id": "x"}], "lifetimeMinutes": ' + b"9" * 5000 + b"}"
    response = call("POST", "/api/embed-token", headers={**bearer(entra, ALICE), "Content-Type": "application/json"},
                    body=body)
    assert_problem(response, 400, "malformed_json")


# -- the shared cache tier (Redis) x principal ----------------------------------------------------------------------


def embed_entries(server: RedisServer) -> set[bytes]:
    return set(server.client().keys("tb:embed token:*"))  # type: ignore[attr-defined]


@pytest.fixture
def shared(redis_server: RedisServer, cache_key_uri: str, shared_identity: str) -> dict[str, str]:
    return shared_settings(redis_server, cache_key_uri, shared_identity)


def test_on_behalf_of_users_never_share_a_redis_entry(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, obo_world: dict[str, str],
    redis_server: RedisServer, shared: dict[str, str]
) -> None:
    """The L2 key derives from the L1 key, which starts with minted_for: Carol never reads Alice's entry."""
    env.set(**embed_settings(entra, powerbi, world, CALLER_JWT_AUDIENCE=f"api://{CLIENT_ID}"),
            POWERBI_GRANT_TYPE="on_behalf_of", **shared)
    body = {"reports": [{"id": world.plain_report}], "workspaceId": world.sales}
    alice = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
    assert alice.status == 200, alice.text
    assert len(embed_entries(redis_server)) == 1
    runtime.reset()  # another instance: only Redis remembers Alice's token
    carol = call("POST", "/api/embed-token", headers=bearer(entra, CAROL), json=body)
    assert alice.json()["token"] not in carol.text
    assert_problem(carol, 502, "powerbi_not_authorized")  # her own token went to Power BI
    assert len(embed_entries(redis_server)) == 1


def test_an_entry_planted_under_another_principals_key_is_not_read(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, obo_world: dict[str, str],
    redis_server: RedisServer, shared: dict[str, str]
) -> None:
    powerbi.grant(world.sales, obo_world[CAROL])
    try:
        env.set(**embed_settings(entra, powerbi, world, CALLER_JWT_AUDIENCE=f"api://{CLIENT_ID}"),
                POWERBI_GRANT_TYPE="on_behalf_of", **shared)
        body = {"reports": [{"id": world.plain_report}], "workspaceId": world.sales}
        alice = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
        alices = embed_entries(redis_server)
        carol = call("POST", "/api/embed-token", headers=bearer(entra, CAROL), json=body)
        assert alice.status == 200 and carol.status == 200, carol.text
        carols = embed_entries(redis_server) - alices
        assert len(alices) == 1 and len(carols) == 1
        client: Any = redis_server.client()
        client.set(next(iter(carols)), client.get(next(iter(alices))))  # Alice's ciphertext under Carol's key
        runtime.reset()
        again = call("POST", "/api/embed-token", headers=bearer(entra, CAROL), json=body)
        assert again.status == 200, again.text
        assert again.json()["token"] != alice.json()["token"]  # bound to its key: it did not decrypt
        assert powerbi.generate_token_calls() == 3
    finally:
        powerbi.revoke(world.sales, obo_world[CAROL])


def test_two_grants_never_share_a_redis_entry(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, obo_world: dict[str, str],
    redis_server: RedisServer, shared: dict[str, str]
) -> None:
    body = {"reports": [{"id": world.plain_report}], "workspaceId": world.sales}
    env.set(**embed_settings(entra, powerbi, world, CALLER_JWT_AUDIENCE=f"api://{CLIENT_ID}"), **shared)
    service_principal = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
    assert service_principal.status == 200, service_principal.text
    env.set(**embed_settings(entra, powerbi, world, CALLER_JWT_AUDIENCE=f"api://{CLIENT_ID}"),
            POWERBI_GRANT_TYPE="on_behalf_of", **shared)
    alice = call("POST", "/api/embed-token", headers=bearer(entra, ALICE), json=body)
    assert alice.status == 200, alice.text
    assert alice.json()["token"] != service_principal.json()["token"]
    assert powerbi.generate_token_calls() == 2 and len(embed_entries(redis_server)) == 2
