"""Turn Azure AD (Entra ID) failures into actionable :class:`BrokerError` values.

Azure AD answers with ``error``, ``error_description`` ("AADSTSnnnn: ...") and ``error_codes``.
We map the codes people actually hit to a stable ``code``, the setting to fix and the fix itself.
Azure AD's own description is not echoed to callers (it can name users and apps); its trace and
correlation ids are, because support needs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..support.errors import (
    BrokerError,
    CallerAuthenticationError,
    StaleCredentialError,
    StalePasswordError,
    UpstreamError,
    UpstreamUnavailableError,
)
from ..support.transport import transport_error

_AADSTS = re.compile(r"AADSTS(\d{4,7})")
#: After a 5xx or 429 from Azure AD, MSAL answers the same error from memory for the reply's Retry-After
#: (5 s when it has none): retrying sooner only gets that replay, so callers are told to wait as long.
MSAL_REPLAY_SECONDS = 5


@dataclass(frozen=True)
class AadErrorRule:
    """What one AADSTS code means for us."""

    code: str
    title: str
    fix: str
    setting: str | None = None
    status: int = 502
    caller_status: int | None = None  # status when the caller's own identity caused it (on-behalf-of)
    #: The class raised as an upstream error: the stale-credential ones tell the token service to re-read it.
    error: type[UpstreamError] = UpstreamError


_RULES: dict[int, AadErrorRule] = {}


def _rule(numbers: tuple[int, ...], rule: AadErrorRule) -> None:
    for number in numbers:
        _RULES[number] = rule


_rule((7000215,), AadErrorRule(
    "aad_invalid_client_secret", "Azure AD rejected the client secret",
    "POWERBI_CLIENT_SECRET is not a valid secret of this app registration. Copy the secret's Value "
    "(not its Secret ID) from Certificates & secrets, or create a new secret.",
    "POWERBI_CLIENT_SECRET", error=StaleCredentialError))
_rule((7000222,), AadErrorRule(
    "aad_client_secret_expired", "The client secret has expired",
    "The secret in POWERBI_CLIENT_SECRET has expired. Create a new client secret for the app "
    "registration and update the setting (or the Key Vault secret it references).",
    "POWERBI_CLIENT_SECRET", error=StaleCredentialError))
_rule((700016,), AadErrorRule(
    "aad_unknown_client_id", "Azure AD does not know this application",
    "No application with the id in POWERBI_CLIENT_ID exists in tenant POWERBI_TENANT_ID. Use the "
    "Application (client) ID from the app registration's Overview page, in the tenant that owns it.",
    "POWERBI_CLIENT_ID"))
_rule((90002, 90023), AadErrorRule(
    "aad_unknown_tenant", "Azure AD does not know this tenant",
    "POWERBI_TENANT_ID does not name an existing tenant (or POWERBI_AUTHORITY_HOST is the wrong "
    "cloud). Use the Tenant ID from Entra ID > Overview.",
    "POWERBI_TENANT_ID"))
_rule((50126,), AadErrorRule(
    "aad_invalid_username_or_password", "Azure AD rejected the master user's credentials",
    "POWERBI_USERNAME or POWERBI_PASSWORD is wrong. Sign in once as this user in a browser to check.",
    "POWERBI_PASSWORD", error=StalePasswordError))
_rule((50034,), AadErrorRule(
    "aad_unknown_user", "Azure AD does not know the master user",
    "POWERBI_USERNAME does not exist in this tenant. Use the user's full sign-in name (UPN).",
    "POWERBI_USERNAME"))
_rule((50076, 50079, 50158), AadErrorRule(
    "aad_mfa_required", "Multi-factor authentication is required",
    "This user must complete multi-factor authentication, which the password grant cannot do. Set "
    "POWERBI_GRANT_TYPE=on_behalf_of so users sign in interactively in the browser, or use "
    "client_credentials with a service principal.",
    "POWERBI_GRANT_TYPE", caller_status=403))
_rule((65001, 65004), AadErrorRule(
    "aad_consent_required", "Consent for the Power BI permissions is missing",
    "Grant admin consent for the app registration's Power BI Service delegated permissions "
    "(API permissions > Grant admin consent), or have the user consent once.",
    "POWERBI_CLIENT_ID", caller_status=403))
_rule((53003, 53000, 53001), AadErrorRule(
    "aad_conditional_access_blocked", "A Conditional Access policy blocked the sign-in",
    "A Conditional Access policy blocks this sign-in. Ask your Entra ID administrator to review the "
    "sign-in log entry with the trace id below and exclude or adjust the policy for this app.",
    None, caller_status=403))
_rule((700027, 700023, 700024), AadErrorRule(
    "aad_invalid_client_assertion", "Azure AD rejected the client assertion",
    "The certificate the broker signed with is not registered on the app registration (Certificates & "
    "secrets), or has expired. Upload the certificate named by POWERBI_CLIENT_CERTIFICATE_URI.",
    "POWERBI_CLIENT_CERTIFICATE_URI", error=StaleCredentialError))
_rule((700211, 700212, 700213, 70021), AadErrorRule(
    "aad_no_matching_federated_credential", "No federated credential matches the managed identity",
    "The app registration has no federated identity credential for this managed identity. Add one with "
    "issuer https://login.microsoftonline.com/<tenant id>/v2.0, subject = the identity's principal (object) "
    "ID and audience api://AzureADTokenExchange, and check that AZURE_CLIENT_ID names that identity.",
    "AZURE_CLIENT_ID"))
_rule((500011, 70011, 1002012), AadErrorRule(
    "aad_invalid_scope", "Azure AD rejected the requested scope",
    "POWERBI_SCOPE does not name a resource known in this tenant. Use the default "
    "https://analysis.windows.net/powerbi/api/.default (or the sovereign cloud's equivalent).",
    "POWERBI_SCOPE"))
_rule((50013, 50027, 50132, 500133, 70000), AadErrorRule(
    "caller_token_rejected", "Azure AD rejected the caller's token",
    "Azure AD did not accept the caller's access token for the on-behalf-of exchange: it is expired, "
    "revoked or issued for another application. Sign in again and request a token for this API.",
    None, status=401, caller_status=401))


def aadsts_codes(payload: Mapping[str, Any]) -> list[int]:
    """The AADSTS numbers in an Azure AD error response (``error_codes``, else parsed from text)."""
    codes = payload.get("error_codes")
    if isinstance(codes, list) and all(isinstance(c, int) for c in codes) and codes:
        return list(codes)
    return [int(n) for n in _AADSTS.findall(str(payload.get("error_description", "")))]


def _support_ids(payload: Mapping[str, Any]) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    for source, target in (("trace_id", "aadTraceId"), ("correlation_id", "aadCorrelationId")):
        value = payload.get(source)
        if isinstance(value, str) and len(value) <= 64:
            ids[target] = value
    return ids


def from_aad_response(payload: Mapping[str, Any], *, on_behalf_of_caller: bool = False) -> BrokerError:
    """Map an MSAL error result (Azure AD's error JSON) to a :class:`BrokerError`.

    ``on_behalf_of_caller`` says the failing identity is the caller's (on-behalf-of), so user-level
    failures become 401/403 for the caller instead of 502 configuration errors.
    """
    codes = aadsts_codes(payload)
    extensions: dict[str, Any] = {"aadErrorCodes": codes, **_support_ids(payload)}
    error = str(payload.get("error", ""))
    for number in codes:
        rule = _RULES.get(number)
        if rule is None:
            continue
        status = rule.caller_status if (on_behalf_of_caller and rule.caller_status) else rule.status
        if status == 401:
            return CallerAuthenticationError(rule.fix, code=rule.code, title=rule.title, extensions=extensions)
        return rule.error(
            f"AADSTS{number}: {rule.fix}", code=rule.code, title=rule.title, status=status,
            setting=None if status < 500 else rule.setting, extensions=extensions,
        )
    if error in ("temporarily_unavailable", "server_error"):
        return UpstreamUnavailableError(
            "Azure AD is temporarily unavailable; try again shortly.", extensions=extensions,
            retry_after=MSAL_REPLAY_SECONDS,
        )
    shown = f"AADSTS{codes[0]}" if codes else (error or "an unexpected response")
    return UpstreamError(
        f"Azure AD answered {shown}. Look the code up in Microsoft's AADSTS error reference and "
        "docs/TROUBLESHOOTING.md; the trace id identifies the sign-in in Entra ID's logs.",
        extensions=extensions,
    )


def from_exception(err: Exception, *, during_discovery: bool = False) -> BrokerError:
    """Map an exception of an MSAL call to a :class:`BrokerError`, by type.

    Transport failures (requests) are mapped by :func:`~token_broker.support.transport.transport_error`.
    MSAL raises ``MsalServiceError`` for 5xx/429 replies (and replays them while throttled), and a
    ``ValueError`` when the authority's OpenID configuration cannot be read (``during_discovery``: while the
    MSAL application is created) or a reply is not JSON. msal is imported here only once it is loaded.
    """
    mapped = transport_error(err, service="Azure AD", setting="POWERBI_AUTHORITY_HOST")
    if mapped is not None:
        return mapped
    from msal.exceptions import MsalServiceError

    if isinstance(err, MsalServiceError):
        return UpstreamUnavailableError("Azure AD answered with an HTTP error status; try again shortly.",
                                        retry_after=MSAL_REPLAY_SECONDS)
    if isinstance(err, ValueError) and during_discovery:
        return UpstreamError(
            "The authority's OpenID configuration could not be read: POWERBI_TENANT_ID names no tenant, or "
            "POWERBI_AUTHORITY_HOST is another cloud's host. Use the Tenant ID from Entra ID > Overview.",
            code="aad_unknown_tenant", setting="POWERBI_TENANT_ID",
        )
    if isinstance(err, ValueError):
        return UpstreamError("Azure AD sent a response that could not be read; try again.", code="aad_bad_response")
    raise err
