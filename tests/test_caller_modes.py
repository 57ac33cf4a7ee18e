"""easyauth, function_key and anonymous modes, the per-caller rate limit, and CORS staying the platform's job."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import azure.functions as func
import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import ROOT, TENANT, Env, assert_problem
from token_broker import runtime
from token_broker.callers.easyauth import EasyAuthAuthenticator
from token_broker.callers.jwt import JwtAuthenticator
from token_broker.callers.rate_limit import RateLimiter
from token_broker.config.callers import CallerSettings
from token_broker.support.errors import RateLimitedError

Call = Callable[..., HostResponse]
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def principal(*, roles: tuple[str, ...] = (), oid: str = "0d6f5f0e-1111-4a1a-9999-000000000001",
              username: str = "alice@contoso.com") -> str:
    claims = [{"typ": OID_TYPE, "val": oid},
              {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
              {"typ": "preferred_username", "val": username},
              {"typ": "http://schemas.microsoft.com/identity/claims/scope", "val": "user_impersonation"}]
    claims += [{"typ": ROLE_TYPE, "val": role} for role in roles]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": ROLE_TYPE}
    return base64.b64encode(json.dumps(document).encode()).decode()


# -- easyauth ----------------------------------------------------------------------------------------------


def test_easyauth_principal_is_parsed_into_a_caller() -> None:
    authenticator = EasyAuthAuthenticator(CallerSettings(mode="easyauth", username_claim="preferred_username"))
    req = func.HttpRequest("GET", "http://localhost/api/token", body=b"",
                           headers={"X-MS-CLIENT-PRINCIPAL": principal(roles=("Report.Viewer", "Report.Admin"))})
    caller = authenticator.authenticate(req.headers)
    assert caller.mode == "easyauth"
    assert caller.object_id == "0d6f5f0e-1111-4a1a-9999-000000000001" and caller.tenant_id == TENANT
    assert caller.username == "alice@contoso.com"
    assert caller.roles == {"Report.Viewer", "Report.Admin"} and caller.scopes == {"user_impersonation"}


def test_easyauth_end_to_end_with_roles(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true", CALLER_REQUIRED_ROLES="Report.Viewer")
    ok = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": principal(roles=("Report.Viewer",))})
    assert ok.status == 200, ok.text
    denied = call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": principal()})
    assert_problem(denied, 403, "caller_missing_role")


@pytest.mark.parametrize("header", [None, "%%%not-base64%%%", base64.b64encode(b"[1,2]").decode(),
                                    base64.b64encode(b'{"claims": [{"typ": 1}]}').decode(),
                                    base64.b64encode(b'{"claims": []}').decode(), "A" * 70_000])
def test_easyauth_missing_or_malformed_principal_is_401(env: Env, call: Call, header: str | None) -> None:
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true")
    headers = {"X-MS-CLIENT-PRINCIPAL": header} if header is not None else {}
    assert_problem(call("GET", "/api/token", headers=headers), 401, "caller_unauthenticated")


def test_easyauth_is_refused_off_app_service(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="easyauth")
    problem = assert_problem(call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": principal()}), 503,
                             "configuration_invalid")
    assert problem["setting"] == "CALLER_AUTH" and "CALLER_EASYAUTH_ALLOW_LOCAL" in str(problem["problems"])


def test_easyauth_is_accepted_on_app_service(env: Env, call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-broker")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    env.set(CALLER_AUTH="easyauth")
    assert call("GET", "/api/token", headers={"X-MS-CLIENT-PRINCIPAL": principal()}).status == 200


def test_easyauth_with_platform_authentication_disabled_is_refused(
    env: Env, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-broker")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "False")
    env.set(CALLER_AUTH="easyauth")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert "forge" in str(problem["problems"])


# -- function_key ------------------------------------------------------------------------------------------

FUNCTION_KEY_SCRIPT = textwrap.dedent("""
    import json, sys
    import function_app
    from devtools.functions_host import FunctionsHost
    host = FunctionsHost(function_app.app, function_keys={"default": "the-function-key-value"})
    levels = {f.name: str(f.auth_level).upper() for f in host.functions}
    statuses = [host.invoke("GET", "/api/token").status,
                host.invoke("GET", "/api/token", headers={"x-functions-key": "wrong"}).status,
                host.invoke("GET", "/api/token", headers={"x-functions-key": "the-function-key-value"}).status,
                host.invoke("GET", "/api/health").status]
    print(json.dumps({"levels": levels, "statuses": statuses}))
