"""``python -m token_broker profiles`` against the Entra ID and Power BI emulators: idempotent, --json, clear errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jwt
import pytest

from devtools.entra import EntraEmulator
from devtools.powerbi import POWERBI_RESOURCE, PowerBIEmulator
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TENANT
from token_broker.__main__ import main


@pytest.fixture
def settings(entra: EntraEmulator, powerbi: PowerBIEmulator) -> dict[str, str]:
    return {"POWERBI_TENANT_ID": TENANT, "POWERBI_CLIENT_ID": CLIENT_ID, "POWERBI_CLIENT_SECRET": CLIENT_SECRET,
            "POWERBI_AUTHORITY_HOST": entra.base_url, "POWERBI_API_URL": powerbi.api_url,
            "POWERBI_HTTP_TIMEOUT_SECONDS": "5"}


def run(capsys: pytest.CaptureFixture[str], settings: dict[str, str], *args: str) -> tuple[int, Any, str]:
    from token_broker.doctor.onboarding import main as profiles

    code = profiles(["--json", *args], environ=settings)
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def sp_oid(entra: EntraEmulator) -> str:
    token = entra.issue_access_token(tenant_id=TENANT, audience=POWERBI_RESOURCE, client_id=CLIENT_ID)
    return str(jwt.decode(token, options={"verify_signature": False})["oid"])


def test_create_is_idempotent_and_list_and_delete_follow(
    capsys: pytest.CaptureFixture[str], settings: dict[str, str], powerbi: PowerBIEmulator, entra: EntraEmulator
) -> None:
    name = f"Customer {uuid.uuid4().hex[:8]} 'Ltd'"
    code, first, _ = run(capsys, settings, "create", name)
    assert code == 0 and first["created"] is True and first["displayName"] == name
    code, again, _ = run(capsys, settings, "create", name)
    assert code == 0 and again == {**first, "created": False}
    assert [p["id"] for p in powerbi.profiles_of(sp_oid(entra)) if p["displayName"] == name] == [first["id"]]
    code, listed, _ = run(capsys, settings, "list")
    assert code == 0 and {"id": first["id"], "displayName": name} in listed
    code, gone, _ = run(capsys, settings, "delete", first["id"])
    assert code == 0 and gone == {"deleted": [first["id"]], "alreadyGone": False}
    for args in (("delete", first["id"]), ("delete", "--name", name)):
        code, gone, _ = run(capsys, settings, *args)
        assert code == 0 and gone == {"deleted": [], "alreadyGone": True}
    assert all(p["id"] != first["id"] for p in powerbi.profiles_of(sp_oid(entra)))


def test_list_reads_every_page(
    capsys: pytest.CaptureFixture[str], settings: dict[str, str], powerbi: PowerBIEmulator, entra: EntraEmulator,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    import token_broker.doctor.onboarding as onboarding

    monkeypatch.setattr(onboarding, "PAGE", 2)
    owned = len(powerbi.profiles_of(sp_oid(entra)))
    for n in range(5 - owned % 2):
        powerbi.add_profile(sp_oid(entra), f"paged {n}")
    code, listed, _ = run(capsys, settings, "list")
    assert code == 0 and len(listed) == len(powerbi.profiles_of(sp_oid(entra)))
    assert sum(1 for r in powerbi.requests if r.path.endswith("/profiles")) == len(listed) // 2 + 1


def test_create_workspace_as_the_profile_with_a_capacity_is_idempotent(
    capsys: pytest.CaptureFixture[str], settings: dict[str, str], powerbi: PowerBIEmulator, entra: EntraEmulator
) -> None:
    _, profile, _ = run(capsys, settings, "create", f"Workspace owner {uuid.uuid4().hex[:8]}")
    capacity = str(uuid.uuid4())
    code, made, _ = run(capsys, settings, "create-workspace", "--profile", profile["id"], "--capacity", capacity,
                        "Analytics")
    assert code == 0 and made["created"] is True and made["capacityAssigned"] is True
    code, again, _ = run(capsys, settings, "create-workspace", "--profile", profile["id"], "--capacity", capacity,
                         "Analytics")
    assert code == 0 and again == {**made, "created": False, "capacityAssigned": False}
    workspace = powerbi._workspace(made["id"])
    assert workspace.members == frozenset({profile["id"]}) and workspace.capacity_id == capacity.upper()
    sent = [{k.lower(): v for k, v in r.headers.items()} for r in powerbi.requests if "/groups" in r.path]
    assert sent and all(h.get("x-powerbi-profile-id") == profile["id"] for h in sent)


def test_errors_are_one_line_with_what_to_fix(
    capsys: pytest.CaptureFixture[str], settings: dict[str, str], powerbi: PowerBIEmulator
) -> None:
    code, _, err = run(capsys, {**settings, "POWERBI_CLIENT_ID": "nope"}, "list")
    assert code == 1 and "POWERBI_CLIENT_ID" in err and CLIENT_SECRET not in err
    code, _, err = run(capsys, settings, "create-workspace", "--profile", str(uuid.uuid4()), "W")
    assert code == 1 and "[powerbi_not_authorized]" in err and "create and use profiles" in err
    code, _, err = run(capsys, settings, "create-workspace", "--profile", "x", "W")
    assert code == 1 and "GUID" in err
    powerbi.service_principals_enabled = False
    code, _, err = run(capsys, settings, "create", "Anyone")
    assert code == 1 and "powerbi_not_authorized" in err
    assert len(err.strip().splitlines()) == 1


def test_the_command_is_dispatched_and_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--help"]) == 0
    assert "create-workspace" in capsys.readouterr().out
    assert main(["profiles", "frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "profiles" in capsys.readouterr().out


def test_the_doctor_checks_that_every_mapped_profile_exists(
    capsys: pytest.CaptureFixture[str], settings: dict[str, str], powerbi: PowerBIEmulator, entra: EntraEmulator
) -> None:
    from token_broker.doctor.cli import main as doctor

    owner = sp_oid(entra)
    present = powerbi.add_profile(owner, "Present")
    workspace = powerbi.add_workspace(name="Present's", members={present})
    missing = str(uuid.uuid4())
    mapping = {"present": {"profileId": present, "workspaces": [workspace]}, "gone": missing}
    environ = {**settings, "CALLER_AUTH": "jwt", "CALLER_JWT_ISSUER": entra.issuer(TENANT),
               "CALLER_JWT_AUDIENCE": "api://broker", "POWERBI_PROFILE_CLAIM": "customer",
               "POWERBI_PROFILES": json.dumps(mapping)}
    code = doctor(["--json"], environ=environ)
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert checks["profile:gone"]["status"] == "fail" and "profiles create" in checks["profile:gone"]["fix"]
    assert checks["profile:present"]["status"] == "pass" and "1 workspace(s) visible" in checks["profile:present"][
        "detail"]
    assert checks["profiles"]["status"] == "pass"
    sent = [{k.lower(): v for k, v in r.headers.items()} for r in powerbi.requests if f"/groups/{workspace}" in r.path]
    assert sent and all(h.get("x-powerbi-profile-id") == present for h in sent)
