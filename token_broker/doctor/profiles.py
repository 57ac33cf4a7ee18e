"""Stage 4 of the doctor in profile mode: every configured customer's Power BI profile exists, and its workspaces.

Profiles - Get Profiles lists the service principal's own profiles; each profile id in ``POWERBI_PROFILES`` (or
``TokenBroker:Profiles:<customer>``) must be among them, or every request of that customer's callers fails. A
customer's listed workspaces are then read as its profile (``X-PowerBI-Profile-Id``), exactly as the broker
will read them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..support.errors import BrokerError
from .check import FAIL, OK, WARN, Check, failed

if TYPE_CHECKING:
    from ..aad.tokens import AccessToken
    from ..config.contract import Settings

#: Customers listed one by one in the checklist; beyond this many only the failures are.
LISTED = 20


def check_profiles(add: Callable[[Check], None], settings: Settings, token: AccessToken) -> None:
    """Add the profile checks to the checklist."""
    from ..powerbi.access import PowerBIAccess
    from ..powerbi.client import PowerBIClient

    client = PowerBIClient(settings.api_url, timeout=settings.http_timeout_seconds)
    try:
        owned = {p.id: p.display_name for p in client.all_profiles(PowerBIAccess(token.value))}
    except BrokerError as err:
        add(failed("profiles", err, hint=" Profiles need the tenant setting 'Allow service principals to create and "
                   "use profiles' (Developer settings in the admin portal) for this service principal."))
        return
    profiles = settings.profiles
    add(Check("profiles", OK, f"the service principal owns {len(owned)} profile(s); {len(profiles.customers)} "
              f"customer(s) mapped (claim {profiles.claim}, from {profiles.source})"))
    customers = sorted(profiles.customers.values(), key=lambda p: p.customer)
    for number, profile in enumerate(customers):
        check = f"profile:{profile.customer}"
        if profile.profile_id not in owned:
            add(Check(check, FAIL, f"profile {profile.profile_id} is not one of the service principal's profiles",
                      f"Customer '{profile.customer}' is mapped to profile {profile.profile_id}, which Power BI does "
                      "not list for this service principal (deleted, or created by another one), so its callers get "
                      "errors. Create it with 'python -m token_broker profiles create <name>' and map the id it "
                      "prints, or correct the mapping.", "powerbi_not_authorized"))
            continue
        access = PowerBIAccess(token.value, profile.profile_id)
        problems: list[str] = []
        for workspace_id in sorted(profile.workspaces or ()):
            try:
                workspace = client.get_workspace(access, workspace_id)
            except BrokerError as err:
                problems.append(f"workspace {workspace_id}: {err.title}")
                continue
            if not workspace.on_dedicated_capacity:
                problems.append(f"workspace '{workspace.name}' is on shared capacity")
        if problems:
            add(Check(check, WARN if all("shared capacity" in p for p in problems) else FAIL,
                      f"profile '{owned[profile.profile_id]}': " + "; ".join(problems),
                      "Each listed workspace must belong to the customer's profile (create it with 'python -m "
                      "token_broker profiles create-workspace') and sit on an Embedded or Fabric capacity "
                      "(--capacity)."))
        elif number < LISTED:
            listed = f", {len(profile.workspaces)} workspace(s) visible to it" if profile.workspaces else ""
            add(Check(check, OK, f"profile '{owned[profile.profile_id]}' ({profile.profile_id}){listed}"))
