"""Memory: resident set size after many distinct callers, with the caches bounded, in a fresh process each.

One configuration is measured per child process (:mod:`benchmarks.memory_child`): ``N`` distinct
callers (``CALLER_AUTH=easyauth`` principals, the cheapest verified identity to forge locally) each
make one embed-token request (an RLS identity of their own: an embed cache entry) and then
``requests_per_caller - 1`` token requests (one rate-limit bucket each, with
``CALLER_RATE_LIMIT_PER_MINUTE`` on). The broker runs with ``EMBED_CACHE_MAX_ENTRIES`` and
``CALLER_RATE_LIMIT_MAX_CALLERS`` set to the profile's bound (2,000 of 10,000 callers in full mode);
the baseline is the same workload with both bounds at ``N``, so that every caller stays in memory and
the growth with the bound is visible. The Entra ID and Power BI emulators run in this process, without
latency for this figure (10,000 GenerateToken calls); their memory is not the child's.

RSS is ``VmRSS`` from ``/proc/self/status`` after ``gc.collect()``: *before* is after a warm-up caller
(MSAL loaded, the service principal's token and the report metadata cached), *after* is after the
last request. "MB per 1,000 entries" divides the growth by the entries held (embed tokens plus
rate-limit buckets), so it includes whatever else the requests left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.offline_stack import TENANT_ID

from .embed_world import EmbedWorld
from .report import Figure, Target
from .stack import BenchStack, RunContext

ROOT = Path(__file__).resolve().parents[1]
KIB_PER_MB = 1024.0
RATE_LIMIT_PER_MINUTE = 60  # well above the requests any one caller makes: nobody is refused


def measure_configuration(stack: BenchStack, world: EmbedWorld, *, callers: int, requests_per_caller: int,
                          bound: int) -> dict[str, Any]:
    """Run one child with both bounds set to ``bound``; its measurements, checked."""
    settings = {
        **world.embed_settings(),
        "CALLER_AUTH": "easyauth",
        "CALLER_EASYAUTH_ALLOW_LOCAL": "true",
        "CALLER_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
        "CALLER_RATE_LIMIT_MAX_CALLERS": str(bound),
        "EMBED_CACHE_MAX_ENTRIES": str(bound),
    }
    job = {"callers": callers, "requests_per_caller": requests_per_caller, "tenant_id": TENANT_ID,
           "report_id": world.report_ids[0], "workspace_id": world.workspace_id}
    world.powerbi.reset_counters()
    completed = subprocess.run([sys.executable, "-m", "benchmarks.memory_child", json.dumps(job)], cwd=ROOT,
                               env=stack.child_environ(settings), capture_output=True, text=True, timeout=900,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"memory child failed (exit {completed.returncode}): {completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    expected_calls = callers + 1  # every caller's identity is new, plus the warm-up caller's
    if world.powerbi.generate_token_calls() != expected_calls or result["requests"] != callers * requests_per_caller:
        raise RuntimeError(f"memory child: {world.powerbi.generate_token_calls()} GenerateToken calls for "
                           f"{expected_calls} identities, {result['requests']} requests")
    return result


def _mb(kib: float) -> float:
    return kib / KIB_PER_MB


def _growth_mb(result: dict[str, Any]) -> float:
    return _mb(result["rss_after_kib"] - result["rss_before_kib"])


def _per_thousand_entries(result: dict[str, Any]) -> float:
    entries = result["embed_cached"] + result["rate_limit_callers"]
    return _growth_mb(result) / (entries / 1000) if entries else 0.0


def run(ctx: RunContext) -> list[Figure]:
    """Measure the bounded configuration and the baseline in fresh processes."""
    stack, profile = ctx.stack(), ctx.profile
    world = stack.embed_world()
    callers, bound = profile.memory_callers, profile.memory_bound
    requests = callers * profile.memory_requests_per_caller
    stack.entra.latency = world.powerbi.latency = 0.0  # 10,000 GenerateToken calls; memory does not wait
    results: dict[str, list[dict[str, Any]]] = {"bounded": [], "baseline": []}
    try:
        for name, limit in (("bounded", bound), ("baseline", callers)):
            results[name].append(measure_configuration(stack, world, callers=callers, bound=limit,
                                                       requests_per_caller=profile.memory_requests_per_caller))
            last = results[name][-1]
            ctx.progress(f"memory {name} (bounds {limit}): RSS {_mb(last['rss_before_kib']):.1f} → "
                         f"{_mb(last['rss_after_kib']):.1f} MB after {last['requests']} requests; "
                         f"{last['embed_cached']} embed tokens, {last['rate_limit_callers']} rate-limit buckets")
    finally:
        stack.configure()
        world.powerbi.latency = stack.latency

    bounded, baseline = results["bounded"], results["baseline"]

    def col(rows: list[dict[str, Any]], key: str) -> tuple[float, ...]:
        return tuple(float(row[key]) for row in rows)

    def col_mb(rows: list[dict[str, Any]], key: str) -> tuple[float, ...]:
        return tuple(_mb(row[key]) for row in rows)

    imported = bounded[0]
    marginal = (_mb(baseline[0]["rss_after_kib"] - bounded[0]["rss_after_kib"])
                / ((baseline[0]["embed_cached"] + baseline[0]["rate_limit_callers"]
                    - bounded[0]["embed_cached"] - bounded[0]["rate_limit_callers"]) / 1000))
    ctx.note("Memory", [
        f"RSS of the child: {_mb(imported['rss_start_kib']):.1f} MB at start, "
        f"{_mb(imported['rss_imported_kib']):.1f} MB after import function_app + app.get_functions(), "
        f"{_mb(imported['rss_before_kib']):.1f} MB after the warm-up caller (MSAL loaded, tokens cached)",
        f"Marginal cost between the two configurations: {marginal:.2f} MB per 1,000 entries "
        "(one embed token plus one rate-limit bucket per caller)",
        f"Peak RSS (VmHWM): bounded {_mb(bounded[0]['peak_rss_kib']):.1f} MB, "
        f"baseline {_mb(baseline[0]['peak_rss_kib']):.1f} MB",
    ])
    workload = f"{requests:,} requests from {callers:,} distinct callers and RLS identities"
    name = f"the same workload with EMBED_CACHE_MAX_ENTRIES = CALLER_RATE_LIMIT_MAX_CALLERS = {callers:,}"
    exactly_bound = Target("==", bound, every_run=True)
    return [
        Figure("memory.rss_after", f"RSS after {workload}, both caches bounded to {bound:,}", "MB",
               col_mb(bounded, "rss_after_kib"), col_mb(baseline, "rss_after_kib"), name),
        Figure("memory.rss_growth", "RSS growth over those requests (after − after warm-up)", "MB",
               tuple(_growth_mb(r) for r in bounded), tuple(_growth_mb(r) for r in baseline), name),
        Figure("memory.embed_cached", "Embed tokens held (runtime.current_broker().embed.cached_tokens)", "entries",
               col(bounded, "embed_cached"), col(baseline, "embed_cached"), name, target=exactly_bound),
        Figure("memory.rate_limit_callers", "Rate-limit buckets held (len(broker.rate_limiter))", "entries",
               col(bounded, "rate_limit_callers"), col(baseline, "rate_limit_callers"), name, target=exactly_bound),
        Figure("memory.mb_per_1000_entries", "RSS growth per 1,000 entries held (embed tokens + buckets)", "MB",
               tuple(_per_thousand_entries(r) for r in bounded), tuple(_per_thousand_entries(r) for r in baseline),
               name),
    ]