""")


def test_function_key_mode_is_reflected_in_the_indexed_auth_level(env: Env, entra: EntraEmulator) -> None:
    env.set(CALLER_AUTH="function_key")
    result = subprocess.run([sys.executable, "-c", FUNCTION_KEY_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ), timeout=60, check=True)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["levels"] == {"token": "FUNCTION", "embed_token": "FUNCTION", "report_embed": "FUNCTION",
                                 "powerbi_proxy": "FUNCTION", "health": "ANONYMOUS", "openapi": "ANONYMOUS"}
    assert outcome["statuses"] == [401, 401, 200, 200]


def test_function_key_mode_rejects_required_roles(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="function_key", CALLER_REQUIRED_SCOPES="access_as_user")
    assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")


def test_anonymous_mode_is_logged_as_a_warning_at_start(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.set(CALLER_AUTH="anonymous")
    runtime.current_broker()
    assert any(r.levelname == "WARNING" and "CALLER_AUTH=anonymous" in r.getMessage() for r in caplog.records)


# -- rate limit --------------------------------------------------------------------------------------------


def test_rate_limit_is_per_caller_with_retry_after(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true", CALLER_RATE_LIMIT_PER_MINUTE="3")
    alice = {"X-MS-CLIENT-PRINCIPAL": principal(oid="0d6f5f0e-1111-4a1a-9999-00000000000a")}
    bob = {"X-MS-CLIENT-PRINCIPAL": principal(oid="0d6f5f0e-1111-4a1a-9999-00000000000b")}
    assert [call("GET", "/api/token", headers=alice).status for _ in range(3)] == [200, 200, 200]
    limited = call("GET", "/api/token", headers=alice)
    assert_problem(limited, 429, "rate_limited")
    assert 1 <= int(limited.header("retry-after") or 0) <= 20
    assert call("GET", "/api/token", headers=bob).status == 200


def test_rate_limit_memory_is_bounded_however_many_callers(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="easyauth", CALLER_EASYAUTH_ALLOW_LOCAL="true", CALLER_RATE_LIMIT_PER_MINUTE="10",
            CALLER_RATE_LIMIT_MAX_CALLERS="5")
    for n in range(40):
        headers = {"X-MS-CLIENT-PRINCIPAL": principal(oid=f"0d6f5f0e-1111-4a1a-9999-{n:012d}")}
        assert call("GET", "/api/token", headers=headers).status == 200
    limiter = runtime.current_broker().rate_limiter
    assert limiter is not None and len(limiter) == 5


def test_token_bucket_refills_over_the_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(60, max_callers=100, clock=lambda: now[0])
    for _ in range(60):
        limiter.check("a")
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("a")
    assert caught.value.retry_after == 1
    now[0] += 1.0
    limiter.check("a")
    for n in range(10_000):
        limiter.check(f"caller-{n}")
    assert len(limiter) == 100


# -- identity is typed and comes only from verified data ----------------------------------------------------


def test_jwt_caller_identity_uses_the_configured_username_claim(entra: EntraEmulator) -> None:
    settings = CallerSettings(mode="jwt", jwt_issuer=entra.issuer(TENANT), jwt_audiences=("api://x",),
                              username_claim="upn")
    authenticator = JwtAuthenticator(settings, timeout=5)
    token = entra.issue_access_token(tenant_id=TENANT, audience="api://x", subject_username="bob@contoso.com",
                                     roles=["Report.Viewer"])
    req = func.HttpRequest("GET", "http://localhost/api/token?username=mallory", body=b"",
                           headers={"Authorization": f"Bearer {token}"})
    caller = authenticator.authenticate(req.headers)
    assert caller.username == "bob@contoso.com" and caller.tenant_id == TENANT
    assert caller.roles == {"Report.Viewer"} and caller.object_id and caller.subject
    assert token not in repr(caller)


def test_responses_never_carry_cors_headers(env: Env, call: Call) -> None:
    response = call("GET", "/api/token", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert not [name for name, _ in response.headers if name.lower().startswith("access-control-")]


