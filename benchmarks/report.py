"""Figures, their targets, and the two ways of reporting them: an aligned text table and JSON.

A :class:`Figure` keeps one value per repeated run (for the broker and, when there is one, for the
baseline), so the report can show the median with its spread instead of a single lucky number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .machine import Machine

Op = Literal["<=", ">=", "=="]
_OP_TEXT = {"<=": "≤", ">=": "≥", "==": "="}


@dataclass(frozen=True)
class Target:
    """What a figure must reach. ``every_run`` checks each run instead of the median (for counts)."""

    op: Op
    value: float
    every_run: bool = False

    def met_by(self, runs: Sequence[float]) -> bool:
        """Whether ``runs`` reach the target."""
        values = list(runs) if self.every_run else [statistics.median(runs)]
        return all(_compare(v, self.op, self.value) for v in values)

    def describe(self) -> str:
        """e.g. ``≤ 0.25`` or ``= 1 every run``."""
        return f"{_OP_TEXT[self.op]} {format_value(self.value)}" + (" every run" if self.every_run else "")


def _compare(value: float, op: Op, limit: float) -> bool:
    if op == "<=":
        return value <= limit
    if op == ">=":
        return value >= limit
    return value == limit


@dataclass(frozen=True)
class Figure:
    """One reported number: per-run values of the broker and of its baseline, plus targets.

    ``ratio`` is "times better than the baseline" whichever direction is better: baseline/value
    when lower is better (latency, upstream requests), value/baseline when higher is (throughput).
    """

    name: str
    description: str
    unit: str
    runs: tuple[float, ...]
    baseline: tuple[float, ...] | None = None
    baseline_name: str | None = None
    lower_is_better: bool = True
    target: Target | None = None
    min_ratio: float | None = None  # the baseline must be beaten by at least this factor
    #: The figure may be at most this many times the baseline (an overhead budget over a floor, e.g. 1.15).
    max_times_baseline: float | None = None

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError(f"{self.name}: no runs")
        if (self.min_ratio is not None or self.max_times_baseline is not None) and not self.baseline:
            raise ValueError(f"{self.name}: a ratio target needs a baseline")

    @property
    def median(self) -> float:
        """Median over runs."""
        return float(statistics.median(self.runs))

    @property
    def baseline_median(self) -> float | None:
        """Median of the baseline over its runs, if there is a baseline."""
        return float(statistics.median(self.baseline)) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        """Times better than the baseline (see the class docstring); inf when the figure is 0."""
        base = self.baseline_median
        if base is None:
            return None
        better, worse = (base, self.median) if self.lower_is_better else (self.median, base)
        return better / worse if worse else math.inf

    @property
    def met(self) -> bool | None:
        """Whether every target is met; None when the figure has no target."""
        checks: list[bool] = []
        if self.target is not None:
            checks.append(self.target.met_by(self.runs))
        if self.min_ratio is not None:
            ratio = self.ratio
            checks.append(ratio is not None and ratio >= self.min_ratio)
        if self.max_times_baseline is not None:
            times = self.times_baseline
            checks.append(times is not None and times <= self.max_times_baseline)
        return all(checks) if checks else None

    @property
    def times_baseline(self) -> float | None:
        """The median divided by the baseline's median (1.1 means 10 % above the baseline)."""
        base = self.baseline_median
        if base is None:
            return None
        return self.median / base if base else math.inf

    def target_text(self) -> str:
        """Both targets as one cell: the value target, then the minimum ratio to the baseline."""
        parts = [self.target.describe()] if self.target is not None else []
        if self.min_ratio is not None:
            parts.append(f"≥ {format_value(self.min_ratio)}×")
        if self.max_times_baseline is not None:
            parts.append(f"≤ {format_value(self.max_times_baseline)}× baseline")
        return ", ".join(parts) or "-"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (infinite ratios become null: JSON has no infinity)."""
        ratio = self.ratio
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.runs),
            "max": max(self.runs),
            "runs": list(self.runs),
            "baseline": None if not self.baseline else {
                "name": self.baseline_name,
                "median": self.baseline_median,
                "min": min(self.baseline),
                "max": max(self.baseline),
                "runs": list(self.baseline),
            },
            "ratio": _finite(ratio),
            "lower_is_better": self.lower_is_better,
            "times_baseline": _finite(self.times_baseline),
            "target": None if self.target_text() == "-" else self.target_text(),
            "target_met": self.met,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def format_value(value: float) -> str:
    """About three significant digits, never in exponent form, no trailing zeros (0.25, 0.0241, 48.2, 30591)."""
    if math.isinf(value):
        return "∞"
    if value == int(value) and abs(value) >= 1:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(magnitude)))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{format_value(ratio if ratio < 10 or math.isinf(ratio) else round(ratio))}×"


_COLUMNS = ("Figure", "Median", "Spread (min–max)", "Unit", "Baseline", "vs baseline", "Target", "Met")
_RIGHT_ALIGNED = {1, 2, 4, 5}


def _row(figure: Figure) -> tuple[str, ...]:
    spread = f"{format_value(min(figure.runs))}–{format_value(max(figure.runs))}"
    base = figure.baseline_median
    met = {True: "✓", False: "✗", None: ""}[figure.met]
    return (figure.name, format_value(figure.median), spread, figure.unit,
            "-" if base is None else format_value(base), _ratio_text(figure.ratio), figure.target_text(), met)


def render_table(figures: Sequence[Figure], *, header: Sequence[str] = ()) -> str:
    """The plain-text table: ``header`` lines, the column titles, one row per figure, then a legend."""
    rows = [_COLUMNS, *(_row(f) for f in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = (cell.rjust(w) if i in _RIGHT_ALIGNED else cell.ljust(w) for i, (cell, w) in pairs)
        return "  ".join(padded).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    out = [*header, rule, line(_COLUMNS), rule, *(line(r) for r in rows[1:]), rule]
    baselines = sorted({(f.baseline_name or "") for f in figures if f.baseline})
    out += [f"Baseline: {name}" for name in baselines if name]
    return "\n".join(out)


def render_notes(notes: Mapping[str, Sequence[str]]) -> str:
    """What suites noted beside their figures (module lists, skipped figures), one indented block each."""
    blocks = [f"{title}:\n" + "\n".join(f"  {line}" for line in lines) for title, lines in notes.items()]
    return "\n\n".join(blocks)


def report_json(figures: Sequence[Figure], *, machine: Machine, mode: str, duration_seconds: float,
                settings: dict[str, Any], notes: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The document ``--json`` writes."""
    return {
        "machine": machine.as_dict(),
        "mode": mode,
        "duration_seconds": duration_seconds,
        "settings": settings,
        "figures": [f.as_dict() for f in figures],
        "notes": {title: list(lines) for title, lines in (notes or {}).items()},
    }
