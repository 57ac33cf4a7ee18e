"""The caller token issuer's signing keys (its JWKS): cached, fetched single-flight, backing off after failures.

Rules:

- The keys are fetched on first use and refreshed when older than :data:`KEYS_MAX_AGE_SECONDS`; a token
  naming an unknown ``kid`` refetches them at most once per ``CALLER_JWT_JWKS_REFRESH_COOLDOWN_SECONDS``
  (the issuer may have rotated). A failed refresh keeps the last good keys.
- Single flight: however many requests need a fetch at once, one of them fetches; the others wait for
  that fetch and share its keys or its error. Requests that already have usable keys never wait on an
  hourly refresh.
- After a failed fetch with no keys to fall back on, fetches stop for a backoff (2 s, doubling with
  each consecutive failure up to 30 s): requests in it answer ``503 caller_keys_unavailable`` with
  ``Retry-After`` without a network call, so a slow or failing issuer is not hammered.
- :attr:`SigningKeys.generation` changes whenever a key the broker had is withdrawn or replaced, so
  anything verified with the old keys can be dropped (keys only added leave it unchanged).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable

import jwt
import requests

from ..support.errors import BrokerError, IssuerUnavailableError

log = logging.getLogger(__name__)

KEYS_MAX_AGE_SECONDS = 3600.0
FAILURE_BACKOFF_SECONDS = 2.0
FAILURE_BACKOFF_MAX_SECONDS = 30.0


class _Flight:
    """One fetch in progress; waiters block on ``done`` and then read ``error``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BrokerError | None = None


class SigningKeys:
    """The issuer's signing keys by ``kid``."""

    def __init__(self, locate_jwks: Callable[[], str], *, timeout: float, refresh_cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._locate_jwks = locate_jwks
        self._jwks_uri: str | None = None
        self._timeout = timeout
        self._cooldown = refresh_cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fingerprints: dict[str, str] = {}
        self._fetched_at: float | None = None  # last fetch that succeeded (or failed with old keys kept)
        self._flight: _Flight | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: BrokerError | None = None
        #: Changes when a key is withdrawn or replaced; compare before and after using the keys.
        self.generation = 0

    def get(self, kid: str) -> jwt.PyJWK | None:
        """The key with id ``kid``, None when the issuer has no such key.

        Raises :class:`IssuerUnavailableError` (``caller_keys_unavailable``) when no keys can be had.
        """
        fetched_at = self._fetched_at
        if fetched_at is None:
            self._refresh(wait=True)
        elif self._clock() - fetched_at > KEYS_MAX_AGE_SECONDS:
            self._refresh(wait=False)  # the current keys stay usable while one request refreshes them
        key = self._keys.get(kid)
        fetched_at = self._fetched_at
        if key is None and fetched_at is not None and self._clock() - fetched_at >= self._cooldown:
            self._refresh(wait=True)  # maybe the issuer rotated its keys
            key = self._keys.get(kid)
        return key

    def _refresh(self, *, wait: bool) -> None:
        """Fetch the keys, or join the fetch in progress (``wait``), or do nothing while backing off with keys."""
        with self._lock:
            flight = self._flight
            leader = flight is None
            if flight is None:
                remaining = self._retry_at - self._clock()
                if remaining > 0:
                    if self._keys:
                        return  # keep using the last good keys until the backoff ends
                    raise self._unavailable(self._last_error, retry_after=remaining)
                flight = self._flight = _Flight()
        if leader:
            self._lead(flight)
        elif not wait:
            return
        elif not flight.done.wait(self._timeout * 2 + 1):  # discovery + JWKS, each bounded by the timeout
            raise self._unavailable(None, retry_after=1)
        if flight.error is not None and not self._keys:
            raise self._unavailable(flight.error, retry_after=self._retry_at - self._clock()) from flight.error

    def _lead(self, flight: _Flight) -> None:
        try:
            keys, fingerprints = self._fetch()
        except BrokerError as err:
            with self._lock:
                self._failures += 1
                backoff = min(FAILURE_BACKOFF_MAX_SECONDS, FAILURE_BACKOFF_SECONDS * 2 ** (self._failures - 1))
                self._retry_at = self._clock() + backoff
                self._last_error = err
                if self._keys:
                    self._fetched_at = self._clock()
                self._flight = None
            if self._keys:
                log.warning("Refreshing the caller token signing keys failed (%s); keeping the old keys",
                            err.code)
            else:
                log.warning("Fetching the caller token signing keys failed (%s); not retrying for %.0f s",
                            err.code, backoff)
            flight.error = err
            flight.done.set()
            return
        except BaseException:  # never leave waiters hanging, whatever happened
            with self._lock:
                self._flight = None
            flight.error = IssuerUnavailableError("Fetching the signing keys failed.")
            flight.done.set()
            raise
        with self._lock:
            withdrawn = [kid for kid, fp in self._fingerprints.items() if fingerprints.get(kid) != fp]
            if withdrawn:
                self.generation += 1
            self._keys, self._fingerprints = keys, fingerprints
            self._fetched_at = self._clock()
            self._failures, self._retry_at, self._last_error = 0, 0.0, None
            self._flight = None
        flight.done.set()
        log.info("Fetched %d caller token signing keys (%d withdrawn or replaced)", len(keys), len(withdrawn))

    def _fetch(self) -> tuple[dict[str, jwt.PyJWK], dict[str, str]]:
        if self._jwks_uri is None:
            self._jwks_uri = self._locate_jwks()
        try:
            response = requests.get(self._jwks_uri, timeout=self._timeout)
            response.raise_for_status()
            document = response.json()
            if not isinstance(document, dict):
                raise ValueError("the JWKS is not a JSON object")
            key_set = jwt.PyJWKSet.from_dict(document)
        except (requests.RequestException, ValueError, TypeError, jwt.PyJWTError) as err:
            raise IssuerUnavailableError(
                "The signing keys of CALLER_JWT_ISSUER could not be fetched, so no caller can be verified. "
                "Check CALLER_JWT_ISSUER / CALLER_JWT_JWKS_URI and the network path.",
                setting="CALLER_JWT_JWKS_URI",
            ) from err
        keys = {key.key_id: key for key in key_set.keys if key.key_id}
        published = {str(jwk.get("kid")): jwk for jwk in document.get("keys", []) if isinstance(jwk, dict)}
        fingerprints = {kid: json.dumps(published.get(kid), sort_keys=True) for kid in keys}
        return keys, fingerprints

    @staticmethod
    def _unavailable(cause: BrokerError | None, *, retry_after: float) -> IssuerUnavailableError:
        """A fresh error for this request (an exception instance is never raised in two threads)."""
        seconds = max(1, math.ceil(retry_after))
        if cause is None:
            return IssuerUnavailableError(
                "The signing keys of CALLER_JWT_ISSUER are being fetched and did not arrive in time; retry shortly.",
                setting="CALLER_JWT_JWKS_URI", retry_after=seconds)
        return IssuerUnavailableError(cause.detail, code=cause.code, setting=cause.setting, retry_after=seconds)
