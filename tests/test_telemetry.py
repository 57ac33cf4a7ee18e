"""OpenTelemetry: with the SDK configured in this process (in-memory metric reader and span exporter), requests
through the function app produce the metrics and spans docs/OPERATIONS.md lists, with the right attributes and
nothing secret; with nothing configured, the broker imports neither the SDK nor the API (a fresh interpreter).

OpenTelemetry lets a process set its global providers once: this module sets them the first time one of its
tests runs and keeps them; every test reads only what its own requests added (:func:`delta`). Tests of other
modules that run afterwards record into the same in-memory reader, which changes nothing they check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.entra import EntraEmulator
from devtools.functions_host import HostResponse
from devtools.keyvault import KeyVaultEmulator
from devtools.managed_identity import ManagedIdentity
from devtools.powerbi import PowerBIEmulator
from devtools.redis_server import RedisServer
from tests.conftest import (
    ALICE,
    API,
    CACHE_USERS,
    EXPIRED_CLIENT_ID,
    EXPIRED_SECRET,
    MASTER_USER,
    TENANT,
    Env,
    World,
    embed_settings,
    leaks_in,
    shared_settings,
)
from token_broker import runtime
from token_broker.support import telemetry
from token_broker.support.cache import RefreshingCache

ROOT = Path(__file__).resolve().parents[1]
Call = Callable[..., HostResponse]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Telemetry:
    """The process's SDK providers and what they recorded."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))
        if trace.get_tracer_provider() is not tracer_provider:
            raise RuntimeError("another module set OpenTelemetry's global providers first")

    def points(self) -> dict[str, list[tuple[dict[str, Any], float]]]:
        """Instrument name -> (attributes, value) of every data point (a histogram's value is its count)."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], float]]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), float(point.count if value is None else value)))
        return found


_TELEMETRY: list[Telemetry] = []


@pytest.fixture(scope="module", autouse=True)
def _stop_keeping_spans() -> Iterator[None]:
    """After this module the providers stay (OpenTelemetry sets them once); the exporter stops keeping spans."""
    yield
    for found in _TELEMETRY:
        found.spans.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    if not _TELEMETRY:
        _TELEMETRY.append(Telemetry())
    found = _TELEMETRY[0]
    found.spans.clear()
    yield found
    found.spans.clear()


def total(points: dict[str, list[tuple[dict[str, Any], float]]], name: str, **attributes: Any) -> float:
    """Sum of ``name``'s points whose attributes include ``attributes`` (dots spelled as ``__``)."""
    wanted = {k.replace("__", "."): v for k, v in attributes.items()}
    return sum(value for attrs, value in points.get(name, []) if wanted.items() <= attrs.items())


class Delta:
    """What the counters gained between ``before`` and now (cumulative temporality)."""

    def __init__(self, otel: Telemetry) -> None:
        self._otel = otel
        self._before = otel.points()

    def __call__(self, name: str, **attributes: Any) -> float:
        return total(self._otel.points(), name, **attributes) - total(self._before, name, **attributes)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def user(entra: EntraEmulator, username: str = ALICE) -> dict[str, str]:
    token = entra.issue_access_token(tenant_id=TENANT, audience=API, subject_username=username,
                                     scopes="access_as_user")
    return {"Authorization": f"Bearer {token}"}


# -- requests, Entra, the token cache ----------------------------------------------------------------------


def test_token_requests_continue_the_callers_trace_and_count_cache_hits(otel: Telemetry, env: Env, call: Call) -> None:
    delta = Delta(otel)
    assert call("GET", "/api/token", headers={"traceparent": TRACEPARENT}).status == 200
    assert call("GET", "/api/token").status == 200

    route = {"http__route": "/api/token"}
    assert delta("token_broker.requests", **route, http__response__status_code=200) == 2
    assert delta("token_broker.request.duration", **route) == 2
    assert delta("token_broker.cache.lookups", token_broker__cache="service_principal_token",
                 token_broker__cache__result="miss") == 1
    assert delta("token_broker.cache.lookups", token_broker__cache="service_principal_token",
                 token_broker__cache__result="hit") == 1
    assert delta("token_broker.upstream.calls", token_broker__upstream="entra",
                 token_broker__upstream__operation="client_credentials", token_broker__upstream__outcome="success") == 1
    assert delta("token_broker.upstream.duration", token_broker__upstream="entra") >= 1

    spans = otel.spans.get_finished_spans()
    first, second = by_name(spans, "GET /api/token")
    assert first.kind == trace.SpanKind.SERVER and first.parent is not None
    assert f"{first.context.trace_id:032x}" == TRACEPARENT.split("-")[1]  # the caller's trace continues
    assert first.parent.span_id == int(TRACEPARENT.split("-")[2], 16)
    assert second.parent is None and second.context.trace_id != first.context.trace_id
    assert first.attributes is not None and first.attributes["http.response.status_code"] == 200
    entra_span = by_name(spans, "entra client_credentials")[0]
    assert entra_span.kind == trace.SpanKind.CLIENT
    assert entra_span.parent is not None and entra_span.parent.span_id == first.context.span_id


