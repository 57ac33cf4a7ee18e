"""HTTP concurrency per instance: requests in flight in one broker process vs throughput and latency.

Flex Consumption sends an instance at most ``perInstanceConcurrency`` HTTP requests at once and scales out
beyond that (infra/app/api.bicep, ``httpPerInstanceConcurrency``); the Python worker runs them on
``PYTHON_THREADPOOL_THREAD_COUNT`` threads. This suite drives the broker in one process with N threads in a
closed loop, each sending its next request as soon as the last one answered, through
:class:`~devtools.functions_host.FunctionsHost` (routing, ``func.HttpRequest``, the user function):

- ``token``: warm ``GET /api/token`` (the service principal's token cached; pure CPU under the GIL);
- ``embed``: warm ``POST /api/embed-token`` with ``CALLER_AUTH=jwt`` over the 20 (report, user) pairs;
- ``cold``: a new broker (empty caches, as on a new instance) serving a burst of embed requests: the first
  request of each pair waits on Entra ID and Power BI (20 ms emulated latency each), so threads overlap them.

It reports requests per second and p50/p99 latency for N in 1, 2, 4, 8, 16, 32 as a note, and figures for the
value the template deploys against one thread. docs/PERFORMANCE.md explains the choice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from .measure import NS_PER_MS, percentile
from .report import Figure
from .stack import BenchStack, RunContext

THREADS = (1, 2, 4, 8, 16, 32)
#: httpPerInstanceConcurrency's default in infra/main.bicep (tests/test_infra.py keeps them equal).
DEPLOYED_CONCURRENCY = 8


class _Result:
    def __init__(self, threads: int, samples_ns: list[int], seconds: float) -> None:
        samples_ns.sort()
        self.threads = threads
        self.count = len(samples_ns)
        self.per_second = self.count / seconds
        self.seconds = seconds
        self.p50_ms = percentile(samples_ns, 0.5) / NS_PER_MS
        self.p99_ms = percentile(samples_ns, 0.99) / NS_PER_MS


def _closed_loop(threads: int, per_thread: int, request: Callable[[int], None]) -> _Result:
    """``threads`` threads each sending ``per_thread`` requests back to back; all start together."""
    samples: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def worker(number: int) -> None:
        start.wait()
        clock = time.perf_counter_ns
        try:
            for index in range(per_thread):
                before = clock()
                request(index * threads + number)  # in-flight requests name different pairs
                samples[number].append(clock() - before)
        except BaseException as error:  # reported after the join, in this thread
            errors.append(error)

    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"a request failed with {threads} threads: {errors[0]!r}") from errors[0]
    return _Result(threads, [s for thread_samples in samples for s in thread_samples], elapsed)


def _token_request(stack: BenchStack) -> Callable[[int], None]:
    def request(_: int) -> None:
        response = stack.get_token()
        if response.status != 200:
            raise RuntimeError(f"/api/token answered {response.status}")
    return request


def _embed_request(stack: BenchStack) -> Callable[[int], None]:
    world = stack.embed_world()
    pairs = world.pairs()
    headers = {user: {"Authorization": f"Bearer {stack.offline.user_token(user)}",
                      "Content-Type": "application/json"} for user in world.usernames}
    bodies = {report: json.dumps(world.request_body(report)).encode() for report in world.report_ids}

    def request(index: int) -> None:
        report, user = pairs[index % len(pairs)]
        response = stack.host.invoke("POST", "/api/embed-token", headers=headers[user], body=bodies[report])
        if response.status != 200:
            raise RuntimeError(f"/api/embed-token answered {response.status}: {response.text[:200]}")
    return request


def run(ctx: RunContext) -> list[Figure]:
    """Measure token and embed requests with 1-32 threads in one broker."""
    stack, profile = ctx.stack(), ctx.profile
    total = 320 if ctx.quick else 1_600  # requests per thread count (divisible by every N)
    runs = 1 if ctx.quick else 3
    results: dict[str, dict[int, list[_Result]]] = {name: {n: [] for n in THREADS}
                                                    for name in ("token", "embed", "cold")}
    stack.configure()
    token = _token_request(stack)
    token(0)  # the one cold request: caches the service principal's token
    for _ in range(runs):
        for n in THREADS:
            results["token"][n].append(_closed_loop(n, total // n, token))
    world = stack.embed_world()
    with stack.settings_override(world.jwt_settings(stack)):
        world.powerbi.latency = stack.latency
        embed = _embed_request(stack)
        for _ in range(runs):
            for n in THREADS:
                stack.configure()  # a new instance: empty caches
                results["cold"][n].append(_closed_loop(n, max(1, 160 // n), embed))
                results["embed"][n].append(_closed_loop(n, total // n, embed))  # now warm
            ctx.progress("concurrency: " + ", ".join(
                f"{n} threads {results['embed'][n][-1].per_second:.0f} embed/s" for n in THREADS))
    del profile

    def best(name: str, n: int) -> _Result:
        return min(results[name][n], key=lambda r: r.p50_ms)

    lines = [f"{'threads':>7}  {'token req/s':>11} {'p50 ms':>7} {'p99 ms':>7}  {'embed req/s':>11} {'p50 ms':>7} "
             f"{'p99 ms':>7}  {'cold burst (160 embed) ms':>25}"]
    for n in THREADS:
        t, e, c = best("token", n), best("embed", n), best("cold", n)
        lines.append(f"{n:>7}  {t.per_second:>11.0f} {t.p50_ms:>7.3f} {t.p99_ms:>7.3f}  {e.per_second:>11.0f} "
                     f"{e.p50_ms:>7.3f} {e.p99_ms:>7.3f}  {c.seconds * 1000:>25.0f}")
    ctx.note("HTTP concurrency in one broker process (closed loop through FunctionsHost; best of "
             f"{runs} run(s))", lines)

    def col(name: str, n: int, field: str) -> tuple[float, ...]:
        return tuple(float(getattr(r, field)) * (1000 if field == "seconds" else 1) for r in results[name][n])

    n = DEPLOYED_CONCURRENCY
    one = "the same with 1 thread (one request at a time per instance)"
    return [
        Figure("concurrency.token.rps", f"Warm GET /api/token per second, {n} requests in flight in one process",
               "req/s", col("token", n, "per_second"), col("token", 1, "per_second"), one, lower_is_better=False),
        Figure("concurrency.embed.p99", f"p99 latency of a warm POST /api/embed-token (jwt), {n} in flight",
               "ms", col("embed", n, "p99_ms"), col("embed", 1, "p99_ms"), one),
        Figure("concurrency.cold_burst", f"160 embed requests on a new broker (empty caches), {n} in flight: "
               "wall time", "ms", col("cold", n, "seconds"), col("cold", 1, "seconds"), one),
    ]
