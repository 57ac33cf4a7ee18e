"""Tests of the Power BI REST API emulator, over real sockets, with tokens from the Entra ID emulator."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest
import requests

from devtools.entra import EntraEmulator
from devtools.powerbi import PowerBIEmulator
from devtools.tls import DevCertificateAuthority
from tests.conftest import ALICE, CLIENT_ID, CLIENT_SECRET, MASTER_USER, POWERBI_RESOURCE, TENANT

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def powerbi(ca: DevCertificateAuthority, entra: EntraEmulator) -> Iterator[PowerBIEmulator]:
    # The conftest `entra` fixture points REQUESTS_CA_BUNDLE at the dev CA (it beats Session.verify here).
    with PowerBIEmulator(ca=ca, entra=entra) as emulator:
        yield emulator


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


@dataclass
class World:
    """A service principal member of Sales (dedicated) but not of Finance; a master user member of Sales."""

    pbi: PowerBIEmulator
    sp_token: str
    sp_oid: str
    user_token: str
    sales: str
    finance: str
    dataset: str
    rls_dataset: str
    report: str
    rls_report: str
    finance_report: str

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """Call the API with ``token`` (default: the service principal's; ``""``: no Authorization header)."""
        auth = {"Authorization": f"Bearer {token or self.sp_token}"} if token != "" else {}
        headers = {**auth, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.pbi.api_url}{path}", headers=headers, timeout=10, **kwargs)

    def generate(self, body: Any, token: str | None = None) -> requests.Response:
        return self.call("POST", "/GenerateToken", token, json=body)


@pytest.fixture
def world(powerbi: PowerBIEmulator, entra: EntraEmulator) -> World:
    sp_token = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID)
    user_token = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, subject_username=MASTER_USER)
    sp_oid, user_oid = claims(sp_token)["oid"], claims(user_token)["oid"]
    sales = powerbi.add_workspace(name="Sales", members={sp_oid, user_oid})
    finance = powerbi.add_workspace(name="Finance", members={user_oid})
    dataset = powerbi.add_dataset(sales, name="Sales model")
    rls_dataset = powerbi.add_dataset(sales, name="Regional model", rls_roles=["Region", "Manager"])
    finance_dataset = powerbi.add_dataset(finance, name="Ledger")
    return World(powerbi, sp_token, sp_oid, user_token, sales, finance, dataset, rls_dataset,
                 powerbi.add_report(sales, name="Sales", dataset_id=dataset),
                 powerbi.add_report(sales, name="Regional", dataset_id=rls_dataset),
                 powerbi.add_report(finance, name="Ledger", dataset_id=finance_dataset))


def assert_pbi_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert GUID.fullmatch(response.headers["RequestId"])
    return dict(error)


def expiration(response: requests.Response) -> float:
    value = response.json()["expiration"]
    assert ISO_Z.fullmatch(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


# ------------------------------------------------------------------------------------------ identity
def test_api_url_and_msal_client_credentials_token(world: World, entra: EntraEmulator) -> None:
    assert world.pbi.api_url == f"{world.pbi.base_url}/v1.0/myorg"
    app = msal.ConfidentialClientApplication(CLIENT_ID, client_credential=CLIENT_SECRET, instance_discovery=False,
                                             authority=f"{entra.base_url}/{TENANT}")
    token = app.acquire_token_for_client([f"{POWERBI_RESOURCE}/.default"])["access_token"]
    response = world.call("GET", f"/groups/{world.sales}", token)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Sales"


def test_missing_token_is_403_with_empty_body(world: World) -> None:
    response = world.call("GET", f"/groups/{world.sales}", "")
    assert (response.status_code, response.content) == (403, b"")
    assert "X-PowerBI-Error-Info" not in response.headers
    assert GUID.fullmatch(response.headers["RequestId"])


@pytest.mark.parametrize("kind", ["malformed", "wrong_audience", "foreign_key"])
def test_invalid_token_is_403_invalid_token(world: World, entra: EntraEmulator, kind: str) -> None:
    token = {
        "malformed": lambda: "not-a-jwt",
        "wrong_audience": lambda: entra.issue_access_token(tenant_id=TENANT, audience="https://graph.microsoft.com",
                                                           client_id=CLIENT_ID),
        "foreign_key": lambda: entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE,
                                                        headers={"kid": "someone-elses-key"}),
    }[kind]()
    response = world.call("GET", f"/groups/{world.sales}", token)
    assert (response.status_code, response.content) == (403, b"")
    assert response.headers["X-PowerBI-Error-Info"] == "InvalidToken"


