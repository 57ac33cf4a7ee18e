"""/api/health, and the HTTP rules every endpoint follows (methods, bodies, request ids, headers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import API, CLIENT_SECRET, TENANT, Env, assert_problem

Call = Callable[..., HostResponse]


def test_health_ok_describes_the_configuration_without_secrets(env: Env, entra: EntraEmulator, call: Call) -> None:
    response = call("GET", "/api/health")
    assert response.status == 200
    assert response.header("cache-control") == "no-store"
    body = response.json()
    assert body["status"] == "ok"
    assert body["grantType"] == "client_credentials" and body["callerAuth"] == "anonymous"
    assert body["credential"] == "client secret"
    assert body["authority"] == f"{entra.base_url}/{TENANT}"
    assert CLIENT_SECRET not in response.text
    assert entra.token_requests() == 0, "health must not call Azure AD"


def test_health_lists_every_problem_by_setting(env: Env, call: Call) -> None:
    env.set(POWERBI_CLIENT_ID="x", POWERBI_CLIENT_SECRET=None, POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="-1")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    settings = [p["setting"] for p in problem["problems"]]
    assert settings == ["POWERBI_CLIENT_ID", "POWERBI_CLIENT_SECRET", "POWERBI_TOKEN_REFRESH_MARGIN_SECONDS",
                        "CALLER_AUTH"]  # the last: anonymous mode's warning
    assert all(p["message"] for p in problem["problems"])


def test_health_reports_unset_caller_auth_and_warnings(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH=None, POWERBI_PASSWORD="ignored-Passw0rd")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert [(p["setting"], p["severity"]) for p in problem["problems"]] == [
        ("CALLER_AUTH", "error"), ("POWERBI_PASSWORD", "warning")]
    assert "ignored-Passw0rd" not in str(problem)


def test_health_shows_warnings_when_healthy(env: Env, call: Call) -> None:
    env.set(POWERBI_USERNAME="someone@contoso.com")
    body = call("GET", "/api/health").json()
    assert [w["setting"] for w in body["warnings"]] == ["POWERBI_USERNAME", "CALLER_AUTH"]  # CALLER_AUTH=anonymous


def test_health_warns_about_anonymous_callers_only_in_anonymous_mode(env: Env, call: Call) -> None:
    body = call("GET", "/api/health").json()
    [warning] = body["warnings"]
    assert warning["setting"] == "CALLER_AUTH" and "anonymous" in warning["message"]
    env.set(CALLER_AUTH="jwt", CALLER_JWT_ISSUER=env.entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API)
    assert call("GET", "/api/health").json()["warnings"] == []


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/token", "GET, POST"),
    ("DELETE", "/api/token", "GET, POST"),
    ("POST", "/api/health", "GET"),
    ("PATCH", "/api/health", "GET"),
])
def test_wrong_method_is_405_with_allow(env: Env, call: Call, method: str, path: str, allow: str) -> None:
    response = call(method, path)
    assert_problem(response, 405, "method_not_allowed")
    assert response.header("allow") == allow


def test_body_over_64_kib_is_413(env: Env, call: Call) -> None:
    body = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    response = call("POST", "/api/token", headers={"Content-Type": "application/json"}, body=body)
    assert_problem(response, 413, "body_too_large")


def test_non_json_body_is_415(env: Env, call: Call) -> None:
    response = call("POST", "/api/token", headers={"Content-Type": "text/plain"}, body=b"hello")
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(("body", "expected"), [
    (b"{", "line 1, column 2"),
    (b"[]", "JSON object"),
    (b"\xff\xfe", "UTF-8"),
])
def test_malformed_json_is_400_naming_the_problem(env: Env, call: Call, body: bytes, expected: str) -> None:
    response = call("POST", "/api/token", headers={"Content-Type": "application/json"}, body=body)
    assert expected in assert_problem(response, 400, "malformed_json")["detail"]


def test_unknown_fields_are_rejected(env: Env, call: Call) -> None:
    response = call("POST", "/api/token", json={"username": "someone-else"})
    assert "username" in assert_problem(response, 400, "unknown_field")["detail"]


def test_request_id_is_taken_from_the_caller(env: Env, call: Call) -> None:
    assert call("GET", "/api/health", headers={"x-request-id": "abc-123"}).header("x-request-id") == "abc-123"
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = call("GET", "/api/health", headers={"traceparent": traceparent})
    assert response.header("x-request-id") == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_malformed_request_id_is_replaced(env: Env, call: Call) -> None:
    response = call("GET", "/api/health", headers={"x-request-id": "<script>" + "x" * 200})
    assert len(response.header("x-request-id") or "") == 32


def test_request_id_is_on_every_log_record_of_the_request(
    env: Env, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    env.set(POWERBI_CLIENT_SECRET="wrong-secret-for-logging")
    call("GET", "/api/token", headers={"x-request-id": "trace-me-42"})
    broker_records = [r for r in caplog.records if r.name.startswith("token_broker.web.handlers")]
    assert broker_records and all(getattr(r, "request_id", None) == "trace-me-42" for r in broker_records)


def test_unknown_route_is_404(env: Env, call: Call) -> None:
    assert call("GET", "/api/nothing-here").status == 404


def test_health_is_not_ok_for_a_password_grant_that_cannot_reach_port_443(env: Env, call: Call) -> None:
    """What an unprivileged emulator gives: the password grant's user-realm lookup would miss it every time."""
    env.set(POWERBI_GRANT_TYPE="password", POWERBI_USERNAME="pbi-master@contoso.com", POWERBI_PASSWORD="x-Passw0rd",
            POWERBI_AUTHORITY_HOST="https://127.0.0.1:8443")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    [authority] = [p for p in problem["problems"] if p["setting"] == "POWERBI_AUTHORITY_HOST"]
    assert "port 443" in authority["message"] and authority["severity"] == "error"
