"""``python -m benchmarks --quick`` runs end to end and reports every figure.

Timings are never asserted here: they belong to the benchmark's report, and CI machines vary too
much. The upstream request counts of the stampede figures are correctness (single flight), so the
broker's count is asserted to be exactly 1 in every run.
"""

from __future__ import annotations

import json
import math
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
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("benchmarks") / "quick.json"
    # A generous timeout: the run takes well under a minute, but CI shares its cores with other jobs.
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return process, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_every_figure_is_reported_with_numeric_values(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    process, document = quick_run
    figures = {f["name"]: f for f in document["figures"]}
    assert set(figures) >= QUICK_FIGURES
    runs = document["settings"]["runs"]
    for name, figure in figures.items():
        assert _is_number(figure["median"]), name
        assert len(figure["runs"]) == runs and all(_is_number(v) for v in figure["runs"]), name
        assert figure["unit"] and figure["description"], name
        baseline = figure["baseline"]
        assert baseline is not None, f"{name} has no baseline"
        assert _is_number(baseline["median"]) and all(_is_number(v) for v in baseline["runs"]), name
        assert baseline["name"], name
        assert name in process.stdout  # the table lists it


@pytest.mark.slow
def test_the_report_describes_the_machine(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    process, document = quick_run
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"] and machine["msal"]
    assert document["mode"] == "quick"
    assert _is_number(document["duration_seconds"])
    assert f"msal {machine['msal']}" in process.stdout


@pytest.mark.slow
def test_stampedes_make_exactly_one_upstream_request(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, document = quick_run
    stampedes = [f for f in document["figures"] if f["name"].startswith("stampede.")]
    assert {f["name"] for f in stampedes} >= {"stampede.cold.50", "stampede.refresh.50"}
    for figure in stampedes:
        assert figure["runs"] == [1] * len(figure["runs"]), figure["name"]
        assert figure["target_met"] is True, figure["name"]
