"""The Redis connection of the shared tier: lazy, TLS, Entra ID or password auth, bounded, never raising.

redis-py is imported here only, and only when ``CACHE_REDIS_HOST`` is set (cold start). Its default retries
(3, with backoff) turned one command against a frozen Redis into 11.6 s; here a command gets no retry and
a short socket timeout, and every failure opens the circuit breaker, so a dead Redis costs one timeout per
:data:`~token_broker.shared.breaker.OPEN_SECONDS`. :meth:`RedisConnection.call` never raises: it answers
:data:`UNAVAILABLE` and counts the failure (upstream ``redis``, outcome ``error``).

``CACHE_REDIS_AUTH=entra``: ``redis-entraid``'s streaming credential provider over the app's own identity
(:func:`token_broker.aad.identity.app_credential`): the user name is the identity's object id, the password an
access token for ``https://redis.azure.com/.default``, re-sent on open connections before it expires.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ..config.identity import AppIdentity
from ..config.shared_cache import SharedCacheSettings
from ..support import telemetry
from .breaker import CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")
REDIS_SCOPE = "https://redis.azure.com/.default"
#: Socket timeouts, seconds: Azure Managed Redis answers in about a millisecond from the same region.
CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 0.25
MAX_CONNECTIONS = 64


class _Unavailable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final = _Unavailable()


class RedisConnection:
    """One client (one connection pool) per broker; commands go through :meth:`call`."""

    def __init__(self, settings: SharedCacheSettings, identity: AppIdentity, *,
                 breaker: CircuitBreaker | None = None, command_timeout: float = COMMAND_TIMEOUT) -> None:
        self.settings = settings
        self._identity = identity
        self.breaker = breaker or CircuitBreaker()
        self._command_timeout = command_timeout
        self._client: Any = None
        self._lock = threading.Lock()
        self.failures = 0

    def client(self) -> Any:
        """The redis-py client, created on first use (no network until a command runs)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._create()
                client = self._client
        return client

    def _create(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        settings = self.settings
        options: dict[str, Any] = {
            "host": settings.host, "port": settings.port, "socket_timeout": self._command_timeout,
            "socket_connect_timeout": CONNECT_TIMEOUT, "retry": Retry(NoBackoff(), 0),
            "max_connections": MAX_CONNECTIONS, "health_check_interval": 30, "client_name": "token-broker",
        }
        if settings.tls:
            options.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True)
        if settings.auth == "password":
            options["password"] = settings.password
        elif settings.auth == "entra":
            options["credential_provider"] = entra_credentials(self._identity)
        return redis.Redis(**options)

    def call(self, operation: str, command: Callable[[Any], T]) -> T | _Unavailable:
        """``command(client)``'s result, or :data:`UNAVAILABLE` (breaker open, or the command failed)."""
        if not self.breaker.allow():
            return UNAVAILABLE
        import redis

        with telemetry.upstream_call("redis", operation) as upstream:
            try:
                result = command(self.client())
            except redis.ResponseError as err:  # Redis answered (full: OOM, or a script error): no timeout to spare
                self._failed(upstream, operation, err, open_breaker=False)
                return UNAVAILABLE
            except (redis.RedisError, OSError) as err:  # down, slow, refused, auth error
                self._failed(upstream, operation, err, open_breaker=True)
                return UNAVAILABLE
            except Exception as err:  # the Entra ID credential, or anything a library may raise
                self._failed(upstream, operation, err, open_breaker=True)
                return UNAVAILABLE
        self.breaker.success()
        return result

    def _failed(self, upstream: telemetry.UpstreamCall, operation: str, err: BaseException, *,
                open_breaker: bool) -> None:
        self.failures += 1
        kind = error_type(err)
        upstream.failed(kind)
        if open_breaker:
            self.breaker.failure()
        log.warning("Redis %s failed (%s); serving without the shared cache%s", operation, kind,
                    " for the next seconds" if open_breaker else "")

    def close(self) -> None:
        client = self._client
        if client is not None:
            client.close()


def error_type(err: BaseException) -> str:
    """A low-cardinality name of a Redis failure for telemetry and logs (never the server's text)."""
    name = type(err).__name__
    text = str(err)
    if name == "OutOfMemoryError" or "maxmemory" in text:
        return "redis_out_of_memory"
    if name in ("AuthenticationError", "AuthenticationWrongNumberOfArgsError") or "WRONGPASS" in text \
            or "NOAUTH" in text or "NOPERM" in text:
        return "redis_auth_failed"
    if name in ("MovedError", "AskError") or text.startswith(("MOVED", "ASK", "CROSSSLOT")):
        return "redis_cluster_policy"  # an OSS-cluster database: the broker's client needs one endpoint
    if name == "TimeoutError":
        return "redis_timeout"
    if name == "ConnectionError":
        return "redis_unreachable"
    return f"redis_{name}"


def entra_credentials(identity: AppIdentity) -> Any:
    """redis-entraid's streaming credential provider over the app's identity (object id + access token)."""
    from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
    from redis_entraid.cred_provider import EntraIdCredentialsProvider
    from redis_entraid.identity_provider import DefaultAzureCredentialProvider

    from ..aad.identity import app_credential

    provider = DefaultAzureCredentialProvider(app_credential(identity), (REDIS_SCOPE,))
    config = TokenManagerConfig(expiration_refresh_ratio=0.7, lower_refresh_bound_millis=0,
                                token_request_execution_timeout_in_ms=5000,
                                retry_policy=RetryPolicy(max_attempts=3, delay_in_ms=100))
    return EntraIdCredentialsProvider(provider, config)