def test_expired_token_is_403_token_expired(world: World, entra: EntraEmulator) -> None:
    token = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID, lifetime=-5)
    response = world.generate({"reports": [{"id": world.report}], "datasets": [{"id": world.dataset}]}, token)
    error = assert_pbi_error(response, 403, "TokenExpired")
    assert error["message"] == "Access token has expired, resubmit with a new access token"
    assert response.headers["X-PowerBI-Error-Info"] == "TokenExpired"


def test_service_principals_disabled_rejects_app_tokens_only(world: World) -> None:
    world.pbi.service_principals_enabled = False
    assert_pbi_error(world.call("GET", f"/groups/{world.sales}"), 401, "PowerBINotAuthorizedException")
    assert world.call("GET", f"/groups/{world.sales}", world.user_token).status_code == 200


# ---------------------------------------------------------------------------------------- workspaces
def test_get_group(world: World) -> None:
    response = world.call("GET", f"/groups/{world.sales.upper()}")  # ids are matched case-insensitively
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("id", "name", "isReadOnly", "isOnDedicatedCapacity", "type")} == {
        "id": world.sales, "name": "Sales", "isReadOnly": False, "isOnDedicatedCapacity": True, "type": "Workspace"}
    assert GUID.fullmatch(body["capacityId"].lower())
    assert response.headers["Content-Type"].startswith("application/json")


def test_shared_capacity_workspace(world: World) -> None:
    shared = world.pbi.add_workspace(name="Trial", members={world.sp_oid}, capacity="shared")
    body = world.call("GET", f"/groups/{shared}").json()
    assert body["isOnDedicatedCapacity"] is False and "capacityId" not in body
    with pytest.raises(ValueError, match="capacity"):
        world.pbi.add_workspace(capacity="premium")  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["not_a_member", "unknown"])
def test_inaccessible_or_unknown_group_is_401(world: World, which: str) -> None:
    group = world.finance if which == "not_a_member" else str(uuid.uuid4())
    for path in (f"/groups/{group}", f"/groups/{group}/reports/{world.finance_report}",
                 f"/groups/{group}/datasets/{world.dataset}"):
        response = world.call("GET", path)
        error = assert_pbi_error(response, 401, "PowerBINotAuthorizedException")
        assert error["pbi.error"]["code"] == "PowerBINotAuthorizedException"
        assert response.headers["X-PowerBI-Error-Info"] == "GroupNotAccessible"


def test_list_groups_shows_only_member_workspaces(world: World) -> None:
    body = world.call("GET", "/groups").json()
    assert [g["name"] for g in body["value"]] == ["Sales"] and body["@odata.count"] == 1
    assert [g["name"] for g in world.call("GET", "/groups", world.user_token).json()["value"]] == ["Finance", "Sales"]


def test_grant_and_revoke(world: World) -> None:
    world.pbi.grant(world.finance, world.sp_oid.upper())
    assert world.call("GET", f"/groups/{world.finance}/reports/{world.finance_report}").status_code == 200
    world.pbi.revoke(world.finance, world.sp_oid)
    assert world.call("GET", f"/groups/{world.finance}/reports/{world.finance_report}").status_code == 401
    with pytest.raises(KeyError):
        world.pbi.grant(str(uuid.uuid4()), world.sp_oid)


