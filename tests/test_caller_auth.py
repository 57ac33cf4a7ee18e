"""Caller authentication: the jwt attack matrix, key rotation, roles and scopes, on-behalf-of with a verified token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import ALICE, BOB, CLIENT_ID, POWERBI_RESOURCE, TENANT, Env, assert_problem

Call = Callable[..., HostResponse]
API_AUDIENCE = f"api://{CLIENT_ID}"
GENERIC_DETAIL = "The bearer token is not valid for this API."


@pytest.fixture
def jwt_env(env: Env, entra: EntraEmulator) -> Env:
    env.set(CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API_AUDIENCE,
            CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS="1")
    return env


def user_token(entra: EntraEmulator, username: str = ALICE, **kwargs: Any) -> str:
    kwargs.setdefault("audience", API_AUDIENCE)
    return str(entra.issue_access_token(tenant_id=TENANT, subject_username=username, scopes="access_as_user",
                                        **kwargs))


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def keys_requests(entra: EntraEmulator) -> int:
    return int(entra.count(path_contains="/discovery/v2.0/keys"))


def test_a_valid_token_gets_a_power_bi_token(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    response = call("GET", "/api/token", headers=bearer(user_token(entra)))
    assert response.status == 200, response.text
    assert response.json()["tokenType"] == "Bearer"


def forged_tokens(entra: EntraEmulator) -> dict[str, str]:
    """Every token of the attack matrix, built from a valid one."""
    valid = user_token(entra)
    header_b64, payload_b64, signature = valid.split(".")
    header = jwt.get_unverified_header(valid)
    claims = jwt.decode(valid, options={"verify_signature": False})
    public_pem = serialization.load_pem_private_key(entra.signing_key_pem, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = b64({**header, "alg": "HS256"})
    hs_signing_input = f"{hs_header}.{payload_b64}".encode()
    hs_signature = base64.urlsafe_b64encode(hmac.new(public_pem, hs_signing_input, hashlib.sha256).digest())
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    now = int(time.time())
    return {
        "alg none": f"{b64({**header, 'alg': 'none'})}.{payload_b64}.",
        "HS256 with the public key": f"{hs_header}.{payload_b64}.{hs_signature.rstrip(b'=').decode()}",
        "wrong aud": user_token(entra, audience="api://another-api"),
        "wrong iss": user_token(entra, extra_claims={"iss": "https://login.example.com/evil/v2.0"}),
        "expired": user_token(entra, extra_claims={"exp": now - 120}),
        "nbf in the future": user_token(entra, extra_claims={"nbf": now + 300}),
        "iat in the future": user_token(entra, extra_claims={"iat": now + 300}),
        "tampered payload": f"{header_b64}.{b64({**claims, 'roles': ['Admin']})}.{signature}",
        "missing exp": jwt.encode(no_exp, entra.signing_key_pem, algorithm="RS256", headers={"kid": header["kid"]}),
        "malformed base64": "eyJ!!!.eyJ@@@.sig",
        "not a JWT": "opaque-token-value",
        "100 KB token": f"{header_b64}.{b64(b'x' * 100_000)}.{signature}",
        "ES256 header on an RSA key": f"{b64({**header, 'alg': 'ES256'})}.{payload_b64}.{signature}",
    }


@pytest.mark.parametrize("attack", [
    "alg none", "HS256 with the public key", "wrong aud", "wrong iss", "expired", "nbf in the future",
    "iat in the future", "tampered payload", "missing exp", "malformed base64", "not a JWT", "100 KB token",
    "ES256 header on an RSA key",
])
def test_attack_matrix_is_401_without_helpful_detail(
    jwt_env: Env, entra: EntraEmulator, call: Call, attack: str
) -> None:
    token = forged_tokens(entra)[attack]
    response = call("GET", "/api/token", headers=bearer(token))
    code = "caller_token_expired" if attack == "expired" else "caller_token_invalid"
    problem = assert_problem(response, 401, code)
    assert problem["detail"] in (GENERIC_DETAIL, "The bearer token has expired; sign in again.")
    assert response.header("www-authenticate") == 'Bearer error="invalid_token"'
    assert entra.token_requests() == 0, "no token may be requested for a rejected caller"


def test_unknown_kid_refetches_the_keys_once_and_is_rate_limited(
    jwt_env: Env, entra: EntraEmulator, call: Call
) -> None:
    assert call("GET", "/api/token", headers=bearer(user_token(entra))).status == 200
    time.sleep(1.1)  # past the refresh cooldown
    before = keys_requests(entra)
    unknown = user_token(entra, headers={"kid": "not-a-known-key"})
    assert_problem(call("GET", "/api/token", headers=bearer(unknown)), 401, "caller_token_invalid")
    assert keys_requests(entra) == before + 1
    for _ in range(5):  # within the cooldown: no more fetches, however many unknown kids arrive
        assert_problem(call("GET", "/api/token", headers=bearer(unknown)), 401, "caller_token_invalid")
    assert keys_requests(entra) == before + 1


def test_a_rotated_signing_key_is_picked_up(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    assert call("GET", "/api/token", headers=bearer(user_token(entra))).status == 200
    entra.rotate_signing_key()
    time.sleep(1.1)
    response = call("GET", "/api/token", headers=bearer(user_token(entra)))
    assert response.status == 200, response.text


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer Bearer abc"},
])
def test_missing_or_malformed_bearer_is_401(jwt_env: Env, call: Call, headers: dict[str, str]) -> None:
    response = call("GET", "/api/token", headers=headers)
    assert response.status == 401
    assert response.json()["code"] in ("caller_token_missing", "caller_token_malformed")


def test_a_token_only_in_the_query_string_is_not_accepted(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    response = call("GET", f"/api/token?access_token={user_token(entra)}")
    assert_problem(response, 401, "caller_token_missing")


def test_required_roles(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    jwt_env.set(**{**jwt_settings(entra), "CALLER_REQUIRED_ROLES": "Report.Viewer,Report.Admin"})
    assert call("GET", "/api/token", headers=bearer(user_token(entra, ALICE))).status == 200
    problem = assert_problem(call("GET", "/api/token", headers=bearer(user_token(entra, BOB))), 403,
                             "caller_missing_role")
    assert "role" in problem["detail"]


def test_required_scopes(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    jwt_env.set(**{**jwt_settings(entra), "CALLER_REQUIRED_SCOPES": "access_as_user"})
    assert call("GET", "/api/token", headers=bearer(user_token(entra))).status == 200
    other = str(entra.issue_access_token(tenant_id=TENANT, audience=API_AUDIENCE, subject_username=ALICE,
                                         scopes="something_else"))
    assert_problem(call("GET", "/api/token", headers=bearer(other)), 403, "caller_missing_scope")


def jwt_settings(entra: EntraEmulator) -> dict[str, str]:
    return {"CALLER_AUTH": "jwt", "CALLER_JWT_ISSUER": entra.issuer(TENANT), "CALLER_JWT_AUDIENCE": API_AUDIENCE,
            "CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS": "1"}


def test_on_behalf_of_uses_the_verified_token_as_the_assertion(
    jwt_env: Env, entra: EntraEmulator, call: Call
) -> None:
    jwt_env.set(**jwt_settings(entra), POWERBI_GRANT_TYPE="on_behalf_of")
    response = call("GET", "/api/token", headers=bearer(user_token(entra, ALICE)))
    assert response.status == 200, response.text
    claims = jwt.decode(response.json()["accessToken"], options={"verify_signature": False})
    assert claims["upn"] == ALICE and claims["aud"] == POWERBI_RESOURCE
    forged = forged_tokens(entra)["tampered payload"]
    assert_problem(call("GET", "/api/token", headers=bearer(forged)), 401, "caller_token_invalid")
    assert entra.token_requests(grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer") == 1


def test_on_behalf_of_requires_this_app_as_audience(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(**{**jwt_settings(entra), "CALLER_JWT_AUDIENCE": "api://some-other-api"},
            POWERBI_GRANT_TYPE="on_behalf_of")
    problem = assert_problem(call("GET", "/api/token"), 503, "configuration_invalid")
    assert problem["setting"] == "CALLER_JWT_AUDIENCE" and API_AUDIENCE in str(problem["problems"])


def test_the_discovery_document_must_name_the_configured_issuer(env: Env, entra: EntraEmulator, call: Call) -> None:
    # Entra ID's discovery document always names the tenant GUID; a domain-based issuer never matches iss.
    env.set(**{**jwt_settings(entra), "CALLER_JWT_ISSUER": f"{entra.base_url}/contoso.com/v2.0"})
    problem = assert_problem(call("GET", "/api/token", headers=bearer(user_token(entra))), 503,
                             "caller_keys_unavailable")
    assert problem["setting"] == "CALLER_JWT_ISSUER"


def test_unreachable_issuer_is_503_not_401(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(**jwt_settings(entra), CALLER_JWT_JWKS_URI="https://127.0.0.1:1/keys")
    assert_problem(call("GET", "/api/token", headers=bearer(user_token(entra))), 503, "caller_keys_unavailable")


def test_jwt_mode_settings_are_validated_together(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="jwt", CALLER_JWT_LEEWAY_SECONDS="600")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert {p["setting"] for p in problem["problems"]} == {
        "CALLER_JWT_ISSUER", "CALLER_JWT_AUDIENCE", "CALLER_JWT_LEEWAY_SECONDS"}


def test_roles_need_a_caller_identity(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_REQUIRED_ROLES="Report.Viewer")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert problem["setting"] == "CALLER_REQUIRED_ROLES"


def test_a_token_answered_from_the_verification_cache_still_expires_on_time(
    jwt_env: Env, entra: EntraEmulator, call: Call
) -> None:
    jwt_env.set(**jwt_settings(entra), CALLER_JWT_LEEWAY_SECONDS="0")
    token = user_token(entra, lifetime=2)
    assert call("GET", "/api/token", headers=bearer(token)).status == 200
    assert call("GET", "/api/token", headers=bearer(token)).status == 200  # from the cache
    time.sleep(2.2)
    assert_problem(call("GET", "/api/token", headers=bearer(token)), 401, "caller_token_expired")


def test_refreshed_signing_keys_invalidate_the_verification_cache(
    jwt_env: Env, entra: EntraEmulator, call: Call
) -> None:
    token = user_token(entra)
    assert call("GET", "/api/token", headers=bearer(token)).status == 200
    entra.rotate_signing_key(drop_old=True)  # the key that signed `token` is withdrawn
    time.sleep(1.1)
    assert call("GET", "/api/token", headers=bearer(user_token(entra))).status == 200  # refetches the keys
    assert_problem(call("GET", "/api/token", headers=bearer(token)), 401, "caller_token_invalid")
