"""The Power BI proxy: its overhead per call, and what 1,000 identical queries cost Power BI.

The broker runs with ``CALLER_AUTH=jwt`` and the proxy on, against the Power BI emulator (with the
stack's latency per request, and Power BI's 120 query requests per minute per user). Each run starts
from a new broker (empty token, metadata and result caches) and a fresh query window in the emulator.

* ``proxy.get.p50`` / ``proxy.get.p99``: ``GET .../groups/{id}/reports/{id}`` through the proxy (via
  :class:`~devtools.functions_host.FunctionsHost`, one thread; every call goes to Power BI) against the
  same call made directly to the emulator with a service principal token over a kept-alive
  ``requests`` session: the difference is the proxy's overhead (caller token verification, checks,
  the upstream call's own connection pool).
* ``proxy.query.powerbi_calls`` / ``proxy.query.powerbi_429``: 1,000 identical ``executeQueries`` from
  50 concurrent callers (50 users, 20 each, 50 threads). The baseline is the pattern the proxy replaces:
  each browser holds the service principal's token and calls Power BI itself (the same 1,000 queries
  from 50 threads, directly): every query is a Power BI call and, past 120 in the minute, Power BI
  answers 429.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import requests

from devtools.offline_stack import TENANT_ID
from devtools.powerbi import PowerBIEmulator

from .embed_world import EmbedWorld
from .measure import NS_PER_MS, percentile
from .report import Figure, Target
from .stack import BenchStack, RunContext, msal_token

CALLERS = 50
QUERIES = 1_000
QUERY = {"queries": [{"query": "EVALUATE TOPN(100, 'Sales')"}]}
_PASSWORD = "bench-proxy-Passw0rd!value"  # the emulator needs one; nothing signs in with it
DIRECT = "the same call straight to the Power BI emulator with the service principal's token (requests.Session)"
BROWSERS = "each browser calls Power BI itself with the service principal's token (the token-in-the-browser pattern)"


def _settings(stack: BenchStack, world: EmbedWorld) -> dict[str, str]:
    return {**world.jwt_settings(stack), "EMBED_RLS_ROLES": "", "POWERBI_PROXY_ENABLED": "true"}


def _users(stack: BenchStack) -> list[str]:
    users = [f"bench-proxy-{n}@contoso.com" for n in range(1, CALLERS + 1)]
    for username in users:
        stack.entra.add_user(TENANT_ID, username, _PASSWORD)
    return users


def _latencies(call: Callable[[], int], iterations: int) -> tuple[float, float]:
    samples: list[int] = []
    for _ in range(iterations):
        before = time.perf_counter_ns()
        status = call()
        samples.append(time.perf_counter_ns() - before)
        if status != 200:
            raise RuntimeError(f"a proxy benchmark call answered {status}")
    samples.sort()
    return percentile(samples, 0.5) / NS_PER_MS, percentile(samples, 0.99) / NS_PER_MS


def _concurrently(send: Callable[[int], int]) -> dict[int, int]:
    """``QUERIES`` calls of ``send(caller)`` from ``CALLERS`` threads; the count of each status."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(CALLERS)

    def worker(caller: int) -> None:
        start.wait()
        for _ in range(QUERIES // CALLERS):
            status = send(caller)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def run(ctx: RunContext) -> list[Figure]:
    """Measure the proxy's overhead and its query figures, each against its baseline."""
    stack = ctx.stack()
    world = stack.embed_world()
    powerbi: PowerBIEmulator = world.powerbi
    dataset = powerbi.add_dataset(world.workspace_id, name="Sales (no RLS)")
    report = powerbi.add_report(world.workspace_id, name="Sales overview", dataset_id=dataset)
    users = _users(stack)
    headers = {u: {"Authorization": f"Bearer {stack.offline.user_token(u)}", "Content-Type": "application/json"}
               for u in users}
    runs = 3 if ctx.quick else 7
    iterations = 100 if ctx.quick else 500
    report_url = f"/api/powerbi/v1.0/myorg/groups/{world.workspace_id}/reports/{report}"
    query_url = f"/api/powerbi/v1.0/myorg/groups/{world.workspace_id}/datasets/{dataset}/executeQueries"
    body = json.dumps(QUERY).encode()

    proxy_get: list[tuple[float, float]] = []
    calls: list[float] = []
    throttled: list[float] = []
    with stack.settings_override(_settings(stack, world)):
        for number in range(runs):
            stack.configure()
            powerbi.latency = stack.latency
            powerbi.reset_query_limits()
            stack.host.invoke("GET", report_url, headers=headers[users[0]])  # tokens and keys, not measured
            proxy_get.append(_latencies(
                lambda: stack.host.invoke("GET", report_url, headers=headers[users[0]]).status, iterations))
            powerbi.reset_counters()
            statuses = _concurrently(lambda caller: stack.host.invoke("POST", query_url, headers=headers[
                users[caller]], body=body).status)
            if statuses.get(200) != QUERIES:
                raise RuntimeError(f"the proxy answered {statuses} to {QUERIES} identical queries")
            calls.append(float(powerbi.execute_queries_calls()))
            throttled.append(float(powerbi.query_limit_hits()))
            ctx.progress(f"proxy run {number + 1}/{runs}: GET p50 {proxy_get[-1][0]:.2f} ms, "
                         f"{int(calls[-1])} Power BI query calls for {QUERIES} queries")

    token = msal_token(stack.new_msal_app(), stack.scopes)["access_token"]
    session = requests.Session()
    direct_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    upstream_report = f"{powerbi.api_url}/groups/{world.workspace_id}/reports/{report}"
    upstream_query = f"{powerbi.api_url}/groups/{world.workspace_id}/datasets/{dataset}/executeQueries"
    direct_get: list[tuple[float, float]] = []
    direct_calls: list[float] = []
    direct_throttled: list[float] = []
    sessions = [requests.Session() for _ in range(CALLERS)]
    for number in range(runs):
        session.get(upstream_report, headers=direct_headers, timeout=10)
        direct_get.append(_latencies(
            lambda: session.get(upstream_report, headers=direct_headers, timeout=10).status_code, iterations))
        powerbi.reset_query_limits()
        powerbi.reset_counters()
        statuses = _concurrently(lambda caller: sessions[caller].post(upstream_query, headers=direct_headers,
                                                                      data=body, timeout=10).status_code)
        direct_calls.append(float(powerbi.execute_queries_calls()))
        direct_throttled.append(float(statuses.get(429, 0)))
        ctx.progress(f"direct run {number + 1}/{runs}: GET p50 {direct_get[-1][0]:.2f} ms, "
                     f"{statuses.get(429, 0)} of {QUERIES} queries throttled by Power BI")
    powerbi.reset_query_limits()
    overhead = sorted(p[0] - d[0] for p, d in zip(proxy_get, direct_get, strict=True))
    ctx.note("Power BI proxy overhead", [
        f"proxy p50 minus direct p50, per run: median {overhead[len(overhead) // 2]:.3f} ms, "
        f"min {overhead[0]:.3f} ms, max {overhead[-1]:.3f} ms (both pay the emulator's {stack.latency * 1000:.0f} ms)"])
    what = f"{QUERIES:,} identical executeQueries from {CALLERS} concurrent jwt callers"
    return [
        Figure("proxy.get.p50", "Median latency of Get Report In Group through the proxy (FunctionsHost, jwt caller)",
               "ms", tuple(p50 for p50, _ in proxy_get), tuple(p50 for p50, _ in direct_get), DIRECT),
        Figure("proxy.get.p99", "99th percentile of Get Report In Group through the proxy", "ms",
               tuple(p99 for _, p99 in proxy_get), tuple(p99 for _, p99 in direct_get), DIRECT),
        Figure("proxy.query.powerbi_calls", f"Power BI executeQueries calls for {what}", "calls", tuple(calls),
               tuple(direct_calls), BROWSERS, target=Target("==", 1, every_run=True)),
        Figure("proxy.query.powerbi_429", f"Power BI 429 answers (120 queries/min/user) for {what}", "answers",
               tuple(throttled), tuple(direct_throttled), BROWSERS, target=Target("==", 0, every_run=True)),
    ]
