"""Bootstrap settings: the few settings read from the process environment only, once, before anything else.

Some settings decide things that happen before (or without) the settings store: how the routes are
indexed (``CALLER_AUTH`` picks the auth level of the token routes), how the App Configuration store is
reached (``AZURE_APPCONFIG_*`` and the identity that reads it, ``AZURE_CLIENT_ID``), and what the
platform vouches for (``WEBSITE_*``, the managed identity endpoint). They come from the app settings,
which the platform hands to the process as environment variables, and from nowhere else: a bootstrap
key found in the App Configuration store is ignored, with a warning on ``/api/health``, because the
routes were already indexed without it. :func:`read_bootstrap` is their one reader; everything that
needs them receives the :class:`Bootstrap` it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..support.errors import SettingProblem
from .identity import AppIdentity
from .reader import SettingReader, SettingSpec, is_guid

CALLER_AUTH_MODES = ("anonymous", "jwt", "easyauth", "function_key")
DEFAULT_APPCONFIG_REFRESH_SECONDS = 60

BOOTSTRAP_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("CALLER_AUTH", "How callers are authenticated: jwt | easyauth | function_key | anonymous. "
                "App settings only."),
    SettingSpec("AZURE_CLIENT_ID", "Client ID of the user-assigned managed identity to use (Key Vault, federation, "
                "App Configuration). App settings only."),
    SettingSpec("AZURE_APPCONFIG_ENDPOINT", "App Configuration store to load TokenBroker:* settings from. "
                "App settings only."),
    SettingSpec("AZURE_APPCONFIG_LABEL", "Label whose key-values override the unlabeled ones. App settings only."),
    SettingSpec("AZURE_APPCONFIG_REFRESH_SECONDS", "How often the sentinel key is checked for changes. "
                "App settings only.", str(DEFAULT_APPCONFIG_REFRESH_SECONDS)),
    SettingSpec("HEALTH_DETAILS", "Show configuration details and problems on /api/health to every caller "
                "(local development). App settings only.", "false"),
)
BOOTSTRAP_NAMES = frozenset(spec.name for spec in BOOTSTRAP_SETTINGS)
#: App Configuration key-values are named ``TokenBroker:<SETTING>``.
STORE_KEY_PREFIX = "TokenBroker:"

@dataclass(frozen=True)
class Platform:
    """What the hosting platform says about this process (App Service / Azure Functions variables)."""

    on_app_service: bool = False
    #: App Service Authentication (Easy Auth) is on: the platform sets WEBSITE_AUTH_ENABLED=True only then.
    authentication_enabled: bool = False
    managed_identity_endpoint: bool = False


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap settings and platform facts, read once from the environment."""

    caller_auth: str | None = None
    identity_client_id: str | None = None
    appconfig_endpoint: str | None = None
    appconfig_label: str | None = None
    appconfig_refresh_seconds: int = DEFAULT_APPCONFIG_REFRESH_SECONDS
    health_details: bool = False
    platform: Platform = Platform()
    problems: tuple[SettingProblem, ...] = ()

    @property
    def token_routes_need_function_key(self) -> bool:
        """True when the token routes must be indexed with auth level FUNCTION (the host checks a key)."""
        return self.caller_auth == "function_key"

    @property
    def app_identity(self) -> AppIdentity:
        """The app's own Azure identity (Key Vault, App Configuration, federation)."""
        return AppIdentity(self.identity_client_id, on_managed_identity_host=self.platform.managed_identity_endpoint)


def read_platform(environ: Mapping[str, str]) -> Platform:
    """The platform facts in ``environ`` (absent variables mean: not on that platform feature)."""
    return Platform(
        on_app_service=bool(environ.get("WEBSITE_SITE_NAME") and environ.get("WEBSITE_INSTANCE_ID")),
        authentication_enabled=(environ.get("WEBSITE_AUTH_ENABLED") or "").strip().lower() == "true",
        managed_identity_endpoint=bool(environ.get("IDENTITY_ENDPOINT") or environ.get("MSI_ENDPOINT")),
    )


def read_bootstrap(environ: Mapping[str, str]) -> Bootstrap:
    """Read and validate the bootstrap settings from the process environment ``environ``.

    Never raises: problems are returned on the :class:`Bootstrap` and reported with the other settings'.
    """
    read = SettingReader(environ, BOOTSTRAP_SETTINGS)
    identity = read.raw("AZURE_CLIENT_ID")
    if identity is not None and not is_guid(identity):
        read.problem("AZURE_CLIENT_ID", "AZURE_CLIENT_ID must be the client ID GUID of the user-assigned managed "
                     "identity (its Overview page).")
        identity = None
    endpoint = None
    if read.is_set("AZURE_APPCONFIG_ENDPOINT"):
        found = len(read.problems)
        endpoint = read.https_url("AZURE_APPCONFIG_ENDPOINT", allow_path=False)
        endpoint = endpoint if len(read.problems) == found else None  # never try a URL known to be wrong
    return Bootstrap(
        caller_auth=read.choice("CALLER_AUTH", CALLER_AUTH_MODES),
        identity_client_id=identity,
        appconfig_endpoint=endpoint,
        appconfig_label=read.raw("AZURE_APPCONFIG_LABEL"),
        appconfig_refresh_seconds=read.integer("AZURE_APPCONFIG_REFRESH_SECONDS", minimum=1, maximum=86400),
        health_details=read.flag("HEALTH_DETAILS"),
        platform=read_platform(environ),
        problems=tuple(read.problems),
    )


def merge_store(environ: Mapping[str, str],
                store: Mapping[str, str] | None) -> tuple[Mapping[str, str], tuple[SettingProblem, ...]]:
    """The settings the broker reads: the store's, overridden by every non-blank environment value.

    Bootstrap settings in the store are left out, each with a warning: they decide how the app was
    indexed and how the store itself is reached, so only the app settings may carry them.
    """
    if not store:
        return environ, ()
    ignored = sorted(name for name in store if name in BOOTSTRAP_NAMES)
    warnings = tuple(SettingProblem(
        name, f"{STORE_KEY_PREFIX}{name} in App Configuration is ignored: {name} is read only from the function app's "
        "own app settings (it decides how the routes are indexed and how the store is reached). Move it there.",
        "warning") for name in ignored)
    kept = {k: v for k, v in store.items() if k not in BOOTSTRAP_NAMES}
    return {**kept, **{k: v for k, v in environ.items() if v.strip()}}, warnings
