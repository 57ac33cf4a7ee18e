"""OpenTelemetry metrics and traces, through the OpenTelemetry API only (never the SDK or an exporter).

Whoever hosts the broker decides where telemetry goes: on Azure the Python worker configures the Azure
Monitor distro (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``, docs/OPERATIONS.md); in tests and in
``python -m devtools --metrics`` an SDK with an in-memory reader. Nobody can have configured a provider
without importing ``opentelemetry`` first, so until some module of the process has, every function here
returns after one ``sys.modules`` lookup and the broker never imports the API itself (no cold-start cost).
Once it is imported, the instruments come from the global providers (proxies that follow a provider set
later); with no SDK behind them they are OpenTelemetry's no-op implementations.

Attributes are low-cardinality names the broker chooses (a route template, a cache name, an upstream, a
problem ``code``) and upstream support ids (Power BI ``RequestId``, Azure AD correlation and trace ids):
never a token, a secret, a username, an e-mail address or a caller.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

SCOPE = "token_broker"
_W3C_HEADERS = ("traceparent", "tracestate")
#: Methods kept as they are in attributes; any other becomes ``_OTHER`` (semantic conventions: bounded cardinality).
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_ERROR = "error"
#: Upstream services, as the ``token_broker.upstream`` attribute names them.
UPSTREAMS = ("entra", "keyvault", "managed_identity", "azure_cli", "app_configuration", "powerbi", "redis")
#: Results of a cache lookup (``token_broker.cache.result``).
#: ``unavailable``: the shared tier (Redis) failed or its circuit breaker is open; the lookup went upstream.
CACHE_RESULTS = ("hit", "miss", "stale_served", "coalesced", "unavailable")
#: Problem-document extensions that identify an upstream call to its support team, and their span attributes.
SUPPORT_IDS = {
    "powerBiRequestId": "token_broker.powerbi.request_id",
    "aadCorrelationId": "token_broker.entra.correlation_id",
    "aadTraceId": "token_broker.entra.trace_id",
}
#: Every attribute the broker exports (docs/OPERATIONS.md); tests/test_telemetry.py checks nothing else appears.
ATTRIBUTES = frozenset({
    "http.request.method", "http.route", "http.response.status_code", "error.type", "token_broker.problem.code",
    "token_broker.cache", "token_broker.cache.result", "token_broker.upstream", "token_broker.upstream.operation",
    "token_broker.upstream.outcome", *SUPPORT_IDS.values(),
})

_lock = threading.Lock()
_instruments: _Instruments | None = None


def _loaded() -> _Instruments | None:
    """The instruments, once something in this process has imported OpenTelemetry; else None."""
    found = _instruments
    if found is not None or ("opentelemetry.metrics" not in sys.modules and "opentelemetry.trace" not in sys.modules):
        return found
    return _create()


def _create() -> _Instruments:
    global _instruments
    with _lock:
        if _instruments is None:
            _instruments = _Instruments()
        return _instruments


class _Instruments:
    """The broker's meter, tracer and instruments (created once, from the global providers)."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        self.trace = trace
        meter = metrics.get_meter(SCOPE)
        self.tracer = trace.get_tracer(SCOPE)
        self.requests = meter.create_counter(
            "token_broker.requests", unit="{request}", description="Requests answered by route, status and problem")
        self.request_duration = meter.create_histogram(
            "token_broker.request.duration", unit="s", description="Time to answer a request")
        self.cache_lookups = meter.create_counter(
            "token_broker.cache.lookups", unit="{lookup}", description="Cache lookups by cache and result")
        self.single_flight_waiters = meter.create_counter(
            "token_broker.single_flight.waiters", unit="{request}",
            description="Requests that waited for another request's upstream fetch instead of making their own")
        self.upstream_calls = meter.create_counter(
            "token_broker.upstream.calls", unit="{call}", description="Calls to upstream services by outcome")
        self.upstream_duration = meter.create_histogram(
            "token_broker.upstream.duration", unit="s", description="Duration of calls to upstream services")
        self.embed_tokens = meter.create_counter(
            "token_broker.embed_tokens.minted", unit="{token}", description="Embed tokens Power BI generated")
        self.rate_limited = meter.create_counter(
            "token_broker.rate_limited", unit="{request}", description="Requests refused by the per-caller rate limit")


# -- requests ---------------------------------------------------------------------------------------------


class RequestRecord:
    """What the request span and metrics say about one request; the handler fills in the outcome."""

    __slots__ = ("code", "route", "span", "status")

    def __init__(self, route: str, span: Any) -> None:
        self.route = route
        self.span = span
        self.status = 500
        self.code: str | None = None