def test_problem_codes_and_the_entra_correlation_id(otel: Telemetry, env: Env, entra: EntraEmulator,
                                                    call: Call) -> None:
    env.set(POWERBI_CLIENT_ID=EXPIRED_CLIENT_ID, POWERBI_CLIENT_SECRET=EXPIRED_SECRET)
    delta = Delta(otel)
    response = call("GET", "/api/token")
    assert response.status == 502
    assert call("DELETE", "/api/token").status == 405
    with telemetry.request("PROPFIND", "/api/token", {}) as record:  # the host answers 404 before the broker
        record.status = 405

    assert delta("token_broker.requests", http__route="/api/token", http__response__status_code=502,
                 token_broker__problem__code="aad_client_secret_expired") == 1
    assert delta("token_broker.requests", http__route="/api/token", http__response__status_code=405,
                 token_broker__problem__code="method_not_allowed", http__request__method="DELETE") == 1
    assert delta("token_broker.requests", http__request__method="_OTHER", http__response__status_code=405) == 1
    assert delta("token_broker.upstream.calls", token_broker__upstream="entra", token_broker__upstream__outcome="error",
                 error__type="aad_client_secret_expired") == 1
    entra_span = by_name(otel.spans.get_finished_spans(), "entra client_credentials")[0]
    attributes = dict(entra_span.attributes or {})
    problem = response.json()
    assert attributes["token_broker.entra.correlation_id"] == problem["aadCorrelationId"]
    assert attributes["token_broker.entra.trace_id"] == problem["aadTraceId"]
    assert entra_span.status.status_code == trace.StatusCode.ERROR
    server = by_name(otel.spans.get_finished_spans(), "GET /api/token")[0]
    assert server.status.status_code == trace.StatusCode.ERROR


def test_rate_limited_callers_are_counted(otel: Telemetry, env: Env, call: Call) -> None:
    env.set(CALLER_RATE_LIMIT_PER_MINUTE="1")
    delta = Delta(otel)
    assert [call("GET", "/api/token").status for _ in range(3)] == [200, 429, 429]
    assert delta("token_broker.rate_limited") == 2
    assert delta("token_broker.requests", http__response__status_code=429,
                 token_broker__problem__code="rate_limited") == 2


# -- Power BI: embed tokens, RequestId, 429s ------------------------------------------------------------------


def test_embed_tokens_power_bi_request_ids_and_throttling(otel: Telemetry, env: Env, entra: EntraEmulator,
                                                         powerbi: PowerBIEmulator, world: World, call: Call) -> None:
    env.set(**embed_settings(entra, powerbi, world))
    delta = Delta(otel)
    body = {"reports": [{"id": world.plain_report}], "workspaceId": world.sales}
    powerbi.throttle_next(1, retry_after=0)  # the first Power BI call answers 429 once; the client retries
    first = call("POST", "/api/embed-token", headers=user(entra), json=body)
    assert first.status == 200, first.text
    assert call("POST", "/api/embed-token", headers=user(entra), json=body).status == 200

    assert delta("token_broker.embed_tokens.minted") == 1
    embed_cache = {"token_broker__cache": "embed_token"}
    assert delta("token_broker.cache.lookups", **embed_cache, token_broker__cache__result="miss") == 1
    assert delta("token_broker.cache.lookups", **embed_cache, token_broker__cache__result="hit") == 1
    assert delta("token_broker.cache.lookups", token_broker__cache="powerbi_metadata") >= 1
    get_report = {"token_broker__upstream": "powerbi", "token_broker__upstream__operation": "get_report"}
    assert delta("token_broker.upstream.calls", **get_report, http__response__status_code=429,
                 token_broker__upstream__outcome="error", error__type="http_429") == 1
    assert delta("token_broker.upstream.calls", **get_report, http__response__status_code=200,
                 token_broker__upstream__outcome="success") == 1
    assert delta("token_broker.upstream.calls", token_broker__upstream="powerbi",
                 token_broker__upstream__operation="generate_token", token_broker__upstream__outcome="success") == 1

    spans = otel.spans.get_finished_spans()
    attempts = by_name(spans, "powerbi get_report")
    assert len(attempts) == 2
    request_ids = [dict(s.attributes or {}).get("token_broker.powerbi.request_id") for s in attempts]
    assert all(request_ids) and len(set(request_ids)) == 2  # each attempt's own RequestId, as support asks
    server = by_name(spans, "POST /api/embed-token")[0]
    generate = by_name(spans, "powerbi generate_token")
    assert {s.parent.span_id for s in (*attempts, *generate) if s.parent} == {server.context.span_id}


