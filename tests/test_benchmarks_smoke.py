"""``python -m benchmarks --quick`` runs end to end and reports every figure.

Timings are never asserted here: they belong to the benchmark's report, and CI machines vary too
much. Counts that are correctness are asserted: the stampedes make exactly one upstream request, 20
(report, user) pairs cost exactly 20 GenerateToken calls, the memory run's caches hold exactly their
configured bounds, and importing the app loads none of the SDKs it defers.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

QUICK_FIGURES = {
    "token.warm.p50",
    "token.warm.p99",
    "token.warm.rps",
    "token.warm.direct_p50",
    "stampede.cold.50",
    "stampede.refresh.50",
    "coldstart.token",
    "coldstart.token.host",
    "coldstart.token.source",
    "coldstart.token.packaged",
    "concurrency.token.rps",
    "concurrency.embed.p99",
    "concurrency.cold_burst",
    "coldstart.import",
    "coldstart.import.sdk_modules",
    "embed.generate_token_calls",
    "embed.upstream_calls",
    "embed.p50",
    "proxy.get.p50",
    "proxy.get.p99",
    "proxy.query.powerbi_calls",
    "proxy.query.powerbi_429",
    "memory.rss_after",
    "memory.rss_growth",
    "memory.embed_cached",
    "memory.rate_limit_callers",
    "memory.mb_per_1000_entries",
    "shared.generate_token_calls",
    "shared.l2_hit_p50",
    "shared.redis_bytes_per_embed_entry",
    "shared.redis_bytes_per_metadata_entry",
}
HTTP_FIGURES = {"http.token.rps", "http.token.p99", "http.embed.rps", "http.embed.p99"}

Run = tuple[subprocess.CompletedProcess[str], dict[str, Any]]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("benchmarks") / "quick.json"
    # A generous timeout: the run takes about a minute, but CI shares its cores with other jobs.
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return process, json.loads(out.read_text(encoding="utf-8"))


def _figures(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in document["figures"]}


@pytest.mark.slow
def test_every_figure_is_reported_with_numeric_values_and_a_baseline(quick_run: Run) -> None:
    process, document = quick_run
    figures = _figures(document)
    assert set(figures) >= QUICK_FIGURES
    for name, figure in figures.items():
        assert _is_number(figure["median"]), name
        assert figure["runs"] and all(_is_number(v) for v in figure["runs"]), name
        assert figure["unit"] and figure["description"], name
        baseline = figure["baseline"]
        assert baseline is not None, f"{name} has no baseline"
        assert baseline["runs"] and all(_is_number(v) for v in baseline["runs"]), name
        assert _is_number(baseline["median"]) and baseline["name"], name
        assert name in process.stdout  # the table lists it


@pytest.mark.slow
def test_the_report_describes_the_machine(quick_run: Run) -> None:
    process, document = quick_run
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"] and machine["msal"]
    assert document["mode"] == "quick"
    assert _is_number(document["duration_seconds"])
    assert f"msal {machine['msal']}" in process.stdout


@pytest.mark.slow
def test_stampedes_make_exactly_one_upstream_request(quick_run: Run) -> None:
    _, document = quick_run
    stampedes = [f for f in document["figures"] if f["name"].startswith("stampede.")]
    assert {f["name"] for f in stampedes} >= {"stampede.cold.50", "stampede.refresh.50"}
    for figure in stampedes:
        assert figure["runs"] == [1] * len(figure["runs"]), figure["name"]
        assert figure["target_met"] is True, figure["name"]


@pytest.mark.slow
def test_twenty_report_user_pairs_cost_twenty_generate_token_calls(quick_run: Run) -> None:
    _, document = quick_run
    calls = _figures(document)["embed.generate_token_calls"]
    assert calls["runs"] == [20] * len(calls["runs"])
    assert calls["target_met"] is True
    # The sample's pattern calls GenerateToken once per request: 1,000 for the broker's 1,000.
    assert calls["baseline"]["runs"] == [1000] * len(calls["baseline"]["runs"])


@pytest.mark.slow
def test_eight_instances_sharing_redis_make_twenty_generate_token_calls(quick_run: Run) -> None:
    _, document = quick_run
    calls = _figures(document)["shared.generate_token_calls"]
    assert calls["runs"] == [20] * len(calls["runs"]) and calls["target_met"] is True
    assert calls["baseline"]["runs"] == [160] * len(calls["baseline"]["runs"])  # 8 instances x 20 pairs


@pytest.mark.slow
def test_identical_queries_through_the_proxy_cost_one_power_bi_call(quick_run: Run) -> None:
    _, document = quick_run
    figures = _figures(document)
    calls, throttled = figures["proxy.query.powerbi_calls"], figures["proxy.query.powerbi_429"]
    assert calls["runs"] == [1] * len(calls["runs"]) and throttled["runs"] == [0] * len(throttled["runs"])
    # Browsers calling Power BI themselves: every query is a call, and past 120 a minute Power BI says 429.
    assert calls["baseline"]["runs"] == [1000] * len(calls["baseline"]["runs"])
    assert throttled["baseline"]["runs"] == [880] * len(throttled["baseline"]["runs"])


@pytest.mark.slow
def test_memory_run_caches_hold_exactly_their_bounds(quick_run: Run) -> None:
    _, document = quick_run
    figures, settings = _figures(document), document["settings"]
    for name in ("memory.embed_cached", "memory.rate_limit_callers"):
        figure = figures[name]
        assert figure["runs"] == [settings["memory_bound"]] * len(figure["runs"]), name
        assert figure["baseline"]["runs"] == [settings["memory_callers"]] * len(figure["baseline"]["runs"]), name
        assert figure["target_met"] is True, name


@pytest.mark.slow
def test_importing_the_app_loads_no_deferred_sdk(quick_run: Run) -> None:
    process, document = quick_run
    figure = _figures(document)["coldstart.import.sdk_modules"]
    assert figure["runs"] == [0] * len(figure["runs"])
    assert min(figure["baseline"]["runs"]) > 0  # the floor imports msal: the count does see it
    notes = document["notes"]["Cold start: what `import function_app` loads (default settings)"]
    assert any(line.startswith("token_broker submodules") for line in notes)
    assert "Not imported by the import itself: msal, azure.identity" in process.stdout


@pytest.mark.slow
def test_http_load_figures_are_reported_when_wrk_is_installed(quick_run: Run) -> None:
    process, document = quick_run
    figures = _figures(document)
    if shutil.which("wrk") is not None:
        assert set(figures) >= HTTP_FIGURES
    else:
        assert not set(figures) & HTTP_FIGURES
        assert any("wrk is not installed" in line for line in document["notes"]["HTTP load (wrk)"])
        assert "wrk is not installed" in process.stdout
