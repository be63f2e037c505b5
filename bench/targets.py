"""Issue 6's targets: defined for 1 job of 256 MiB on a 2-core machine (encryption on,
the manager's chunks, the browser's chunks in flight), shown for every row."""

from __future__ import annotations

from dataclasses import dataclass

from measure import MIB
from plan import Mode

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE

MIN_THROUGHPUT_RATIO = 0.8
RSS_BASE = 60 * MIB
RSS_PER_CHUNK_IN_FLIGHT = 2.5
MAX_CPU_VS_FLOOR = 2.0
MAX_LOOP_LAG_MS = 100.0


def rss_limit(jobs: int, mode: Mode) -> float:
    """Issue 6's peak-RSS bound in MiB for `jobs` jobs: 60 MiB per interpreter (one per job
    with processes, one in all with slots) plus 2.5 x chunk size x 5 per job."""
    interpreters = jobs if mode == "processes" else 1
    buffers = jobs * RSS_PER_CHUNK_IN_FLIGHT * MANAGER_CHUNK_SIZE * BROWSER_CHUNKS_IN_FLIGHT
    return (interpreters * RSS_BASE + buffers) / MIB


def rss_limit_formula(mode: Mode) -> str:
    """`rss_limit` in words, for the report."""
    per_job = f"{RSS_PER_CHUNK_IN_FLIGHT} x chunk size x {BROWSER_CHUNKS_IN_FLIGHT}"
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
