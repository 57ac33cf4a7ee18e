"""A failed HTTP exchange with an upstream service (requests/urllib3 exceptions) as a typed error.

Shared by every client of an upstream that speaks HTTP through requests: Azure AD through MSAL
(:mod:`token_broker.aad.errors`) and the callers' token issuer (:mod:`token_broker.callers.jwt`). Matched by
exception type only.
"""

from __future__ import annotations

import requests
import urllib3

from .errors import BrokerError, UpstreamTimeoutError, UpstreamUnavailableError


def is_timeout(err: Exception) -> bool:
    """True when ``err`` is a timeout, also one urllib3 already retried."""
    if isinstance(err, requests.Timeout):
        return True
    # A read timeout that urllib3 already retried (MSAL's session retries GETs once) surfaces as a
    # ConnectionError wrapping MaxRetryError(reason=ReadTimeoutError).
    reason = getattr(err.args[0], "reason", None) if isinstance(err, requests.ConnectionError) and err.args else None
    # (urllib3's NewConnectionError, a refused connection, subclasses its ConnectTimeoutError.)
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def transport_error(err: Exception, *, service: str, setting: str) -> BrokerError | None:
    """The error for a failed exchange with ``service`` (reached through ``setting``); None for other errors."""
    if is_timeout(err):
        return UpstreamTimeoutError(
            f"{service} did not answer within the timeout (POWERBI_HTTP_TIMEOUT_SECONDS); try again.",
            code="aad_timeout",
        )
    if isinstance(err, requests.exceptions.SSLError):
        return UpstreamUnavailableError(
            f"The TLS connection to {service} failed: the server certificate is not trusted. Check "
            f"{setting} and any TLS-inspecting proxy in between.",
            code="aad_tls_error", setting=setting,
        )
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else 0
        return UpstreamUnavailableError(f"{service} answered HTTP {status}; try again shortly.")
    if isinstance(err, requests.RequestException):
        return UpstreamUnavailableError(
            f"{service} could not be reached; check {setting} and the network path from the function app.",
            code="aad_unreachable", setting=setting,
        )
    return None
