"""The broker: settings, credential, token service, embed service and caller authentication, built together.

:meth:`Broker.build` turns one validated :class:`~token_broker.config.contract.Settings` into everything a
request needs, without a network call. The process lifecycle (when to build, when to rebuild) is
:mod:`token_broker.runtime`'s job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .aad.credentials import ClientCredential, build_client_credential, build_password_source
from .aad.tokens import AccessToken, TokenService
from .callers.caller import Caller, CallerAuthenticator
from .callers.modes import build_authenticator
from .callers.policy import authorize
from .callers.profiles import resolve_profile
from .callers.rate_limit import RateLimiter
from .config.contract import Settings
from .powerbi.client import PowerBIClient
from .powerbi.embed import EmbedService
from .support import redaction
from .support.errors import CallerForbiddenError, ConfigurationError, SettingProblem

if TYPE_CHECKING:
    from .powerbi.proxy import PowerBIProxy
    from .shared.tier import SharedTier

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
    #: The shared tier on Redis (CACHE_REDIS_HOST); None: memory caches and per-instance limits only.
    shared: SharedTier | None = None
    settings_source: str = "app settings"
    #: How the token routes were indexed (True: auth level FUNCTION); None when not indexed by function_app.
    indexed_function_key: bool | None = None
    #: The Power BI REST proxy, built on its first request (it is off by default; its modules cost cold start).
    _proxy: PowerBIProxy | None = field(default=None, init=False, repr=False)
    _proxy_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def proxy(self) -> PowerBIProxy:
        """The Power BI REST proxy for these settings (one per broker, so its caches and budget are shared)."""
        with self._proxy_lock:
            if self._proxy is None:
                from .powerbi.proxy import PowerBIProxy

                shared = self.shared
                self._proxy = PowerBIProxy(self.settings, self.tokens,
                                           shared_counters=shared.counters if shared is not None else None,
                                           shared_cache=shared.cache if shared is not None else None)
            return self._proxy

    @classmethod
    def build(cls, settings: Settings, *, indexed_function_key: bool | None = None,
              settings_source: str = "app settings") -> Broker:
        """Build the broker for ``settings`` (no network call)."""
        credential = build_client_credential(settings.credentials, timeout=settings.http_timeout_seconds,
                                             exchange_audience=settings.cloud.token_exchange_audience)
        redaction.register_secrets(settings.secret_values)
        for warning in settings.warnings:
            log.warning("Setting %s: %s", warning.setting, warning.message)
        authenticator = build_authenticator(settings.callers, timeout=settings.http_timeout_seconds)
        shared = _shared_tier(settings)
        limits = settings.callers
        limiter = (
            RateLimiter(limits.rate_limit_per_minute, max_callers=limits.rate_limit_max_callers,
                        shared=shared.counters if shared is not None else None)
            if limits.rate_limit_per_minute
            else None
        )
        password = build_password_source(settings.credentials, grant_type=settings.grant_type,
                                         timeout=settings.http_timeout_seconds)
        tokens = TokenService(settings.tokens, credential, password=password)
        client = PowerBIClient(settings.api_url, timeout=settings.http_timeout_seconds)
        embed = EmbedService(settings.embed, tokens, client, username_claim=settings.callers.username_claim,
                             refresh_margin=settings.token_refresh_margin_seconds,
                             http_timeout=settings.http_timeout_seconds,
                             shared=shared.cache if shared is not None else None)
        broker = cls(settings, credential, tokens, authenticator, embed, limiter, shared,
                     settings_source, indexed_function_key)
        for problem in broker.problems():
            log.error("Setting %s: %s", problem.setting, problem.message)
        return broker

    def authenticate(self, headers: Mapping[str, str], *, rate_limited: bool = True) -> Caller:
        """The verified, authorized, rate-limited caller of a request with ``headers`` (401/403/429/503 otherwise).

        ``rate_limited=False`` (the health route's question "may this caller see details?") uses none of the
        caller's requests: a monitor that probes /api/health must not starve the app it watches. In profile mode
        the caller comes back with its customer's profile, or the request is refused here (403), before any
        upstream call.
        """
        mismatch = self._auth_level_problem()
        if mismatch is not None:
            raise ConfigurationError([mismatch], code="caller_auth_level_mismatch")
        caller = self.callers.authenticate(headers)
        if rate_limited and self.rate_limiter is not None:
            self.rate_limiter.check(caller.key)
        authorize(caller, self.settings.callers)
        return resolve_profile(caller, self.settings.profiles)

    def access_token(self, caller: Caller) -> AccessToken:
        """The raw Power BI access token for ``/api/token``; refused (403) in profile mode.

        A service principal's token lets its holder send any ``X-PowerBI-Profile-Id``, so in a browser it would
        open every customer's content to every customer: embed tokens and the proxy are the way then.
        """
        if self.settings.profiles.enabled:
            raise CallerForbiddenError(
                "This broker serves several customers through Power BI profiles, so it hands out no raw Power BI "
                "access token (its holder could act as any customer). Use /api/embed-token, "
                "/api/reports/{id}/embed or the /api/powerbi proxy.", code="token_refused_profile_mode",
                setting="POWERBI_PROFILE_CLAIM")
        return self.tokens.token_for(caller)

    def health(self) -> dict[str, Any]:
        """Non-secret facts about the configuration for /api/health (callers that may see details)."""
        return {
            "status": "ok",
            "settingsSource": self.settings_source,
            "cloud": self.settings.cloud.name,
            "grantType": self.settings.grant_type,
            "callerAuth": self.callers.mode,
            "credential": self.credential.kind,
            "authority": self.settings.authority,
            "scope": self.settings.scope,
            **({"profiles": {"claim": self.settings.profiles.claim, "customers": len(self.settings.profiles.customers),
                             "source": self.settings.profiles.source}} if self.settings.profiles.enabled else {}),
            "warnings": [w.as_dict() for w in self.settings.warnings],
            **({"sharedCache": self.shared.health()} if self.shared is not None else {}),
        }

    def problems(self, *, probe: bool = False) -> list[SettingProblem]:
        """Configuration problems that stop the token endpoints although the settings parsed.

        ``probe`` (/api/health): also read what is read on first use (the shared cache's encryption key).
        """
        shared = self.shared.problems(probe=probe) if self.shared is not None else []
        return [*self._problems(), *shared]

    def _problems(self) -> list[SettingProblem]:
        if self.settings.caller_auth is None:
            return [SettingProblem("CALLER_AUTH", "CALLER_AUTH is not set, so token endpoints answer 503: set it to "
                                   "jwt (single-page apps), easyauth, function_key or, deliberately, anonymous.")]
        mismatch = self._auth_level_problem()
        return [mismatch] if mismatch is not None else []

    def _auth_level_problem(self) -> SettingProblem | None:
        # function_key trusts the host to have checked a key: only true if the routes were indexed FUNCTION.
        wants_key = self.settings.caller_auth == "function_key"
        if self.indexed_function_key is None and not wants_key:
            return None  # not indexed through function_app (tools); nothing relies on the host here
        if self.indexed_function_key == wants_key:
            return None
        indexed = "FUNCTION" if self.indexed_function_key else ("ANONYMOUS" if self.indexed_function_key is False
                                                               else "an unknown level")
        return SettingProblem("CALLER_AUTH", f"CALLER_AUTH={self.settings.caller_auth}, but the token routes were "
                              f"indexed with auth level {indexed} when the app started, so the Functions host "
                              f"{'does not check' if wants_key else 'checks'} function keys. Put CALLER_AUTH in the "
                              "function app's own app settings (never only in App Configuration) and restart the app "
                              "so that the routes are indexed again.")


def _shared_tier(settings: Settings) -> SharedTier | None:
    """The shared tier when CACHE_REDIS_HOST is set; imported only then (cryptography, redis: cold start)."""
    if not settings.shared_cache.enabled:
        return None
    from .shared.tier import SharedTier

    return SharedTier.build(settings.shared_cache, settings.credentials.identity,
                            http_timeout=settings.http_timeout_seconds)
