"""Fault injection: each upstream failure → the caller's status and code, a bounded wait, stale serving, recovery.

Complements tests/test_token_errors.py, tests/test_credentials.py and tests/test_embed.py (which map most
failures to their codes) with what those do not check: how long a caller can wait (an upper bound derived
from POWERBI_HTTP_TIMEOUT_SECONDS and the retry caps, never a performance target), that still-valid cached
Azure AD and embed tokens keep being served while an upstream service fails, and that the broker recovers
on the first request after the fault ends. "Recovers" is exact except in one case, tested as such: after
Azure AD answered 429 or 5xx, MSAL replays that answer without any network call for the Retry-After
period (5 s without the header), so recovery then comes with the first request after that window.
docs/RELIABILITY.md lists every fault with its figures.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.emulator_server import Fault
from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity, ManagedIdentityEmulator
from devtools.powerbi import PowerBIEmulator
from tests.conftest import ALICE, CLIENT_ID, CLIENT_SECRET, TENANT, Env, World, assert_problem, embed_settings
from token_broker.powerbi.client import PowerBIClient

#: test_embed.py's Power BI fixtures, imported so that pytest finds them here (candidates for conftest.py).

Call = Callable[..., HostResponse]
TIMEOUT = 1.0  # POWERBI_HTTP_TIMEOUT_SECONDS in these tests: small, so that bounds are short
TOKEN_PATH = f"/{TENANT}/oauth2"
SLACK = 2.0  # scheduling on a busy 2-core machine; a hang would exceed any of these bounds by far

_RETRIES = inspect.signature(PowerBIClient.__init__).parameters
POWERBI_MAX_RETRIES: int = _RETRIES["max_retries"].default
POWERBI_MAX_RETRY_WAIT: float = _RETRIES["max_retry_wait"].default


def azure_ad_bound(timeout: float = TIMEOUT) -> float:
    """Longest a fetch from Azure AD can take: discovery and the token request, each retried once by MSAL."""
    return 4 * timeout + SLACK


def powerbi_call_bound(timeout: float = TIMEOUT, retry_wait: float = POWERBI_MAX_RETRY_WAIT) -> float:
    """Longest one Power BI call can take: every attempt times out (connect + read), every retry waits."""
    attempts = POWERBI_MAX_RETRIES + 1
    return attempts * (min(timeout, 5.0) + timeout) + POWERBI_MAX_RETRIES * retry_wait


#: (test, status, seconds) of every timed request: printed at the end of the module (pytest -s) for the docs.
FIGURES: list[tuple[str, int, float]] = []


def _note(response: HostResponse, seconds: float) -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    FIGURES.append((test, response.status, seconds))


def teardown_module() -> None:
    for test, status, seconds in FIGURES:
        print(f"{test}: {status} in {seconds * 1000:.0f} ms")


def timed(call: Call, *args: Any, **kwargs: Any) -> tuple[HostResponse, float]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    seconds = time.monotonic() - started
    _note(response, seconds)
    return response, seconds


def concurrently(count: int, request: Callable[[int], HostResponse]) -> list[tuple[HostResponse, float]]:
    """``request(n)`` for n in range(count), released together; each response with how long it took."""
    barrier = threading.Barrier(count)
    results: list[tuple[HostResponse, float]] = []

    def one(number: int) -> None:
        barrier.wait()
        started = time.monotonic()
        response = request(number)
        results.append((response, time.monotonic() - started))
        _note(response, results[-1][1])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == count, "a request hung"
    return results


@pytest.fixture
def fast_env(env: Env) -> Env:
    env.set(POWERBI_HTTP_TIMEOUT_SECONDS=str(TIMEOUT))
    return env


# -- Azure AD --------------------------------------------------------------------------------------------------


def test_azure_ad_slower_than_the_timeout_is_504_for_every_waiting_caller(
    fast_env: Env, entra: EntraEmulator, call: Call
) -> None:
    """Token endpoint slower than the timeout: the one fetch times out, every concurrent caller gets 504
    aad_timeout within the bound, the caller's fetch was the only token request; then the next request works."""
    entra.set_latency(3 * TIMEOUT, path_prefix=TOKEN_PATH)
    results = concurrently(8, lambda _: call("GET", "/api/token"))
    for response, seconds in results:
        assert_problem(response, 504, "aad_timeout")
        assert seconds < azure_ad_bound()
    assert entra.token_requests() == 1
    entra.clear_faults()
    assert call("GET", "/api/token").status == 200  # timeouts are not replayed by MSAL


