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
from .app_configuration import AppConfigurationSource, merged_settings
from .callers import Caller, CallerAuthenticator, authorize, build_authenticator
from .credentials import ClientCredential, build_client_credential, build_password_source
from .embed import EmbedService
from .errors import CallerAuthenticationError, ConfigurationError, SettingProblem
from .powerbi_client import PowerBIClient
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
    embed: EmbedService
    rate_limiter: RateLimiter | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Broker:
        """Validate the settings in ``environ`` and build the broker (no network call)."""
        settings = load_settings(environ)
        credential = build_client_credential(settings)
        redaction.register_secrets(settings.secret_values)
        redaction.install()
        for warning in settings.warnings:
            log.warning("Setting %s: %s", warning.setting, warning.message)
        authenticator = build_authenticator(
            settings.callers, timeout=settings.http_timeout_seconds, grant_type=settings.grant_type
        )
        redaction.install()  # again: the caller mode's module (jwt_auth, easyauth) and its logger were just created
        limits = settings.callers
        limiter = (
            RateLimiter(limits.rate_limit_per_minute, max_callers=limits.rate_limit_max_callers)
            if limits.rate_limit_per_minute
            else None
        )
        tokens = TokenService(settings, credential, password=build_password_source(settings))
        embed = EmbedService(settings, tokens, PowerBIClient(settings.api_url, timeout=settings.http_timeout_seconds))
        return cls(settings, credential, tokens, authenticator, embed, limiter)

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
            "settingsSource": "app settings + App Configuration" if _store is not None else "app settings",
            "cloud": self.settings.cloud.name,
            "grantType": self.settings.grant_type,
            "callerAuth": self.callers.mode,
            "credential": self.credential.kind,
            "authority": self.settings.authority,
            "scope": self.settings.scope,
            "warnings": [w.as_dict() for w in (*self.settings.warnings, *self._caller_warnings())],
        }

    def _caller_warnings(self) -> list[SettingProblem]:
        if self.callers.mode != "anonymous":
            return []
        return [SettingProblem("CALLER_AUTH", "CALLER_AUTH=anonymous: anyone who can reach this function gets a "
                               "Power BI token. Use it only behind another gate, or set CALLER_AUTH=jwt.", "warning")]

    def problems(self) -> list[SettingProblem]:
        """Configuration problems that stop the token endpoints although the settings parsed."""
        if self.settings.caller_auth is None:
            return [SettingProblem("CALLER_AUTH", "CALLER_AUTH is not set, so token endpoints answer 503: set it to "
                                   "jwt (single-page apps), easyauth, function_key or, deliberately, anonymous.")]
        return []


_lock = threading.Lock()
_current: Broker | ConfigurationError | None = None
_store: AppConfigurationSource | None = None


def current_broker() -> Broker:
    """The broker for this process, built on first use; raises :class:`ConfigurationError` when invalid.

    With an App Configuration store, a due sentinel check runs first (one request, on one thread at a
    time); when the store's settings changed, the broker is rebuilt from them.
    """
    state = _current
    store = _store
    if store is not None and store.refresh_due() and store.refresh():
        _forget_broker()
        state = None
    if state is None:
        state = _build()
    if isinstance(state, ConfigurationError):
        # A new instance each time: re-raising one instance would grow its traceback forever.
        raise ConfigurationError(state.problems)
    return state


def _build() -> Broker | ConfigurationError:
    global _current, _store
    with _lock:
        if _current is None:
            environ: Mapping[str, str] = os.environ
            if (environ.get("AZURE_APPCONFIG_ENDPOINT") or "").strip():
                if _store is None:
                    _store = AppConfigurationSource(environ)
                environ = merged_settings(environ, _store)  # AppConfigurationError (503) is not cached
            try:
                _current = Broker.from_environ(environ)
            except ConfigurationError as err:
                for problem in err.problems:
                    log.error("Setting %s: %s", problem.setting, problem.message)
                _current = err
        return _current


def _forget_broker() -> None:
    global _current
    with _lock:
        _current = None


def reset() -> None:
    """Forget the broker and any settings store so that the next request reads the settings again."""
    global _store
    _forget_broker()
    with _lock:
        _store = None
