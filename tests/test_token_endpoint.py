"""/api/token end to end: each grant type through real MSAL against the Entra ID emulator."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import jwt
import pytest
import requests

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import (
    ALICE,
    BOB,
    CLIENT_ID,
    MASTER_PASSWORD,
    MASTER_USER,
    POWERBI_RESOURCE,
    TENANT,
    Env,
    assert_problem,
)

Call = Callable[..., HostResponse]


def claims_of(token: str, entra: EntraEmulator) -> dict[str, object]:
    """Verify the token's signature with the emulator's key and return its claims."""
    keys = jwt.PyJWKSet.from_dict(requests.get(f"{entra.base_url}/{TENANT}/discovery/v2.0/keys", timeout=5).json())
    key = keys[jwt.get_unverified_header(token)["kid"]]
    return dict(jwt.decode(token, key.key, algorithms=["RS256"], audience=POWERBI_RESOURCE))


def test_client_credentials_token_has_the_documented_shape(env: Env, entra: EntraEmulator, call: Call) -> None:
    response = call("GET", "/api/token")
    assert response.status == 200, response.text
    assert response.header("content-type") == "application/json"
    assert response.header("cache-control") == "no-store"
    assert response.header("x-content-type-options") == "nosniff"
    body = response.json()
    assert set(body) == {"accessToken", "tokenType", "expiresOn", "expiresIn", "scope"}
    assert body["tokenType"] == "Bearer"
    assert body["scope"] == f"{POWERBI_RESOURCE}/.default"
    assert 3500 <= body["expiresIn"] <= 3600
    expires_on = datetime.strptime(body["expiresOn"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires_on.timestamp() - (time.time() + body["expiresIn"])) < 5
    claims = claims_of(body["accessToken"], entra)
    assert claims["appid"] == CLIENT_ID and claims["tid"] == TENANT
    assert claims["idtyp"] == "app" and claims["roles"] == ["Tenant.Read.All"]


def test_post_works_like_get_and_takes_an_empty_object(env: Env, call: Call) -> None:
    assert call("POST", "/api/token").status == 200
    assert call("POST", "/api/token", json={}).status == 200


def test_repeated_requests_are_served_from_memory(env: Env, entra: EntraEmulator, call: Call) -> None:
    tokens = {call("GET", "/api/token").json()["accessToken"] for _ in range(20)}
    assert len(tokens) == 1
    assert entra.token_requests(grant_type="client_credentials") == 1


def test_fifty_concurrent_cold_requests_make_one_token_request(env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.latency = 0.2  # keep every thread in flight while the first request is outstanding
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def one() -> None:
        barrier.wait()
        statuses.append(call("GET", "/api/token").status)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 50
    assert entra.token_requests(grant_type="client_credentials") == 1
    assert entra.discovery_requests() == 1


def test_the_refresh_margin_is_honoured(env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.access_token_lifetime = 3
    env.set(POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="1")
    first = call("GET", "/api/token").json()["accessToken"]
    time.sleep(1.2)
    assert call("GET", "/api/token").json()["accessToken"] == first, "refreshed before the margin"
    time.sleep(1.0)  # now inside the last second: the margin
    assert call("GET", "/api/token").json()["accessToken"] != first
    assert entra.token_requests(grant_type="client_credentials") == 2


def test_a_still_valid_token_is_served_while_azure_ad_fails_and_it_recovers(
    env: Env, entra: EntraEmulator, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    entra.access_token_lifetime = 5
    env.set(POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="2")  # refresh after 3 s; serve stale until 1 s left
    first = call("GET", "/api/token").json()["accessToken"]
    time.sleep(3.1)
    entra.inject_fault("reset", count=None)  # connection resets: MSAL does not replay those, unlike a 503
    with caplog.at_level(logging.WARNING, logger="token_broker"):
        assert call("GET", "/api/token").json()["accessToken"] == first
    assert any("serving the cached one" in r.getMessage() for r in caplog.records)
    entra.clear_faults()
    time.sleep(0.6)  # the back-off after a failed refresh (a quarter of the margin)
    recovered = call("GET", "/api/token")
    assert recovered.status == 200 and recovered.json()["accessToken"] != first


def test_password_grant_uses_msal_cache_and_refresh_token_not_the_password_again(
    needs_port_443: None, env: Env, entra: EntraEmulator, call: Call
) -> None:
    entra.access_token_lifetime = 5
    env.set(POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=MASTER_USER, POWERBI_PASSWORD=MASTER_PASSWORD,
            POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="2")
    first = call("GET", "/api/token")
    assert first.status == 200, first.text
    assert claims_of(first.json()["accessToken"], entra)["upn"] == MASTER_USER
    assert call("GET", "/api/token").json()["accessToken"] == first.json()["accessToken"]
    time.sleep(3.1)
    refreshed = call("GET", "/api/token")
    assert refreshed.status == 200 and refreshed.json()["accessToken"] != first.json()["accessToken"]
    assert entra.token_requests(grant_type="password") == 1
    assert entra.token_requests(grant_type="refresh_token") == 1


def test_password_grant_signs_in_again_when_the_refresh_token_is_revoked(
    needs_port_443: None, env: Env, entra: EntraEmulator, call: Call
) -> None:
    entra.access_token_lifetime = 5
    env.set(POWERBI_GRANT_TYPE="password", POWERBI_USERNAME=MASTER_USER, POWERBI_PASSWORD=MASTER_PASSWORD,
            POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="2")
    assert call("GET", "/api/token").status == 200
    entra.revoke_refresh_tokens(TENANT, MASTER_USER)
    time.sleep(3.1)
    assert call("GET", "/api/token").status == 200
    assert entra.token_requests(grant_type="password") == 2


def user_token(entra: EntraEmulator, username: str, **kwargs: object) -> str:
    return entra.issue_access_token(
        tenant_id=TENANT, audience=f"api://{CLIENT_ID}", subject_username=username,
        scopes="access_as_user", **kwargs,  # type: ignore[arg-type]
    )


def test_on_behalf_of_exchanges_the_callers_token_per_user(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    alice, bob = user_token(entra, ALICE), user_token(entra, BOB)
    alice_pbi = call("GET", "/api/token", headers={"Authorization": f"Bearer {alice}"}).json()["accessToken"]
    bob_pbi = call("GET", "/api/token", headers={"Authorization": f"Bearer {bob}"}).json()["accessToken"]
    assert claims_of(alice_pbi, entra)["upn"] == ALICE
    assert claims_of(bob_pbi, entra)["upn"] == BOB
    again = call("GET", "/api/token", headers={"Authorization": f"Bearer {alice}"}).json()["accessToken"]
    assert again == alice_pbi
    assert entra.token_requests(grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer") == 2


def test_on_behalf_of_never_returns_a_cached_token_to_a_forged_caller(
    env: Env, entra: EntraEmulator, call: Call
) -> None:
    """A token claiming Alice's identity but not the one Azure AD accepted must not get Alice's token."""
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    alice = user_token(entra, ALICE)
    assert call("GET", "/api/token", headers={"Authorization": f"Bearer {alice}"}).status == 200
    header, payload, _ = alice.split(".")
    forged = f"{header}.{payload}.{'A' * 342}"
    response = call("GET", "/api/token", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "caller_token_rejected")


def test_on_behalf_of_needs_the_callers_token(env: Env, call: Call) -> None:
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    response = call("GET", "/api/token")
    assert_problem(response, 401, "caller_token_missing")
    assert response.header("www-authenticate") == "Bearer"


def test_on_behalf_of_with_a_token_for_another_api_is_rejected(env: Env, entra: EntraEmulator, call: Call) -> None:
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    other = entra.issue_access_token(tenant_id=TENANT, audience="api://someone-else", subject_username=ALICE)
    response = call("GET", "/api/token", headers={"Authorization": f"Bearer {other}"})
    assert_problem(response, 401, "caller_token_rejected")
    assert response.header("www-authenticate") == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer a b", "Bearer a,Bearer b", "bearer  "])
def test_a_malformed_authorization_header_is_refused(env: Env, call: Call, header: str) -> None:
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    assert_problem(call("GET", "/api/token", headers={"Authorization": header}), 401, "caller_token_malformed")


def test_service_principal_and_user_tokens_never_mix(env: Env, entra: EntraEmulator, call: Call) -> None:
    """The same process switching configuration builds a new broker; no token crosses over."""
    app_token = call("GET", "/api/token").json()["accessToken"]
    env.set(POWERBI_GRANT_TYPE="on_behalf_of")
    user = call("GET", "/api/token", headers={"Authorization": f"Bearer {user_token(entra, ALICE)}"})
    assert user.json()["accessToken"] != app_token
    assert claims_of(user.json()["accessToken"], entra)["upn"] == ALICE
