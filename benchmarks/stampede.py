"""Stampedes: how many token requests reach Entra ID when many callers arrive at the same instant.

* **cold**: N concurrent ``GET /api/token`` on a new broker (empty cache, no MSAL application yet).
* **refresh**: the cached token has reached its refresh point (short emulator token lifetime, small
  ``POWERBI_TOKEN_REFRESH_MARGIN_SECONDS``), then 50 concurrent requests.

The broker should make exactly one upstream request each time. The baseline is one shared plain MSAL
``ConfidentialClientApplication`` called concurrently: MSAL has no single flight, so every call that
finds no usable token in its cache makes its own request. MSAL treats a cached token with less than
five minutes left as expired, so with the short lifetime used here its refresh point is reached as
soon as the token is cached; the baseline therefore does not wait.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from devtools.functions_host import HostResponse

from .measure import release_together
from .report import Figure, Target
from .stack import BenchStack, RunContext, msal_token

COLD_BASELINE = "one shared msal.ConfidentialClientApplication, concurrent acquire_token_for_client"
REFRESH_CONCURRENCY = 50
#: Emulator token lifetime and broker refresh margin for the refresh figure. The broker refreshes at
#: expiry - min(margin, remaining / 2), about 2 s after the fetch, and keeps serving the old token
#: until expiry - min(30, margin / 2), 3 s after the fetch: the burst lands in that 1 s window.
REFRESH_LIFETIME_SECONDS = 4
REFRESH_MARGIN_SECONDS = 2
_PAST_REFRESH_POINT = 0.2  # how long after the computed refresh point the burst is released


def _check_responses(responses: list[HostResponse], expected: int, *, max_distinct_tokens: int) -> None:
    """All answered 200; at most ``max_distinct_tokens`` tokens handed out (1 cold, 2 across a refresh)."""
    if len(responses) != expected or any(r.status != 200 for r in responses):
        statuses = sorted({r.status for r in responses})
        raise RuntimeError(f"stampede: {len(responses)}/{expected} responses, statuses {statuses}")
    distinct = {r.json()["accessToken"] for r in responses}
    if len(distinct) > max_distinct_tokens:
        raise RuntimeError(f"stampede: {len(distinct)} different tokens handed out")


def _broker_cold(stack: BenchStack, concurrency: int) -> int:
    stack.configure()  # a new broker: empty cache, MSAL application not created yet
    responses = release_together(concurrency, stack.get_token)
    _check_responses(responses, concurrency, max_distinct_tokens=1)
    return stack.upstream_token_requests()


def _msal_cold(stack: BenchStack, concurrency: int) -> int:
    app = stack.new_msal_app()  # tenant discovery happens here, before the burst, as in a warm process
    stack.entra.reset_counters()
    results = release_together(concurrency, lambda: msal_token(app, stack.scopes))
    if len(results) != concurrency:
        raise RuntimeError(f"MSAL baseline: {len(results)}/{concurrency} results")
    return stack.upstream_token_requests()


def _broker_at_refresh_point(stack: BenchStack, note: Callable[[str], None]) -> int:
    stack.configure(token_lifetime=REFRESH_LIFETIME_SECONDS, refresh_margin=REFRESH_MARGIN_SECONDS)
    primed = stack.get_token()  # caches a token that lives REFRESH_LIFETIME_SECONDS
    primed_at = time.monotonic()
    _check_responses([primed], 1, max_distinct_tokens=1)
    stack.entra.reset_counters()
    lifetime = float(REFRESH_LIFETIME_SECONDS)
    release_at = primed_at + lifetime - min(REFRESH_MARGIN_SECONDS, lifetime / 2) + _PAST_REFRESH_POINT

    def sleep_until_refresh_point() -> None:
        time.sleep(max(0.0, release_at - time.monotonic()))

    responses = release_together(REFRESH_CONCURRENCY, stack.get_token, before_release=sleep_until_refresh_point)
    _check_responses(responses, REFRESH_CONCURRENCY, max_distinct_tokens=2)
    # Callers answered with the primed token were served it while the one refresh ran: evidence that the
    # burst hit the refresh window, not the time after expiry (when every caller waits for the fetch).
    old_token = primed.json()["accessToken"]
    stale = sum(1 for r in responses if r.json()["accessToken"] == old_token)
    note(f"{stale}/{REFRESH_CONCURRENCY} callers got the cached token while it was refreshed")
    return stack.upstream_token_requests()


def _msal_at_refresh_point(stack: BenchStack) -> int:
    stack.entra.access_token_lifetime = REFRESH_LIFETIME_SECONDS
    app = stack.new_msal_app()
    msal_token(app, stack.scopes)  # cached by MSAL, but with < 5 minutes left: MSAL will not serve it
    stack.entra.reset_counters()
    release_together(REFRESH_CONCURRENCY, lambda: msal_token(app, stack.scopes))
    return stack.upstream_token_requests()


def _repeat(ctx: RunContext, label: str, measure: Callable[[], int]) -> tuple[float, ...]:
    counts: list[float] = []
    for run in range(ctx.profile.runs):
        counts.append(float(measure()))
        ctx.progress(f"{label}: run {run + 1}/{ctx.profile.runs}: {counts[-1]:.0f} upstream token requests")
    return tuple(counts)


def run(ctx: RunContext) -> list[Figure]:
    """Measure the cold and refresh-point stampedes against their MSAL baselines."""
    stack = ctx.stack()
    exactly_one = Target("==", 1, every_run=True)
    figures = []
    for concurrency in ctx.profile.stampede_sizes:
        broker_counts = _repeat(ctx, f"cold x{concurrency}", functools.partial(_broker_cold, stack, concurrency))
        msal_counts = _repeat(ctx, f"cold x{concurrency} baseline",
                              functools.partial(_msal_cold, stack, concurrency))
        figures.append(Figure(
            f"stampede.cold.{concurrency}",
            f"Upstream token requests for {concurrency} concurrent cold GET /api/token",
            "requests", broker_counts, msal_counts, f"{COLD_BASELINE} (cold cache)", target=exactly_one,
        ))
    broker_counts = _repeat(ctx, f"refresh point x{REFRESH_CONCURRENCY}",
                            functools.partial(_broker_at_refresh_point, stack, ctx.progress))
    msal_counts = _repeat(ctx, f"refresh point x{REFRESH_CONCURRENCY} baseline",
                          functools.partial(_msal_at_refresh_point, stack))
    stack.configure()  # leave the default lifetime and margin for whichever suite runs next
    figures.append(Figure(
        f"stampede.refresh.{REFRESH_CONCURRENCY}",
        f"Upstream token requests for {REFRESH_CONCURRENCY} concurrent GET /api/token once the cached token "
        f"reached its refresh point (lifetime {REFRESH_LIFETIME_SECONDS} s, margin {REFRESH_MARGIN_SECONDS} s)",
        "requests", broker_counts, msal_counts, f"{COLD_BASELINE} (token past MSAL's refresh point)",
        target=exactly_one,
    ))
    return figures
