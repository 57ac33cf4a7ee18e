"""Caller authentication at the seams: Easy Auth only when the platform vouches, rate-limit keys from the
platform's headers, access tokens only, typed time claims, JWKS single flight with backoff, and the
verified-claims cache against key withdrawal."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from tests.conftest import ALICE, API, CLIENT_ID, TENANT, Env, assert_problem
from token_broker.callers import jwt as jwt_auth
from token_broker.callers.caller import caller_from_claims
from token_broker.config.callers import CallerSettings
from token_broker.support.errors import CallerAuthenticationError

Call = Callable[..., HostResponse]
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"
GENERIC_DETAIL = "The bearer token is not valid for this API."


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


# -- rate-limit keys from the platform's X-Forwarded-For ------------------------------------------------------


def statuses(call: Call, forwarded_for: list[str | None]) -> list[int]:
    """The status of one /api/token request per X-Forwarded-For value (None: no header)."""
    return [call("GET", "/api/token", headers={} if value is None else {"X-Forwarded-For": value}).status
            for value in forwarded_for]


@pytest.mark.parametrize(("name", "same_client"), [
    ("IPv4 with varying ports", ["203.0.113.7:50001", "203.0.113.7:50002", "203.0.113.7"]),
    ("IPv6 with varying ports", ["[2001:db8:5:6::1]:50001", "[2001:db8:5:6::1]:50002", "2001:db8:5:6::1"]),
    ("IPv6 addresses of one /64", ["[2001:db8:5:6::1]:1", "[2001:db8:5:6::abcd]:2", "2001:db8:5:6:ffff:1:2:3"]),
    ("IPv4-mapped IPv6", ["::ffff:203.0.113.7", "[::ffff:203.0.113.7]:443", "203.0.113.7:1"]),
    ("forged entries left of the platform's", ["198.51.100.1, 203.0.113.7:1", "198.51.100.2, 203.0.113.7:2",
                                                "bogus, 203.0.113.7:3"]),
    ("unparseable or missing", ["not-an-ip", None, "[2001:db8::1]:port"]),
    ("unparseable variations", ["unknown", "1.2.3.4:99999", "_hidden"]),
])
def test_one_client_cannot_get_fresh_buckets_by_varying_the_header(
    env: Env, call: Call, name: str, same_client: list[str | None]
) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_RATE_LIMIT_PER_MINUTE="2")
    assert statuses(call, same_client) == [200, 200, 429], name


def test_different_clients_have_their_own_buckets(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_RATE_LIMIT_PER_MINUTE="1")
    assert statuses(call, ["203.0.113.7:1", "203.0.113.8:1", "[2001:db8:5:6::1]:1", "[2001:db8:5:7::1]:1",
                           "203.0.113.7:2"]) == [200, 200, 200, 200, 429]


def test_trusted_proxy_hops_take_the_client_left_of_your_proxies(env: Env, call: Call) -> None:
    # Front Door appends the client; App Service's front end then appends Front Door's (varying) egress address.
    # anonymous and function_key share the key; in-process the routes are indexed ANONYMOUS, which function_key refuses.
    env.set(CALLER_AUTH="anonymous", CALLER_RATE_LIMIT_PER_MINUTE="2", CALLER_TRUSTED_PROXY_HOPS="1")
    assert statuses(call, ["198.51.100.9, 203.0.113.7, 147.243.1.1:1", "203.0.113.7, 147.243.2.2:2",
                           "203.0.113.8, 147.243.1.1:3", "203.0.113.7:7, 147.243.3.3:4"]) == [200, 200, 200, 429]
    # Fewer entries than trusted hops: the shared unknown bucket, never the proxy's or a forged address.
    assert statuses(call, ["147.243.1.1:1", "147.243.1.2:1", "147.243.1.3:1"]) == [200, 200, 429]


def test_trusted_proxy_hops_is_validated(env: Env, call: Call) -> None:
    env.set(CALLER_AUTH="anonymous", CALLER_TRUSTED_PROXY_HOPS="-1")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert problem["setting"] == "CALLER_TRUSTED_PROXY_HOPS"


# -- jwt: access tokens only, with typed time claims --------------------------------------------------------


@pytest.fixture
def jwt_env(env: Env, entra: EntraEmulator) -> Env:
    # The API's client id is an accepted audience too: that is what makes an ID token of this app pass `aud`.
    env.set(CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=f"{API},{CLIENT_ID}",
            CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS="1")
    return env


def signed(entra: EntraEmulator, claims: dict[str, Any]) -> str:
    """``claims`` signed with the emulator's current key, as Entra ID signs its tokens."""
    kid = jwt.get_unverified_header(entra.issue_access_token(tenant_id=TENANT, audience=API))["kid"]
    return jwt.encode(claims, entra.signing_key_pem, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


def id_token_claims(entra: EntraEmulator, **extra: Any) -> dict[str, Any]:
    """The claims of an Entra ID v2 ID token of this app (what MSAL.js returns as idToken)."""
    access = jwt.decode(entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE),
                        options={"verify_signature": False})
    now = int(time.time())
    return {"aud": CLIENT_ID, "iss": entra.issuer(TENANT), "iat": now, "nbf": now, "exp": now + 3600,
            "name": "Alice", "oid": access["oid"], "preferred_username": ALICE, "tid": TENANT,
            "sub": access["sub"], "ver": "2.0", **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("kind", ["ID token with a nonce", "ID token without a nonce",
                                  "access token shape with a nonce"])
def test_an_id_token_is_not_accepted_as_an_access_token(
    jwt_env: Env, entra: EntraEmulator, call: Call, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    claims = {
        "ID token with a nonce": id_token_claims(entra, nonce="d0a9c4f2-nonce"),
        "ID token without a nonce": id_token_claims(entra),
        "access token shape with a nonce": id_token_claims(entra, nonce="d0a9c4f2-nonce", scp="access_as_user"),
    }[kind]
    response = call("GET", "/api/token", headers=bearer(signed(entra, claims)))
    problem = assert_problem(response, 401, "caller_token_invalid")
    assert problem["detail"] == GENERIC_DETAIL
    assert any("access token" in r.getMessage() for r in caplog.records if r.name == "token_broker.callers.jwt")
    assert entra.token_requests() == 0


def test_access_tokens_with_scp_or_only_roles_are_accepted(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    delegated = user_token(entra)
    app_only = entra.issue_access_token(tenant_id=TENANT, audience=API, client_id=CLIENT_ID)  # roles, no scp
    assert "scp" not in jwt.decode(app_only, options={"verify_signature": False})
    for token in (delegated, app_only):
        response = call("GET", "/api/token", headers=bearer(token))
        assert response.status == 200, response.text


@pytest.mark.parametrize(("claim", "value"), [
    ("exp", "9999999999"), ("exp", [9999999999]), ("exp", "Infinity"),
    ("nbf", "1"), ("nbf", False), ("iat", "1700000000"), ("iat", True),
])
def test_time_claims_must_be_json_numbers(
    jwt_env: Env, entra: EntraEmulator, call: Call, claim: str, value: Any
) -> None:
    claims = jwt.decode(entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE,
                                                 scopes="access_as_user"), options={"verify_signature": False})
    token = signed(entra, {**claims, claim: value})
    for _ in range(2):  # the second request would be answered from the verified-claims cache
        problem = assert_problem(call("GET", "/api/token", headers=bearer(token)), 401, "caller_token_invalid")
        assert problem["detail"] == GENERIC_DETAIL


def test_a_boolean_exp_is_401(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    # PyJWT reads true as 1 (long expired) before the type check can say "not a number": either answer is a 401.
    claims = jwt.decode(entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE,
                                                 scopes="access_as_user"), options={"verify_signature": False})
    token = signed(entra, {**claims, "exp": True})
    for _ in range(2):
        response = call("GET", "/api/token", headers=bearer(token))
        assert response.status == 401 and response.json()["code"] in ("caller_token_invalid", "caller_token_expired")


def test_an_infinite_exp_is_401_not_500(jwt_env: Env, entra: EntraEmulator, call: Call) -> None:
    # Python's json (which PyJWT uses) parses the non-standard literal Infinity; int(inf) raises OverflowError.
    claims = jwt.decode(entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE,
                                                 scopes="access_as_user"), options={"verify_signature": False})
    header = {"alg": "RS256", "typ": "JWT", "kid": jwt.get_unverified_header(signed(entra, claims))["kid"]}
    payload = json.dumps({k: v for k, v in claims.items() if k != "exp"})[:-1] + ', "exp": Infinity}'
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload.encode())}".encode()
    private_key = serialization.load_pem_private_key(entra.signing_key_pem, None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input.decode()}.{b64(signature)}"
    assert_problem(call("GET", "/api/token", headers=bearer(token)), 401, "caller_token_invalid")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- JWKS: single flight and backoff ------------------------------------------------------------------------