# -- Key Vault and the managed identity ---------------------------------------------------------------------------


def test_key_vault_and_managed_identity_calls(otel: Telemetry, env: Env, vault: KeyVaultEmulator,
                                              app_identity: ManagedIdentity, call: Call) -> None:
    env.set(POWERBI_CLIENT_SECRET=None, POWERBI_CLIENT_SECRET_URI=f"{vault.vault_url}/secrets/powerbi-client-secret",
            AZURE_CLIENT_ID=app_identity.client_id)
    delta = Delta(otel)
    assert call("GET", "/api/token").status == 200
    assert delta("token_broker.upstream.calls", token_broker__upstream="keyvault",
                 token_broker__upstream__operation="get_secret", token_broker__upstream__outcome="success") == 1
    assert delta("token_broker.upstream.calls", token_broker__upstream="managed_identity",
                 token_broker__upstream__outcome="success") >= 1
    spans = otel.spans.get_finished_spans()
    keyvault = by_name(spans, "keyvault get_secret")[0]
    identity = by_name(spans, "managed_identity get_token")[0]
    assert identity.parent is not None and identity.parent.span_id == keyvault.context.span_id

    env.set(POWERBI_CLIENT_SECRET=None, AZURE_CLIENT_ID=app_identity.client_id,
            POWERBI_CLIENT_SECRET_URI=f"{vault.vault_url}/secrets/no-such-secret")
    assert call("GET", "/api/token").status >= 400
    assert delta("token_broker.upstream.calls", token_broker__upstream="keyvault",
                 token_broker__upstream__outcome="error", error__type="keyvault_secret_not_found") == 1


# -- single flight ---------------------------------------------------------------------------------------------------


class _Value:
    def __init__(self, expires_on: float) -> None:
        self.expires_on = expires_on


