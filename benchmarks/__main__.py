"""``python -m benchmarks [--quick] [--json PATH] [--only SUITE]``: run the suites, print one table.

A suite is a module with ``run(ctx: RunContext) -> list[Figure]``; add a figure by writing such a
module and listing it in :data:`SUITES`. Suites may also leave notes (``ctx.note``), printed after
the table. Timings are reported, never asserted: the exit status is 0 unless a run fails (or ``--fail-on-miss`` is given
and a target is missed), because CI machines differ too much for timing gates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from . import (
    cold_start,
    concurrency,
    embed_tokens,
    http_load,
    memory,
    multitenant,
    powerbi_proxy,
    shared_cache,
    stampede,
    token_endpoint,
)
from .machine import describe_machine
from .report import Figure, render_notes, render_table, report_json
from .stack import EMULATOR_LATENCY_SECONDS, FULL, QUICK, RunContext

#: Every suite, in the order it runs and appears in the table.
SUITES: dict[str, Callable[[RunContext], list[Figure]]] = {
    "token_endpoint": token_endpoint.run,
    "stampede": stampede.run,
    "cold_start": cold_start.run,
    "embed_tokens": embed_tokens.run,
    "powerbi_proxy": powerbi_proxy.run,
    "shared_cache": shared_cache.run,
    "concurrency": concurrency.run,
    "http_load": http_load.run,
    "memory": memory.run,
    "multitenant": multitenant.run,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI size: fewer iterations and smaller counts (about a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--only", action="append", choices=sorted(SUITES), metavar="SUITE",
                        help=f"run only this suite (repeatable): {', '.join(SUITES)}")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a figure misses its target")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _quiet_logging() -> None:
    # The broker warns at every start that CALLER_AUTH=anonymous; that is deliberate here, so only
    # errors (which would mean a broken run) reach stderr. Loggers keep their levels: the code under
    # test takes the same logging paths as in production.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    logging.getLogger().addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Run the selected suites and report; returns the exit status."""
    args = _parser().parse_args(argv)
    _quiet_logging()
    profile = QUICK if args.quick else FULL
    selected = [name for name in SUITES if not args.only or name in args.only]
    machine = describe_machine()
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    ctx = RunContext(profile, verbose=not args.quiet)
    figures: list[Figure] = []
    try:
        for name in selected:
            ctx.progress(f"suite {name} ({profile.name})")
            figures += SUITES[name](ctx)
    finally:
        ctx.close()
    duration = time.perf_counter() - started

    header = [
        f"Power BI token broker benchmarks: {profile.name} mode, {started_at:%Y-%m-%d %H:%M} UTC, "
        f"{duration:.1f} s",
        f"Machine: {machine.describe()}",
        f"Setup: client_credentials, CALLER_AUTH=anonymous unless a figure says otherwise; Entra ID and Power BI "
        f"emulators over HTTPS on loopback with {EMULATOR_LATENCY_SECONDS * 1000:.0f} ms latency per request "
        f"(memory: none); median and min–max over {profile.runs} runs per figure ({profile.cold_runs} cold "
        f"starts, {profile.embed_runs} embed runs, {profile.load_runs} wrk runs, one process per memory "
        f"configuration)",
    ]
    print(render_table(figures, header=header))
    if ctx.notes:
        print()
        print(render_notes(ctx.notes))
    if args.json is not None:
        settings = {**dataclasses.asdict(profile), "emulator_latency_seconds": EMULATOR_LATENCY_SECONDS,
                    "suites": selected, "started_at": started_at.isoformat()}
        document = report_json(figures, machine=machine, mode=profile.name, duration_seconds=duration,
                               settings=settings, notes=ctx.notes)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    missed = [f.name for f in figures if f.met is False]
    if missed:
        print(f"Targets missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed and args.fail_on_miss else 0


if __name__ == "__main__":
    raise SystemExit(main())
