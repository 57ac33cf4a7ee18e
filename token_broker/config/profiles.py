"""Multitenancy settings: which caller claim names the customer, and each customer's Power BI profile.

A Power BI *service principal profile* is an identity the broker's service principal creates for one customer;
the customer's workspaces belong to it, and a Power BI call made with ``X-PowerBI-Profile-Id`` sees only them.
``POWERBI_PROFILE_CLAIM`` names the verified caller claim that says which customer a caller belongs to (``tid``
when each customer signs in with its own Entra tenant, or a custom claim); ``POWERBI_PROFILES`` maps customers
to profiles, as a JSON object::

    {"<customer>": "<profile id>",
     "<customer>": {"profileId": "<profile id>", "workspaces": ["<workspace id>", ...]}}

or, in an App Configuration store, one key-value per customer: ``TokenBroker:Profiles:<customer>`` whose value
is the profile id (or the same JSON object). The store form scales to many customers (one key each, no single
value near the store's size limit) and is read by the same :func:`~token_broker.config.contract.load_settings`.
A customer's ``workspaces`` narrow the embed and proxy allow-lists for its callers (docs/MULTITENANCY.md).

Unset (both settings empty, no ``Profiles:`` key): the broker works as a single identity, exactly as before.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .reader import SettingReader, SettingSpec, is_guid

PROFILE_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("POWERBI_PROFILE_CLAIM", "Multitenancy: the verified caller claim naming the customer (e.g. tid); "
                "with POWERBI_PROFILES, every Power BI call is made as that customer's service principal profile."),
    SettingSpec("POWERBI_PROFILES", "Multitenancy: JSON object customer -> profile id, or -> {\"profileId\": ..., "
                "\"workspaces\": [...]}; or App Configuration keys TokenBroker:Profiles:<customer>."),
)
#: Store keys (prefix ``TokenBroker:`` already trimmed) that each map one customer: ``Profiles:<customer>``.
STORE_PREFIX = "Profiles:"
MAX_CUSTOMER_LENGTH = 256
_SHOWN = 40  # characters of a customer id quoted in a problem


@dataclass(frozen=True)
class Profile:
    """One customer's Power BI service principal profile (ids lower-cased)."""

    customer: str
    profile_id: str
    #: The customer's own workspace allow-list; None: only EMBED_ALLOWED_WORKSPACES applies.
    workspaces: frozenset[str] | None = None


@dataclass(frozen=True)
class ProfileSettings:
    """Validated multitenancy settings; ``claim`` is None when profiles are off."""

    claim: str | None = None
    customers: Mapping[str, Profile] = field(default_factory=dict, compare=False, hash=False)
    #: Where the mapping came from: "POWERBI_PROFILES" or "App Configuration" (None when off).
    source: str | None = None

    @property
    def enabled(self) -> bool:
        """True in profile mode: every Power BI call is made as the caller's customer's profile."""
        return self.claim is not None

    @property
    def profile_ids(self) -> frozenset[str]:
        """Every configured profile id (for the doctor's check that each exists)."""
        return frozenset(p.profile_id for p in self.customers.values())

    @property
    def listed_workspaces(self) -> frozenset[str]:
        """Every workspace some customer lists (empty when none lists any)."""
        return frozenset(w for p in self.customers.values() for w in (p.workspaces or ()))


def _shown(customer: str) -> str:
    return customer if len(customer) <= _SHOWN else customer[:_SHOWN] + "..."


def _nonzero_guid(value: object) -> bool:
    return is_guid(value) and uuid.UUID(value).int != 0


def _profile(read: SettingReader, name: str, customer: str, value: Any) -> Profile | None:
    """One customer's entry: a profile id, or {"profileId": ..., "workspaces": [...]}; None after a problem.

    ``name`` is where the mapping was read (POWERBI_PROFILES or the store's keys); problems are filed under
    POWERBI_PROFILES, the setting the store form stands for.
    """
    where = f"customer '{_shown(customer)}'"

    def problem(message: str) -> None:
        read.problem("POWERBI_PROFILES", message)

    if not customer.strip() or len(customer) > MAX_CUSTOMER_LENGTH:
        problem(f"{name} has a customer id that is empty or longer than {MAX_CUSTOMER_LENGTH} characters.")
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            problem(f"{name}: the entry of {where} is neither a profile id nor a JSON object.")
            return None
    workspaces: frozenset[str] | None = None
    if isinstance(value, dict):
        if set(value) - {"profileId", "workspaces"} or "profileId" not in value:
            problem(f"{name}: the entry of {where} must be {{\"profileId\": \"<GUID>\", \"workspaces\": "
                    "[\"<GUID>\", ...]}} (workspaces optional).")
            return None
        listed = value.get("workspaces")
        if listed is not None:
            if not (isinstance(listed, list) and listed and all(_nonzero_guid(w) for w in listed)):
                problem(f"{name}: the workspaces of {where} must be a non-empty list of workspace GUIDs.")
                return None
            workspaces = frozenset(str(w).lower() for w in listed)
        value = value["profileId"]
    if not isinstance(value, str) or not _nonzero_guid(value.strip()):
        problem(f"{name}: the profile id of {where} is not a GUID (the id that 'python -m token_broker "
                "profiles create' or Power BI's Profiles API returned).")
        return None
    return Profile(customer, value.strip().lower(), workspaces)