def keys_path() -> str:
    return f"/{TENANT}/discovery/v2.0/keys"


def concurrently(call: Call, headers: dict[str, str], count: int) -> tuple[list[HostResponse], float]:
    """``count`` GET /api/token requests started together; their responses and the wall time they took."""
    barrier = threading.Barrier(count)

    def one() -> HostResponse:
        barrier.wait()
        return call("GET", "/api/token", headers=headers)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        responses = list(pool.map(lambda _: one(), range(count)))
    return responses, time.monotonic() - started


@pytest.fixture
def jwks_env(env: Env, entra: EntraEmulator) -> Env:
    env.set(CALLER_AUTH="jwt", CALLER_JWT_ISSUER=entra.issuer(TENANT), CALLER_JWT_AUDIENCE=API,
            CALLER_JWT_JWKS_URI=f"{entra.base_url}{keys_path()}", CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS="1")
    return env


def user_token(entra: EntraEmulator) -> str:
    return entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE, scopes="access_as_user")


def test_concurrent_requests_share_one_failing_jwks_fetch_then_back_off(
    jwks_env: Env, entra: EntraEmulator, call: Call
) -> None:
    entra.set_latency(1.0, path_prefix=keys_path())
    entra.inject_fault(503, count=None, path_prefix=keys_path())
    responses, elapsed = concurrently(call, bearer(user_token(entra)), 8)
    assert [r.status for r in responses] == [503] * 8
    assert {r.json()["code"] for r in responses} == {"caller_keys_unavailable"}
    assert entra.count(keys_path()) == 1, "one fetch for all eight requests"
    assert elapsed < 6, f"8 requests took {elapsed:.1f} s: they queued one fetch after another"
    # In the backoff: answered at once, with Retry-After, without a network call.
    backing_off = call("GET", "/api/token", headers=bearer(user_token(entra)))
    assert_problem(backing_off, 503, "caller_keys_unavailable")
    assert 1 <= int(backing_off.header("retry-after") or 0) <= 30
    assert entra.count(keys_path()) == 1
    # After the backoff the keys are fetched again.
    entra.clear_faults()
    time.sleep(int(backing_off.header("retry-after") or 0) + 0.2)
    response = call("GET", "/api/token", headers=bearer(user_token(entra)))
    assert response.status == 200, response.text
    assert entra.count(keys_path()) == 2


