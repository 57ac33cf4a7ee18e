"""Typed errors of the token broker, one hierarchy in one module.

Every error a caller can see is a :class:`BrokerError`. It carries everything the HTTP layer needs to
write an RFC 9457 problem document (status, a stable ``code``, a title, a detail naming what to fix)
and nothing secret: messages are written here or in :mod:`token_broker.aad.errors`, never copied
from a credential or a token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Problem ``type`` URIs are ``PROBLEM_TYPE_BASE + code``; docs/TROUBLESHOOTING.md has one entry per code.
PROBLEM_TYPE_BASE = "urn:powerbi-token-broker:problem:"


@dataclass(frozen=True)
class SettingProblem:
    """One thing wrong with one setting: which setting, and what to do about it."""

    setting: str
    message: str
    severity: str = "error"  # "error" stops the broker; "warning" is reported by /api/health only

    def as_dict(self) -> dict[str, str]:
        return {"setting": self.setting, "message": self.message, "severity": self.severity}


class BrokerError(Exception):
    """Base of every error that becomes a problem response.

    Subclasses set the class defaults; instances may override them. ``extensions`` holds extra,
    non-secret members of the problem document (for example Azure AD's trace and correlation ids).
    """

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        title: str | None = None,
        setting: str | None = None,
        retry_after: int | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.setting = setting
        self.retry_after = retry_after
        self.extensions: dict[str, Any] = dict(extensions or {})

    @property
    def transient(self) -> bool:
        """True when retrying later may succeed without anyone changing anything."""
        return self.status in (429, 503, 504) and not isinstance(self, ConfigurationError)

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document for this error (without the request id)."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.setting:
            body["setting"] = self.setting
        body.update(self.extensions)
        return body


class ConfigurationError(BrokerError):
    """The app settings are incomplete or invalid; nothing a caller can fix."""

    status = 503
    code = "configuration_invalid"
    title = "The token broker is not configured correctly"

    def __init__(self, problems: Sequence[SettingProblem], *, code: str | None = None) -> None:
        errors = [p for p in problems if p.severity == "error"]
        names = ", ".join(dict.fromkeys(p.setting for p in errors))
        super().__init__(
            f"Fix these app settings: {names}. GET /api/health lists each problem.",
            code=code,
            setting=errors[0].setting if len(errors) == 1 else None,
            extensions={"problems": [p.as_dict() for p in problems]},
        )
        self.problems = list(problems)


class CallerAuthNotConfiguredError(BrokerError):
    """``CALLER_AUTH`` is unset: the broker fails closed."""

    status = 503
    code = "caller_auth_not_configured"
    title = "Caller authentication is not configured"


class RequestError(BrokerError):
    """The caller's request is malformed (4xx other than authentication)."""

    status = 400
    code = "bad_request"
    title = "The request is not valid"


class MethodNotAllowedError(RequestError):
    """The HTTP method is not supported by the endpoint; ``allow`` lists the ones that are."""

    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"

    def __init__(self, method: str, allow: Sequence[str]) -> None:
        super().__init__(
            f"{method} is not supported here; use {' or '.join(allow)}.",
            extensions={"allow": list(allow)},
        )
        self.allow = list(allow)


class CallerAuthenticationError(BrokerError):
    """The caller is not authenticated (401). Details that would help an attacker stay in the log."""

    status = 401
    code = "caller_unauthenticated"
    title = "Authentication required"


class CallerTokenMissingError(CallerAuthenticationError):
    """No bearer token was sent where one is required (401 with a bare ``WWW-Authenticate: Bearer``)."""

    code = "caller_token_missing"


class CallerForbiddenError(BrokerError):
    """The caller is authenticated but may not have what it asked for (403)."""

    status = 403
    code = "caller_forbidden"
    title = "Forbidden"


class CustomerNotMappedError(CallerForbiddenError):
    """Profile mode: the verified caller names no customer, or a customer without a profile (403, no upstream call)."""

    code = "caller_customer_unknown"


class RateLimitedError(BrokerError):
    """The caller has used up its requests for now (429 with ``Retry-After``)."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"


class KeyVaultError(BrokerError):
    """A secret could not be read from Key Vault (503): the message names the cause and the setting."""

    status = 503
    code = "keyvault_error"
    title = "A secret could not be read from Key Vault"


class ManagedIdentityUnavailableError(BrokerError):
    """The app's own identity (managed identity, or the Azure CLI login off Azure) gave no token (503)."""

    status = 503
    code = "managed_identity_unavailable"
    title = "The app's identity is unavailable"


class AppConfigurationError(BrokerError):
    """Settings could not be loaded from the App Configuration store (503)."""

    status = 503
    code = "appconfig_unavailable"
    title = "Settings could not be loaded from App Configuration"


class CredentialError(BrokerError):
    """The configured client credential cannot be used (503), e.g. a certificate that does not parse."""

    status = 503
    code = "credential_invalid"
    title = "The client credential cannot be used"


class PowerBIError(BrokerError):
    """Power BI refused or failed a request; ``powerBiRequestId`` identifies it for Microsoft support."""

    status = 502
    code = "powerbi_error"
    title = "Power BI refused the request"


class PowerBIBadResponseError(PowerBIError):
    """Power BI answered with something that is not the expected JSON (502)."""

    code = "powerbi_bad_response"


class PowerBIBadRequestError(PowerBIError):
    """Power BI refused the request for a reason without a more specific class (502)."""

    code = "powerbi_bad_request"


class PowerBINotAuthorizedError(PowerBIError):
    """Power BI answered 401: the principal may not use the API or the workspace (502)."""

    code = "powerbi_not_authorized"


class PowerBIForbiddenError(PowerBIError):
    """Power BI answered 403: the principal's workspace role does not allow the call (502)."""

    code = "powerbi_forbidden"


class PowerBINotFoundError(PowerBIError):
    """Power BI has no such item, or the principal cannot see it (404)."""

    status = 404
    code = "powerbi_not_found"
    title = "Not found in Power BI"


class PowerBIEffectiveIdentityError(PowerBIError):
    """Power BI refused the effective identity (row-level security) of an embed token (403)."""

    status = 403
    code = "powerbi_effective_identity"


class PowerBITokenExpired(PowerBIError):
    """Power BI judged the Azure AD token expired (skew, revocation): forget it and retry once (503)."""

    status = 503
    code = "powerbi_token_expired"


class PowerBIEmbedQuotaExceededError(PowerBIError):
    """Shared capacity allows no more embed tokens (503)."""

    status = 503
    code = "powerbi_embed_quota_exceeded"


class PowerBIThrottledError(PowerBIError):
    """Power BI is throttling requests (429 with ``Retry-After``)."""

    status = 429
    code = "powerbi_throttled"
    title = "Power BI is throttling requests"


class PowerBIUnavailableError(PowerBIError):
    """Power BI answered with a server error (503)."""

    status = 503
    code = "powerbi_unavailable"
    title = "Power BI is unavailable"


class PowerBIUnreachableError(PowerBIUnavailableError):
    """Power BI could not be reached (503)."""

    code = "powerbi_unreachable"


class PowerBITimeoutError(PowerBIError):
    """Power BI did not answer within ``POWERBI_HTTP_TIMEOUT_SECONDS`` (504)."""

    status = 504
    code = "powerbi_timeout"
    title = "Power BI did not answer in time"


class UpstreamError(BrokerError):
    """Azure AD (or another upstream service) refused or failed the request."""

    status = 502
    code = "aad_error"
    title = "Azure AD refused the token request"


class UpstreamUnavailableError(UpstreamError):
    """The upstream service could not be reached or answered with a server error (503)."""

    status = 503
    code = "aad_unavailable"
    title = "Azure AD is unavailable"


class UpstreamTimeoutError(UpstreamError):
    """The upstream service did not answer within the configured timeout (504)."""

    status = 504
    code = "aad_timeout"
    title = "Azure AD did not answer in time"


class StaleCredentialError(UpstreamError):
    """Azure AD rejected the client secret or certificate: its source may hold a newer one (re-read once)."""


class StalePasswordError(UpstreamError):
    """Azure AD rejected the master user's password: its source may hold a newer one (re-read once)."""


class IssuerUnavailableError(UpstreamUnavailableError):
    """The callers' token issuer (its discovery document or JWKS) could not be read (503)."""

    code = "caller_keys_unavailable"


class InternalError(BrokerError):
    """A bug: logged with its traceback, answered with a generic problem and no detail."""

    status = 500
    code = "internal_error"
    title = "Internal error"


class ProxyNotEnabledError(BrokerError):
    """The Power BI REST proxy is off (``POWERBI_PROXY_ENABLED`` is not true): 404, as for a route that is absent."""

    status = 404
    code = "powerbi_proxy_disabled"
    title = "The Power BI proxy is not enabled"


class ResponseTooLargeError(PowerBIError):
    """Power BI's answer is larger than ``POWERBI_PROXY_MAX_RESPONSE_BYTES`` (502): nothing of it is passed on."""

    status = 502
    code = "powerbi_response_too_large"
    title = "Power BI's answer is too large"
