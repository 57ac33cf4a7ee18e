"""The settings contract: app settings (environment variables) parsed and validated in one place.

:data:`SETTINGS` is the single list of every setting the broker reads; the README table, the
``local.settings.example.json`` file and the infrastructure templates are checked against it by tests.
:func:`load_settings` reports every problem at once, each naming its setting and the fix.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ConfigurationError, SettingProblem

POWERBI_RESOURCE = "https://analysis.windows.net/powerbi/api"
DEFAULT_SCOPE = POWERBI_RESOURCE + "/.default"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_API_URL = "https://api.powerbi.com/v1.0/myorg"

GRANT_TYPES = ("client_credentials", "password", "on_behalf_of")
CALLER_AUTH_MODES = ("anonymous", "jwt", "easyauth", "function_key")
#: Modes this build implements; the others are recognised so that their error says so.
IMPLEMENTED_CALLER_AUTH_MODES = ("anonymous",)

KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("


@dataclass(frozen=True)
class SettingSpec:
    """One app setting of the public contract."""

    name: str
    description: str
    default: str | None = None
    secret: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("POWERBI_TENANT_ID", "Directory (tenant) ID or verified domain of the Entra ID tenant."),
    SettingSpec("POWERBI_CLIENT_ID", "Application (client) ID of the app registration that calls Power BI."),
    SettingSpec("POWERBI_GRANT_TYPE", "client_credentials | password | on_behalf_of.", "client_credentials"),
    SettingSpec("POWERBI_CLIENT_SECRET", "Client secret of the app registration.", secret=True),
    SettingSpec("POWERBI_USERNAME", "Master user's sign-in name (password grant only)."),
    SettingSpec("POWERBI_PASSWORD", "Master user's password (password grant only).", secret=True),
    SettingSpec("POWERBI_AUTHORITY_HOST", "Entra ID authority host (https only).", DEFAULT_AUTHORITY_HOST),
    SettingSpec("POWERBI_SCOPE", "Scope requested for Power BI.", DEFAULT_SCOPE),
    SettingSpec("POWERBI_API_URL", "Power BI REST API base URL.", DEFAULT_API_URL),
    SettingSpec("POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", "Refresh a cached token this long before expiry.", "300"),
    SettingSpec("POWERBI_HTTP_TIMEOUT_SECONDS", "Timeout of each call to Entra ID.", "10"),
    SettingSpec("POWERBI_USER_TOKEN_CACHE_MAX_ENTRIES", "Most per-user tokens kept in memory.", "10000"),
    SettingSpec("CALLER_AUTH", "How callers are authenticated: anonymous | jwt | easyauth | function_key."),
)
SETTING_NAMES = frozenset(spec.name for spec in SETTINGS)
SECRET_SETTINGS = frozenset(spec.name for spec in SETTINGS if spec.secret)
_DEFAULTS = {spec.name: spec.default for spec in SETTINGS}

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")


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
    caller_auth: str | None
    client_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    warnings: tuple[SettingProblem, ...] = ()

    @property
    def authority(self) -> str:
        """The MSAL authority URL for the tenant."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Values that must never appear in a response or a log record."""
        return tuple(v for v in (self.client_secret, self.password) if v)