# ---------------------------------------------------------------------------------- reports, datasets
def test_get_report_in_group(world: World) -> None:
    response = world.call("GET", f"/groups/{world.sales}/reports/{world.report}")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("id", "reportType", "name", "isFromPbix", "isOwnedByMe", "datasetId",
                                 "datasetWorkspaceId", "users", "subscriptions")} == {
        "id": world.report, "reportType": "PowerBIReport", "name": "Sales", "isFromPbix": True, "isOwnedByMe": False,
        "datasetId": world.dataset, "datasetWorkspaceId": world.sales, "users": [], "subscriptions": []}
    assert body["webUrl"] == f"https://app.powerbi.com/groups/{world.sales}/reports/{world.report}"
    embed = urlsplit(body["embedUrl"])
    assert (embed.scheme, embed.netloc, embed.path) == ("https", "app.powerbi.com", "/reportEmbed")
    query = {k: v[0] for k, v in parse_qs(embed.query).items()}
    assert (query["reportId"], query["groupId"], query["w"]) == (world.report, world.sales, "2")
    assert json.loads(base64.b64decode(query["config"]))["clusterUrl"].startswith("https://")
    assert world.pbi.report_lookups() == 1


def test_report_with_dataset_in_another_workspace(world: World) -> None:
    shared_models = world.pbi.add_workspace(name="Models", members={world.sp_oid})
    model = world.pbi.add_dataset(shared_models, name="Shared model")
    thin = world.pbi.add_report(world.sales, name="Thin", dataset_id=model)
    body = world.call("GET", f"/groups/{world.sales}/reports/{thin}").json()
    assert (body["datasetId"], body["datasetWorkspaceId"]) == (model, shared_models)
    with pytest.raises(KeyError):
        world.pbi.add_report(world.sales, dataset_id=str(uuid.uuid4()))


@pytest.mark.parametrize("kind", ["reports", "datasets"])
def test_unknown_item_in_accessible_group_is_404(world: World, kind: str) -> None:
    elsewhere = world.finance_report if kind == "reports" else world.pbi.add_dataset(world.finance)
    world.pbi.grant(world.finance, world.sp_oid)
    for item in (str(uuid.uuid4()), elsewhere):  # unknown, or known but in another workspace
        error = assert_pbi_error(world.call("GET", f"/groups/{world.sales}/{kind}/{item}"), 404,
                                 "PowerBIEntityNotFound")
        assert error["pbi.error"]["code"] == "PowerBIEntityNotFound"


def test_get_dataset_in_group(world: World) -> None:
    plain = world.call("GET", f"/groups/{world.sales}/datasets/{world.dataset}").json()
    assert {k: plain[k] for k in ("id", "name", "addRowsAPIEnabled", "isRefreshable", "isEffectiveIdentityRequired",
                                  "isEffectiveIdentityRolesRequired", "isOnPremGatewayRequired",
                                  "targetStorageMode")} == {
        "id": world.dataset, "name": "Sales model", "addRowsAPIEnabled": False, "isRefreshable": True,
        "isEffectiveIdentityRequired": False, "isEffectiveIdentityRolesRequired": False,
        "isOnPremGatewayRequired": False, "targetStorageMode": "Abf"}
    assert plain["configuredBy"] and plain["webUrl"].endswith(f"/datasets/{world.dataset}")
    rls = world.call("GET", f"/groups/{world.sales}/datasets/{world.rls_dataset}").json()
    assert rls["isEffectiveIdentityRequired"] is True and rls["isEffectiveIdentityRolesRequired"] is True
    assert world.pbi.dataset_lookups() == 2 and world.pbi.report_lookups() == 0


# ------------------------------------------------------------------------------------- generate token
def test_generate_token(world: World) -> None:
    body = {"reports": [{"id": world.report, "allowEdit": True}], "datasets": [{"id": world.dataset}],
            "targetWorkspaces": [{"id": world.sales}]}
    response = world.generate(body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"token", "tokenId", "expiration"}
    assert result["token"].startswith("H4sI") and len(result["token"]) > 100
    assert GUID.fullmatch(result["tokenId"])
    assert expiration(response) == claims(world.sp_token)["exp"]  # default: the Azure AD token's expiry
    info = world.pbi.embed_token_info(result["token"])
    assert info["token_id"] == result["tokenId"]
    assert (info["reports"], info["editable_reports"], info["datasets"]) == ([world.report], [world.report],
                                                                            [world.dataset])
    assert (info["target_workspaces"], info["identities"], info["caller_oid"], info["caller_is_app"]) == (
        [world.sales], [], world.sp_oid, True)
    assert info["expiration"].timestamp() == expiration(response)
    assert world.pbi.generate_token_requests == [body] and world.pbi.generate_token_calls() == 1
    with pytest.raises(KeyError):
        world.pbi.embed_token_info("H4sIunknown")


