"""One run's raw measurements, the figures reported from them, and their medians."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from measure import GIB, MIB, percentile
from plan import Mode

from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.uploads.memory import default_budget


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
        return self.jobs * -(-self.size_per_job // MANAGER_CHUNK_SIZE)


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
        # each slot's share of the default CHUNK_MEMORY_MIB (no cgroup limit in the benchmark)
        "rss_vs_budget": (run.service_peak_rss - run.service_idle_rss)
        / (run.jobs * default_budget(slots=1, limit=None)),
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
