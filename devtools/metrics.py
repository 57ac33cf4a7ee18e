"""``python -m devtools --metrics SECONDS``: the broker's OpenTelemetry metrics as one line every few seconds.

Installs the OpenTelemetry SDK with an in-memory reader as this process's meter provider (devtools only: the
product never imports the SDK) so that a developer sees the numbers of docs/OPERATIONS.md move while using the
offline stack. Totals since the stack started.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData


def install() -> InMemoryMetricReader:
    """Set the SDK meter provider with an in-memory reader (once per process, before the first request)."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def _points(data: MetricsData | None) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def summary_line(data: MetricsData | None) -> str:
    """One line: requests by status, cache hit ratio, upstream calls and mean latency, embed tokens, rate limited."""
    points = _points(data)
    statuses: Counter[int] = Counter()
    for point in points.get("token_broker.requests", []):
        statuses[int(point.attributes.get("http.response.status_code", 0))] += int(point.value)
    lookups = hits = 0
    for point in points.get("token_broker.cache.lookups", []):
        lookups += int(point.value)
        hits += int(point.value) if point.attributes.get("token_broker.cache.result") != "miss" else 0
    upstream: dict[str, list[float]] = {}
    for point in points.get("token_broker.upstream.duration", []):
        totals = upstream.setdefault(str(point.attributes.get("token_broker.upstream")), [0.0, 0.0, 0.0])
        totals[0] += point.count
        totals[1] += point.sum
        totals[2] += point.count if point.attributes.get("token_broker.upstream.outcome") == "error" else 0
    minted = sum(int(p.value) for p in points.get("token_broker.embed_tokens.minted", []))
    limited = sum(int(p.value) for p in points.get("token_broker.rate_limited", []))
    by_status = " ".join(f"{status}:{count}" for status, count in sorted(statuses.items())) or "-"
    ratio = f"{100.0 * hits / lookups:.0f}% of {lookups}" if lookups else "-"
    calls = " ".join(
        f"{name} {int(count)} ({1000 * total / count:.0f} ms mean{f', {int(errors)} failed' if errors else ''})"
        for name, (count, total, errors) in sorted(upstream.items()) if count) or "-"
    return (f"requests {sum(statuses.values())} [{by_status}] | cache hits {ratio} | upstream {calls} | "
            f"embed tokens {minted} | rate limited {limited}")


def print_every(reader: InMemoryMetricReader, seconds: float, stop: threading.Event,
                write: Callable[[str], None] = print) -> threading.Thread:
    """A daemon thread that writes :func:`summary_line` every ``seconds`` until ``stop`` is set."""

    def run() -> None:
        while not stop.wait(seconds):
            write(summary_line(reader.get_metrics_data()))

    thread = threading.Thread(target=run, name="metrics-summary", daemon=True)
    thread.start()
    return thread