def _mapping(read: SettingReader) -> tuple[dict[str, Any], str | None]:
    """The raw customer -> entry mapping and the setting it came from (POWERBI_PROFILES or the store keys)."""
    in_store = {k[len(STORE_PREFIX):]: v for k, v in read.environ.items() if k.startswith(STORE_PREFIX)}
    if read.is_set("POWERBI_PROFILES"):
        if in_store:
            read.problem("POWERBI_PROFILES", "Customers are mapped both in POWERBI_PROFILES and in "
                         "TokenBroker:Profiles:* key-values of App Configuration; keep one of the two.")
            return {}, None
        try:
            parsed = json.loads(read.raw("POWERBI_PROFILES") or "")
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            read.problem("POWERBI_PROFILES", "POWERBI_PROFILES must be a JSON object mapping each customer id to its "
                         "profile id, such as {\"<customer>\": \"<profile GUID>\"}.")
            return {}, None
        return parsed, "POWERBI_PROFILES"
    return in_store, ("App Configuration" if in_store else None)


def read_profile_settings(read: SettingReader, *, grant_type: str, caller_auth: str | None) -> ProfileSettings:
    """Read and validate the multitenancy settings, adding problems to ``read``."""
    before = len(read.problems)
    raw, source = _mapping(read)
    mapping_failed = len(read.problems) > before
    claim = read.raw("POWERBI_PROFILE_CLAIM")
    if claim is None and not raw and source is None and not read.is_set("POWERBI_PROFILES"):
        return ProfileSettings()
    name = "POWERBI_PROFILES" if source != "App Configuration" else f"TokenBroker:{STORE_PREFIX}*"
    customers: dict[str, Profile] = {}
    for customer, value in raw.items():
        profile = _profile(read, name, str(customer), value)
        if profile is not None:
            customers[profile.customer] = profile
    owners: dict[str, str] = {}
    for profile in customers.values():
        if profile.profile_id in owners:
            read.problem("POWERBI_PROFILES", f"{name} maps customers '{_shown(owners[profile.profile_id])}' and "
                         f"'{_shown(profile.customer)}' to the same profile, so each would see the other's content; "
                         "give every customer its own profile.")
        owners.setdefault(profile.profile_id, profile.customer)
    if claim is None:
        read.problem("POWERBI_PROFILE_CLAIM", "Customers are mapped to profiles, but POWERBI_PROFILE_CLAIM is not set; "
                     "name the caller claim that says which customer a caller belongs to (such as tid).")
    elif not claim.replace("_", "").replace(".", "").replace(":", "").replace("/", "").replace("-", "").isalnum():
        read.problem("POWERBI_PROFILE_CLAIM", "POWERBI_PROFILE_CLAIM is not a claim name (letters, digits, _ . : / - "
                     "only).")
    elif not raw and not mapping_failed:
        read.problem("POWERBI_PROFILES", "POWERBI_PROFILE_CLAIM is set, but no customer is mapped to a profile: set "
                     "POWERBI_PROFILES, or TokenBroker:Profiles:<customer> key-values in App Configuration.")
    if grant_type != "client_credentials":
        read.problem("POWERBI_GRANT_TYPE", f"Service principal profiles belong to a service principal, and "
                     f"POWERBI_GRANT_TYPE={grant_type} signs in as a user, who cannot use them. Use "
                     "POWERBI_GRANT_TYPE=client_credentials with profiles, or remove POWERBI_PROFILE_CLAIM and "
                     "POWERBI_PROFILES.")
    if caller_auth in ("anonymous", "function_key"):
        read.problem("CALLER_AUTH", f"Profiles map each caller to a customer through a verified claim, and "
                     f"CALLER_AUTH={caller_auth} verifies none. Use CALLER_AUTH=jwt or easyauth with profiles.")
    return ProfileSettings(claim=claim, customers=customers, source=source)