def test_azure_ad_hanging_then_resetting_is_504_within_the_timeout(fast_env: Env, entra: EntraEmulator,
                                                                   call: Call) -> None:
    """A token endpoint that accepts the request and never answers: 504 after the read timeout, not the hang."""
    entra.inject_fault(Fault.hang(30), path_prefix=TOKEN_PATH)
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, 504, "aad_timeout")
    assert seconds < azure_ad_bound()


def test_azure_ad_discovery_outage_at_cold_start_is_503_and_recovers(fast_env: Env, entra: EntraEmulator,
                                                                      call: Call) -> None:
    """OpenID discovery (the first call of a new MSAL application) answers 503: 503 aad_unavailable (found
    writing this test: MSAL raises its own MsalServiceError there, which became a 500); the failed application
    is not kept, so the first request after the outage builds a new one and succeeds."""
    entra.inject_fault(503, count=None, path_prefix=f"/{TENANT}/v2.0/.well-known")
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, 503, "aad_unavailable")
    assert seconds < azure_ad_bound()
    entra.clear_faults()
    assert call("GET", "/api/token").status == 200


@pytest.mark.parametrize(("fault", "code", "status"), [
    (Fault.reset(), "aad_unreachable", 503),
    (Fault.malformed_json(), "aad_bad_response", 502),
])
def test_azure_ad_transport_faults_are_bounded_and_recover_on_the_next_request(
    fast_env: Env, entra: EntraEmulator, call: Call, fault: Fault, code: str, status: int
) -> None:
    """Connection reset and malformed JSON: the documented code within the bound, and the very next request
    after the fault ends succeeds (MSAL only replays HTTP 429/5xx answers)."""
    entra.inject_fault(fault, count=None, path_prefix=TOKEN_PATH)
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, status, code)
    assert seconds < azure_ad_bound()
    entra.clear_faults()
    assert call("GET", "/api/token").status == 200


