"""Figures from raw runs, their medians, issue 6's targets, and the markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from measure import GIB, percentile

MIB = 1024**2
CHUNK_SIZE = 10 * MIB - 1024  # the manager's chunk size
CONCURRENCY = 5  # chunks of one job in flight, as the browser sends them

# Issue 6's targets (2-core machine, encryption on, 10 MiB - 1 KiB chunks, 5 in flight).
MIN_THROUGHPUT_RATIO = 0.8
RSS_BASE = 60 * MIB
RSS_PER_CHUNK_IN_FLIGHT = 2.5
MAX_CPU_VS_FLOOR = 2.0
MAX_LOOP_LAG_MS = 100.0

# How N jobs are served: N service processes of one slot each, or one process of N slots.
Mode = Literal["processes", "slots"]
MODES: tuple[Mode, ...] = ("processes", "slots")


@dataclass
class RunResult:
    """One run at one number of jobs: the direct baseline, then the service."""

    jobs: int
    mode: Mode
    size_per_job: int
    service_seconds: float
    direct_seconds: float
    service_latencies: list[float]
    direct_latencies: list[float]
    service_cpu: float  # seconds, summed over the service processes
    service_system_cpu: float  # the part of service_cpu spent in the kernel
    service_minor_faults: int  # page faults (memory first touched), summed likewise
    service_peak_rss: int  # bytes, VmHWM summed over the service processes
    service_idle_rss: int  # bytes, VmRSS summed likewise, configured, before any chunk
    probe_seconds: list[float]  # /healthz response times, every service
    probe_failures: int
    floor_per_gib: float  # crypto floor, CPU seconds per GiB
    socket_floor_per_gib: float  # socket floor: loopback send + receive alone, per GiB
    relay_cpu: float  # transport floor: bench/relay.py's CPU seconds for the same chunks
    bench_cpu_service: float  # the benchmark process's own CPU seconds in each phase
    bench_cpu_direct: float
    bench_loop_lag: float  # the benchmark process's worst loop lag in the service phase
    pids: list[int] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.jobs * self.size_per_job

    @property
    def chunks(self) -> int:
        return self.jobs * -(-self.size_per_job // CHUNK_SIZE)


def figures(run: RunResult) -> dict[str, float]:
    """The reported figures of one run (times in ms, sizes in MiB, rates in MiB/s)."""
    mib = run.total_bytes / MIB
    gib = run.total_bytes / GIB
    cpu_per_gib = run.service_cpu / gib
    return {
        "service_mib_s": mib / run.service_seconds,
        "direct_mib_s": mib / run.direct_seconds,
        "throughput_ratio": run.direct_seconds / run.service_seconds,
        "chunk_p50_ms": percentile(run.service_latencies, 0.50) * 1000,
        "chunk_p99_ms": percentile(run.service_latencies, 0.99) * 1000,
        "direct_chunk_p50_ms": percentile(run.direct_latencies, 0.50) * 1000,
        "direct_chunk_p99_ms": percentile(run.direct_latencies, 0.99) * 1000,
        "peak_rss_mib": run.service_peak_rss / MIB,
        "idle_rss_mib": run.service_idle_rss / MIB,
        "rss_per_job_mib": (run.service_peak_rss - run.service_idle_rss) / run.jobs / MIB,
        "cpu_s": run.service_cpu,
        "cpu_s_per_gib": cpu_per_gib,
        "cpu_system_share": run.service_system_cpu / run.service_cpu if run.service_cpu else 0.0,
        "minor_faults_per_chunk": run.service_minor_faults / run.chunks,
        "floor_s_per_gib": run.floor_per_gib,
        "cpu_vs_floor": cpu_per_gib / run.floor_per_gib,
        "socket_floor_s_per_gib": run.socket_floor_per_gib,
        "relay_s_per_gib": (relay := run.relay_cpu / gib),
        "cpu_vs_both_floors": cpu_per_gib / (run.floor_per_gib + relay),
        "loop_lag_max_ms": max(run.probe_seconds, default=0.0) * 1000,
        "loop_lag_p99_ms": percentile(run.probe_seconds, 0.99) * 1000,
        "probe_samples": float(len(run.probe_seconds)),
        "probe_failures": float(run.probe_failures),
        "bench_cpu_s_service_phase": run.bench_cpu_service,
        "bench_cpu_s_direct_phase": run.bench_cpu_direct,
        "bench_loop_lag_max_ms": run.bench_loop_lag * 1000,
    }


def medians(runs: Sequence[RunResult]) -> dict[str, float]:
    """Each figure's median over the runs (each figure on its own)."""
    per_run = [figures(run) for run in runs]
    return {key: statistics.median(f[key] for f in per_run) for key in per_run[0]}


def rss_limit(jobs: int, mode: Mode) -> float:
    """Issue 6's peak-RSS bound in MiB for `jobs` jobs: 60 MiB per interpreter (one per job
    with processes, one in all with slots) plus 2.5 x chunk size x 5 per job."""
    interpreters = jobs if mode == "processes" else 1
    buffers = jobs * RSS_PER_CHUNK_IN_FLIGHT * CHUNK_SIZE * CONCURRENCY
    return (interpreters * RSS_BASE + buffers) / MIB


def rss_limit_formula(mode: Mode) -> str:
    """`rss_limit` in words, for the report."""
    per_job = f"{RSS_PER_CHUNK_IN_FLIGHT} x chunk size x {CONCURRENCY}"
    base = f"{RSS_BASE // MIB} MiB"
    if mode == "processes":
        return f"N x ({base} + {per_job}): N interpreters, each with one job's buffers"
    return f"{base} + N x {per_job}: one interpreter, N jobs' buffers"


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    limit: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL"


def targets(jobs: int, mode: Mode, f: dict[str, float]) -> list[Target]:
    rss = rss_limit(jobs, mode)
    return [
        Target(
            "throughput vs direct",
            f"{f['throughput_ratio']:.2f}",
            f">= {MIN_THROUGHPUT_RATIO}",
            f["throughput_ratio"] >= MIN_THROUGHPUT_RATIO,
        ),
        Target(
            "peak RSS (MiB)", f"{f['peak_rss_mib']:.0f}", f"<= {rss:.0f}", f["peak_rss_mib"] <= rss
        ),
        Target(
            "CPU per GiB vs crypto floor",
            f"{f['cpu_vs_floor']:.2f}",
            f"<= {MAX_CPU_VS_FLOOR}",
            f["cpu_vs_floor"] <= MAX_CPU_VS_FLOOR,
        ),
        Target(
            "loop lag, health probe max (ms)",
            f"{f['loop_lag_max_ms']:.0f}",
            f"< {MAX_LOOP_LAG_MS:.0f}",
            f["loop_lag_max_ms"] < MAX_LOOP_LAG_MS,
        ),
    ]


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(row) for row in rows)]


def results_table(summary: Sequence[tuple[int, int, dict[str, float]]]) -> list[str]:
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
    return _table(header, rows)


def targets_table(summary: Sequence[tuple[int, int, dict[str, float]]], mode: Mode) -> list[str]:
    header = ["jobs", "target", "measured", "limit", "verdict"]
    rows = [
        [jobs, t.name, t.value, t.limit, t.verdict]
        for jobs, _, f in summary
        for t in targets(jobs, mode, f)
    ]
    return _table(header, rows)