def test_dataset_only_token(world: World) -> None:
    assert world.generate({"datasets": [{"id": world.dataset, "xmlaPermissions": "ReadOnly"}]}).status_code == 200


@pytest.mark.parametrize(("aad_minutes", "requested", "expected_minutes"), [
    (20, 60, 20),  # an embed token never outlives the Azure AD token that created it
    (60, 10, 10),  # lifetimeInMinutes shortens it
    (60, 0, 60),  # 0 means "not set": the default, the Azure AD token's expiry
    (20, None, 20),
])
def test_expiration_is_capped_by_the_azure_ad_token(world: World, entra: EntraEmulator, aad_minutes: int,
                                                    requested: int | None, expected_minutes: int) -> None:
    token = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID,
                                     lifetime=aad_minutes * 60)
    body: dict[str, Any] = {"reports": [{"id": world.report}], "datasets": [{"id": world.dataset}]}
    if requested is not None:
        body["lifetimeInMinutes"] = requested
    response = world.generate(body, token)
    assert response.status_code == 200, response.text
    assert abs(expiration(response) - (time.time() + expected_minutes * 60)) < 5
    assert world.pbi.generate_token_requests[-1].get("lifetimeInMinutes") == requested


def test_rls_identity(world: World) -> None:
    identity = {"username": "alice@contoso.com", "roles": ["Region"], "datasets": [world.rls_dataset.upper()],
                "customData": "EMEA"}
    response = world.generate({"reports": [{"id": world.rls_report}], "datasets": [{"id": world.rls_dataset}],
                               "identities": [identity]})
    assert response.status_code == 200, response.text
    assert world.pbi.embed_token_info(response.json()["token"])["identities"] == [identity]
    assert world.pbi.generate_token_requests[0]["identities"] == [identity]


def test_master_user_may_omit_identity_for_rls_dataset(world: World) -> None:
    body = {"reports": [{"id": world.rls_report}], "datasets": [{"id": world.rls_dataset}]}
    assert world.generate(body, world.user_token).status_code == 200
    assert world.generate(body).status_code == 400  # a service principal may not


def _rls(w: World, **identity: Any) -> dict[str, Any]:
    """A request for the RLS report, with one identity (overridden by ``identity``) unless ``identity`` is None."""
    body: dict[str, Any] = {"reports": [{"id": w.rls_report}], "datasets": [{"id": w.rls_dataset}]}
    fields = {"username": "alice@contoso.com", "roles": ["Region"], "datasets": [w.rls_dataset], **identity}
    return {**body, "identities": [fields]}


def _plain(w: World, **extra: Any) -> dict[str, Any]:
    return {"reports": [{"id": w.report}], "datasets": [{"id": w.dataset}], **extra}