def test_azure_ad_tls_failure_is_503_and_recovers_once_trusted(fast_env: Env, call: Call,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An untrusted certificate (a TLS-inspecting proxy): 503 aad_tls_error at once; trusted again, 200."""
    trusted = os.environ["REQUESTS_CA_BUNDLE"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, 503, "aad_tls_error")
    assert seconds < azure_ad_bound()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", trusted)
    assert call("GET", "/api/token").status == 200


@pytest.mark.parametrize("retry_after", [None, 1])
def test_after_azure_ad_5xx_msal_replays_it_for_the_retry_after_window(
    fast_env: Env, entra: EntraEmulator, call: Call, retry_after: int | None
) -> None:
    """Azure AD 503 (with Retry-After: 1, or without: MSAL's default is 5 s): 503 aad_unavailable. After the
    outage MSAL keeps answering the same 503 from memory until the window ends, without a request reaching
    Azure AD; the first request after the window succeeds. This is what "recovers" means after a 429/5xx."""
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    entra.inject_fault(Fault.http(503, None, headers), count=1, path_prefix=TOKEN_PATH)
    failed_at = time.monotonic()
    assert_problem(call("GET", "/api/token"), 503, "aad_unavailable")
    assert entra.token_requests() == 1
    replayed, seconds = timed(call, "GET", "/api/token")  # the fault is over: Azure AD would answer now
    assert_problem(replayed, 503, "aad_unavailable")
    assert entra.token_requests() == 1 and seconds < SLACK, "replayed by MSAL, not sent"
    time.sleep(max(0.0, (retry_after or 5) + 0.2 - (time.monotonic() - failed_at)))
    assert call("GET", "/api/token").status == 200
    assert entra.token_requests() == 2


def test_azure_ad_429_is_503_then_recovers_after_its_retry_after(fast_env: Env, entra: EntraEmulator,
                                                                  call: Call) -> None:
    """Azure AD throttling (429, Retry-After: 1): 503 aad_unavailable at once (no waiting in the request),
    replayed by MSAL for one second, then the first request succeeds."""
    entra.inject_fault(Fault.http(429, {"error": "temporarily_unavailable", "error_description": "AADSTS0: busy"},
                                  {"Retry-After": "1"}), count=1, path_prefix=TOKEN_PATH)
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, 503, "aad_unavailable")
    assert seconds < SLACK
    time.sleep(1.2)
    assert call("GET", "/api/token").status == 200


# -- a still-valid cached token is served through an Azure AD outage --------------------------------------------

LIFETIME, MARGIN = 8, 4  # refresh 4 s after the fetch; served while failing until 2 s before expiry
REFRESH_DUE = LIFETIME - MARGIN + 0.2


def test_a_cached_token_is_served_while_azure_ad_is_slow_and_only_the_leader_waits(
    env: Env, entra: EntraEmulator, call: Call
) -> None:
    """Azure AD slower than the timeout when the cached token is due: the one refreshing request waits at most
    the timeout and gets the cached token; concurrent callers get it at once; during the back-off no request
    reaches Azure AD; the first request after the back-off refreshes."""
    entra.access_token_lifetime = LIFETIME
    env.set(POWERBI_HTTP_TIMEOUT_SECONDS=str(TIMEOUT), POWERBI_TOKEN_REFRESH_MARGIN_SECONDS=str(MARGIN))
    first = call("GET", "/api/token").json()["accessToken"]
    time.sleep(REFRESH_DUE)
    entra.set_latency(3 * TIMEOUT, path_prefix=TOKEN_PATH)
    results = concurrently(8, lambda _: call("GET", "/api/token"))
    assert [r.json()["accessToken"] for r, _ in results] == [first] * 8
    assert max(seconds for _, seconds in results) < azure_ad_bound()
    # Had the others waited for the refresh they would have taken the timeout, like the leader.
    assert sorted(seconds for _, seconds in results)[-2] < TIMEOUT / 2, "only the refreshing request waited"
    assert call("GET", "/api/token").json()["accessToken"] == first  # backing off: no new attempt
    assert entra.token_requests() == 2
    entra.clear_faults()
    time.sleep(1.1)  # the back-off: a quarter of the margin
    assert call("GET", "/api/token").json()["accessToken"] != first


def anonymous_embed(entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, **extra: str) -> dict[str, str]:
    return {**embed_settings(entra, powerbi, world), "CALLER_AUTH": "anonymous",
            "POWERBI_HTTP_TIMEOUT_SECONDS": str(TIMEOUT), **extra}


def embed_request(call: Call, world: World, report: str | None = None) -> HostResponse:
    return call("POST", "/api/embed-token", json={"reports": [{"id": report or world.plain_report}],
                                                  "workspaceId": world.sales})


def test_embed_tokens_are_issued_through_an_azure_ad_outage(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Azure AD answers only 503: a new embed token (a cache miss) is still minted with the cached Azure AD
    token, without any request to Azure AD; when the cached embed token is due, the refresh mints a new one
    with the Azure AD token that is itself due but still valid (one failed attempt at Azure AD, then
    back-off). No caller sees an error."""
    entra.access_token_lifetime = LIFETIME
    env.set(**anonymous_embed(entra, powerbi, world, POWERBI_TOKEN_REFRESH_MARGIN_SECONDS=str(MARGIN)))
    cached = embed_request(call, world).json()
    entra.inject_fault(Fault.http(503, None, {"Retry-After": "1"}), count=None, path_prefix=TOKEN_PATH)
    entra.reset_counters()
    assert embed_request(call, world, world.second_report).status == 200
    assert entra.token_requests() == 0
    time.sleep(REFRESH_DUE)
    refreshed = [embed_request(call, world) for _ in range(3)]
    assert [r.status for r in refreshed] == [200] * 3
    assert refreshed[0].json()["token"] != cached["token"] and refreshed[0].json()["expiresOn"] >= cached["expiresOn"]
    assert entra.token_requests() == 1, "one refresh attempt, then the back-off"


def test_a_cached_embed_token_is_served_while_azure_ad_and_power_bi_both_fail_and_recovers(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Azure AD and Power BI both answer 503 when the cached embed token is due: the cached embed token is
    served (the same token, still valid), also during the back-off. After the outage (and MSAL's one-second
    Retry-After window) the first request past the back-off gets a new, longer-lived embed token."""
    entra.access_token_lifetime = LIFETIME
    env.set(**anonymous_embed(entra, powerbi, world, POWERBI_TOKEN_REFRESH_MARGIN_SECONDS=str(MARGIN)))
    cached = embed_request(call, world).json()
    powerbi.reset_counters()
    time.sleep(REFRESH_DUE)
    entra.inject_fault(Fault.http(503, None, {"Retry-After": "1"}), count=None, path_prefix=TOKEN_PATH)
    powerbi.inject_fault(Fault.http(503, None, {"Retry-After": "0"}), count=None)
    for _ in range(3):
        response, seconds = timed(embed_request, call, world)
        assert response.status == 200 and response.json()["token"] == cached["token"]
        assert seconds < azure_ad_bound() + powerbi_call_bound(retry_wait=0)
    assert powerbi.generate_token_calls() == POWERBI_MAX_RETRIES + 1, "one refresh attempt, then the back-off"
    entra.clear_faults()
    powerbi.clear_faults()
    time.sleep(1.1)  # the back-off (a quarter of the margin) and MSAL's Retry-After window
    recovered = embed_request(call, world)
    assert recovered.status == 200 and recovered.json()["expiresOn"] > cached["expiresOn"]


# -- Key Vault and the managed identity -------------------------------------------------------------------------


def kv_settings(vault: KeyVaultEmulator, identity: ManagedIdentity) -> dict[str, str | None]:
    return {"POWERBI_CLIENT_SECRET": None, "AZURE_CLIENT_ID": identity.client_id,
            "POWERBI_CLIENT_SECRET_URI": f"{vault.vault_url}/secrets/powerbi-client-secret",
            "POWERBI_HTTP_TIMEOUT_SECONDS": str(TIMEOUT)}


def key_vault_bound(retry_after: float = 0.0) -> float:
    """The SDK's three attempts (connect + read timeouts), its back-off (≤ 2 s) or Retry-After, the identity."""
    return 3 * 2 * TIMEOUT + 2 * max(2.0, retry_after) + 3 * 1.0 + SLACK


def test_key_vault_throttling_is_503_with_retry_after_and_recovers(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call
) -> None:
    """Key Vault answers 429 (Retry-After: 1) to every read: the SDK retries twice, then 503 keyvault_throttled
    with Retry-After; nothing is cached from a failed read, so the first request after the throttling works."""
    env.set(**kv_settings(vault, app_identity))
    vault.throttle(count=None, retry_after=1)
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, 503, "keyvault_throttled")
    assert response.header("retry-after") and seconds < key_vault_bound(retry_after=1)
    vault.clear_faults()
    assert call("GET", "/api/token").status == 200


@pytest.fixture
def stopped() -> Iterator[Callable[[Any], None]]:
    """``stop(emulator)``: take a session emulator down for this test; it is restarted (same address) after."""
    down: list[Any] = []

    def stop(emulator: Any) -> None:
        emulator.stop()
        down.append(emulator)

    yield stop
    for emulator in down:
        emulator.start()


def test_key_vault_unreachable_is_503_bounded_and_recovers_when_it_is_back(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, call: Call, stopped: Callable[[Any], None]
) -> None:
    """The vault is down (connection refused): 503 keyvault_unreachable within the SDK's retry bound; the first
    request after it is back reads the secret and succeeds."""
    env.set(**kv_settings(vault, app_identity))
    stopped(vault)
    response, seconds = timed(call, "GET", "/api/token")
    assert_problem(response, 503, "keyvault_unreachable")
    assert seconds < key_vault_bound()
    vault.start()
    assert call("GET", "/api/token").status == 200


def test_a_key_vault_outage_after_the_secret_was_read_changes_nothing(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, call: Call,
    stopped: Callable[[Any], None]
) -> None:
    """The secret is read once and kept: with the vault down, token refreshes still work."""
    entra.access_token_lifetime = 2
    env.set(**kv_settings(vault, app_identity), POWERBI_TOKEN_REFRESH_MARGIN_SECONDS="1")
    first = call("GET", "/api/token").json()["accessToken"]
    stopped(vault)
    time.sleep(1.2)
    refreshed = call("GET", "/api/token")
    assert refreshed.status == 200 and refreshed.json()["accessToken"] != first


def test_managed_identity_endpoint_down_is_503_bounded_and_recovers(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, _identity_session: ManagedIdentityEmulator,
    call: Call, stopped: Callable[[Any], None]
) -> None:
    """The platform's identity endpoint is down: no token for Key Vault, 503 managed_identity_unavailable naming
    AZURE_CLIENT_ID, within azure-identity's retry bound; the first request after it is back succeeds."""
    env.set(**kv_settings(vault, app_identity))
    stopped(_identity_session)
    response, seconds = timed(call, "GET", "/api/token")
    assert assert_problem(response, 503, "managed_identity_unavailable")["setting"] == "AZURE_CLIENT_ID"
    assert seconds < key_vault_bound()
    _identity_session.start()
    assert call("GET", "/api/token").status == 200


def test_concurrent_requests_all_survive_a_rotation_of_the_secret(
    env: Env, vault: KeyVaultEmulator, app_identity: ManagedIdentity, entra: EntraEmulator, call: Call
) -> None:
    """Found writing these tests: on_behalf_of fetches for different users run concurrently; when Azure AD
    rejects the old secret, the first one to re-read the vault saw "changed", the others "unchanged" (it had
    already been re-read) and failed with 502. Every request now retries once the credential has changed."""
    env.set(**kv_settings(vault, app_identity), POWERBI_GRANT_TYPE="on_behalf_of", CALLER_AUTH="anonymous")

    def user_token(n: int) -> dict[str, str]:
        token = entra.issue_access_token(tenant_id=TENANT, audience=f"api://{CLIENT_ID}", subject_username=ALICE,
                                         scopes="access_as_user", extra_claims={"uti": f"rotation-{n}"})
        return {"Authorization": f"Bearer {token}"}

    assert call("GET", "/api/token", headers=user_token(0)).status == 200  # the MSAL application exists
    rotated = "rotated-under-load~Value.1234"
    entra.rotate_secret(TENANT, CLIENT_ID, rotated)
    vault.set_secret("powerbi-client-secret", rotated)
    entra.set_latency(0.3, path_prefix=TOKEN_PATH)  # every fetch is in flight with the old secret at once
    headers = [user_token(n) for n in range(1, 13)]  # twelve users' first requests: twelve cache keys
    try:
        statuses = [r.status for r, _ in concurrently(12, lambda n: call("GET", "/api/token", headers=headers[n]))]
    finally:
        entra.rotate_secret(TENANT, CLIENT_ID, CLIENT_SECRET)
    assert statuses == [200] * 12
    assert vault.secret_reads("powerbi-client-secret") <= 3, "one re-read per rotation, not one per request"


# -- Power BI --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status", "code"), [
    (Fault.http(401, {"error": {"code": "PowerBINotAuthorizedException"}}), 502, "powerbi_not_authorized"),
    (Fault.http(403, {"error": {"code": "Forbidden", "message": "no access"}}), 502, "powerbi_forbidden"),
    (Fault.http(404, {"error": {"code": "PowerBIEntityNotFound"}}), 404, "powerbi_not_found"),
    (Fault.http(503), 503, "powerbi_unavailable"),
    (Fault.http(429, {"message": "slow down"}, {"Retry-After": "120"}), 429, "powerbi_throttled"),
    (Fault.reset(), 503, "powerbi_unreachable"),
    (Fault.malformed_json(), 502, "powerbi_bad_response"),
])
def test_power_bi_faults_are_bounded_and_recover_on_the_next_request(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call,
    fault: Fault, status: int, code: str
) -> None:
    """Every Power BI failure: the documented status and code within the retry bound (5xx retried twice with
    a short back-off; a Retry-After beyond the 10 s cap answered at once), and the first request after the
    fault ends succeeds (the broker keeps no failure state for Power BI)."""
    env.set(**anonymous_embed(entra, powerbi, world))
    assert call("GET", "/api/token").status == 200  # the Azure AD token is cached: only Power BI is timed
    powerbi.inject_fault(fault, count=None)
    response, seconds = timed(embed_request, call, world)
    assert_problem(response, status, code)
    assert seconds < powerbi_call_bound(retry_wait=1.0) + SLACK
    powerbi.clear_faults()
    assert embed_request(call, world).status == 200


