"""The process lifecycle: bootstrap settings read once, the broker built on first use, the store refreshed.

The Functions host keeps one Python process alive across invocations. :class:`Runtime` owns what lives
that long: the bootstrap settings (read once from the process environment, the only place the product
reads it), how the token routes were indexed, the App Configuration source and the current
:class:`~token_broker.broker.Broker`. Instances of the product classes never read module state; they
receive what they need when the runtime builds them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from .aad.identity import app_credential
from .broker import Broker
from .config.bootstrap import Bootstrap, read_bootstrap
from .config.contract import load_settings
from .config.store import AppConfigurationSource
from .support.errors import ConfigurationError

log = logging.getLogger(__name__)


class Runtime:
    """One process's broker, built lazily from ``environ`` (the app settings) and the optional store."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._bootstrap: Bootstrap | None = None
        self._store: AppConfigurationSource | None = None
        self._current: Broker | ConfigurationError | None = None
        #: Whether the token routes were indexed with auth level FUNCTION; None until indexed.
        self._indexed_function_key: bool | None = None

    @property
    def bootstrap(self) -> Bootstrap:
        """The bootstrap settings, read from the environment once (again only after :meth:`reset`)."""
        bootstrap = self._bootstrap
        if bootstrap is None:
            with self._lock:
                if self._bootstrap is None:
                    self._bootstrap = read_bootstrap(self._environ)
                bootstrap = self._bootstrap
        return bootstrap

    def index_token_routes(self) -> bool:
        """Decide, and remember, whether the token routes are indexed with auth level FUNCTION.

        Called once by ``function_app`` while the worker indexes the app; the broker later refuses to
        issue tokens if ``CALLER_AUTH`` no longer matches what the host enforces for these routes.
        """
        need_key = self.bootstrap.token_routes_need_function_key
        with self._lock:
            if self._indexed_function_key != need_key:
                self._indexed_function_key = need_key
                self._current = None  # a broker built before indexing did not know how the routes are served
        return need_key

    def broker(self) -> Broker:
        """The broker, built on first use; raises :class:`ConfigurationError` when the settings are invalid.

        With an App Configuration store, a due sentinel check runs first (one request, on one thread at a
        time); when the store's settings changed, the broker is rebuilt from them.
        """
        state = self._current
        store = self._store
        if store is not None and store.refresh_due() and store.refresh():
            with self._lock:
                self._current = None
            state = None
        if state is None:
            state = self._build()
        if isinstance(state, ConfigurationError):
            # A new instance each time: re-raising one instance would grow its traceback forever.
            raise ConfigurationError(state.problems)
        return state

    def _build(self) -> Broker | ConfigurationError:
        bootstrap = self.bootstrap
        with self._lock:
            if self._current is None:
                store_values = None
                if bootstrap.appconfig_endpoint:
                    if self._store is None:
                        identity = bootstrap.app_identity
                        self._store = AppConfigurationSource(bootstrap.appconfig_endpoint, bootstrap,
                                                             credential=lambda: app_credential(identity))
                    store_values = self._store.values()  # AppConfigurationError (503) is not cached
                try:
                    settings = load_settings(self._environ, store=store_values, bootstrap=bootstrap)
                    self._current = Broker.build(settings, indexed_function_key=self._indexed_function_key,
                                                 settings_source="app settings + App Configuration"
                                                 if store_values is not None else "app settings")
                except ConfigurationError as err:
                    for problem in err.problems:
                        level = logging.ERROR if problem.severity == "error" else logging.WARNING
                        log.log(level, "Setting %s: %s", problem.setting, problem.message)
                    self._current = err
            return self._current

    def reset(self) -> None:
        """Forget the bootstrap settings, the store and the broker: the next request reads everything again.

        How the routes were indexed is kept: only a new process indexes them again.
        """
        with self._lock:
            self._bootstrap = None
            self._store = None
            self._current = None


_runtime = Runtime(os.environ)


def current() -> Runtime:
    """This process's runtime."""
    return _runtime


def current_broker() -> Broker:
    """This process's broker (see :meth:`Runtime.broker`)."""
    return _runtime.broker()


def reset() -> None:
    """Forget everything read from the settings (see :meth:`Runtime.reset`)."""
    _runtime.reset()