Rejection = Callable[[World], tuple[Any, str, str]]  # world -> (body, error code, message fragment)
REJECTIONS = [
    pytest.param(lambda _: ({}, "InvalidRequest", "at least one report or dataset"), id="empty"),
    pytest.param(lambda _: ({"reports": [], "datasets": []}, "InvalidRequest", "at least one report or dataset"),
                 id="empty-lists"),
    pytest.param(lambda w: ({"reports": [{"id": w.report}]}, "InvalidRequest", f"its dataset {w.dataset}"),
                 id="report-without-its-dataset"),
    pytest.param(lambda w: (_plain(w, reports=[{"id": w.report}] * 51), "InvalidRequest", "maximum of 50"),
                 id="51-reports"),
    pytest.param(lambda w: ({"datasets": [{"id": w.dataset}] * 51}, "InvalidRequest", "maximum of 50"),
                 id="51-datasets"),
    pytest.param(lambda w: (_plain(w, targetWorkspaces=[{"id": w.sales}] * 51), "InvalidRequest", "maximum of 50"),
                 id="51-target-workspaces"),
    pytest.param(lambda w: ({"reports": [{"id": w.rls_report}], "datasets": [{"id": w.rls_dataset}]},
                            "InvalidRequest", f"Creating embed token for accessing dataset {w.rls_dataset} requires "
                            "effective identity to be provided"), id="rls-without-identity"),
    pytest.param(lambda w: (_plain(w, identities=[{"username": "a", "roles": ["Region"], "datasets": [w.dataset]}]),
                            "InvalidRequest", f"Creating embed token for accessing dataset {w.dataset} shouldn't have "
                            "effective identity"), id="identity-on-dataset-without-rls"),
    pytest.param(lambda w: (_rls(w, roles=[]), "InvalidRequest", "requires roles to be included"), id="no-roles"),
    pytest.param(lambda w: (_rls(w, roles=["Region", "Admin"]), "InvalidRequest", "'Admin'"), id="unknown-role"),
    pytest.param(lambda w: (_rls(w, username="u" * 257), "InvalidRequest", "256"), id="username-too-long"),
    pytest.param(lambda w: (_rls(w, username=""), "InvalidRequest", "Username is mandatory"), id="no-username"),
    pytest.param(lambda w: (_rls(w, datasets=[]), "InvalidRequest", "DatasetId is mandatory"), id="no-datasets"),
    pytest.param(lambda w: (_rls(w, datasets=[w.dataset]), "InvalidRequest", "not included"),
                 id="identity-dataset-not-requested"),
    pytest.param(lambda w: (_plain(w, lifetimeInMinutes=-1), "BadRequest", "lifetimeInMinutes"),
                 id="negative-lifetime"),
    pytest.param(lambda w: (_plain(w, lifetimeInMinutes="60"), "BadRequest", "lifetimeInMinutes"),
                 id="string-lifetime"),
    pytest.param(lambda w: ({"reports": w.report}, "BadRequest", "'reports'"), id="reports-not-a-list"),
    pytest.param(lambda _: ({"reports": [{"id": 5}]}, "BadRequest", "'reports'"), id="numeric-id"),
    pytest.param(lambda w: ([_plain(w)], "BadRequest", "JSON object"), id="body-not-an-object"),
]


@pytest.mark.parametrize("rejection", REJECTIONS)
def test_generate_token_rejections(world: World, rejection: Rejection) -> None:
    body, code, fragment = rejection(world)
    error = assert_pbi_error(world.generate(body), 400, code)
    assert fragment in json.dumps(error), error
    assert world.pbi.generate_token_calls() == 1 and world.pbi.generate_token_requests == [body]


def test_username_of_256_characters_is_accepted(world: World) -> None:
    identity = {"username": "u" * 256, "roles": ["Manager"], "datasets": [world.rls_dataset]}
    assert world.generate({"datasets": [{"id": world.rls_dataset}], "identities": [identity]}).status_code == 200


def test_body_that_is_not_json(world: World) -> None:
    response = world.call("POST", "/GenerateToken", data=b"{nope", headers={"Content-Type": "application/json"})
    assert_pbi_error(response, 400, "BadRequest")
    assert world.pbi.generate_token_requests == [None]


def test_generate_token_access_checks(world: World) -> None:
    finance_dataset = world.call("GET", f"/groups/{world.finance}/reports/{world.finance_report}",
                                 world.user_token).json()["datasetId"]
    cases = [
        ({"reports": [{"id": str(uuid.uuid4())}]}, 404, "PowerBIEntityNotFound"),
        ({"datasets": [{"id": str(uuid.uuid4())}]}, 404, "PowerBIEntityNotFound"),
        ({"reports": [{"id": world.finance_report}], "datasets": [{"id": finance_dataset}]}, 401,
         "PowerBINotAuthorizedException"),
        ({"datasets": [{"id": finance_dataset}]}, 401, "PowerBINotAuthorizedException"),
        ({"datasets": [{"id": world.dataset}], "targetWorkspaces": [{"id": world.finance}]}, 401,
         "PowerBINotAuthorizedException"),
    ]
    for body, status, code in cases:
        assert_pbi_error(world.generate(body), status, code)
    # The master user is in both workspaces.
    assert world.generate(cases[2][0], world.user_token).status_code == 200