def test_coalesced_lookups_and_single_flight_waiters(otel: Telemetry) -> None:
    cache: RefreshingCache[_Value] = RefreshingCache(refresh_margin=60, max_entries=4, wait_timeout=10,
                                                     name="telemetry test")
    delta = Delta(otel)
    release = threading.Event()

    def fetch() -> _Value:
        release.wait(10)
        return _Value(time.time() + 3600)

    threads = [threading.Thread(target=cache.get, args=("key", fetch)) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while delta("token_broker.single_flight.waiters", token_broker__cache="telemetry_test") < 3:
        assert time.monotonic() < deadline, "the three followers never waited"
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    attributes = {"token_broker__cache": "telemetry_test"}
    assert delta("token_broker.cache.lookups", **attributes, token_broker__cache__result="miss") == 1
    assert delta("token_broker.cache.lookups", **attributes, token_broker__cache__result="coalesced") == 3
    assert delta("token_broker.single_flight.waiters", **attributes) == 3


def test_stale_values_served_while_a_refresh_fails_are_counted(otel: Telemetry) -> None:
    now = [1000.0]
    cache: RefreshingCache[_Value] = RefreshingCache(refresh_margin=300, max_entries=4, wait_timeout=5,
                                                     clock=lambda: now[0], name="stale test")
    cache.get("key", lambda: _Value(now[0] + 600))
    now[0] += 400  # inside the refresh margin, still valid for 200 s
    delta = Delta(otel)

    def failing() -> _Value:
        raise TimeoutError("upstream down")

    assert cache.get("key", failing).expires_on == 1600  # the refresh fails: the old value is served
    assert cache.get("key", failing).expires_on == 1600  # backing off: served without trying
    assert delta("token_broker.cache.lookups", token_broker__cache="stale_test",
                 token_broker__cache__result="stale_served") == 2


# -- nothing secret --------------------------------------------------------------------------------------------------


def test_no_exported_attribute_carries_a_token_secret_username_or_email(
    otel: Telemetry, env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call
) -> None:
    """Requests of every kind, then every span name, attribute and metric attribute through the leak check."""
    env.set(**embed_settings(entra, powerbi, world, POWERBI_GRANT_TYPE="on_behalf_of", CALLER_AUTH="jwt"))
    headers = user(entra, CACHE_USERS[0])
    call("POST", "/api/embed-token", headers=headers, json={"reports": [{"id": world.plain_report}],
                                                            "workspaceId": world.sales})
    call("GET", "/api/token", headers=headers)
    call("GET", "/api/token", headers={"Authorization": "Bearer not-a-token"})
    env.set(POWERBI_CLIENT_ID=EXPIRED_CLIENT_ID, POWERBI_CLIENT_SECRET=EXPIRED_SECRET)
    call("GET", "/api/token")

    exported: list[str] = []
    spans = otel.spans.get_finished_spans()
    assert spans
    for span in spans:
        exported.append(span.name)
        exported += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
        exported += [f"{k}={v}" for event in span.events for k, v in (event.attributes or {}).items()]
    for name, points in otel.points().items():
        exported += [f"{name} {k}={v}" for attrs, _ in points for k, v in attrs.items()]
    text = "\n".join(exported)
    assert leaks_in(text) == []
    assert "@" not in text and MASTER_USER not in text and ALICE not in text
    keys = {line.split("=", 1)[0].split(" ")[-1] for line in exported if "=" in line}
    assert keys <= telemetry.ATTRIBUTES, keys - telemetry.ATTRIBUTES


# -- nothing configured: nothing imported ------------------------------------------------------------------------------

_NO_SDK = """
import json, sys
import azure.functions as func
{preload}
import function_app
token = next(f for f in function_app.app.get_functions() if f.get_function_name() == "token").get_user_function()
statuses = [token(func.HttpRequest("GET", "http://localhost/api/token", headers={{"traceparent": "{traceparent}"}},
                                   params={{}}, route_params={{}}, body=b"")).status_code for _ in range(3)]
print(json.dumps({{"statuses": statuses, "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}}))
"""


@pytest.mark.parametrize("preload", ["", "import opentelemetry.trace, opentelemetry.metrics"])
def test_with_nothing_configured_no_sdk_or_exporter_is_imported(preload: str, env: Env) -> None:
    """A fresh interpreter serves requests; without a preload not even the API is imported, with the API
    preloaded (a host that imports it but configures nothing) the no-op providers answer and no SDK loads."""
    code = _NO_SDK.format(preload=preload, traceparent=TRACEPARENT)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["statuses"] == [200, 200, 200]
    modules: list[str] = found["modules"]
    assert not [m for m in modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))], modules
    if not preload:
        assert modules == []
    else:
        assert "opentelemetry.trace" in modules
        assert not any("azure.monitor" in m for m in modules)


def test_request_counts_by_status(otel: Telemetry, env: Env, call: Call) -> None:
    delta = Delta(otel)
    statuses = Counter(call("GET", path).status for path in ("/api/health", "/api/openapi.json", "/api/health"))
    assert statuses == Counter({200: 3})
    assert delta("token_broker.requests", http__route="/api/health", http__response__status_code=200) == 2
    assert delta("token_broker.requests", http__route="/api/openapi.json") == 1


def test_under_the_worker_the_request_span_is_a_child_of_the_hosts_span(otel: Telemetry, env: Env, call: Call) -> None:
    """The worker attaches the host's invocation trace context before calling a function (its
    configure_opentelemetry); the broker's span then nests under the host's request span, whatever the
    caller's own traceparent header says."""
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    host_traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    token = context.attach(TraceContextTextMapPropagator().extract({"traceparent": host_traceparent}))
    try:
        assert call("GET", "/api/token", headers={"traceparent": TRACEPARENT}).status == 200
    finally:
        context.detach(token)
    span = by_name(otel.spans.get_finished_spans(), "GET /api/token")[0]
    assert span.kind == trace.SpanKind.INTERNAL and span.parent is not None
    assert f"{span.context.trace_id:032x}" == host_traceparent.split("-")[1]
    assert span.parent.span_id == int(host_traceparent.split("-")[2], 16)


# -- the Power BI proxy --------------------------------------------------------------------------------------------


