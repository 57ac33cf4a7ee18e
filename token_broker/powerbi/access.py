"""Whom a Power BI call is made as: :class:`PowerBIAccess`, the one value every Power BI request is built from.

Every method of :class:`~token_broker.powerbi.client.PowerBIClient` and every call the proxy forwards takes a
:class:`PowerBIAccess` and builds its headers from it alone, so a call cannot go out without the caller's
``X-PowerBI-Profile-Id`` in profile mode: :func:`access_for` is how a caller's access is obtained, and
:meth:`TokenService.token_for` refuses a caller without a profile then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..aad.tokens import TokenService
from ..callers.caller import Caller

#: The header that makes a Power BI REST call act as a service principal profile (Power BI's SDK spells it
#: ``X-PowerBI-profile-id``; HTTP header names are case-insensitive).
PROFILE_HEADER = "X-PowerBI-Profile-Id"


@dataclass(frozen=True)
class PowerBIAccess:
    """An Azure AD access token for Power BI and the service principal profile to act as (None: the principal).

    ``repr`` never shows the token.
    """

    token: str = field(repr=False)
    profile_id: str | None = None

    def headers(self) -> dict[str, str]:
        """The request headers of a Power BI REST call made with this access."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if self.profile_id is not None:
            headers[PROFILE_HEADER] = self.profile_id
        return headers


def access_for(tokens: TokenService, caller: Caller, *, min_remaining: float = 0.0) -> PowerBIAccess:
    """How Power BI is called for ``caller``: the configured grant's token, as the caller's profile if any."""
    token = tokens.token_for(caller, min_remaining=min_remaining)  # 403 in profile mode without a profile
    return PowerBIAccess(token.value, caller.profile.profile_id if caller.profile is not None else None)
