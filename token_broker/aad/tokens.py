"""Azure AD access tokens for Power BI, through MSAL, cached and single-flight.

One :class:`TokenService` per process and configuration. It owns two MSAL confidential client
applications, created lazily on first use and reused: one for the service principal's own tokens
(``client_credentials``) and one for user tokens (``password``, ``on_behalf_of``), so that user
tokens never share a token cache with the service principal's.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from ..callers.caller import Caller
from ..config.contract import TokenSettings
from ..support import telemetry
from ..support.cache import RefreshingCache
from ..support.errors import (
    CallerAuthenticationError,
    CallerTokenMissingError,
    ConfigurationError,
    CustomerNotMappedError,
    SettingProblem,
    StaleCredentialError,
    StalePasswordError,
)
from . import errors as aad_errors
from .credentials import ClientCredential, SecretSource

if TYPE_CHECKING:  # msal is imported on first use: /api/health and config errors never pay for it
    import msal

log = logging.getLogger(__name__)

_APP_KEY = "service-principal"


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and when it expires (epoch seconds). ``repr`` never shows the token."""

    value: str = field(repr=False)
    expires_on: float
    scope: str
    #: True when MSAL answered from its own cache rather than from Azure AD.
    from_cache: bool = field(default=False, compare=False)

    def expires_in(self, now: float | None = None) -> int:
        """Whole seconds left before expiry."""
        return max(0, int(self.expires_on - (time.time() if now is None else now)))

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id for log lines."""
        return fingerprint(self.value)


def fingerprint(secret: str) -> str:
    """First 12 hex digits of the SHA-256 of ``secret``: enough to correlate, useless to an attacker."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def _discarding_token_cache() -> msal.TokenCache:
    """An MSAL token cache that keeps nothing.

    On-behalf-of results are cached by :class:`RefreshingCache` (bounded, per caller token); letting
    MSAL keep them too would grow without bound, one account per user, for the life of the process.
    """
    import msal

    class DiscardingTokenCache(msal.TokenCache):  # type: ignore[misc]  # msal ships no type hints
        def add(self, event: Any, now: Any = None) -> None:  # noqa: ARG002 - MSAL's signature
            return None

    return DiscardingTokenCache()


