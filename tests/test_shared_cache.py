"""The shared cache tier on a real redis-server: L2 hits, encryption, key names, rotation, fail closed.

A "new instance" in-process is a broker rebuilt from the same settings (``runtime.reset()``): empty memory
caches, the same Redis. Separate processes are in tests/test_shared_instances.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from devtools.tls import DevCertificateAuthority
from tests.conftest import (
    ALICE,
    API,
    BOB,
    CACHE_KEY_SECRET,
    TENANT,
    Env,
    World,
    assert_problem,
    embed_settings,
    new_cache_key,
    shared_settings,
)
from token_broker import runtime
from token_broker.aad.identity import app_credential
from token_broker.config.identity import AppIdentity

Call = Callable[..., HostResponse]


def user(entra: EntraEmulator, username: str = ALICE, *, roles: tuple[str, ...] = ("Report.Viewer",)) -> dict[str, str]:
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=username, roles=list(roles),
                                     scopes="access_as_user")
    return {"Authorization": f"Bearer {token}"}


def embed(call: Call, headers: dict[str, str], report: str, workspace: str) -> HostResponse:
    return call("POST", "/api/embed-token", headers=headers, json={"reports": [{"id": report}],
                                                                   "workspaceId": workspace})


@pytest.fixture
def shared_env(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, redis_server: RedisServer,
               cache_key_uri: str, shared_identity: str) -> Env:
    env.set(**embed_settings(entra, powerbi, world), **shared_settings(redis_server, cache_key_uri, shared_identity))
    return env


def raw_entries(server: RedisServer) -> dict[bytes, bytes]:
    client: Any = server.client()
    return {key: client.get(key) for key in client.keys("*") if client.type(key) == b"string"}


def test_a_new_instance_gets_the_embed_token_from_redis(shared_env: Env, entra: EntraEmulator,
                                                        powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    first = embed(call, user(entra), world.rls_report, world.sales)
    assert first.status == 200, first.text
    runtime.reset()  # another instance: empty memory caches, the same Redis
    second = embed(call, user(entra), world.rls_report, world.sales)
    assert second.status == 200, second.text
    assert second.json()["token"] == first.json()["token"]
    assert powerbi.generate_token_calls() == 1
    assert powerbi.report_lookups() == 1  # the metadata came from Redis too


def test_redis_holds_no_token_user_report_or_tenant(shared_env: Env, entra: EntraEmulator, world: World, call: Call,
                                                    redis_server: RedisServer, vault: KeyVaultEmulator) -> None:
    key = vault.versions(CACHE_KEY_SECRET)[-1].value
    response = embed(call, user(entra), world.rls_report, world.sales)
    assert response.status == 200, response.text
    token = response.json()["token"]
    entries = raw_entries(redis_server)
    assert len(entries) >= 3  # the embed token, the report, the dataset
    everything = b"\n".join(k + b"\n" + v for k, v in entries.items())
    for visible in (token, token[:24], ALICE, ALICE.split("@")[0], world.rls_report, world.rls_dataset, world.sales,
                    TENANT, "Secured", "By region", "embedUrl", "reportId", key):
        assert visible.encode() not in everything, visible
    for key in entries:
        assert key.startswith((b"tb:embed token:", b"tb:powerbi metadata:")), key
        assert len(key.rpartition(b":")[2]) == 43  # base64url of a SHA-256 HMAC, nothing else
    ttls = [redis_server.client().pttl(k) for k in entries]  # type: ignore[attr-defined]
    assert all(ttl > 0 for ttl in ttls)


def test_an_entry_copied_to_another_key_does_not_decrypt(shared_env: Env, entra: EntraEmulator, world: World,
                                                         powerbi: PowerBIEmulator, call: Call,
                                                         redis_server: RedisServer) -> None:
    alice = embed(call, user(entra), world.plain_report, world.sales)
    assert alice.status == 200, alice.text
    client: Any = redis_server.client()
    embeds = [k for k in client.keys("tb:embed token:*")]
    assert len(embeds) == 1
    # Plant Alice's entry under the key names of the other cache kinds: none of them decrypts.
    for other in client.keys("tb:powerbi metadata:*"):
        client.set(other, client.get(embeds[0]))
    client.delete(embeds[0])  # so that the next instance mints, reading the (planted) metadata
    runtime.reset()
    before = powerbi.report_lookups()
    again = embed(call, user(entra), world.plain_report, world.sales)
    assert again.status == 200, again.text
    assert powerbi.report_lookups() == before + 1  # the planted value was a miss, not a wrong answer


def test_key_rotation_new_version_encrypts_previous_decrypts(shared_env: Env, entra: EntraEmulator, world: World,
                                                             powerbi: PowerBIEmulator, call: Call,
                                                             vault: KeyVaultEmulator) -> None:
    first = embed(call, user(entra), world.plain_report, world.sales)
    assert first.status == 200, first.text
    time.sleep(1.1)  # Key Vault's "created" has a resolution of one second: the newest must be newer
    vault.set_secret(CACHE_KEY_SECRET, new_cache_key())  # rotation: a new version
    runtime.reset()  # an instance that reads the keys now
    second = embed(call, user(entra), world.plain_report, world.sales)
    assert second.json()["token"] == first.json()["token"]  # the previous version still decrypts
    assert powerbi.generate_token_calls() == 1
    other = embed(call, user(entra), world.second_report, world.sales)  # a new entry: under the new version
    assert other.status == 200
    versions = [v.version for v in vault.versions(CACHE_KEY_SECRET)]
    vault.disable_secret(CACHE_KEY_SECRET, versions[-2])  # the old version retired
    time.sleep(1.1)
    vault.set_secret(CACHE_KEY_SECRET, new_cache_key())  # and a third one is now the newest
    runtime.reset()
    third = embed(call, user(entra), world.second_report, world.sales)
    assert third.json()["token"] == other.json()["token"]  # the second version, now previous, decrypts
    fourth = embed(call, user(entra), world.plain_report, world.sales)
    assert fourth.status == 200 and fourth.json()["token"] != first.json()["token"]  # unknown version: a miss
    assert powerbi.generate_token_calls() == 3


def test_an_unknown_key_version_is_a_miss_not_an_error(shared_env: Env, entra: EntraEmulator, world: World,
                                                       powerbi: PowerBIEmulator, call: Call,
                                                       redis_server: RedisServer) -> None:
    assert embed(call, user(entra), world.plain_report, world.sales).status == 200
    client: Any = redis_server.client()
    for key in client.keys("tb:*"):
        value = client.get(key)
        client.set(key, value[:1] + b"\xff" * 8 + value[9:])  # a version tag nobody has
    runtime.reset()
    assert embed(call, user(entra), world.plain_report, world.sales).status == 200
    assert powerbi.generate_token_calls() == 2


def test_redis_without_an_encryption_key_is_a_configuration_error(env: Env, entra: EntraEmulator,
                                                                  powerbi: PowerBIEmulator, world: World,
                                                                  redis_server: RedisServer, call: Call) -> None:
    env.set(**embed_settings(entra, powerbi, world), CACHE_REDIS_HOST=redis_server.address, CACHE_REDIS_AUTH="none")
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert problem["setting"] == "CACHE_ENCRYPTION_KEY_URI"
    assert "openssl rand -base64 32" in problem["problems"][0]["message"]


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"16 bytes only...").decode()])
def test_a_key_that_is_not_32_bytes_fails_closed(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                 world: World, redis_server: RedisServer, vault: KeyVaultEmulator,
                                                 call: Call, value: str, shared_identity: str) -> None:
    vault.set_secret("bad-cache-key", value)
    env.set(**embed_settings(entra, powerbi, world),
            **shared_settings(redis_server, f"{vault.vault_url}/secrets/bad-cache-key", shared_identity))
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    assert problem["problems"][0]["setting"] == "CACHE_ENCRYPTION_KEY_URI"
    assert value not in json.dumps(problem)
    response = embed(call, user(entra), world.plain_report, world.sales)
    assert_problem(response, 503, "cache_encryption_key_invalid")
    assert raw_entries(redis_server) == {}


def test_a_key_the_app_may_not_read_fails_closed(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator,
                                                 world: World, redis_server: RedisServer, vault: KeyVaultEmulator,
                                                 call: Call, shared_identity: str) -> None:
    env.set(**embed_settings(entra, powerbi, world),
            **shared_settings(redis_server, f"{vault.vault_url}/secrets/no-such-cache-key", shared_identity))
    response = embed(call, user(entra), world.plain_report, world.sales)
    problem = assert_problem(response, 503, "cache_encryption_key_unusable")
    assert problem["setting"] == "CACHE_ENCRYPTION_KEY_URI"
    assert powerbi.generate_token_calls() == 0


@pytest.mark.parametrize(("settings", "setting", "text"), [
    ({"CACHE_REDIS_HOST": "contoso.redis.azure.net"}, "CACHE_REDIS_HOST", "host:port"),
    ({"CACHE_REDIS_HOST": "contoso.redis.azure.net:10000", "CACHE_REDIS_AUTH": "none"}, "CACHE_REDIS_AUTH",
     "loopback"),
    ({"CACHE_REDIS_HOST": "contoso.redis.azure.net:10000", "CACHE_REDIS_AUTH": "password"}, "CACHE_REDIS_PASSWORD",
     "access key"),
    ({"CACHE_REDIS_HOST": "contoso.redis.azure.net:10000", "CACHE_REDIS_AUTH": "password",
      "CACHE_REDIS_PASSWORD": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/redis)"},
     "CACHE_REDIS_PASSWORD", "Key Vault reference"),
    ({"CACHE_REDIS_HOST": "contoso.redis.azure.net:10000",
      "CACHE_ENCRYPTION_KEY_URI": "https://v.vault.azure.net/secrets/k/0123456789abcdef0123456789abcdef"},
     "CACHE_ENCRYPTION_KEY_URI", "versionless"),
])
def test_bad_cache_settings_name_the_setting(env: Env, call: Call, settings: dict[str, str], setting: str,
                                             text: str) -> None:
    settings.setdefault("CACHE_ENCRYPTION_KEY_URI", "https://v.vault.azure.net/secrets/k")
    env.set(**settings)
    problem = assert_problem(call("GET", "/api/health"), 503, "configuration_invalid")
    messages = [p["message"] for p in problem["problems"] if p["setting"] == setting]
    assert messages and text in messages[0], problem


def test_without_redis_nothing_of_it_is_imported(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("import sys, os; os.environ.update(POWERBI_TENANT_ID='contoso.com', POWERBI_CLIENT_ID="
              "'6731de76-14a6-49ae-97bc-6eba6914391e', POWERBI_CLIENT_SECRET='x', CALLER_AUTH='anonymous');"
              "import function_app; from token_broker import runtime; runtime.current_broker();"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'redis_entraid', 'cryptography') "
              "or m.startswith('token_broker.shared')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_entra_auth_sends_the_identitys_object_id_and_a_redis_token_over_tls(
        env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call, cache_key_uri: str,
        app_identity: ManagedIdentity, ca: DevCertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    """CACHE_REDIS_AUTH=entra through redis-entraid over the app's managed identity (the emulator's).

    A local redis-server cannot validate Entra ID tokens, so the test gives it an ACL user named after the
    identity's object id whose password is the token the identity gets for https://redis.azure.com (the
    broker's credential shares azure-identity's token cache, so it sends that same token): Redis then admits
    exactly what Azure Managed Redis would, user name and token, over TLS.
    """
    monkeypatch.setenv("SSL_CERT_FILE", ca.ca_bundle_path)
    identity = AppIdentity(client_id=app_identity.client_id, on_managed_identity_host=True)
    token = app_credential(identity).get_token("https://redis.azure.com/.default").token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["oid"] == app_identity.principal_id and claims["aud"].startswith("https://redis.azure.com")
    with RedisServer(tls_ca=ca) as server:
        admin: Any = server.client()
        admin.execute_command("ACL", "SETUSER", app_identity.principal_id, "on", f">{token}", "~*", "&*", "+@all")
        admin.execute_command("ACL", "SETUSER", "default", "off")  # only the identity gets in
        env.set(**embed_settings(entra, powerbi, world), **{
            **shared_settings(server, cache_key_uri, app_identity.client_id), "CACHE_REDIS_AUTH": "entra"})
        response = embed(call, user(entra), world.plain_report, world.sales)
        assert response.status == 200, response.text
        shared = runtime.current_broker().shared
        assert shared is not None and shared.connection.failures == 0
        users: Any = server.client(username=app_identity.principal_id, password=token)
        assert users.keys("tb:embed token:*")


def test_a_passing_key_vault_failure_skips_the_tier_without_failing_requests(
        shared_env: Env, entra: EntraEmulator, world: World, powerbi: PowerBIEmulator, call: Call,
        vault: KeyVaultEmulator, redis_server: RedisServer) -> None:
    vault.throttle(None, retry_after=0)  # every secret request: 429 (after the SDK's own retries too)
    first = embed(call, user(entra), world.plain_report, world.sales)
    assert first.status == 200, first.text
    reads = vault.secret_reads(CACHE_KEY_SECRET)
    second = embed(call, user(entra, BOB), world.plain_report, world.sales)
    assert second.status == 200, second.text
    assert vault.secret_reads(CACHE_KEY_SECRET) == reads  # not read again for every request meanwhile
    assert raw_entries(redis_server) == {}  # nothing stored without the key
    assert powerbi.generate_token_calls() == 2


def test_the_proxys_metadata_is_shared_too(env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World,
                                           call: Call, redis_server: RedisServer, cache_key_uri: str,
                                           shared_identity: str) -> None:
    env.set(**embed_settings(entra, powerbi, world, POWERBI_PROXY_ENABLED="true",
                             POWERBI_PROXY_QUERY_CACHE_SECONDS="0"),
            **shared_settings(redis_server, cache_key_uri, shared_identity))
    url = f"/api/powerbi/v1.0/myorg/groups/{world.sales}/datasets/{world.plain_dataset}/executeQueries"
    for n in range(2):
        runtime.reset()  # each query from a new instance
        response = call("POST", url, headers=user(entra), json={"queries": [{"query": f"EVALUATE T{n}"}]})
        assert response.status == 200, response.text
    assert powerbi.dataset_lookups() == 1  # the second instance read the dataset's RLS flags from Redis
    assert powerbi.execute_queries_calls() == 2
    client: Any = redis_server.client()
    assert len(client.keys("tb:proxy metadata:*")) == 1
