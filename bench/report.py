"""The benchmark's report: the markdown tables on stdout, and the JSON of every figure."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from measure import MIB
from plan import Mode, Plan
from results import RunResult, figures, medians
from targets import rss_limit, rss_limit_formula, targets

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE

Summary = Sequence[tuple[int, int, dict[str, float]]]  # (jobs, bytes per job, median figures)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(cells) for cells in rows)]


def results_table(summary: Summary) -> list[str]:
    """One row per number of jobs: (jobs, bytes per job, median figures)."""
    header = [
        "jobs",
        "MiB/job",
        "service MiB/s",
        "direct MiB/s",
        "ratio",
        "chunk p50 ms",
        "chunk p99 ms",
        "direct p50/p99 ms",
        "peak RSS MiB",
        "RSS/job MiB",
        "RSS over idle / budget",
        "CPU s",
        "CPU s/GiB",
        "sys %",
        "faults/chunk",
        "floor s/GiB",
        "CPU/floor",
        "socket s/GiB",
        "relay s/GiB",
        "CPU/(floor+relay)",
        "lag max ms",
        "lag p99 ms",
    ]
    rows = [
        [
            jobs,
            f"{size / MIB:g}",
            f"{f['service_mib_s']:.0f}",
            f"{f['direct_mib_s']:.0f}",
            f"{f['throughput_ratio']:.2f}",
            f"{f['chunk_p50_ms']:.0f}",
            f"{f['chunk_p99_ms']:.0f}",
            f"{f['direct_chunk_p50_ms']:.0f}/{f['direct_chunk_p99_ms']:.0f}",
            f"{f['peak_rss_mib']:.0f}",
            f"{f['rss_per_job_mib']:.0f}",
            f"{f['rss_vs_budget']:.2f}",
            f"{f['cpu_s']:.2f}",
            f"{f['cpu_s_per_gib']:.2f}",
            f"{f['cpu_system_share'] * 100:.0f}",
            f"{f['minor_faults_per_chunk']:.0f}",
            f"{f['floor_s_per_gib']:.2f}",
            f"{f['cpu_vs_floor']:.2f}",
            f"{f['socket_floor_s_per_gib']:.2f}",
            f"{f['relay_s_per_gib']:.2f}",
            f"{f['cpu_vs_both_floors']:.2f}",
            f"{f['loop_lag_max_ms']:.0f}",
            f"{f['loop_lag_p99_ms']:.0f}",
        ]
        for jobs, size, f in summary
    ]
    return table(header, rows)


def targets_table(summary: Summary, mode: Mode) -> list[str]:
    header = ["jobs", "target", "measured", "limit", "verdict"]
    rows = [
        [jobs, t.name, t.value, t.limit, t.verdict]
        for jobs, _, f in summary
        for t in targets(jobs, mode, f)
    ]
    return table(header, rows)


MODE_SETUP: dict[Mode, str] = {
    "slots": "one service process with UPLOAD_SLOTS=N (N manager links, one job each, "
    "every job's chunks to its one port)",
    "processes": "N service processes of one slot each (one job each, each on its own port)",
}
MODE_SCOPE: dict[Mode, str] = {
    "slots": "are the one service process's",
    "processes": "are summed over the N service processes",
}


def header(plan: Plan, seconds: float) -> list[str]:
    sizes = ", ".join(
        f"{jobs} job(s): {plan.size_for(jobs) / MIB:g} MiB each" for jobs in plan.jobs
    )
    return [
        "## Upload service benchmark",
        "",
        f"Mode: {plan.mode}, {MODE_SETUP[plan.mode]}. "
        f"Medians of {plan.runs} run(s); encryption on; chunks of {MANAGER_CHUNK_SIZE} bytes; "
        f"{BROWSER_CHUNKS_IN_FLIGHT} chunks in flight per job; file size per job: {sizes}. "
        f"{os.cpu_count()} CPU(s); Python {sys.version.split()[0]}; took {seconds:.0f} s.",
    ]


def notes(mode: Mode) -> list[str]:
    return [
        "- throughput: bytes of all jobs / wall time from the first POST to the last finish "
        "packet (service) or the last 200 (direct: the same chunks straight to the Discord "
        "stand-in, same concurrency). ratio = service / direct.",
        "- chunk p50/p99: one chunk's POST sent to its 200 received, over all jobs' chunks.",
        f"- peak RSS (VmHWM) and CPU (utime+stime during the upload) {MODE_SCOPE[mode]}; "
        "CPU/floor compares CPU s/GiB with SHA-256 + AES-256-GCM over the same bytes in one "
        "thread. sys % is the kernel's share of that CPU; faults/chunk counts minor page "
        "faults (memory touched for the first time) per chunk.",
        "- RSS over idle / budget: (peak RSS - idle RSS) against the default CHUNK_MEMORY_MIB "
        "of N slots (5 chunk buffers each): what the chunks cost of what they may.",
        "- RSS/job: (peak RSS - idle RSS) / N, idle RSS being VmRSS once the N jobs are "
        "configured and started, before any chunk: the memory one more job costs.",
        "- lag: GET /healthz response time on each service port, probed every 20 ms from a "
        "separate process during the upload (an outside estimate of the event-loop lag).",
    ]


def targets_section(mode: Mode, summary: Summary) -> list[str]:
    return [
        "### Targets (issue 6)",
        "",
        "Defined for 1 job of 256 MiB on this 2-core machine; shown for every row. The RSS "
        f"limit for N jobs is {rss_limit_formula(mode)}.",
        "",
        *targets_table(summary, mode),
    ]


def markdown(plan: Plan, results: dict[int, list[RunResult]], seconds: float) -> str:
    summary = [(jobs, plan.size_for(jobs), medians(results[jobs])) for jobs in plan.jobs]
    lines = [
        *header(plan, seconds),
        "",
        *results_table(summary),
        "",
        *notes(plan.mode),
        "",
        *targets_section(plan.mode, summary),
    ]
    return "\n".join(lines)


def json_report(plan: Plan, results: dict[int, list[RunResult]], seconds: float) -> dict[str, Any]:
    return {
        "mode": plan.mode,
        "plan": {
            **asdict(plan),
            "chunk_size": MANAGER_CHUNK_SIZE,
            "concurrency": BROWSER_CHUNKS_IN_FLIGHT,
        },
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "results": [
            {
                "jobs": jobs,
                "size_per_job": plan.size_for(jobs),
                "median": (summary := medians(results[jobs])),
                "targets": [
                    {**asdict(target), "verdict": target.verdict}
                    for target in targets(jobs, plan.mode, summary)
                ],
                "rss_limit_mib": rss_limit(jobs, plan.mode),
                "runs": [figures(run) | {"pids": run.pids} for run in results[jobs]],
            }
            for jobs in plan.jobs
        ],
    }
