"""Warm ``/api/token`` latency and single-thread throughput, against a new MSAL application per request.

Warm means the service principal's token is already cached: the figure is what every request but
the first costs. It is measured through :class:`devtools.functions_host.FunctionsHost` (routing,
``func.HttpRequest`` construction, the user function, response conversion), which is what is
reported, and also by calling the registered user function directly, to show what the host emulation
adds. The baseline is Microsoft's Power BI embedding sample pattern: a new
``msal.ConfidentialClientApplication`` per request, then ``acquire_token_for_client``, so each
request pays tenant discovery plus a token round trip (and a TLS handshake) to the emulator.
"""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from devtools.functions_host import HostResponse

from .measure import LoopResult, timed_loop
from .report import Figure, Target
from .stack import BenchStack, RunContext, msal_token

BASELINE = "a new msal.ConfidentialClientApplication per request + acquire_token_for_client (embedding sample)"
P50_TARGET_MS = 0.25
MIN_SPEEDUP = 100.0
_BASELINE_WARMUP = 2  # imports, first TLS context; the rest of each baseline request is network-bound


def _check_host(result: object) -> None:
    if not isinstance(result, HostResponse) or result.status != 200:
        raise RuntimeError(f"/api/token failed during the benchmark: {getattr(result, 'status', result)!r}")


def _check_direct(result: object) -> None:
    if not isinstance(result, func.HttpResponse) or result.status_code != 200:
        raise RuntimeError(f"the token function failed during the benchmark: {result!r}")


def _user_function(stack: BenchStack) -> Callable[[func.HttpRequest], object]:
    """The registered ``token`` function as the worker calls it, from the app's one function index."""
    import function_app

    # The SDK's get_functions() may run once per app, and FunctionsHost has run it; reuse its result.
    from devtools.functions_host import _indexed

    assert stack.host.functions, "the host has indexed the app"
    indexed = next(f for f in _indexed(function_app.app) if f.get_function_name() == "token")
    user: Callable[[func.HttpRequest], object] = indexed.get_user_function()
    return user


def _runs(ctx: RunContext, name: str, call: Callable[[], object], iterations: int,
          check: Callable[[object], None], warmup: int) -> list[LoopResult]:
    for _ in range(warmup):
        check(call())
    results = []
    for run in range(ctx.profile.runs):
        results.append(timed_loop(call, iterations, check=check))
        ctx.progress(f"{name}: run {run + 1}/{ctx.profile.runs}: p50 {results[-1].p50_ms:.4f} ms")
    return results


def run(ctx: RunContext) -> list[Figure]:
    """Measure the warm token endpoint and its baseline."""
    stack, profile = ctx.stack(), ctx.profile
    stack.configure()
    _check_host(stack.get_token())  # the one cold request: caches the token
    hosted = _runs(ctx, "warm via FunctionsHost", stack.get_token, profile.warm_iterations, _check_host,
                   profile.warmup_iterations)

    user = _user_function(stack)

    def direct_call() -> object:
        # The worker builds a new HttpRequest per invocation, so that is part of the timed call.
        return user(func.HttpRequest("GET", "http://localhost:7071/api/token", headers={}, params={},
                                     route_params={}, body=b""))

    direct = _runs(ctx, "warm direct call", direct_call, profile.warm_iterations, _check_direct,
                   profile.warmup_iterations)
    upstream = stack.upstream_token_requests()
    if upstream != 1:
        raise RuntimeError(f"the warm loop was not warm: {upstream} upstream token requests instead of 1")

    def baseline_call() -> object:
        return msal_token(stack.new_msal_app(), stack.scopes)

    baseline = _runs(ctx, "baseline (new MSAL app per request)", baseline_call, profile.baseline_iterations,
                     lambda _: None, _BASELINE_WARMUP)

    def col(results: list[LoopResult], field: str) -> tuple[float, ...]:
        return tuple(float(getattr(r, field)) for r in results)

    return [
        Figure("token.warm.p50", "Median latency of a warm GET /api/token through FunctionsHost, one thread",
               "ms", col(hosted, "p50_ms"), col(baseline, "p50_ms"), BASELINE,
               target=Target("<=", P50_TARGET_MS), min_ratio=MIN_SPEEDUP),
        Figure("token.warm.p99", "99th percentile latency of a warm GET /api/token through FunctionsHost",
               "ms", col(hosted, "p99_ms"), col(baseline, "p99_ms"), BASELINE),
        Figure("token.warm.rps", "Warm GET /api/token per second through FunctionsHost, one thread",
               "req/s", col(hosted, "per_second"), col(baseline, "per_second"), BASELINE, lower_is_better=False),
        Figure("token.warm.direct_p50", "Median latency of the registered token function called directly "
               "with a new func.HttpRequest (no host routing)", "ms", col(direct, "p50_ms"),
               col(baseline, "p50_ms"), BASELINE),
    ]
