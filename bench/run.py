"""The upload service's benchmark: named scenarios of one plan, one report.

    python bench/run.py [--scenario capacity|pacing|memory|fleet|all] [--smoke] [--json FILE] ...

Markdown on stdout, progress on stderr; exit status 1 when an upload failed or did not
verify, or the benchmark broke down. Every scenario, flag and figure: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

import aiohttp
import capacity
import fleet
import memory
import pacing
from report import BenchFailure, Report, log, write
from scenario import POSITIVE_INT, Scenario

from service.local.browser import UploadFailed

# The named scenarios, in the order `all` runs them: a new one is a module with a SCENARIO.
SCENARIOS = {
    s.name: s for s in (capacity.SCENARIO, pacing.SCENARIO, memory.SCENARIO, fleet.SCENARIO)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "all"],
        default="capacity",
        help="which scenario to run (default capacity): "
        + "; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS.values()),
    )
    parser.add_argument("--smoke", action="store_true", help="seconds per scenario, for CI")
    parser.add_argument("--runs", type=POSITIVE_INT, help="runs of each measurement (README)")
    parser.add_argument("--json", type=Path, help="write every figure as JSON to this file")
    for scenario in SCENARIOS.values():
        scenario.add_arguments(parser)
    return parser


async def measure(scenario: Scenario, plan: object) -> Report:
    """The scenario's report; a failed one (the failures logged) if the benchmark broke down."""
    started = time.perf_counter()
    try:
        report = await scenario.run(plan)
    except* (BenchFailure, UploadFailed, aiohttp.ClientError, TimeoutError) as failures:
        for failure in failures.exceptions:
            log(f"{scenario.name} failed: {type(failure).__name__}: {failure}")
        report = Report(scenario.name, "The benchmark broke down: see stderr.", failed=True)
    report.took = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
    plans = [(scenario, scenario.plan(args)) for scenario in chosen]  # every flag checked first
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    reports = {scenario.name: asyncio.run(measure(scenario, plan)) for scenario, plan in plans}
    write(reports, args.json)
    return 1 if any(report.failed for report in reports.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
