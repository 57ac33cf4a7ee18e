"""The Power BI emulator's service principal profiles: the Profiles API and X-PowerBI-Profile-Id visibility rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests

from devtools.entra import EntraEmulator
from devtools.powerbi import PowerBIEmulator
from devtools.tls import DevCertificateAuthority
from tests.conftest import CLIENT_ID, MASTER_USER, POWERBI_RESOURCE, TENANT

OTHER_APP = "0ff1ce00-0000-4000-8000-0000000fe11a"


@pytest.fixture
def powerbi(ca: DevCertificateAuthority, entra: EntraEmulator) -> Iterator[PowerBIEmulator]:
    with PowerBIEmulator(ca=ca, entra=entra) as emulator:
        yield emulator


class Api:
    def __init__(self, powerbi: PowerBIEmulator, entra: EntraEmulator) -> None:
        self.powerbi = powerbi
        self.sp = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID)
        self.other_sp = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=OTHER_APP)
        self.user = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, subject_username=MASTER_USER)
        self.sp_oid = jwt.decode(self.sp, options={"verify_signature": False})["oid"]

    def call(self, method: str, path: str, *, token: str | None = None, profile: str | None = None,
             **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.sp}"}
        if profile is not None:
            headers["X-PowerBI-Profile-Id"] = profile
        return requests.request(method, f"{self.powerbi.api_url}{path}", headers=headers, timeout=10, **kwargs)


@pytest.fixture
def api(powerbi: PowerBIEmulator, entra: EntraEmulator) -> Api:
    return Api(powerbi, entra)


def test_profiles_are_created_listed_filtered_and_deleted_by_their_service_principal(api: Api) -> None:
    created = api.call("POST", "/profiles", json={"displayName": "Contoso 'West'"})
    assert created.status_code == 200 and created.json()["displayName"] == "Contoso 'West'"
    profile = created.json()["id"]
    assert uuid.UUID(profile)
    api.call("POST", "/profiles", json={"displayName": "Fabrikam"})
    listed = api.call("GET", "/profiles").json()["value"]
    assert {p["displayName"] for p in listed} == {"Contoso 'West'", "Fabrikam"}
    one = api.call("GET", "/profiles", params={"$filter": "displayName eq 'Contoso ''West'''"}).json()["value"]
    assert one == [{"id": profile, "displayName": "Contoso 'West'"}]
    assert len(api.call("GET", "/profiles", params={"$top": "1", "$skip": "1"}).json()["value"]) == 1
    assert api.call("GET", f"/profiles/{profile}").json()["id"] == profile
    assert api.call("DELETE", f"/profiles/{profile}").status_code == 200
    assert api.call("GET", f"/profiles/{profile}").status_code == 404
    assert api.call("DELETE", f"/profiles/{profile}").status_code == 404


def test_only_a_service_principal_acting_as_itself_may_use_the_profiles_api(api: Api) -> None:
    profile = api.call("POST", "/profiles", json={"displayName": "Mine"}).json()["id"]
    assert api.call("GET", "/profiles", token=api.user).status_code == 401
    assert api.call("POST", "/profiles", token=api.user, json={"displayName": "x"}).status_code == 401
    assert api.call("GET", "/profiles", profile=profile).status_code == 401
    assert api.call("GET", "/profiles", token=api.other_sp).json()["value"] == []  # another principal's own list
    assert api.call("DELETE", f"/profiles/{profile}", token=api.other_sp).status_code == 404
    assert api.call("POST", "/profiles", json={"displayName": ""}).status_code == 400


def test_a_profile_sees_only_its_own_workspaces_and_the_principal_does_not_see_them(api: Api) -> None:
    pbi = api.powerbi
    a = api.call("POST", "/profiles", json={"displayName": "A"}).json()["id"]
    b = api.call("POST", "/profiles", json={"displayName": "B"}).json()["id"]
    created = api.call("POST", "/groups?workspaceV2=True", profile=a, json={"name": "A workspace"})
    assert created.status_code == 200
    ws_a = created.json()["id"]
    own = pbi.add_workspace(name="Principal's own", members={api.sp_oid})
    report = pbi.add_report(ws_a, dataset_id=pbi.add_dataset(ws_a))
    assert [g["id"] for g in api.call("GET", "/groups", profile=a).json()["value"]] == [ws_a]
    assert api.call("GET", "/groups", profile=b).json()["value"] == []
    assert [g["id"] for g in api.call("GET", "/groups").json()["value"]] == [own]
    assert api.call("GET", f"/groups/{ws_a}/reports/{report}", profile=a).status_code == 200
    for profile in (b, None):
        assert api.call("GET", f"/groups/{ws_a}/reports/{report}", profile=profile).status_code == 401
        assert api.call("POST", "/GenerateToken", profile=profile,
                        json={"reports": [{"id": report}], "datasets": []}).status_code in (401, 404)
    assert api.call("GET", f"/groups/{own}", profile=a).status_code == 401  # the principal's own is not A's


def test_a_profile_of_another_principal_or_unknown_or_with_a_user_token_is_not_authorized(api: Api) -> None:
    theirs = api.call("POST", "/profiles", token=api.other_sp, json={"displayName": "Theirs"}).json()["id"]
    mine = api.call("POST", "/profiles", json={"displayName": "Mine"}).json()["id"]
    for token, profile in ((None, theirs), (None, str(uuid.uuid4())), (api.user, mine), (None, "not-a-guid")):
        answer = api.call("GET", "/groups", token=token, profile=profile)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "PowerBINotAuthorizedException"


def test_a_workspace_is_assigned_to_a_capacity_by_its_profile(api: Api) -> None:
    a = api.call("POST", "/profiles", json={"displayName": "A"}).json()["id"]
    ws = api.call("POST", "/groups?workspaceV2=True", profile=a, json={"name": "A"}).json()
    assert ws["isOnDedicatedCapacity"] is False
    capacity = str(uuid.uuid4())
    assert api.call("POST", f"/groups/{ws['id']}/AssignToCapacity", json={"capacityId": capacity}).status_code == 401
    assert api.call("POST", f"/groups/{ws['id']}/AssignToCapacity", profile=a,
                    json={"capacityId": capacity}).status_code == 200
    group = api.call("GET", f"/groups/{ws['id']}", profile=a).json()
    assert group["isOnDedicatedCapacity"] is True and group["capacityId"] == capacity.upper()
    assert api.call("POST", f"/groups/{ws['id']}/AssignToCapacity", profile=a,
                    json={"capacityId": "nope"}).status_code == 400
