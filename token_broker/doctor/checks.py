"""The checks of ``python -m token_broker doctor``, in the order a deployment depends on them.

1. Settings (App Configuration first when ``AZURE_APPCONFIG_ENDPOINT`` is set): every problem at once.
2. The credential: the app's identity gets a token, Key Vault secrets read, the certificate parses.
3. A Power BI token from Azure AD through the product's :class:`~token_broker.aad.tokens.TokenService`.
4. Power BI (:mod:`.powerbi`): every allowed workspace is visible, every allowed report resolves, and a
   dataset with row-level security can get the effective identity embed tokens need.

A stage runs only when the one before it passed; the stages left are listed as skipped. Everything goes
through the product's own settings pipeline and classes (:class:`~token_broker.broker.Broker`, the app's identity,
:class:`~token_broker.powerbi.client.PowerBIClient`), so the doctor meets exactly what the app meets, and
each failure carries the product's own problem ``code`` and fix.

Row-level security: a dataset that requires roles while ``EMBED_RLS_ROLES`` gives none is a *failure*,
not a warning, because the broker then refuses every embed request for its reports
(``embed_rls_roles_missing``); so is such a dataset under a ``CALLER_AUTH`` mode without usernames
(``embed_identity_required``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..support.errors import (
    BrokerError,
    ConfigurationError,
    CredentialError,
    SettingProblem,
)
from . import proxy
from .check import FAIL, OK, SKIP, WARN, Check, failed, unverified_claims

if TYPE_CHECKING:
    from ..aad.tokens import AccessToken
    from ..broker import Broker
    from ..config.bootstrap import Bootstrap
    from ..config.contract import Settings
    from ..config.identity import AppIdentity

_STAGES = ("credential", "token", "powerbi")


def _setting_check(problem: SettingProblem) -> Check:
    # The product's messages already name the setting and say what to do: they are the detail and the fix.
    status = FAIL if problem.severity == "error" else WARN
    return Check(f"setting:{problem.setting}", status, problem.message, problem.message,
                 "configuration_invalid" if status == FAIL else None)


def _vault_scope(uri: str) -> str:
    """The scope Key Vault's challenge names for ``uri``: the vault host without its first label."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port not in (None, 443) else ""
    return f"https://{host.partition('.')[2] or host}{port}/.default"