class TokenService:
    """Acquires Power BI access tokens for the configured grant type."""

    def __init__(
        self,
        settings: TokenSettings,
        credential: ClientCredential,
        *,
        password: SecretSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._credential = credential
        self._password = password
        self._scopes = [settings.scope]
        self._clock = clock
        self._apps: dict[str, msal.ConfidentialClientApplication] = {}
        self._apps_lock = threading.Lock()
        # Bumped each time a credential re-read from its source turned out to be new (see _rotating).
        self._credential_generation = 0
        self._reload_lock = threading.Lock()
        # Waiting for another thread's fetch never takes longer than that fetch's own HTTP calls:
        # discovery + token request, each retried once by MSAL's adapter.
        wait = settings.http_timeout_seconds * 5 + 5
        margin = settings.token_refresh_margin_seconds
        self._app_tokens: RefreshingCache[AccessToken] = RefreshingCache(
            refresh_margin=margin, max_entries=8, wait_timeout=wait, clock=clock, name="service principal token"
        )
        self._user_tokens: RefreshingCache[AccessToken] = RefreshingCache(
            refresh_margin=margin,
            max_entries=settings.user_token_cache_max_entries,
            wait_timeout=wait,
            clock=clock,
            name="user token",
        )

    # -- public API -------------------------------------------------------------------------------

    def token_for(self, caller: Caller, *, min_remaining: float = 0.0) -> AccessToken:
        """The Power BI access token to use for ``caller`` under the configured grant type.

        ``min_remaining``: seconds the token must still be valid (see :meth:`service_principal_token`);
        an on-behalf-of token can never outlive the caller's own token, whatever is asked.
        """
        grant_type = self._settings.grant_type
        if grant_type == "client_credentials":
            self._profile_of(caller)  # profile mode: no token for a caller without a profile
            return self.service_principal_token(min_remaining=min_remaining)
        if grant_type == "password":
            return self.master_user_token(min_remaining=min_remaining)
        assertion, principal = self._assertion(caller)
        return self._user_tokens.get(
            ("obo", principal),
            lambda: self._rotating(lambda: self._fetch_on_behalf_of(assertion, caller.bearer_expires_on)),
            min_remaining=min_remaining,
        )

    def minted_for(self, caller: Caller) -> tuple[str, ...]:
        """Whose credential :meth:`token_for` uses for ``caller``: the key prefix of every cache of values
        obtained with that token (embed tokens, Power BI metadata).

        The service principal and the master user are one principal for every caller; on-behalf-of, each
        caller is their own (see :attr:`Caller.principal`). In profile mode every Power BI call for ``caller``
        is made as its customer's profile, so the profile is part of the key: no cache entry (embed token,
        metadata, proxy result, query budget) is ever shared between two customers.
        """
        grant_type = self._settings.grant_type
        if grant_type == "client_credentials":
            profile = self._profile_of(caller)
            return ("client_credentials",) if profile is None else ("client_credentials", f"profile:{profile}")
        if grant_type == "password":
            return ("password", self._settings.username or "")
        return ("on_behalf_of", self._assertion(caller)[1])

    def forget(self, caller: Caller) -> None:
        """Drop the token :meth:`token_for` would return for ``caller`` (and MSAL's copy).

        For when a service says a token that is not expired by its clock is expired.
        """
        grant_type = self._settings.grant_type
        if grant_type == "client_credentials":
            self._app_tokens.discard(_APP_KEY)
            app = self._apps.get("client_credentials")
            if app is not None:
                app.remove_tokens_for_client()
        elif grant_type == "password":
            self._user_tokens.discard(("password", self._settings.username))
            app = self._apps.get("password")
            for account in app.get_accounts() if app is not None else []:
                app.remove_account(account)  # type: ignore[union-attr]
        else:
            self._user_tokens.discard(("obo", self._assertion(caller)[1]))

    def _profile_of(self, caller: Caller) -> str | None:
        """The caller's profile id; in profile mode a caller without one fails closed (403), whoever forgot it."""
        if caller.profile is not None:
            return caller.profile.profile_id
        if self._settings.profiles:
            raise CustomerNotMappedError("No Power BI profile was resolved for this caller, so nothing is done for it.",
                                         code="caller_customer_missing")
        return None

    @staticmethod
    def _assertion(caller: Caller) -> tuple[str, str]:
        assertion, principal = caller.bearer_token, caller.principal
        if assertion is None or principal is None:
            raise CallerTokenMissingError(
                "POWERBI_GRANT_TYPE=on_behalf_of needs the signed-in user's access token for this API in "
                "'Authorization: Bearer <token>'.")
        return assertion, principal

    def service_principal_token(self, *, min_remaining: float = 0.0) -> AccessToken:
        """The service principal's token (client credentials).

        ``min_remaining``: seconds the token must still be valid; a shorter cached one is replaced by a
        fresh one from Azure AD first (at most once: see :meth:`RefreshingCache.get`).
        """
        return self._app_tokens.get(
            _APP_KEY, lambda: self._rotating(lambda: self._fetch_service_principal_token(min_remaining)),
            min_remaining=min_remaining,
        )

    def master_user_token(self, *, min_remaining: float = 0.0) -> AccessToken:
        """The master user's token (password grant), refreshed from MSAL's cache, not by re-posting the password."""
        key = ("password", self._settings.username)
        return self._user_tokens.get(
            key, lambda: self._rotating(lambda: self._fetch_master_user_token(min_remaining)),
            min_remaining=min_remaining,
        )

    def _rotating(self, fetch: Callable[[], AccessToken]) -> AccessToken:
        """Run ``fetch``; if Azure AD rejects a credential that its source has since replaced, retry once.

        A secret rotated in Key Vault is thus picked up by the first request that needs it, and that
        request still succeeds. MSAL applications are rebuilt: they hold the credential they were made with.
        """
        generation = self._credential_generation
        try:
            return fetch()
        except (StaleCredentialError, StalePasswordError) as err:
            if not self._replaced_since(generation, err):
                raise
            log.warning("Azure AD rejected the credential (%s); retrying with the value re-read", err.code)
            return fetch()

    def _replaced_since(self, generation: int, err: StaleCredentialError | StalePasswordError) -> bool:
        """Whether the credential Azure AD rejected with ``err`` has a new value since ``generation``.

        Fetches of different keys (per-user tokens) run concurrently and all fail on the old value; the
        first one re-reads the source, the others must retry with what it read rather than re-read (they
        would find it "unchanged" and give up).
        """
        if isinstance(err, StaleCredentialError):  # a secret rotated, a certificate renewed in Key Vault
            source: ClientCredential | SecretSource = self._credential
        elif self._password is not None:
            source = self._password
        else:
            return False
        with self._reload_lock:
            if self._credential_generation == generation:
                if not source.reload():
                    return False
                self._credential_generation += 1
                with self._apps_lock:
                    self._apps.clear()
        return True

    # -- MSAL applications ------------------------------------------------------------------------

    def _msal_app(self, purpose: str) -> msal.ConfidentialClientApplication:
        app = self._apps.get(purpose)
        if app is not None:
            return app
        with self._apps_lock:
            app = self._apps.get(purpose)
            if app is None:
                app = self._apps[purpose] = self._create_msal_app(purpose)
        return app

    def _create_msal_app(self, purpose: str) -> msal.ConfidentialClientApplication:
        import msal
        from msal.exceptions import MsalServiceError

        settings = self._settings
        log.info("Creating the MSAL application for %s tokens (authority %s)", purpose, settings.authority)
        credential = self._credential.for_msal()  # may read Key Vault: its own upstream call
        with telemetry.upstream_call("entra", "discovery"):  # MSAL reads the authority's OpenID configuration
            try:
                return msal.ConfidentialClientApplication(
                    settings.client_id,
                    client_credential=credential,
                    authority=settings.authority,
                    # The authority is used as configured: MSAL's instance discovery would reject a host
                    # it does not know (a proxy, an emulator) and adds a network round trip to cold start.
                    instance_discovery=False,
                    timeout=settings.http_timeout_seconds,
                    token_cache=_discarding_token_cache() if purpose == "on_behalf_of" else None,
                    app_name="powerbi-token-broker",
                )
            except (requests.RequestException, ValueError, MsalServiceError) as err:  # discovery may answer 5xx
                raise aad_errors.from_exception(err, during_discovery=True) from err

    # -- fetches (run by one thread at a time per cache key) ----------------------------------------

    def _token(self, call: Callable[[], Mapping[str, Any] | None], operation: str, *,
               caller_identity: bool = False) -> AccessToken:
        from msal.exceptions import MsalServiceError  # loaded with the MSAL application already

        now = self._clock()
        with telemetry.upstream_call("entra", operation) as upstream:
            try:
                result = call()
            except (requests.RequestException, ValueError, MsalServiceError) as err:
                raise aad_errors.from_exception(err) from err
            if not result or "access_token" not in result:
                raise aad_errors.from_aad_response(result or {}, on_behalf_of_caller=caller_identity)
            if result.get("token_source") == "cache":
                upstream.outcome("msal_cache")  # MSAL answered from its own cache: no request left the process
        expires_in = int(result.get("expires_in") or 0)
        from_cache = result.get("token_source") == "cache"
        token = AccessToken(result["access_token"], now + expires_in, self._settings.scope, from_cache)
        log.info(
            "Got a token from %s (fingerprint %s, expires in %d s)",
            result.get("token_source", "Azure AD"), token.fingerprint, expires_in,
        )
        return token

    def _due(self, token: AccessToken, min_remaining: float = 0.0) -> bool:
        ahead = max(self._settings.token_refresh_margin_seconds, min_remaining)
        return token.expires_on - ahead <= self._clock()

    def _fetch_service_principal_token(self, min_remaining: float = 0.0) -> AccessToken:
        app = self._msal_app("client_credentials")
        token = self._token(lambda: app.acquire_token_for_client(self._scopes), "client_credentials")
        if token.from_cache and self._due(token, min_remaining):
            # MSAL's own cache still considers the token good; we refresh earlier (the margin), so
            # drop MSAL's copy and ask Azure AD.
            app.remove_tokens_for_client()
            token = self._token(lambda: app.acquire_token_for_client(self._scopes), "client_credentials")
        return token

    def _fetch_master_user_token(self, min_remaining: float = 0.0) -> AccessToken:
        settings = self._settings
        app = self._msal_app("password")
        for account in app.get_accounts(username=settings.username):
            for force_refresh in (False, True):
                silent = app.acquire_token_silent_with_error(self._scopes, account, force_refresh=force_refresh)
                if silent and "access_token" in silent:
                    token = self._token(functools.partial(dict, silent), "refresh_token")
                    if not self._due(token, min_remaining):
                        return token
            log.info("The master user's refresh token no longer works; signing in with the password again")
        return self._token(
            lambda: app.acquire_token_by_username_password(settings.username, self._password_value(), self._scopes),
            "password")

    def _password_value(self) -> str:
        if self._password is None:  # load_settings requires a password for this grant
            raise ConfigurationError([SettingProblem("POWERBI_PASSWORD", "The password grant needs "
                                                     "POWERBI_PASSWORD or POWERBI_PASSWORD_URI.")])
        return self._password.get()

    def _fetch_on_behalf_of(self, assertion: str, assertion_expires_on: float | None) -> AccessToken:
        app = self._msal_app("on_behalf_of")
        token = self._token(lambda: app.acquire_token_on_behalf_of(assertion, self._scopes), "on_behalf_of",
                            caller_identity=True)
        if assertion_expires_on is not None and assertion_expires_on < token.expires_on:
            token = AccessToken(token.value, assertion_expires_on, token.scope)
        if token.expires_on <= self._clock():
            raise CallerAuthenticationError("The bearer token has expired; sign in again.", code="caller_token_expired")
        return token