def test_concurrent_requests_share_one_slow_jwks_fetch(jwks_env: Env, entra: EntraEmulator, call: Call) -> None:
    entra.set_latency(1.0, path_prefix=keys_path())
    responses, elapsed = concurrently(call, bearer(user_token(entra)), 8)
    assert [r.status for r in responses] == [200] * 8, responses[0].text
    assert entra.count(keys_path()) == 1
    assert elapsed < 6


def test_a_failed_refresh_keeps_the_old_keys_and_does_not_refetch_in_the_backoff(
    jwks_env: Env, entra: EntraEmulator, call: Call
) -> None:
    token = user_token(entra)
    assert call("GET", "/api/token", headers=bearer(token)).status == 200
    entra.inject_fault(503, count=None, path_prefix=keys_path())
    time.sleep(1.1)  # past the unknown-kid cooldown
    unknown = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=ALICE,
                                       scopes="access_as_user", headers={"kid": "rotated-maybe"})
    before = entra.count(keys_path())
    assert_problem(call("GET", "/api/token", headers=bearer(unknown)), 401, "caller_token_invalid")
    assert entra.count(keys_path()) == before + 1
    assert call("GET", "/api/token", headers=bearer(token)).status == 200  # the old keys still verify
    assert call("GET", "/api/token", headers=bearer(user_token(entra))).status == 200


# -- the verified-claims cache against a key withdrawn while a token is verified ----------------------------


def test_a_key_withdrawn_during_verification_does_not_leave_the_token_cached(entra: EntraEmulator) -> None:
    jwks_uri = f"{entra.base_url}{keys_path()}"

    class WithdrawnRightAfterLookup(jwt_auth.SigningKeys):  # type: ignore[misc]
        """Another request refreshes the keys (the issuer withdrew the key) just after this lookup."""

        withdraw = True

        def get(self, kid: str) -> Any:
            key = super().get(kid)
            if self.withdraw:
                self.withdraw = False
                entra.rotate_signing_key(drop_old=True)
                with contextlib.suppress(CallerAuthenticationError):  # raised by the old get() on an unknown kid
                    super().get("a-kid-that-forces-a-refetch")  # cooldown 0: refetches the keys now
            return key

    settings = CallerSettings(mode="jwt", jwt_issuer=entra.issuer(TENANT), jwt_audiences=(API,),
                              jwt_jwks_uri=jwks_uri, jwt_jwks_refresh_cooldown_seconds=0)
    authenticator = jwt_auth.JwtAuthenticator(settings, timeout=5)
    authenticator.keys = WithdrawnRightAfterLookup(lambda: jwks_uri, timeout=5, refresh_cooldown=0)
    token = user_token(entra)
    assert authenticator.verify(token)["aud"] == API  # verified with the key it found
    with pytest.raises(CallerAuthenticationError):
        authenticator.verify(token)  # the key is gone: not answered from the cache


@pytest.mark.parametrize("exp", [True, "9999999999", float("nan"), float("inf"), 10**400, None])
def test_a_caller_never_gets_an_expiry_from_a_claim_that_is_not_a_finite_number(exp: Any) -> None:
    caller = caller_from_claims({"sub": "s", "exp": exp}, mode="jwt", username_claim="preferred_username")
    assert caller.bearer_expires_on is None
    assert caller_from_claims({"exp": 1_900_000_000}, mode="jwt", username_claim="upn").bearer_expires_on == 1.9e9