def _expiry(epoch: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    return f"expires {stamp} (in {max(0, int(epoch - time.time())) // 60} min)"


class Doctor:
    """Runs the checks against one set of settings and collects the checklist."""

    def __init__(self, environ: Mapping[str, str], *, user_token: str | None = None) -> None:
        self.environ = environ
        self.user_token = user_token
        self.results: list[Check] = []
        self._effective: Mapping[str, str] = environ  # with App Configuration's values, once loaded
        self._store: Mapping[str, str] | None = None

    def add(self, check: Check) -> None:
        self.results.append(check)

    def run(self) -> list[Check]:
        broker = self._settings()
        if broker is None:
            return self._skip(_STAGES, "the settings are not valid")
        if not self._credential(broker):
            return self._skip(_STAGES[1:], "the credential check failed")
        if broker.shared is not None:  # CACHE_REDIS_HOST: Redis failures never stop a request, so not a stage
            from .shared_cache import shared_cache_checks

            for check in shared_cache_checks(broker.shared):
                self.add(check)
        token = self._token(broker)
        if token is None:
            return self._skip(_STAGES[2:], "there is no Power BI token to call Power BI with")
        self._powerbi(broker.settings, token)
        return self.results

    def load(self) -> Broker | None:
        """The broker the app would build from these settings (App Configuration included), or None with the
        reasons in :attr:`results` (for the other tools: ``python -m token_broker profiles``)."""
        return self._settings()

    def _skip(self, stages: tuple[str, ...], reason: str) -> list[Check]:
        for stage in stages:
            self.add(Check(stage, SKIP, f"not checked: {reason}"))
        return self.results

    # -- 1. settings ------------------------------------------------------------------------------

    def _settings(self) -> Broker | None:
        from ..broker import Broker
        from ..config.bootstrap import merge_store, read_bootstrap
        from ..config.contract import SETTING_NAMES, load_settings

        bootstrap = read_bootstrap(self.environ)  # as the app reads them: from the environment only
        if bootstrap.appconfig_endpoint and not self._app_configuration(bootstrap.appconfig_endpoint, bootstrap):
            return None
        environ = self._effective = merge_store(self.environ, self._store)[0]
        try:
            # The app's pipeline, then everything the app builds from the settings, indexed as the app would be.
            settings = load_settings(self.environ, store=self._store, bootstrap=bootstrap)
            broker = Broker.build(settings, indexed_function_key=bootstrap.token_routes_need_function_key)
        except ConfigurationError as err:
            for problem in err.problems:
                self.add(_setting_check(problem))
            return None
        except BrokerError as err:
            self.add(failed("settings", err))
            return None
        settings = broker.settings
        configured = sum(1 for name in SETTING_NAMES if (environ.get(name) or "").strip())
        embed = settings.embed
        self.add(Check("settings", OK, (
            f"{configured} settings set, all valid: grant {settings.grant_type}, credential {broker.credential.kind}, "
            f"caller auth {settings.caller_auth or 'not set'}, cloud {settings.cloud.name}, embed tokens "
            + (f"for {len(embed.allowed_workspaces)} workspace(s)" if embed.enabled else "off")
            + (f", profile mode: {len(settings.profiles.customers)} customer(s) by claim {settings.profiles.claim}"
               if settings.profiles.enabled else ""))))
        for problem in settings.warnings:
            self.add(_setting_check(problem))
        for proxy_check in proxy.settings_checks(settings):  # the Power BI proxy
            self.add(proxy_check)
        for problem in broker.problems():
            self.add(Check(f"setting:{problem.setting}", FAIL, problem.message, problem.message + " Set it to jwt "
                           "(recommended), easyauth, function_key or anonymous.", "caller_auth_not_configured"))
        return broker

    def _app_configuration(self, endpoint: str, bootstrap: Bootstrap) -> bool:
        from ..aad.identity import app_credential
        from ..config.store import AppConfigurationSource

        identity = bootstrap.app_identity
        source = AppConfigurationSource(endpoint, bootstrap, credential=lambda: app_credential(identity))
        try:
            self._store = source.values()
        except BrokerError as err:
            self.add(failed("app_configuration", err))
            return False
        label = bootstrap.appconfig_label
        self.add(Check("app_configuration", OK, f"{len(self._store)} settings loaded from {source.endpoint}"
                       + (f" (label {label} over unlabeled)" if label else "") + "; app settings win over them"))
        return True

    # -- 2. the credential ------------------------------------------------------------------------

    def _credential(self, broker: Broker) -> bool:
        settings = broker.settings
        config = settings.credentials
        uris = [(name, uri) for name, uri in (("POWERBI_CLIENT_SECRET_URI", config.client_secret_uri),
                                              ("POWERBI_CLIENT_CERTIFICATE_URI", config.certificate_uri),
                                              ("POWERBI_PASSWORD_URI", config.password_uri)) if uri]
        scopes = [_vault_scope(uri) for _, uri in uris]
        if config.kind == "managed_identity":
            scopes.append(settings.cloud.token_exchange_audience + "/.default")
        for scope in dict.fromkeys(scopes):
            if not self._identity(config.identity, scope):
                return False
        return all(self._key_vault(broker, setting, uri) for setting, uri in uris)

    def _identity(self, identity: AppIdentity, scope: str) -> bool:
        from ..aad.identity import app_credential

        who = identity.describe()
        try:
            token = app_credential(identity).get_token(scope)
        except BrokerError as err:
            self.add(failed("identity", err))
            return False
        principal = unverified_claims(str(token.token)).get("oid")
        self.add(Check("identity", OK, f"{who} got a token for {scope}"
                       + (f" (principal id {principal})" if principal else "")))
        return True

    def _key_vault(self, broker: Broker, setting: str, uri: str) -> bool:
        from ..aad.credentials import build_password_source

        material: Any = None
        try:
            if setting == "POWERBI_PASSWORD_URI":
                settings = broker.settings
                source = build_password_source(settings.credentials, grant_type=settings.grant_type,
                                               timeout=settings.http_timeout_seconds)
                if source is not None:  # a password URI is only accepted with the password grant
                    source.get()
            else:
                # The app's own credential object: it reads the vault (and parses a certificate) and keeps
                # the value for the token request below, exactly as the first request in Azure would.
                material = broker.credential.for_msal()
        except CredentialError as err:
            self.add(Check(f"key_vault:{setting}", OK, f"read {uri}"))
            self.add(failed("certificate", err))
            return False
        except BrokerError as err:
            self.add(failed(f"key_vault:{setting}", err))
            return False
        self.add(Check(f"key_vault:{setting}", OK, f"read {uri}"))
        if setting == "POWERBI_CLIENT_CERTIFICATE_URI" and isinstance(material, dict):
            chain = ", chain sent as x5c" if "public_certificate" in material else ""
            self.add(Check("certificate", OK, "a certificate with its private key (thumbprint "
                           f"{material.get('thumbprint', '?')}{chain})"))
        return True

    # -- 3. the token ------------------------------------------------------------------------------

    def _token(self, broker: Broker) -> AccessToken | None:
        grant_type = broker.settings.grant_type
        if self.user_token is not None and grant_type != "on_behalf_of":
            self.add(Check("user_token", WARN, f"--user-token is ignored: POWERBI_GRANT_TYPE={grant_type} does not "
                           "exchange user tokens", "Leave out --user-token."))
        if grant_type == "on_behalf_of" and self.user_token is None:
            self.add(Check("token", SKIP, "POWERBI_GRANT_TYPE=on_behalf_of exchanges a signed-in user's token, "
                           "and the doctor has none. To test the exchange, pass --user-token - and paste an "
                           f"access token a user got for api://{broker.settings.client_id}."))
            return None
        from ..callers.caller import Caller

        try:  # the app's own grant dispatch; the doctor is an unverified caller holding --user-token, if any
            if broker.settings.profiles.enabled:  # the service principal's own token; each profile is a header
                token = broker.tokens.service_principal_token()
            else:
                token = broker.tokens.token_for(Caller(mode="doctor", bearer_token=self.user_token))
        except BrokerError as err:
            self.add(failed("token", err))
            return None
        claims = unverified_claims(token.value)
        shown = [f"{name}={claims[name]}" for name in ("aud", "appid", "azp", "tid", "oid", "upn", "scp")
                 if claims.get(name) and not (name == "azp" and claims.get("appid"))]
        roles = claims.get("roles")
        shown.append("roles=" + (",".join(map(str, roles)) if isinstance(roles, list) and roles else "(none)"))
        if not claims:
            shown = ["not a JWT, so no claims to show"]
        self.add(Check("token", OK, f"{grant_type} token: {' '.join(shown)}; {_expiry(token.expires_on)}"))
        return token

    # -- 4. Power BI -------------------------------------------------------------------------------

    def _powerbi(self, settings: Settings, token: AccessToken) -> None:
        from .powerbi import PowerBIChecks

        PowerBIChecks(self.add, self._effective).run(settings, token)
