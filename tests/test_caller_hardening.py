"""Caller authentication at the seams: Easy Auth only when the platform vouches, rate-limit keys from the
platform's headers, access tokens only, typed time claims, JWKS single flight with backoff, and the
verified-claims cache against key withdrawal."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from devtools.functions_host import HostResponse
from tests.conftest import TENANT, Env, assert_problem

Call = Callable[..., HostResponse]
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def forged_principal(oid: str = "0d6f5f0e-1111-4a1a-9999-0000000000ff") -> str:
    claims = [{"typ": OID_TYPE, "val": oid},
              {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
              {"typ": "preferred_username", "val": "mallory@contoso.com"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


# -- easyauth: trusted only when App Service Authentication is on ------------------------------------------


def on_app_service(monkeypatch: pytest.MonkeyPatch, auth_enabled: str | None) -> None:
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-broker")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    if auth_enabled is None:
        monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    else:
        monkeypatch.setenv("WEBSITE_AUTH_ENABLED", auth_enabled)


@pytest.mark.parametrize("auth_enabled", [None, "", "false", "False", "0", "yes", "enabled"])
def test_easyauth_on_app_service_without_platform_authentication_refuses_a_forged_principal(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch, auth_enabled: str | None
) -> None:
    on_app_service(monkeypatch, auth_enabled)
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true")  # the local escape hatch does not apply here
    response = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()})
    problem = assert_problem(response, 503, "configuration_invalid")
    assert problem["setting"] == "CALLER_AUTH"
    assert "App Service Authentication" in str(problem["problems"]) and "WEBSITE_AUTH_ENABLED" in str(
        problem["problems"])


@pytest.mark.parametrize("auth_enabled", ["True", "true", "TRUE"])
def test_easyauth_on_app_service_with_platform_authentication_is_accepted(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch, auth_enabled: str
) -> None:
    on_app_service(monkeypatch, auth_enabled)
    env.set(CALLER_AUTH="easyauth")
    response = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()})
    assert response.status == 200, response.text


def test_easyauth_off_app_service_still_has_the_local_escape_hatch(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID", "WEBSITE_AUTH_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true")
    assert call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()}).status == 200