def test_power_bi_slower_than_the_timeout_is_504_for_every_waiting_caller(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Power BI slower than the timeout: a timeout is not retried, so every concurrent caller for the same
    content gets 504 powerbi_timeout within one timeout (plus the Azure AD fetch); one lookup was made."""
    env.set(**anonymous_embed(entra, powerbi, world))
    powerbi.latency = 3 * TIMEOUT
    results = concurrently(6, lambda _: embed_request(call, world))
    for response, seconds in results:
        assert_problem(response, 504, "powerbi_timeout")
        assert seconds < azure_ad_bound() + 2 * TIMEOUT + SLACK
    assert powerbi.report_lookups() == 1
    powerbi.clear_faults()
    assert embed_request(call, world).status == 200


def test_power_bi_429_within_the_cap_is_waited_out_within_the_bound(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Power BI throttles twice with Retry-After: 1: the broker waits and retries (2 retries at most), the
    caller gets 200 after about two seconds, never more than the bound."""
    env.set(**anonymous_embed(entra, powerbi, world))
    assert call("GET", "/api/token").status == 200
    powerbi.throttle_next(2, retry_after=1)
    response, seconds = timed(embed_request, call, world)
    assert response.status == 200, response.text
    assert seconds < powerbi_call_bound(retry_wait=1.0) * 3 + SLACK


def test_a_cached_embed_token_is_served_while_power_bi_throttles(
    env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Power BI answers 429 (Retry-After: 60, beyond the cap) when the cached embed token is due: the cached
    token is served; when Power BI is back the first request past the back-off gets a new one."""
    entra.access_token_lifetime = LIFETIME
    env.set(**anonymous_embed(entra, powerbi, world, POWERBI_TOKEN_REFRESH_MARGIN_SECONDS=str(MARGIN)))
    cached = embed_request(call, world).json()
    time.sleep(REFRESH_DUE)
    powerbi.throttle_next(100, retry_after=60)
    served = [embed_request(call, world) for _ in range(3)]
    assert [r.json()["token"] for r in served] == [cached["token"]] * 3
    powerbi.throttle_next(0)
    time.sleep(1.1)
    recovered = embed_request(call, world)
    assert recovered.status == 200 and recovered.json()["token"] != cached["token"]
