"""The capacity scenario's figures, targets and report (every figure: bench/README.md)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from clients import Probes
from measure import ProcessTimes, percentile
from report import (
    GIB,
    MIB,
    TARGET_HEADER,
    Column,
    Report,
    Target,
    figures_table,
    machine,
    table,
    target,
)

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from service.uploads.memory import default_budget

# The targets, defined for 1 job of 256 MiB on a 2-core machine, shown for every row.
MIN_THROUGHPUT_RATIO = 0.8
RSS_BASE_MIB = 60  # the interpreter; each job adds 2.5 x chunk size x 5 (its buffers)
RSS_PER_CHUNK_IN_FLIGHT = 2.5
MAX_CPU_VS_FLOOR = 2.0
MAX_LAG_MS = 100.0


@dataclass
class Phase:
    """All jobs' chunks sent at once, straight to Discord (direct) or to the service."""

    seconds: float
    latencies: list[float]  # each chunk's POST sent to its 200
    bench_cpu: float  # this process's CPU seconds meanwhile (the clients, the stand-in)


@dataclass
class Run:
    """One run at one number of jobs: the direct baseline, then the service."""

    jobs: int
    size_per_job: int
    direct: Phase
    service: Phase
    times: ProcessTimes  # the service process's, during the service phase
    peak_rss: int  # bytes, VmHWM
    idle_rss: int  # bytes, VmRSS once configured and started, before any chunk
    floor_per_gib: float  # crypto floor, CPU seconds per GiB
    socket_floor_per_gib: float  # loopback send + receive alone, per GiB
    probes: Probes  # /healthz response times during the service phase
    bench_lag: list[float]  # this process's loop lag during the service phase

    def figures(self) -> dict[str, float]:
        """The reported figures (times in ms, sizes in MiB, rates in MiB/s)."""
        total, cpu = self.jobs * self.size_per_job, self.times.cpu
        growth = self.peak_rss - self.idle_rss
        probed = self.probes.seconds
        return {
            "jobs": self.jobs,
            "mib_per_job": self.size_per_job / MIB,
            "service_mib_s": total / MIB / self.service.seconds,
            "direct_mib_s": total / MIB / self.direct.seconds,
            "throughput_ratio": self.direct.seconds / self.service.seconds,
            "chunk_p50_ms": percentile(self.service.latencies, 0.50) * 1000,
            "chunk_p99_ms": percentile(self.service.latencies, 0.99) * 1000,
            "direct_chunk_p50_ms": percentile(self.direct.latencies, 0.50) * 1000,
            "direct_chunk_p99_ms": percentile(self.direct.latencies, 0.99) * 1000,
            "peak_rss_mib": self.peak_rss / MIB,
            "idle_rss_mib": self.idle_rss / MIB,
            "rss_per_job_mib": growth / self.jobs / MIB,
            # against each slot's default CHUNK_MEMORY_MIB (no cgroup limit in the benchmark)
            "rss_vs_budget": growth / (self.jobs * default_budget(slots=1, limit=None)),
            "cpu_s": cpu,
            "cpu_s_per_gib": cpu / (total / GIB),
            "cpu_system_pct": 100 * self.times.system / cpu if cpu else 0.0,
            "minor_faults_per_chunk": self.times.minor_faults
            / (self.jobs * -(-self.size_per_job // MANAGER_CHUNK_SIZE)),
            "floor_s_per_gib": self.floor_per_gib,
            "cpu_vs_floor": cpu / (total / GIB) / self.floor_per_gib,
            "socket_floor_s_per_gib": self.socket_floor_per_gib,
            "loop_lag_max_ms": max(probed, default=0.0) * 1000,
            "loop_lag_p99_ms": percentile(probed, 0.99) * 1000,
            "probe_samples": float(len(probed)),
            "probe_failures": float(self.probes.failures),
            "bench_cpu_s_service_phase": self.service.bench_cpu,
            "bench_cpu_s_direct_phase": self.direct.bench_cpu,
            "bench_loop_lag_max_ms": max(self.bench_lag, default=0.0) * 1000,
        }


COLUMNS: list[Column] = [
    ("jobs", "jobs", "g"),
    ("MiB/job", "mib_per_job", "g"),
    ("service MiB/s", "service_mib_s", ".0f"),
    ("direct MiB/s", "direct_mib_s", ".0f"),
    ("ratio", "throughput_ratio", ".2f"),
    ("chunk p50 ms", "chunk_p50_ms", ".0f"),
    ("chunk p99 ms", "chunk_p99_ms", ".0f"),
    ("direct p50/p99 ms", ("direct_chunk_p50_ms", "direct_chunk_p99_ms"), ".0f"),
    ("peak RSS MiB", "peak_rss_mib", ".0f"),
    ("RSS/job MiB", "rss_per_job_mib", ".0f"),
    ("RSS over idle / budget", "rss_vs_budget", ".2f"),
    ("CPU s", "cpu_s", ".2f"),
    ("CPU s/GiB", "cpu_s_per_gib", ".2f"),
    ("sys %", "cpu_system_pct", ".0f"),
    ("faults/chunk", "minor_faults_per_chunk", ".0f"),
    ("floor s/GiB", "floor_s_per_gib", ".2f"),
    ("CPU/floor", "cpu_vs_floor", ".2f"),
    ("socket s/GiB", "socket_floor_s_per_gib", ".2f"),
    ("lag max ms", "loop_lag_max_ms", ".0f"),
    ("lag p99 ms", "loop_lag_p99_ms", ".0f"),
]


def targets(jobs: int, f: dict[str, float]) -> list[Target]:
    # Peak RSS: the interpreter, and each job's browser's chunks in flight 2.5 times over.
    buffers = RSS_PER_CHUNK_IN_FLIGHT * MANAGER_CHUNK_SIZE * BROWSER_CHUNKS_IN_FLIGHT / MIB
    rss_limit = RSS_BASE_MIB + jobs * buffers
    return [
        target("throughput vs direct", f["throughput_ratio"], ".2f", ">=", MIN_THROUGHPUT_RATIO),
        target("peak RSS (MiB)", f["peak_rss_mib"], ".0f", "<=", rss_limit, ".0f"),
        target("CPU per GiB vs crypto floor", f["cpu_vs_floor"], ".2f", "<=", MAX_CPU_VS_FLOOR),
        target(
            "loop lag, health probe max (ms)", f["loop_lag_max_ms"], ".0f", "<", MAX_LAG_MS, ".0f"
        ),
    ]


def capacity_report(runs: int, results: dict[int, list[dict[str, float]]], took: float) -> Report:
    # Each figure's median over the runs, each figure on its own.
    median = {
        jobs: {key: statistics.median(run[key] for run in found) for key in found[0]}
        for jobs, found in results.items()
    }
    checks = [[jobs, *t.row()] for jobs, f in median.items() for t in targets(jobs, f)]
    lines = [
        f"One service process of N slots (UPLOAD_SLOTS=N), one job each, encryption on; "
        f"chunks of {MANAGER_CHUNK_SIZE} bytes, {BROWSER_CHUNKS_IN_FLIGHT} in flight per job; "
        f"medians of {runs} run(s); {machine()}; took {took:.0f} s. "
        "Every figure and target: bench/README.md.",
        "",
        *figures_table(COLUMNS, list(median.values())),
        "",
        f"Targets (for 1 job of 256 MiB; the RSS limit is {RSS_BASE_MIB} MiB + N x "
        f"{RSS_PER_CHUNK_IN_FLIGHT} x chunk size x {BROWSER_CHUNKS_IN_FLIGHT}):",
        "",
        *table(["jobs", *TARGET_HEADER], checks),
    ]
    figures = {
        str(jobs): {
            "median": median[jobs],
            "targets": [asdict(t) for t in targets(jobs, median[jobs])],
            "runs": results[jobs],
        }
        for jobs in results
    }
    return Report("Capacity", lines, figures)
