"""Settings from an Azure App Configuration store, reached through the bootstrap settings (``AZURE_APPCONFIG_*``).

When ``AZURE_APPCONFIG_ENDPOINT`` is set, key-values named ``TokenBroker:<SETTING>`` (unlabeled, then
``AZURE_APPCONFIG_LABEL``, which wins) are loaded with Microsoft's provider library and the app's
identity; Key Vault references among them are resolved with the same identity. App settings in the
environment win over the store, and bootstrap settings (:mod:`token_broker.config.bootstrap`) are never taken
from it. Every ``AZURE_APPCONFIG_REFRESH_SECONDS`` the sentinel key ``TokenBroker:Sentinel`` is checked;
when it changed, everything is reloaded and the broker rebuilt. The provider is imported only when a
store is configured.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..support import telemetry
from ..support.errors import AppConfigurationError, BrokerError
from .bootstrap import STORE_KEY_PREFIX, Bootstrap

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

KEY_PREFIX = STORE_KEY_PREFIX
SENTINEL_KEY = KEY_PREFIX + "Sentinel"
STARTUP_TIMEOUT_SECONDS = 10
RETRY_AFTER_FAILURE_SECONDS = 30.0

class AppConfigurationSource:
    """The store's settings, loaded once and refreshed through the sentinel key."""

    def __init__(self, endpoint: str, bootstrap: Bootstrap, *, credential: Callable[[], TokenCredential]) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._label = bootstrap.appconfig_label
        self._identity = bootstrap.app_identity
        self._credential = credential  # the app's identity, made on first load (azure-identity is imported then)
        self._interval = float(bootstrap.appconfig_refresh_seconds)
        self._provider: Any = None
        self._changed = False
        self._failed_at: float | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._refresh_error: str | None = None  # set by the provider's callback during refresh()

    def values(self) -> dict[str, str]:
        """The store's settings (names without the prefix); loads the store on first use."""
        if self._provider is None:
            self._load()
        # A value with a JSON content type comes back parsed (TokenBroker:Profiles:<customer> as an object, say):
        # it is handed on as JSON text, as the same setting in an app setting would be.
        return {str(k): json.dumps(v) if isinstance(v, dict | list) else str(v)
                for k, v in self._provider.items() if k != "Sentinel" and v is not None}

    def refresh_due(self) -> bool:
        """Cheap check for the request path: is it time to look at the sentinel key?"""
        return time.monotonic() >= self._next_check

    def refresh(self) -> bool:
        """Check the sentinel (one conditional request); True when the settings changed."""
        if not self._lock.acquire(blocking=False):
            return False  # another request is checking right now
        try:
            self._next_check = time.monotonic() + self._interval
            if self._provider is None:
                return False
            self._changed = False
            self._refresh_error = None
            with telemetry.upstream_call("app_configuration", "refresh") as upstream:
                self._provider.refresh()
                if self._refresh_error:
                    upstream.failed(self._refresh_error)
            return self._changed
        finally:
            self._lock.release()

    def _on_refresh(self) -> None:
        self._changed = True
        log.info("Settings in App Configuration changed; rebuilding the broker")

    def _on_refresh_error(self, err: Exception) -> None:
        self._refresh_error = type(err).__name__
        log.warning("Checking App Configuration failed (%s); keeping the current settings", self._refresh_error)

    def _load(self) -> None:
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_SECONDS:
            raise self._error()
        from azure.appconfiguration.provider import SettingSelector, load

        credential = self._credential()
        selects = [SettingSelector(key_filter=KEY_PREFIX + "*")]
        if self._label:
            selects.append(SettingSelector(key_filter=KEY_PREFIX + "*", label_filter=self._label))
        with telemetry.upstream_call("app_configuration", "load"):
            self._load_with(load, credential, selects)
        self._failed_at = None
        self._next_check = time.monotonic() + self._interval
        log.info("Loaded %d settings from App Configuration %s", len(self._provider), self.endpoint)

    def _load_with(self, load: Any, credential: TokenCredential, selects: list[Any]) -> None:
        from azure.appconfiguration.provider import WatchKey

        try:
            self._provider = load(
                endpoint=self.endpoint, credential=credential, selects=selects, trim_prefixes=[KEY_PREFIX],
                keyvault_credential=credential, refresh_on=[WatchKey(SENTINEL_KEY, label=self._label or "\0")],
                refresh_interval=int(self._interval), on_refresh_success=self._on_refresh,
                on_refresh_error=self._on_refresh_error,
                startup_timeout=STARTUP_TIMEOUT_SECONDS, replica_discovery_enabled=False,
            )
        except Exception as err:  # the provider wraps its failures in TimeoutError, ValueError, HttpResponseError
            self._failed_at = time.monotonic()
            log.error("Loading settings from App Configuration failed: %s", type(err).__name__)
            if isinstance(err, BrokerError):
                raise  # e.g. the app's identity is unavailable: that error names the fix better
            raise self._error() from err

    def _error(self) -> AppConfigurationError:
        return AppConfigurationError(
            f"Settings could not be loaded from {self.endpoint}. Check that the app's identity "
            f"({self._identity.describe()}) has the 'App Configuration Data Reader' role on the "
            "store, that the endpoint is right and reachable, and, for Key Vault references in the store, that "
            "the identity may read those secrets. Retrying every 30 seconds.",
            setting="AZURE_APPCONFIG_ENDPOINT", retry_after=int(RETRY_AFTER_FAILURE_SECONDS))