class _Reader:
    """Reads raw values and collects problems instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[SettingProblem] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or not value.strip():
            return _DEFAULTS.get(name)
        return value.strip()

    def problem(self, name: str, message: str, *, severity: str = "error") -> None:
        self.problems.append(SettingProblem(name, message, severity))

    def required(self, name: str, why: str) -> str | None:
        value = self.raw(name)
        if value is None:
            self.problem(name, f"{name} is not set; {why}")
        return value

    def secret(self, name: str, why: str) -> str | None:
        value = self.required(name, why)
        if value is not None and value.startswith(KEY_VAULT_REFERENCE_PREFIX):
            # The platform leaves the literal reference in place when it cannot resolve it.
            self.problem(
                name,
                f"{name} is a Key Vault reference that the platform did not resolve. Check that the "
                "function app's identity has the 'Key Vault Secrets User' role on the vault, that "
                "keyVaultReferenceIdentity names the user-assigned identity if you use one, that the "
                "vault's network rules let the app in, and that the secret exists and is enabled.",
            )
            return None
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if value.lower() not in allowed:
            self.problem(name, f"{name} must be one of {', '.join(allowed)}; it is '{_shorten(value)}'.")
            return None
        return value.lower()

    def https_url(self, name: str, *, allow_path: bool) -> str:
        value = self.raw(name) or ""
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            self.problem(name, f"{name} must be an https:// URL; it is '{_shorten(value)}'.")
        elif not allow_path and parts.path.strip("/"):
            self.problem(name, f"{name} must be a host URL without a path, such as {_DEFAULTS[name]}.")
        elif parts.query or parts.fragment:
            self.problem(name, f"{name} must not have a query string or fragment.")
        return value.rstrip("/")

    def integer(self, name: str, *, minimum: int, maximum: int) -> int:
        text = self.raw(name) or "0"
        try:
            value = int(text)
        except ValueError:
            self.problem(name, f"{name} must be a whole number; it is '{_shorten(text)}'.")
            return int(_DEFAULTS[name] or 0)
        if not minimum <= value <= maximum:
            self.problem(name, f"{name} must be between {minimum} and {maximum}; it is {value}.")
        return value

    def number(self, name: str, *, minimum: float, maximum: float) -> float:
        text = self.raw(name) or "0"
        try:
            value = float(text)
        except ValueError:
            self.problem(name, f"{name} must be a number of seconds; it is '{_shorten(text)}'.")
            return float(_DEFAULTS[name] or 0)
        if not minimum <= value <= maximum:
            self.problem(name, f"{name} must be between {minimum:g} and {maximum:g}; it is {value:g}.")
        return value


def _shorten(value: str, limit: int = 60) -> str:
    """Echo a (non-secret) bad value back, bounded, so a message names what was found."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _is_guid(value: str) -> bool:
    return bool(_GUID.match(value)) and uuid.UUID(value).int != 0


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Parse and validate the settings in ``environ``.

    Raises :class:`ConfigurationError` listing every problem when any setting is invalid. Warnings
    (settings that the chosen grant type ignores) are kept on the returned object for /api/health.
    """
    read = _Reader(environ)

    tenant_id = read.required("POWERBI_TENANT_ID", "set it to the Directory (tenant) ID of your tenant.")
    if tenant_id is not None and not (_is_guid(tenant_id) or _DOMAIN.match(tenant_id)):
        read.problem(
            "POWERBI_TENANT_ID",
            "POWERBI_TENANT_ID must be the tenant's GUID (Entra ID > Overview > Tenant ID) or its "
            f"verified domain such as contoso.onmicrosoft.com; it is '{_shorten(tenant_id)}'.",
        )
    elif tenant_id is not None and tenant_id.lower() in ("common", "organizations", "consumers"):
        read.problem("POWERBI_TENANT_ID", "POWERBI_TENANT_ID must name one tenant, not a multi-tenant alias.")
    client_id = read.required("POWERBI_CLIENT_ID", "set it to the app registration's Application (client) ID.")
    if client_id is not None and not _is_guid(client_id):
        read.problem(
            "POWERBI_CLIENT_ID",
            "POWERBI_CLIENT_ID must be the Application (client) ID GUID from the app registration's "
            f"Overview page; it is '{_shorten(client_id)}'.",
        )

    grant_type = read.choice("POWERBI_GRANT_TYPE", GRANT_TYPES) or "client_credentials"
    client_secret = read.secret(
        "POWERBI_CLIENT_SECRET", "create a client secret for the app registration and put its Value here."
    )
    username = password = None
    if grant_type == "password":
        username = read.required("POWERBI_USERNAME", "the password grant signs in as this master user.")
        password = read.secret("POWERBI_PASSWORD", "the password grant needs the master user's password.")
    else:
        for name in ("POWERBI_USERNAME", "POWERBI_PASSWORD"):
            if read.raw(name) is not None:
                read.problem(
                    name, f"{name} is ignored with POWERBI_GRANT_TYPE={grant_type}; remove it.", severity="warning"
                )

    authority_host = read.https_url("POWERBI_AUTHORITY_HOST", allow_path=False)
    api_url = read.https_url("POWERBI_API_URL", allow_path=True)
    scope = read.raw("POWERBI_SCOPE") or DEFAULT_SCOPE
    if " " in scope or not scope.endswith("/.default"):
        read.problem(
            "POWERBI_SCOPE",
            f"POWERBI_SCOPE must be a single '<resource>/.default' scope such as {DEFAULT_SCOPE}.",
        )
    margin = read.integer("POWERBI_TOKEN_REFRESH_MARGIN_SECONDS", minimum=0, maximum=3000)
    timeout = read.number("POWERBI_HTTP_TIMEOUT_SECONDS", minimum=0.5, maximum=120)
    cache_size = read.integer("POWERBI_USER_TOKEN_CACHE_MAX_ENTRIES", minimum=1, maximum=1_000_000)

    caller_auth = read.choice("CALLER_AUTH", CALLER_AUTH_MODES)
    if caller_auth is not None and caller_auth not in IMPLEMENTED_CALLER_AUTH_MODES:
        read.problem("CALLER_AUTH", f"CALLER_AUTH={caller_auth} is not available in this version.")

    errors = [p for p in read.problems if p.severity == "error"]
    if errors:
        raise ConfigurationError(read.problems)
    assert tenant_id is not None and client_id is not None  # guaranteed by the checks above
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
        caller_auth=caller_auth,
        client_secret=client_secret,
        username=username,
        password=password,
        warnings=tuple(read.problems),
    )
