"""Issue 6's benchmark: the upload service's throughput, latency and cost against the network.

    python bench/run.py [--mode slots|processes] [--size MiB] [--multi-size MiB] [--runs N]
                        [--jobs 1,2,4,8] [--json out.json] [--smoke]
    python bench/run.py --pacing [--smoke] ...   (the rate-limit benchmark: bench/pacing.py)
    python bench/run.py --memory [--smoke] ...   (the chunk memory budget: bench/memory.py)

Each run, for each number of jobs N, in this process: a Discord stand-in and a manager
stand-in, and the upload service (`python -m service run`, so its RSS and CPU are its own):
with --mode slots (the default) one process with UPLOAD_SLOTS=N, which opens N manager links
on one HTTP port; with --mode processes N processes of one slot each. Either way the manager
sees N services, each configured with encryption on and its own channel, and given one job.
Then:

1. direct baseline: every job's chunks POSTed straight to the Discord stand-in's messages
   route, 5 at once per job, all jobs at once;
2. transport floor: the same chunks POSTed, the same way, to bench/relay.py, which receives,
   parses and re-sends them to the Discord stand-in with no crypto (its CPU per GiB);
3. service: the same chunks POSTed to the services as the browser does (5 at once per job,
   all jobs at once), each job timed from its first POST to its finish packet, which is
   checked against hashlib over the source (and the stored attachments' sizes, and the first
   and last chunk decrypted);
4. crypto floor: SHA-256 plus AES-256-GCM over the same bytes in one thread;
5. socket floor: the same bytes sent and received once over loopback TCP with blocking
   calls in two threads (the kernel's cost of moving them, no HTTP).

While the services work, a separate prober process (bench/probe.py) times `GET /healthz`
on each service port every 20 ms: the service's loop lag as seen from outside. Service CPU
is utime + stime from /proc/<pid>/stat over the upload; peak RSS is VmHWM from
/proc/<pid>/status, idle RSS its VmRSS once the jobs are started, before any chunk.

Reports medians of the runs as markdown on stdout (progress goes to stderr) and, with
--json, every run's figures. Exits 1 if any upload failed or did not verify; missing a
target is reported, not an error: this is a benchmark, not a test.

The parts: runs.py (one run, the plan's runs), phases.py (direct, relay, service),
services.py and children.py (the child processes), helpers.py with probe.py and relay.py
(the prober and the relay), sending.py (the browser's POSTs), measure.py, results.py,
targets.py and report.py (figures, targets, the report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import aiohttp
import memory
import pacing
from console import BenchFailure, log
from measure import MIB
from plan import MODES, Mode, Plan, parse_counts
from report import json_report, markdown
from results import RunResult
from runs import run_plan

DEFAULT_MODE: Mode = "slots"
DEFAULT_SIZE_MIB = 256
DEFAULT_MULTI_SIZE_MIB = 64
SMOKE_SIZE_MIB = 12
SMOKE_JOBS = (1, 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help="N jobs in one service process of N slots, or in N processes "
        f"(default {DEFAULT_MODE})",
    )
    parser.add_argument("--size", type=float, help=f"MiB for 1 job (default {DEFAULT_SIZE_MIB})")
    parser.add_argument(
        "--multi-size",
        type=float,
        help=f"MiB per job with 2+ jobs (default: --size, at most {DEFAULT_MULTI_SIZE_MIB})",
    )
    parser.add_argument("--runs", type=int, help="runs per number of jobs (default 3)")
    parser.add_argument("--jobs", type=parse_counts, help="numbers of jobs (default 1,2,4,8)")
    parser.add_argument("--json", type=Path, help="write every figure as JSON to this file")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny run for CI: {SMOKE_SIZE_MIB} MiB, 1 run, jobs {SMOKE_JOBS} (flags still win)",
    )
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the flags ask for; --multi-size defaults to the smaller of --size and 64."""
    size_mib = args.size or (SMOKE_SIZE_MIB if args.smoke else DEFAULT_SIZE_MIB)
    multi_mib = args.multi_size or min(size_mib, DEFAULT_MULTI_SIZE_MIB)
    return Plan(
        mode=args.mode,
        size=max(int(size_mib * MIB), 1),
        multi_size=max(int(multi_mib * MIB), 1),
        runs=args.runs or (1 if args.smoke else 3),
        jobs=args.jobs or (SMOKE_JOBS if args.smoke else (1, 2, 4, 8)),
    )


async def measure_all(plan: Plan) -> dict[int, list[RunResult]] | None:
    """Every run's results; None (the failures logged) if an upload failed or did not verify."""
    try:
        return await run_plan(plan)
    except* (BenchFailure, aiohttp.ClientError, TimeoutError) as failures:
        for failure in failures.exceptions:
            log(f"benchmark failed: {type(failure).__name__}: {failure}")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--pacing" in argv:  # the rate-limit benchmark, with its own flags
        return pacing.main([arg for arg in argv if arg != "--pacing"])
    if "--memory" in argv:  # the chunk memory benchmark, with its own flags
        return memory.main([arg for arg in argv if arg != "--memory"])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    plan = plan_from(args)
    started = time.perf_counter()
    results = asyncio.run(measure_all(plan))
    if results is None:
        return 1
    seconds = time.perf_counter() - started
    print(markdown(plan, results, seconds))
    if args.json is not None:
        args.json.write_text(json.dumps(json_report(plan, results, seconds), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
