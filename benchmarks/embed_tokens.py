"""Embed tokens: 1,000 ``POST /api/embed-token`` over 20 (report, user) pairs, against the sample's calls.

The broker runs with ``CALLER_AUTH=jwt``: every request carries an Entra ID emulator user token whose
RS256 signature, issuer, audience and lifetime are verified, as in the recommended single-page-app
setup, so the per-request cost of caller authentication is part of the figure (easyauth would be
cheaper but is only trustworthy behind App Service). The 4 reports share one row-level-security
dataset, so each of the 5 users gets its own effective identity: 20 distinct embed tokens, and a
broker that caches makes exactly 20 GenerateToken calls however many requests arrive. Each run
starts from a new broker (empty caches) and sends the requests one after another, round-robin over
the pairs, through :class:`~devtools.functions_host.FunctionsHost`.

The baseline is Microsoft's *App Owns Data* Python sample (``PbiEmbedService`` + ``AadService``) per
request: ``get_request_header()`` creates a new MSAL confidential client and acquires a token twice
(once for Get Report In Group, once for GenerateToken), with module-level ``requests.get``/``post`` (a
new connection per call); the GenerateToken body is the sample's (datasets, reports,
targetWorkspaces) plus the effective identity a row-level-security dataset requires. Each baseline
request costs six round trips, so a baseline run is a sample of ``embed_baseline_requests`` requests;
its call counts are scaled to 1,000 requests (they are exactly proportional: the sample caches nothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import requests

from .embed_world import DATASET_ROLE, EmbedWorld
from .measure import NS_PER_MS, percentile
from .report import Figure, Target
from .stack import BenchStack, RunContext, msal_token

BASELINE = ("Microsoft's App Owns Data sample per request: 2 × (new MSAL app + acquire_token_for_client), "
            "Get Report In Group and GenerateToken with requests.get/post (calls scaled to the broker's request count)")


class _Run:
    """What one run measured: per-request latencies and the calls the emulators received."""

    def __init__(self, samples_ns: list[int], generate_token_calls: int, upstream_calls: int,
                 request_count: int) -> None:
        samples_ns.sort()
        self.p50_ms = percentile(samples_ns, 0.5) / NS_PER_MS
        self.generate_token_calls = generate_token_calls
        self.upstream_calls = upstream_calls
        self.request_count = request_count

    def scaled(self, calls: int, request_count: int) -> float:
        """``calls`` as if the run had made ``request_count`` requests (exact for the sample: it caches nothing)."""
        return calls * request_count / self.request_count


def _reset_counters(stack: BenchStack, world: EmbedWorld) -> None:
    stack.entra.reset_counters()
    world.powerbi.reset_counters()


def _upstream_calls(stack: BenchStack, world: EmbedWorld) -> int:
    return len(stack.entra.requests) + len(world.powerbi.requests)


def _broker_run(stack: BenchStack, world: EmbedWorld, count: int) -> _Run:
    stack.configure()  # a new broker: empty embed, metadata, token and signing-key caches
    world.powerbi.latency = stack.latency
    _reset_counters(stack, world)
    pairs = world.pairs()
    headers = {user: {"Authorization": f"Bearer {stack.offline.user_token(user)}",
                      "Content-Type": "application/json"} for user in world.usernames}
    bodies = {report: json.dumps(world.request_body(report)).encode() for report in world.report_ids}
    samples: list[int] = []
    tokens: set[str] = set()
    clock = time.perf_counter_ns
    for index in range(count):
        report, user = pairs[index % len(pairs)]
        before = clock()
        response = stack.host.invoke("POST", "/api/embed-token", headers=headers[user], body=bodies[report])
        samples.append(clock() - before)
        if response.status != 200:
            raise RuntimeError(f"/api/embed-token answered {response.status}: {response.text[:300]}")
        tokens.add(response.json()["token"])
    if len(tokens) != len(pairs):
        raise RuntimeError(f"{len(tokens)} distinct embed tokens for {len(pairs)} (report, user) pairs")
    return _Run(samples, world.powerbi.generate_token_calls(), _upstream_calls(stack, world), count)


def _sample_request(stack: BenchStack, world: EmbedWorld, report_id: str, username: str) -> None:
    """One embed request the way the sample serves it (its structure, not its code)."""

    def request_header() -> dict[str, str]:  # the sample's get_request_header(): a new MSAL app each call
        access_token = msal_token(stack.new_msal_app(), stack.scopes)["access_token"]
        return {"Content-Type": "application/json", "Authorization": f"Bearer {access_token}"}

    api = world.powerbi.api_url
    report = requests.get(f"{api}/groups/{world.workspace_id}/reports/{report_id}", headers=request_header(),
                          timeout=10)
    report.raise_for_status()
    dataset_id = report.json()["datasetId"]
    body = {"datasets": [{"id": dataset_id}], "reports": [{"id": report_id}],
            "targetWorkspaces": [{"id": world.workspace_id}],
            "identities": [{"username": username, "roles": [DATASET_ROLE], "datasets": [dataset_id]}]}
    token = requests.post(f"{api}/GenerateToken", data=json.dumps(body), headers=request_header(), timeout=10)
    token.raise_for_status()
    if not token.json().get("token"):
        raise RuntimeError("the sample baseline got no embed token")


def _baseline_run(stack: BenchStack, world: EmbedWorld, count: int, offset: int) -> _Run:
    world.powerbi.latency = stack.latency
    _reset_counters(stack, world)
    pairs = world.pairs()
    samples: list[int] = []
    for index in range(offset, offset + count):
        report, user = pairs[index % len(pairs)]
        before = time.perf_counter_ns()
        _sample_request(stack, world, report, user)
        samples.append(time.perf_counter_ns() - before)
    return _Run(samples, world.powerbi.generate_token_calls(), _upstream_calls(stack, world), count)


def run(ctx: RunContext) -> list[Figure]:
    """Measure the broker's embed-token loop and the sample's per-request calls."""
    stack, profile = ctx.stack(), ctx.profile
    world = stack.embed_world()
    broker_runs: list[_Run] = []
    with stack.settings_override(world.jwt_settings(stack)):
        for number in range(profile.embed_runs):
            broker_runs.append(_broker_run(stack, world, profile.embed_requests))
            last = broker_runs[-1]
            ctx.progress(f"embed run {number + 1}/{profile.embed_runs}: {last.generate_token_calls} GenerateToken "
                         f"calls for {last.request_count} requests, p50 {last.p50_ms:.3f} ms")
    stack.configure()
    _sample_request(stack, world, *world.pairs()[0])  # warm-up: imports, first TLS contexts
    baseline_runs: list[_Run] = []
    for number in range(profile.embed_runs):
        baseline_runs.append(_baseline_run(stack, world, profile.embed_baseline_requests,
                                           offset=number * profile.embed_baseline_requests))
        last = baseline_runs[-1]
        ctx.progress(f"embed baseline run {number + 1}/{profile.embed_runs}: {last.generate_token_calls} "
                     f"GenerateToken calls for {last.request_count} requests, p50 {last.p50_ms:.1f} ms")

    def col(runs: list[_Run], value: Callable[[_Run], float]) -> tuple[float, ...]:
        return tuple(value(r) for r in runs)

    requests_text = f"{profile.embed_requests:,} POST /api/embed-token over {len(world.pairs())} (report, user) pairs"
    return [
        Figure("embed.generate_token_calls", f"GenerateToken calls for {requests_text} (jwt callers, RLS)",
               "calls", col(broker_runs, lambda r: float(r.generate_token_calls)),
               col(baseline_runs, lambda r: r.scaled(r.generate_token_calls, profile.embed_requests)), BASELINE,
               target=Target("==", len(world.pairs()), every_run=True)),
        Figure("embed.upstream_calls", f"Calls to Entra ID and Power BI for {requests_text}", "calls",
               col(broker_runs, lambda r: float(r.upstream_calls)),
               col(baseline_runs, lambda r: r.scaled(r.upstream_calls, profile.embed_requests)), BASELINE),
        Figure("embed.p50", f"Median latency of {requests_text}, through FunctionsHost, one thread", "ms",
               col(broker_runs, lambda r: r.p50_ms), col(baseline_runs, lambda r: r.p50_ms), BASELINE),
    ]