def test_proxy_calls_are_upstream_spans_and_query_cache_lookups(otel: Telemetry, env: Env, entra: EntraEmulator,
                                                              powerbi: PowerBIEmulator, world: World,
                                                              call: Call) -> None:
    env.set(**embed_settings(entra, powerbi, world, POWERBI_PROXY_ENABLED="true"))
    delta = Delta(otel)
    path = f"/api/powerbi/v1.0/myorg/groups/{world.sales}/datasets/{world.plain_dataset}/executeQueries"
    body = {"queries": [{"query": "EVALUATE Sales"}]}
    for _ in range(2):
        response = call("POST", path, headers=user(entra), json=body)
        assert response.status == 200, response.text
    listed = call("GET", f"/api/powerbi/v1.0/myorg/groups/{world.sales}/reports", headers=user(entra))
    assert listed.status == 200, listed.text

    queries = {"token_broker__upstream": "powerbi", "token_broker__upstream__operation": "ExecuteQueriesInGroup"}
    assert delta("token_broker.upstream.calls", **queries, token_broker__upstream__outcome="success",
                 http__response__status_code=200) == 1, "the second query is the cache's"
    proxy_cache = {"token_broker__cache": "proxy_query"}
    assert delta("token_broker.cache.lookups", **proxy_cache, token_broker__cache__result="miss") == 1
    assert delta("token_broker.cache.lookups", **proxy_cache, token_broker__cache__result="hit") == 1
    assert delta("token_broker.requests", http__route="/api/powerbi/{*path}", http__response__status_code=200) == 3

    spans = otel.spans.get_finished_spans()
    forwarded = by_name(spans, "powerbi ExecuteQueriesInGroup")[-1]
    assert dict(forwarded.attributes or {}).get("token_broker.powerbi.request_id"), "support asks for it"
    first, second = by_name(spans, "POST /api/powerbi/{*path}")[-2:]
    assert forwarded.parent is not None and forwarded.parent.span_id == first.context.span_id
    assert not [s for s in spans if s.parent and s.parent.span_id == second.context.span_id], "a cache hit calls nobody"
    assert by_name(spans, "powerbi GetReportsInGroup"), "every forwarded operation is named"


# -- the shared cache tier (Redis) ---------------------------------------------------------------------------------


def test_redis_calls_failures_and_shared_lookups_are_counted_without_secrets(
    otel: Telemetry, env: Env, entra: EntraEmulator, powerbi: PowerBIEmulator, world: World, call: Call,
    redis_server: RedisServer, cache_key_uri: str, shared_identity: str
) -> None:
    env.set(**embed_settings(entra, powerbi, world), **shared_settings(redis_server, cache_key_uri, shared_identity))
    delta = Delta(otel)
    body = {"reports": [{"id": world.rls_report}], "workspaceId": world.sales}
    assert call("POST", "/api/embed-token", headers=user(entra), json=body).status == 200
    runtime.reset()  # another instance: the next lookup is an L2 hit
    assert call("POST", "/api/embed-token", headers=user(entra), json=body).status == 200
    assert delta("token_broker.cache.lookups", token_broker__cache="embed_token_shared",
                 token_broker__cache__result="miss") == 1
    assert delta("token_broker.cache.lookups", token_broker__cache="embed_token_shared",
                 token_broker__cache__result="hit") == 1
    assert delta("token_broker.upstream.calls", token_broker__upstream="redis",
                 token_broker__upstream__outcome="success") >= 4  # mget, lock, set, unlock...
    redis_server.kill()
    try:
        other = {"reports": [{"id": world.plain_report}], "workspaceId": world.sales}
        assert call("POST", "/api/embed-token", headers=user(entra, CACHE_USERS[1]), json=other).status == 200
    finally:
        redis_server.start()
    assert delta("token_broker.upstream.calls", token_broker__upstream="redis", token_broker__upstream__outcome="error",
                 error__type="redis_unreachable") == 1
    assert delta("token_broker.cache.lookups", token_broker__cache="embed_token_shared",
                 token_broker__cache__result="unavailable") == 1
    exported: list[str] = []
    for span in otel.spans.get_finished_spans():
        exported += [span.name, *(f"{k}={v}" for k, v in (span.attributes or {}).items())]
    for name, points in otel.points().items():
        exported += [f"{name} {k}={v}" for attrs, _ in points for k, v in attrs.items()]
    text = "\n".join(exported)
    assert leaks_in(text) == [] and "tb:" not in text and "@" not in text
    assert "redis mget" in text and "redis lock" in text
