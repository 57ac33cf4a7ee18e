"""Every Azure AD failure and configuration mistake → the documented status, code and message."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from devtools.emulator_server import Fault
from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import (
    CA_USER,
    CLIENT_ID,
    EXPIRED_CLIENT_ID,
    EXPIRED_SECRET,
    MASTER_PASSWORD,
    MASTER_USER,
    MFA_USER,
    NO_CONSENT_CLIENT_ID,
    NO_CONSENT_SECRET,
    TENANT,
    USER_PASSWORD,
    Env,
    assert_problem,
)

Call = Callable[..., HostResponse]


def test_wrong_client_secret(env: Env, call: Call) -> None:
    env.set(POWERBI_CLIENT_SECRET="not-the-right-secret-value")
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_invalid_client_secret")
    assert problem["setting"] == "POWERBI_CLIENT_SECRET"
    assert "AADSTS7000215" in problem["detail"] and "Value" in problem["detail"]
    assert problem["aadErrorCodes"] == [7000215]
    assert problem["aadTraceId"] and problem["aadCorrelationId"]
    assert "not-the-right-secret-value" not in str(problem)


def test_expired_client_secret(env: Env, call: Call) -> None:
    env.set(POWERBI_CLIENT_ID=EXPIRED_CLIENT_ID, POWERBI_CLIENT_SECRET=EXPIRED_SECRET)
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_client_secret_expired")
    assert problem["setting"] == "POWERBI_CLIENT_SECRET" and "expired" in problem["detail"]


def test_unknown_client_id(env: Env, call: Call) -> None:
    env.set(POWERBI_CLIENT_ID="0b0e1c4e-5a7f-4a43-9b43-8f3c2c3f0000")
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_unknown_client_id")
    assert problem["setting"] == "POWERBI_CLIENT_ID"


def test_unknown_tenant(env: Env, call: Call) -> None:
    env.set(POWERBI_TENANT_ID="3f2504e0-4f89-41d3-9a0c-0305e82c3301")
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_unknown_tenant")
    assert problem["setting"] == "POWERBI_TENANT_ID"


def password_env(env: Env, username: str, password: str = USER_PASSWORD, **extra: str) -> None:
    env.set(POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=username, POWERBI_PASSWORD=password, **extra)


def test_wrong_master_user_password(needs_port_443: None, env: Env, call: Call) -> None:
    password_env(env, MASTER_USER, "wrong-Passw0rd!value")
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_invalid_username_or_password")
    assert problem["setting"] == "POWERBI_PASSWORD" and "wrong-Passw0rd" not in str(problem)


def test_mfa_user_with_the_password_grant_points_to_on_behalf_of(needs_port_443: None, env: Env, call: Call) -> None:
    password_env(env, MFA_USER)
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_mfa_required")
    assert "on_behalf_of" in problem["detail"] and problem["setting"] == "POWERBI_GRANT_TYPE"


def test_missing_consent(needs_port_443: None, env: Env, call: Call) -> None:
    password_env(env, MASTER_USER, MASTER_PASSWORD,
                 POWERBI_CLIENT_ID=NO_CONSENT_CLIENT_ID, POWERBI_CLIENT_SECRET=NO_CONSENT_SECRET)
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_consent_required")
    assert "admin consent" in problem["detail"]


def test_conditional_access_block(needs_port_443: None, env: Env, call: Call) -> None:
    password_env(env, CA_USER)
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_conditional_access_blocked")
    assert "trace id" in problem["detail"] and problem["aadTraceId"]


def test_mfa_needed_on_behalf_of_is_the_callers_problem(env: Env, entra: EntraEmulator, call: Call) -> None:
    """With on-behalf-of, AADSTS50076 concerns the signed-in user: 403, not a server misconfiguration."""
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    entra.inject_fault(Fault.http(400, {
        "error": "invalid_grant", "error_codes": [50076], "suberror": "basic_action",
        "error_description": "AADSTS50076: Due to a configuration change made by your administrator, "
                             "you must use multi-factor authentication.",
    }), path_prefix=f"/{TENANT}/oauth2")
    token = entra.issue_access_token(tenant_id=TENANT, audience=f"api://{CLIENT_ID}", subject_username=MFA_USER)
    response = call("GET", "/api/token", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 403, "aad_mfa_required")


def test_unmapped_aadsts_code_is_a_generic_502_with_the_code(env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.inject_fault(Fault.http(400, {
        "error": "invalid_request", "error_codes": [9999999],
        "error_description": "AADSTS9999999: Something new.", "trace_id": "t-1", "correlation_id": "c-1",
    }), path_prefix=f"/{TENANT}/oauth2")
    problem = assert_problem(call("GET", "/api/token"), 502, "aad_error")
    assert "AADSTS9999999" in problem["detail"]
    assert problem["aadTraceId"] == "t-1" and problem["aadCorrelationId"] == "c-1"


def test_azure_ad_server_error_is_503_with_retry_after(env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.inject_fault(503, path_prefix=f"/{TENANT}/oauth2")
    response = call("GET", "/api/token")
    assert_problem(response, 503, "aad_unavailable")
    assert response.header("retry-after") == "5", "MSAL replays the 503 for 5 s: retrying sooner cannot succeed"


def test_azure_ad_temporarily_unavailable_is_503(env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.inject_fault(Fault.http(429, {"error": "temporarily_unavailable", "error_description": "AADSTS0: busy"},
                                  {"Retry-After": "1"}), path_prefix=f"/{TENANT}/oauth2")
    assert_problem(call("GET", "/api/token"), 503, "aad_unavailable")


def test_malformed_json_from_the_authority_is_502(env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.inject_fault("malformed_json", path_prefix=f"/{TENANT}/oauth2")
    assert_problem(call("GET", "/api/token"), 502, "aad_bad_response")


def test_timeout_is_504_and_bounded(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(POWERBI_HTTP_TIMEOUT_SECONDS="0.5")
    entra.latency = 3
    started = time.monotonic()
    assert_problem(call("GET", "/api/token"), 504, "aad_timeout")
    assert time.monotonic() - started < 2.5, "the request must not wait past the configured timeout"


def test_unreachable_authority_is_503_naming_the_setting(env: Env, call: Call) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env.set(POWERBI_AUTHORITY_HOST=f"https://127.0.0.1:{port}")
    problem = assert_problem(call("GET", "/api/token"), 503, "aad_unreachable")
    assert problem["setting"] == "POWERBI_AUTHORITY_HOST"


def test_untrusted_tls_certificate_is_503(env: Env, call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    problem = assert_problem(call("GET", "/api/token"), 503, "aad_tls_error")
    assert "certificate" in problem["detail"]


def test_fail_closed_when_caller_auth_is_unset(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(CALLER_AUTH=None)
    problem = assert_problem(call("GET", "/api/token"), 503, "caller_auth_not_configured")
    assert problem["setting"] == "CALLER_AUTH" and "anonymous" in problem["detail"]
    assert entra.token_requests() == 0


def test_invalid_configuration_is_503_listing_every_problem(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(POWERBI_TENANT_ID=None, POWERBI_CLIENT_ID="nope", POWERBI_AUTHORITY_HOST="http://login.example")
    problem = assert_problem(call("GET", "/api/token"), 503, "configuration_invalid")
    assert {p["setting"] for p in problem["problems"] if p["severity"] == "error"} == {
        "POWERBI_TENANT_ID", "POWERBI_CLIENT_ID", "POWERBI_AUTHORITY_HOST"}
    assert entra.token_requests() == 0


def test_an_unresolved_key_vault_reference_is_never_sent(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(POWERBI_CLIENT_SECRET="@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/pbi/)")
    problem = assert_problem(call("GET", "/api/token"), 503, "configuration_invalid")
    assert problem["setting"] == "POWERBI_CLIENT_SECRET"
    assert "not resolve" in problem["problems"][0]["message"]
    assert entra.token_requests() == 0 and entra.discovery_requests() == 0


def test_a_bug_is_a_generic_500_without_a_traceback(env: Env, call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    from token_broker.aad.tokens import TokenService

    def explode(self: object, caller: object, **_: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(TokenService, "token_for", explode)
    problem = assert_problem(call("GET", "/api/token"), 500, "internal_error")
    assert "secret internals" not in str(problem)
