"""The settings contract: app settings (environment variables) parsed and validated in one place.

:data:`SETTINGS` is the single list of every setting the broker reads; the README table, the
``local.settings.example.json`` file and the infrastructure templates are checked against it by tests.
:func:`load_settings` is the one pipeline: the bootstrap settings from the environment only
(:mod:`token_broker.config.bootstrap`), every other setting from the environment over the App Configuration
store. It reports every problem at once, each naming its setting and the fix.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..support.errors import ConfigurationError, SettingProblem
from .bootstrap import BOOTSTRAP_SETTINGS, Bootstrap, merge_store, read_bootstrap
from .callers import CALLER_SETTINGS, CallerSettings, read_caller_settings
from .clouds import CLOUD_NAMES, CLOUDS, PUBLIC, Cloud
from .credentials import CREDENTIAL_SETTINGS, CredentialSettings, read_credential_settings
from .embed import EMBED_SETTINGS, EmbedSettings, read_embed_settings
from .profiles import PROFILE_SETTINGS, ProfileSettings, read_profile_settings
from .proxy import PROXY_SETTINGS, ProxySettings, read_proxy_settings
from .reader import SettingReader, SettingSpec, is_guid
from .shared_cache import SHARED_CACHE_SETTINGS, SharedCacheSettings, read_shared_cache_settings

POWERBI_RESOURCE = PUBLIC.powerbi_resource
DEFAULT_SCOPE = PUBLIC.scope
DEFAULT_AUTHORITY_HOST = PUBLIC.authority_host
DEFAULT_API_URL = PUBLIC.api_url

GRANT_TYPES = ("client_credentials", "password", "on_behalf_of")

POWERBI_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("POWERBI_TENANT_ID", "Directory (tenant) ID or verified domain of the Entra ID tenant."),
    SettingSpec("POWERBI_CLIENT_ID", "Application (client) ID of the app registration that calls Power BI."),
    SettingSpec("POWERBI_GRANT_TYPE", "client_credentials | password | on_behalf_of.", "client_credentials"),
    SettingSpec("POWERBI_CLIENT_SECRET", "Client secret of the app registration.", secret=True),
    SettingSpec("POWERBI_USERNAME", "Master user's sign-in name (password grant only)."),
    SettingSpec("POWERBI_PASSWORD", "Master user's password (password grant only).", secret=True),
    SettingSpec("POWERBI_CLOUD", f"National cloud presets: {' | '.join(CLOUD_NAMES)}.", "Public"),
    SettingSpec("POWERBI_AUTHORITY_HOST", "Entra ID authority host (https only); default from POWERBI_CLOUD."),
    SettingSpec("POWERBI_SCOPE", "Scope requested for Power BI; default from POWERBI_CLOUD."),
    SettingSpec("POWERBI_API_URL", "Power BI REST API base URL; default from POWERBI_CLOUD."),
    SettingSpec("POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", "Refresh a cached token this long before expiry.", "300"),
    SettingSpec("POWERBI_HTTP_TIMEOUT_SECONDS", "Timeout of each call to Entra ID.", "10"),
    SettingSpec("POWERBI_USER_TOKEN_CACHE_MAX_ENTRIES", "Most per-user tokens kept in memory.", "10000"),
)
#: Every setting of the contract, in documentation order.
SETTINGS: tuple[SettingSpec, ...] = (
    BOOTSTRAP_SETTINGS + POWERBI_SETTINGS + CREDENTIAL_SETTINGS + CALLER_SETTINGS + EMBED_SETTINGS + PROXY_SETTINGS
    + SHARED_CACHE_SETTINGS
    + PROFILE_SETTINGS
)
SETTING_NAMES = frozenset(spec.name for spec in SETTINGS)
SECRET_SETTINGS = frozenset(spec.name for spec in SETTINGS if spec.secret)

_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")


@dataclass(frozen=True)
class TokenSettings:
    """What the token service reads: the app registration, the grant, the authority, timing and bounds."""

    client_id: str
    authority: str
    scope: str
    grant_type: str
    username: str | None
    http_timeout_seconds: float
    token_refresh_margin_seconds: int
    user_token_cache_max_entries: int
    #: Profile mode (POWERBI_PROFILE_CLAIM): every token is for a caller mapped to a profile, or none is given.
    profiles: bool = False


@dataclass(frozen=True)
class Settings:
    """Validated settings. Secrets are excluded from ``repr`` so that they never reach a log line."""

    tenant_id: str
    client_id: str
    grant_type: str
    authority_host: str
    scope: str
    api_url: str
    token_refresh_margin_seconds: int
    http_timeout_seconds: float
    user_token_cache_max_entries: int
    callers: CallerSettings
    credentials: CredentialSettings
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)  # the Power BI REST proxy (POWERBI_PROXY_*)
    #: The shared cache tier on Redis (CACHE_*); off unless CACHE_REDIS_HOST is set.
    shared_cache: SharedCacheSettings = field(default_factory=SharedCacheSettings)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)  # multitenancy (POWERBI_PROFILE*)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    cloud: Cloud = PUBLIC
    username: str | None = None
    warnings: tuple[SettingProblem, ...] = ()

    @property
    def authority(self) -> str:
        """The MSAL authority URL for the tenant."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def tokens(self) -> TokenSettings:
        """The part of the settings the token service uses."""
        return TokenSettings(self.client_id, self.authority, self.scope, self.grant_type, self.username,
                             self.http_timeout_seconds, self.token_refresh_margin_seconds,
                             self.user_token_cache_max_entries, self.profiles.enabled)

    @property
    def caller_auth(self) -> str | None:
        """``CALLER_AUTH``; None when unset (token endpoints fail closed)."""
        return self.callers.mode

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Secret values held in the settings themselves (Key Vault values are registered when read)."""
        return tuple(v for v in (self.credentials.client_secret, self.credentials.password,
                                 self.shared_cache.password) if v)


def _is_nonzero_guid(value: str) -> bool:
    return is_guid(value) and uuid.UUID(value).int != 0


def load_settings(environ: Mapping[str, str], *, store: Mapping[str, str] | None = None,
                  bootstrap: Bootstrap | None = None) -> Settings:
    """Parse and validate the settings: ``environ`` is the process environment (the app settings),
    ``store`` the App Configuration store's values (names without the prefix), ``bootstrap`` the
    bootstrap settings already read from ``environ`` (read here when not given).

    Raises :class:`ConfigurationError` listing every problem when any setting is invalid. Warnings
    (settings that the chosen grant type ignores, bootstrap keys found in the store) are kept on the
    returned object for /api/health.
    """
    bootstrap = bootstrap if bootstrap is not None else read_bootstrap(environ)
    values, ignored = merge_store(environ, store)
    read = SettingReader(values, SETTINGS)
    read.problems.extend([*bootstrap.problems, *ignored])

    tenant_id = read.required("POWERBI_TENANT_ID", "set it to the Directory (tenant) ID of your tenant.")
    if tenant_id is not None and not (_is_nonzero_guid(tenant_id) or _DOMAIN.match(tenant_id)):
        read.problem(
            "POWERBI_TENANT_ID",
            "POWERBI_TENANT_ID must be the tenant's GUID (Entra ID > Overview > Tenant ID) or its "
            "verified domain such as contoso.onmicrosoft.com.",
        )
    elif tenant_id is not None and tenant_id.lower() in ("common", "organizations", "consumers"):
        read.problem("POWERBI_TENANT_ID", "POWERBI_TENANT_ID must name one tenant, not a multi-tenant alias.")
    client_id = read.required("POWERBI_CLIENT_ID", "set it to the app registration's Application (client) ID.")
    if client_id is not None and not _is_nonzero_guid(client_id):
        read.problem(
            "POWERBI_CLIENT_ID",
            "POWERBI_CLIENT_ID must be the Application (client) ID GUID from the app registration's "
            "Overview page.",
        )

    grant_type = read.choice("POWERBI_GRANT_TYPE", GRANT_TYPES) or "client_credentials"
    credentials = read_credential_settings(read, grant_type=grant_type, identity=bootstrap.app_identity)
    username = None
    if grant_type == "password":
        username = read.required("POWERBI_USERNAME", "the password grant signs in as this master user.")
    elif read.is_set("POWERBI_USERNAME"):
        read.problem("POWERBI_USERNAME", f"POWERBI_USERNAME is ignored with POWERBI_GRANT_TYPE={grant_type}; "
                     "remove it.", severity="warning")

    cloud = CLOUDS.get((read.choice("POWERBI_CLOUD", CLOUD_NAMES) or "public"), PUBLIC)
    # Each preset is overridable setting by setting; an explicit value wins over the cloud's.
    authority_host = (read.https_url("POWERBI_AUTHORITY_HOST", allow_path=False)
                      if read.is_set("POWERBI_AUTHORITY_HOST") else cloud.authority_host)
    if grant_type == "password" and authority_host and urlsplit(authority_host).port not in (None, 443):
        read.problem("POWERBI_AUTHORITY_HOST", "the password grant cannot work with an authority on a port other "
                     "than 443: MSAL's user-realm lookup for it always goes to port 443. Serve the authority on "
                     "port 443, or use another POWERBI_GRANT_TYPE.")
    api_url = read.https_url("POWERBI_API_URL", allow_path=True) if read.is_set("POWERBI_API_URL") else cloud.api_url
    scope = read.raw("POWERBI_SCOPE") or cloud.scope
    if " " in scope or not scope.endswith("/.default"):
        read.problem(
            "POWERBI_SCOPE",
            f"POWERBI_SCOPE must be a single '<resource>/.default' scope such as {cloud.scope}.",
        )
    margin = read.integer("POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", minimum=0, maximum=3000)
    timeout = read.number("POWERBI_HTTP_TIMEOUT_SECONDS", minimum=0.5, maximum=120)
    cache_size = read.integer("POWERBI_USER_TOKEN_CACHE_MAX_ENTRIES", minimum=1, maximum=1_000_000)

    callers = read_caller_settings(read, bootstrap=bootstrap, client_id=client_id, grant_type=grant_type)
    embed = read_embed_settings(read)
    profiles = read_profile_settings(read, grant_type=grant_type, caller_auth=callers.mode)
    unlisted = sum(1 for p in profiles.customers.values() if p.workspaces is None)
    if profiles.enabled and unlisted and not embed.allowed_workspaces:
        read.problem("POWERBI_PROFILES", f"{unlisted} customer(s) list no workspaces and EMBED_ALLOWED_WORKSPACES is "
                     "not set, so their callers get no embed token (embed_not_configured): give each customer its "
                     "\"workspaces\" or set EMBED_ALLOWED_WORKSPACES.", severity="warning")
    # A customer's own workspace list is an allow-list too (profile mode): the proxy needs one or the other.
    proxy = read_proxy_settings(read, allowed_workspaces=embed.allowed_workspaces or profiles.listed_workspaces,
                                caller_auth=callers.mode)
    shared_cache = read_shared_cache_settings(read)

    errors = [p for p in read.problems if p.severity == "error"]
    if errors or tenant_id is None or client_id is None:
        raise ConfigurationError(read.problems)
    return Settings(
        tenant_id=tenant_id,
        client_id=client_id,
        grant_type=grant_type,
        authority_host=authority_host,
        scope=scope,
        api_url=api_url,
        token_refresh_margin_seconds=margin,
        http_timeout_seconds=timeout,
        user_token_cache_max_entries=cache_size,
        callers=callers,
        credentials=credentials,
        embed=embed,
        proxy=proxy,
        shared_cache=shared_cache,
        profiles=profiles,
        bootstrap=bootstrap,
        cloud=cloud,
        username=username,
        warnings=tuple(read.problems),
    )