class _Discarded:
    """The context manager of a call nobody records: as cheap as a ``with`` can be (the request path)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_REQUEST = _Discarded(RequestRecord("", None))  # its fields are written, never read


def request(method: str, route: str, headers: Mapping[str, str]) -> AbstractContextManager[RequestRecord]:
    """One request: a span continuing the caller's or host's trace, and the request metrics at the end.

    The parent is the current span when the worker has attached the host's trace context (telemetry on
    in Azure); otherwise the W3C ``traceparent`` in ``headers``.
    """
    found = _loaded()
    return _NO_REQUEST if found is None else _request(found, method, route, headers)


@contextmanager
def _request(found: _Instruments, method: str, route: str, headers: Mapping[str, str]) -> Iterator[RequestRecord]:
    trace = found.trace
    method = method if method in _METHODS else "_OTHER"
    current = trace.get_current_span().get_span_context()
    parent = None
    kind = trace.SpanKind.INTERNAL  # the worker attached the host's invocation context: the host's span is the server's
    if not current.is_valid:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier = {name: value for name, value in ((k.lower(), v) for k, v in headers.items()) if name in _W3C_HEADERS}
        parent, kind = TraceContextTextMapPropagator().extract(carrier), trace.SpanKind.SERVER
    started = time.perf_counter()
    with found.tracer.start_as_current_span(f"{method} {route}", context=parent, kind=kind,
                                            record_exception=False, set_status_on_exception=False) as span:
        record = RequestRecord(route, span)
        try:
            yield record
        finally:
            attributes: dict[str, Any] = {"http.request.method": method, "http.route": route,
                                          "http.response.status_code": record.status}
            if record.code:
                attributes["token_broker.problem.code"] = record.code
                attributes["error.type"] = record.code
            span.set_attributes(attributes)
            if record.status >= 500:
                span.set_status(trace.StatusCode.ERROR, record.code or "")
            found.requests.add(1, attributes)
            found.request_duration.record(time.perf_counter() - started, attributes)


# -- upstream calls ---------------------------------------------------------------------------------------


class UpstreamCall:
    """Handle of one upstream call: ``status``, ``support_id`` and ``outcome`` add what the response said."""

    __slots__ = ("attributes", "result", "span")

    def __init__(self, span: Any, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attributes = attributes
        self.result = "success"

    def outcome(self, outcome: str) -> None:
        """A successful call's outcome when it is not plain ``success`` (``msal_cache``)."""
        self.result = outcome

    def failed(self, error_type: str) -> None:
        """The call failed although no exception left it (a library that reports failures to a callback)."""
        self.result = _ERROR
        self.attributes["error.type"] = error_type
        if self.span is not None:
            from opentelemetry.trace import StatusCode

            self.span.set_status(StatusCode.ERROR, error_type)

    def status(self, status_code: int) -> None:
        """The HTTP status of the (last) response."""
        self.attributes["http.response.status_code"] = status_code

    def support_id(self, name: str, value: str | None) -> None:
        """A support id (a key of :data:`SUPPORT_IDS`) the upstream returned."""
        if self.span is not None and value and name in SUPPORT_IDS:
            self.span.set_attribute(SUPPORT_IDS[name], value[:64])


_NO_CALL = _Discarded(UpstreamCall(None, {}))  # its fields are written, never read


def upstream_call(upstream: str, operation: str) -> AbstractContextManager[UpstreamCall]:
    """A child span (kind CLIENT) and the upstream metrics around one call to ``upstream``.

    The outcome is ``success``, or ``error`` with ``error.type`` the broker's problem code (or the exception
    class); a :class:`~token_broker.support.errors.BrokerError` also contributes its support ids.
    """
    found = _loaded()
    return _NO_CALL if found is None else _upstream_call(found, upstream, operation)


@contextmanager
def _upstream_call(found: _Instruments, upstream: str, operation: str) -> Iterator[UpstreamCall]:
    attributes: dict[str, Any] = {"token_broker.upstream": upstream, "token_broker.upstream.operation": operation}
    started = time.perf_counter()
    with found.tracer.start_as_current_span(f"{upstream} {operation}", kind=found.trace.SpanKind.CLIENT,
                                            record_exception=False, set_status_on_exception=False) as span:
        call = UpstreamCall(span, attributes)
        try:
            yield call
        except BaseException as err:
            attributes["token_broker.upstream.outcome"] = _ERROR
            attributes["error.type"] = str(getattr(err, "code", None) or type(err).__name__)
            for name, value in (getattr(err, "extensions", None) or {}).items():
                call.support_id(name, value if isinstance(value, str) else None)
            span.set_status(found.trace.StatusCode.ERROR, attributes["error.type"])
            raise
        else:
            attributes["token_broker.upstream.outcome"] = call.result
        finally:
            span.set_attributes(attributes)
            found.upstream_calls.add(1, attributes)
            found.upstream_duration.record(time.perf_counter() - started, attributes)


# -- counters ---------------------------------------------------------------------------------------------


def cache_lookup(attributes: Mapping[str, str], result: str) -> None:
    """A lookup in the cache ``attributes`` names (:func:`cache_attributes`), with its result."""
    found = _loaded()
    if found is not None:
        found.cache_lookups.add(1, {**attributes, "token_broker.cache.result": result})
        if result == "coalesced":
            found.single_flight_waiters.add(1, attributes)


def cache_attributes(name: str) -> dict[str, str]:
    """The attributes naming a cache (``"embed token"`` -> ``embed_token``)."""
    return {"token_broker.cache": name.replace(" ", "_")}


def embed_token_minted() -> None:
    found = _loaded()
    if found is not None:
        found.embed_tokens.add(1)


def rate_limited() -> None:
    found = _loaded()
    if found is not None:
        found.rate_limited.add(1)
