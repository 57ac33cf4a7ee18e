"""Multitenancy policy: which Power BI service principal profile a verified caller's requests are made as.

The customer comes from one verified claim (``POWERBI_PROFILE_CLAIM``), the profile from the configured mapping
(``POWERBI_PROFILES`` or ``TokenBroker:Profiles:<customer>``); never from a header, a body or a query string.
A caller without the claim, or whose customer has no profile, is refused with ``403`` before any upstream call.
"""

from __future__ import annotations

import dataclasses

from ..config.profiles import ProfileSettings
from ..support.errors import CustomerNotMappedError
from .caller import Caller


def resolve_profile(caller: Caller, settings: ProfileSettings) -> Caller:
    """``caller`` with its customer's profile (profile mode), or unchanged (profiles off).

    Raises :class:`CustomerNotMappedError` (403) when the caller is not verified, has no usable claim, or
    belongs to a customer without a profile.
    """
    if not settings.enabled or settings.claim is None:
        return caller
    value = caller.claims.get(settings.claim) if caller.verified else None
    if not isinstance(value, str) or not value:
        raise CustomerNotMappedError(
            f"Your sign-in does not say which customer you belong to (this API reads the '{settings.claim}' claim), "
            "so no report is served to you. Sign in with an account of a customer organisation.",
            code="caller_customer_missing", setting="POWERBI_PROFILE_CLAIM")
    profile = settings.customers.get(value)
    if profile is None:
        raise CustomerNotMappedError(
            "Your organisation is not set up for reports here yet: its administrator (or this app's operator) must "
            "onboard it. Operators: map the customer in POWERBI_PROFILES or TokenBroker:Profiles:<customer>.",
            code="caller_customer_unknown", setting="POWERBI_PROFILES")
    return dataclasses.replace(caller, profile=profile)