def test_report_and_dataset_in_different_workspaces_need_access_to_both(world: World) -> None:
    models = world.pbi.add_workspace(name="Models", members={world.sp_oid})
    model = world.pbi.add_dataset(models)
    thin = world.pbi.add_report(world.sales, dataset_id=model)
    body = {"reports": [{"id": thin}], "datasets": [{"id": model}]}
    assert world.generate(body).status_code == 200
    world.pbi.revoke(models, world.sp_oid)
    assert_pbi_error(world.generate(body), 401, "PowerBINotAuthorizedException")


def test_shared_capacity_embed_token_quota(world: World) -> None:
    trial = world.pbi.add_workspace(name="Trial", members={world.sp_oid}, capacity="shared")
    trial_dataset = world.pbi.add_dataset(trial)
    world.pbi.shared_capacity_embed_token_limit = 2
    for _ in range(2):
        assert world.generate({"datasets": [{"id": trial_dataset}]}).status_code == 200
    error = assert_pbi_error(world.generate({"datasets": [{"id": trial_dataset}]}), 403, "EmbedTokenQuotaExceeded")
    assert "shared capacity" in error["message"]
    assert world.generate({"datasets": [{"id": world.dataset}]}).status_code == 200  # dedicated: unaffected


# ----------------------------------------------------------------------------------- knobs, counters
def test_throttle_next(world: World) -> None:
    world.pbi.throttle_next(2, retry_after=7)
    body = {"datasets": [{"id": world.dataset}]}
    for _ in range(2):
        response = world.generate(body)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert "Retry in 7 seconds" in response.json()["message"]
        assert GUID.fullmatch(response.headers["RequestId"])
    assert world.generate(body).status_code == 200
    assert world.pbi.generate_token_calls() == 3 and len(world.pbi.generate_token_requests) == 3
    with pytest.raises(ValueError):
        world.pbi.throttle_next(-1)


def test_request_id_is_fresh_on_every_response(world: World) -> None:
    responses = [world.call("GET", f"/groups/{world.sales}"), world.call("GET", f"/groups/{world.sales}"),
                 world.call("GET", f"/groups/{world.finance}"), world.call("GET", "/nope"),
                 world.generate({"datasets": [{"id": world.dataset}]})]
    ids = [r.headers["RequestId"] for r in responses]
    assert all(GUID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)


def test_paths_are_case_insensitive(world: World) -> None:
    assert world.call("GET", f"/GROUPS/{world.sales}/Reports/{world.report}").status_code == 200
    assert world.call("POST", "/generatetoken", json={"datasets": [{"id": world.dataset}]}).status_code == 200
    assert world.pbi.report_lookups() == 1 and world.pbi.generate_token_calls() == 1


def test_base_class_faults_and_counters_reset(world: World) -> None:
    world.pbi.inject_fault(503, path_prefix="/v1.0/myorg/GenerateToken")
    assert world.generate({"datasets": [{"id": world.dataset}]}).status_code == 503
    assert world.pbi.generate_token_calls() == 1
    world.pbi.reset_counters()
    assert world.pbi.generate_token_calls() == 0 and world.pbi.generate_token_requests == []


def test_user_membership(world: World, entra: EntraEmulator) -> None:
    alice = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, subject_username=ALICE)
    assert world.call("GET", f"/groups/{world.sales}", alice).status_code == 401
    world.pbi.grant(world.sales, claims(alice)["oid"])
    assert world.call("GET", f"/groups/{world.sales}", alice).status_code == 200


def test_concurrent_generate_token(world: World) -> None:
    body = {"reports": [{"id": world.report}], "datasets": [{"id": world.dataset}]}
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: world.generate(body), range(48)))
    assert [r.status_code for r in results] == [200] * 48
    assert len({r.json()["token"] for r in results}) == 48 == world.pbi.generate_token_calls()
