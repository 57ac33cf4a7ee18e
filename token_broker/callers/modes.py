"""``CALLER_AUTH`` -> its authenticator. The ``jwt`` and ``easyauth`` modes are imported only when configured."""

from __future__ import annotations

from ..config.callers import CallerSettings
from .caller import CallerAuthenticator
from .simple import AnonymousAuthenticator, FunctionKeyAuthenticator, NotConfiguredAuthenticator


def build_authenticator(settings: CallerSettings, *, timeout: float) -> CallerAuthenticator:
    """The authenticator for ``CALLER_AUTH``."""
    if settings.mode == "jwt":
        from .jwt import JwtAuthenticator

        return JwtAuthenticator(settings, timeout=timeout)
    if settings.mode == "easyauth":
        from .easyauth import EasyAuthAuthenticator

        return EasyAuthAuthenticator(settings)
    if settings.mode == "function_key":
        return FunctionKeyAuthenticator(trusted_proxy_hops=settings.trusted_proxy_hops)
    if settings.mode == "anonymous":  # a warning of the settings, logged and on /api/health
        return AnonymousAuthenticator(trusted_proxy_hops=settings.trusted_proxy_hops)
    return NotConfiguredAuthenticator()
