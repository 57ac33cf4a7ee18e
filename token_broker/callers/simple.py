"""The caller modes without a verified identity: ``anonymous``, ``function_key`` and ``CALLER_AUTH`` unset."""

from __future__ import annotations

from collections.abc import Mapping

from ..support.errors import CallerAuthNotConfiguredError
from .bearer import bearer_token
from .caller import Caller
from .client_ip import client_key


class NotConfiguredAuthenticator:
    """``CALLER_AUTH`` unset: refuse every token request (fail closed)."""

    mode = "unset"

    def authenticate(self, headers: Mapping[str, str]) -> Caller:  # noqa: ARG002 - the protocol's signature
        raise CallerAuthNotConfiguredError(
            "CALLER_AUTH is not set, so no caller can be authenticated and no token is issued. Set "
            "CALLER_AUTH to jwt (recommended for single-page apps), easyauth or function_key; or to "
            "anonymous to let anyone who can reach the function get a token.",
            setting="CALLER_AUTH",
        )


class AnonymousAuthenticator:
    """``CALLER_AUTH=anonymous``: everyone who can reach the function is a caller. An explicit opt-in."""

    mode = "anonymous"

    def __init__(self, *, trusted_proxy_hops: int = 0) -> None:
        self._hops = trusted_proxy_hops

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        # The bearer token, if any, is passed on unverified: only the on-behalf-of grant uses it, and
        # Azure AD verifies it there.
        return Caller(mode=self.mode, subject=_platform_client_key(headers, self._hops),
                      bearer_token=bearer_token(headers))


class FunctionKeyAuthenticator:
    """``CALLER_AUTH=function_key``: the Functions host checked the key (auth level FUNCTION) before us."""

    mode = "function_key"

    def __init__(self, *, trusted_proxy_hops: int = 0) -> None:
        self._hops = trusted_proxy_hops

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        return Caller(mode=self.mode, subject=_platform_client_key(headers, self._hops))


def _platform_client_key(headers: Mapping[str, str], trusted_proxy_hops: int) -> str:
    # The client address (IPv6: its /64) as App Service's front end saw it, or one shared "unknown";
    # see client_ip for which X-Forwarded-For entry is trusted.
    forwarded = headers.get("x-forwarded-for")
    return client_key(str(forwarded) if forwarded else None, trusted_proxy_hops=trusted_proxy_hops)
