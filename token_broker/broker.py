"""The process-wide broker: settings, credential, token service and caller authentication, built once.

The Functions host keeps one Python process alive across invocations; everything expensive (MSAL
applications, cached tokens) lives here and is created lazily on first use. Settings are read from
the environment, which is where the platform puts app settings.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from . import redaction
from .callers import Caller, CallerAuthenticator, authorize, build_authenticator
from .credentials import ClientCredential, build_client_credential
from .errors import CallerAuthenticationError, ConfigurationError, SettingProblem
from .rate_limit import RateLimiter
from .settings import Settings, load_settings
from .tokens import AccessToken, TokenService

log = logging.getLogger(__name__)


@dataclass
class Broker:
    """Everything a request needs, built from one set of settings."""

    settings: Settings
    credential: ClientCredential
    tokens: TokenService
    callers: CallerAuthenticator
    rate_limiter: RateLimiter | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Broker:
        """Validate the settings in ``environ`` and build the broker (no network call)."""
        settings = load_settings(environ)
        credential = build_client_credential(settings)
        redaction.register_secrets((*settings.secret_values, *credential.secret_values()))
        redaction.install()
        for warning in settings.warnings:
            log.warning("Setting %s: %s", warning.setting, warning.message)
        authenticator = build_authenticator(
            settings.callers, timeout=settings.http_timeout_seconds, grant_type=settings.grant_type
        )
        limits = settings.callers
        limiter = (
            RateLimiter(limits.rate_limit_per_minute, max_callers=limits.rate_limit_max_callers)
            if limits.rate_limit_per_minute
            else None
        )
        return cls(settings, credential, TokenService(settings, credential), authenticator, limiter)

    def authenticate(self, req: func.HttpRequest) -> Caller:
        """The verified, authorized, rate-limited caller of ``req`` (401/403/429/503 otherwise)."""
        caller = self.callers.authenticate(req)
        if self.rate_limiter is not None:
            self.rate_limiter.check(caller.key)
        authorize(caller, self.settings.callers)
        return caller

    def token_for(self, caller: Caller) -> AccessToken:
        """A Power BI access token for ``caller`` under the configured grant type."""
        grant_type = self.settings.grant_type
        if grant_type == "client_credentials":
            return self.tokens.service_principal_token()
        if grant_type == "password":
            return self.tokens.master_user_token()
        if caller.bearer_token is None:
            raise CallerAuthenticationError(
                "POWERBI_GRANT_TYPE=on_behalf_of needs the signed-in user's access token for this API in "
                "'Authorization: Bearer <token>'.",
                code="caller_token_missing",
            )
        return self.tokens.on_behalf_of_token(caller.bearer_token, assertion_expires_on=caller.bearer_expires_on)

    def health(self) -> dict[str, Any]:
        """Non-secret facts about the configuration for /api/health."""
        return {
            "status": "ok",
            "grantType": self.settings.grant_type,
            "callerAuth": self.callers.mode,
            "credential": self.credential.kind,
            "authority": self.settings.authority,
            "scope": self.settings.scope,
            "warnings": [w.as_dict() for w in self.settings.warnings],
        }

    def problems(self) -> list[SettingProblem]:
        """Configuration problems that stop the token endpoints although the settings parsed."""
        if self.settings.caller_auth is None:
            return [SettingProblem("CALLER_AUTH", "CALLER_AUTH is not set; token endpoints answer 503 until it is.")]
        return []


_lock = threading.Lock()
_current: Broker | ConfigurationError | None = None


def current_broker() -> Broker:
    """The broker for this process, built on first use; raises :class:`ConfigurationError` when invalid."""
    state = _current
    if state is None:
        state = _build()
    if isinstance(state, ConfigurationError):
        # A new instance each time: re-raising one instance would grow its traceback forever.
        raise ConfigurationError(state.problems)
    return state


def _build() -> Broker | ConfigurationError:
    global _current
    with _lock:
        if _current is None:
            try:
                _current = Broker.from_environ(os.environ)
            except ConfigurationError as err:
                for problem in err.problems:
                    log.error("Setting %s: %s", problem.setting, problem.message)
                _current = err
        return _current


def reset() -> None:
    """Forget the broker so that the next request reads the settings again (tests, dev server reloads)."""
    global _current
    with _lock:
        _current = None
