"""POWERBI_PROFILE_CLAIM and POWERBI_PROFILES: parsed and validated by load_settings, every problem named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.local_settings import load_local_settings
from token_broker.callers.caller import Caller
from token_broker.callers.profiles import resolve_profile
from token_broker.config.contract import load_settings
from token_broker.config.profiles import Profile
from token_broker.support.errors import ConfigurationError, CustomerNotMappedError

TENANT = "0ff1ce00-0000-4000-8000-00000000d0c5"
CLIENT = "0ff1ce00-0000-4000-8000-0000000b40c3"
P1 = "b2ded813-54b7-43f4-b072-ed4c1f9d5824"
P2 = "3b211778-e7a5-4d73-8187-f10824047724"
W1 = "0ff1ce00-0000-4000-8000-00000000da7a"
BASE = {"POWERBI_TENANT_ID": TENANT, "POWERBI_CLIENT_ID": CLIENT, "POWERBI_CLIENT_SECRET": "a-secret-value-123",
        "CALLER_AUTH": "jwt", "CALLER_JWT_ISSUER": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "CALLER_JWT_AUDIENCE": "api://broker"}


def problems_of(environ: dict[str, str], store: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ, store=store)
    return {p.setting: p.message for p in caught.value.problems if p.severity == "error"}


def test_unset_means_no_profile_mode() -> None:
    settings = load_settings(BASE)
    assert not settings.profiles.enabled and not settings.tokens.profiles
    caller = Caller("jwt", subject="s", claims={"customer": "a"})
    assert resolve_profile(caller, settings.profiles) is caller


def test_a_mapping_of_ids_and_objects() -> None:
    settings = load_settings({**BASE, "POWERBI_PROFILE_CLAIM": "customer", "POWERBI_PROFILES": json.dumps(
        {"a": P1.upper(), "b": {"profileId": P2, "workspaces": [W1.upper()]}})})
    profiles = settings.profiles
    assert profiles.enabled and profiles.claim == "customer" and profiles.source == "POWERBI_PROFILES"
    assert profiles.customers["a"] == Profile("a", P1, None)
    assert profiles.customers["b"] == Profile("b", P2, frozenset({W1}))
    assert settings.tokens.profiles
    assert settings.embed.workspaces_for(profiles.customers["b"]) == frozenset({W1})
    assert settings.embed.workspaces_for(profiles.customers["a"]) is None  # no list at all: nothing is served


def test_every_list_that_is_set_applies() -> None:
    settings = load_settings({**BASE, "EMBED_ALLOWED_WORKSPACES": W1, "POWERBI_PROFILE_CLAIM": "customer",
                              "POWERBI_PROFILES": json.dumps({"a": P1, "b": {"profileId": P2, "workspaces": [P1]}})})
    assert settings.embed.workspaces_for(settings.profiles.customers["a"]) == frozenset({W1})
    assert settings.embed.workspaces_for(settings.profiles.customers["b"]) == frozenset()


@pytest.mark.parametrize(("value", "setting", "words"), [
    ("not json", "POWERBI_PROFILES", "JSON object"),
    ("[1, 2]", "POWERBI_PROFILES", "JSON object"),
    (json.dumps({"a": "not-a-guid"}), "POWERBI_PROFILES", "not a GUID"),
    (json.dumps({"a": "00000000-0000-0000-0000-000000000000"}), "POWERBI_PROFILES", "not a GUID"),
    (json.dumps({"a": 7}), "POWERBI_PROFILES", "not a GUID"),
    (json.dumps({" ": P1}), "POWERBI_PROFILES", "empty"),
    (json.dumps({"a": {"id": P1}}), "POWERBI_PROFILES", "profileId"),
    (json.dumps({"a": {"profileId": P1, "workspaces": []}}), "POWERBI_PROFILES", "non-empty list"),
    (json.dumps({"a": {"profileId": P1, "workspaces": ["x"]}}), "POWERBI_PROFILES", "non-empty list"),
    (json.dumps({"a": P1, "b": P1.upper()}), "POWERBI_PROFILES", "same profile"),
    (json.dumps({}), "POWERBI_PROFILES", "no customer"),
])
def test_a_bad_mapping_names_the_setting_without_echoing_values(value: str, setting: str, words: str) -> None:
    problems = problems_of({**BASE, "POWERBI_PROFILE_CLAIM": "customer", "POWERBI_PROFILES": value})
    assert words in problems[setting]
    assert "not-a-guid" not in problems[setting] and P1 not in problems[setting].lower()


def test_a_mapping_without_a_claim_and_a_bad_claim_name() -> None:
    assert "POWERBI_PROFILE_CLAIM is not set" in problems_of({**BASE, "POWERBI_PROFILES": json.dumps({"a": P1})})[
        "POWERBI_PROFILE_CLAIM"]
    assert "not a claim name" in problems_of({**BASE, "POWERBI_PROFILE_CLAIM": "cust omer",
                                              "POWERBI_PROFILES": json.dumps({"a": P1})})["POWERBI_PROFILE_CLAIM"]


@pytest.mark.parametrize("grant", ["password", "on_behalf_of"])
def test_user_grants_are_refused(grant: str) -> None:
    extra = {"POWERBI_USERNAME": "m@contoso.com", "POWERBI_PASSWORD": "p"} if grant == "password" else {}
    problems = problems_of({**BASE, **extra, "POWERBI_GRANT_TYPE": grant, "CALLER_JWT_AUDIENCE": f"api://{CLIENT}",
                            "POWERBI_PROFILE_CLAIM": "tid", "POWERBI_PROFILES": json.dumps({TENANT: P1})})
    assert "client_credentials" in problems["POWERBI_GRANT_TYPE"]


@pytest.mark.parametrize("mode", ["anonymous", "function_key"])
def test_unverified_caller_modes_are_refused(mode: str) -> None:
    problems = problems_of({**BASE, "CALLER_AUTH": mode, "POWERBI_PROFILE_CLAIM": "tid",
                            "POWERBI_PROFILES": json.dumps({TENANT: P1})})
    assert "jwt or easyauth" in problems["CALLER_AUTH"]


def test_store_key_values_map_customers_and_json_values_are_objects() -> None:
    store = {"Profiles:a": P1, "Profiles:b": json.dumps({"profileId": P2, "workspaces": [W1]}),
             "POWERBI_PROFILE_CLAIM": "customer"}
    profiles = load_settings(BASE, store=store).profiles
    assert profiles.source == "App Configuration"
    assert profiles.customers["b"].workspaces == frozenset({W1}) and profiles.customers["a"].profile_id == P1
    problems = problems_of({**BASE, "POWERBI_PROFILES": json.dumps({"c": P2})}, store=store)
    assert "one of the two" in problems["POWERBI_PROFILES"]
    problems = problems_of(BASE, store={**store, "Profiles:c": "nope"})
    assert "TokenBroker:Profiles:*" in problems["POWERBI_PROFILES"]


def test_profiles_from_local_settings_json(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    values = {**BASE, "POWERBI_PROFILE_CLAIM": "tid", "POWERBI_PROFILES": json.dumps({TENANT: P1})}
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    environ: dict[str, str] = {}
    load_local_settings(path).apply_to_environ(environ)
    assert load_settings(environ).profiles.customers[TENANT].profile_id == P1


def test_resolution_is_from_the_verified_claim_only() -> None:
    profiles = load_settings({**BASE, "POWERBI_PROFILE_CLAIM": "customer",
                              "POWERBI_PROFILES": json.dumps({"a": P1})}).profiles
    resolved = resolve_profile(Caller("jwt", subject="s", claims={"customer": "a"}), profiles)
    assert resolved.profile == Profile("a", P1)
    with pytest.raises(CustomerNotMappedError) as caught:
        resolve_profile(Caller("anonymous", claims={"customer": "a"}), profiles)  # not verified: no claims count
    assert caught.value.code == "caller_customer_missing"
    with pytest.raises(CustomerNotMappedError) as caught:
        resolve_profile(Caller("jwt", subject="s", claims={"customer": "A"}), profiles)  # exact match only
    assert caught.value.code == "caller_customer_unknown"


def test_customers_without_any_workspace_list_are_a_warning() -> None:
    settings = load_settings({**BASE, "POWERBI_PROFILE_CLAIM": "customer", "POWERBI_PROFILES": json.dumps(
        {"a": P1, "b": {"profileId": P2, "workspaces": [W1]}})})
    warnings = [w for w in settings.warnings if w.setting == "POWERBI_PROFILES"]
    assert len(warnings) == 1 and "1 customer(s)" in warnings[0].message
    settings = load_settings({**BASE, "EMBED_ALLOWED_WORKSPACES": W1, "POWERBI_PROFILE_CLAIM": "customer",
                              "POWERBI_PROFILES": json.dumps({"a": P1})})
    assert not [w for w in settings.warnings if w.setting == "POWERBI_PROFILES"]
