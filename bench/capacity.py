"""The capacity scenario: N jobs' chunks straight to Discord, then through the service
(bench/README.md, "Capacity")."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from clients import health_probed
from measure import GIB, MIB, ProcessTimes, Source, floors, loop_lag, own_cpu, percentile, rss
from report import BenchFailure, Column, Report, Target, figures_table, log, target, targets_table
from scenario import Scenario, counts, measured, option
from services import Service, Slot, fresh_channels, stage

from service.chunks.memory_file import MemoryReader
from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from service.local.browser import chunk_form
from service.uploads.memory import default_budget

RUN_TIMEOUT_BASE = 60.0  # seconds one run may take, plus its bytes at SLOWEST_MIB_S, twice
SLOWEST_MIB_S = 10.0
RSS_BASE_MIB = 60  # the peak RSS target: the interpreter, and each job's buffers, 2.5 x
RSS_PER_CHUNK_IN_FLIGHT = 2.5  # its browser's chunks in flight


@dataclass(frozen=True)
class CapacityPlan:
    size: float = option(256, float, "MiB for 1 job")
    multi_size: float | None = option(None, float, "MiB per job, 2+ jobs (default: --size, <= 64)")
    runs: int = 3
    jobs: tuple[int, ...] = option((1, 2, 4, 8), counts, "numbers of jobs")

    def size_for(self, jobs: int) -> int:
        mib = self.size if jobs == 1 else (self.multi_size or min(self.size, 64))
        return max(int(mib * MIB), 1)


@dataclass
class Phase:
    """All jobs' chunks sent at once, straight to Discord (direct) or to the service."""

    seconds: float
    latencies: list[float]  # each chunk's POST sent to its 200
    bench_cpu: float  # this process's CPU seconds meanwhile (the clients, the stand-in)


COLUMNS: list[Column] = [
    ("jobs", "jobs", "g"),
    ("MiB/job", "mib_per_job", "g"),
    ("service MiB/s", "service_mib_s", ".0f"),
    ("direct MiB/s", "direct_mib_s", ".0f"),
    ("ratio", "throughput_ratio", ".2f"),
    ("one-loop bound", "throughput_bound", ".2f"),
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
    """The targets, set for 1 job of 256 MiB on a 2-core machine, shown for every row."""
    buffers = RSS_PER_CHUNK_IN_FLIGHT * MANAGER_CHUNK_SIZE * BROWSER_CHUNKS_IN_FLIGHT / MIB
    rss_limit = RSS_BASE_MIB + jobs * buffers
    return [
        target("throughput vs direct", f["throughput_ratio"], ".2f", ">=", 0.8),
        target("peak RSS (MiB)", f["peak_rss_mib"], ".0f", "<=", rss_limit, ".0f"),
        target("CPU per GiB vs crypto floor", f["cpu_vs_floor"], ".2f", "<=", 2.0),
        target("loop lag, health probe max (ms)", f["loop_lag_max_ms"], ".0f", "<", 100, ".0f"),
    ]


async def send_all(
    session: aiohttp.ClientSession,
    url: str,
    chunks: Sequence[memoryview],
    form: Callable[[int, memoryview], aiohttp.FormData],
) -> list[float]:
    """POST each chunk to `url` as `form(index, chunk)`, 5 at once; each one's seconds, POST
    sent to 200."""
    gate = asyncio.Semaphore(BROWSER_CHUNKS_IN_FLIGHT)

    async def send(index: int) -> float:
        async with gate:
            started = time.perf_counter()
            async with session.post(url, data=form(index, chunks[index])) as response:
                body = await response.read()
            if response.status != 200:
                text = body[:300].decode("utf-8", "replace")
                raise BenchFailure(f"POST {url}: HTTP {response.status}: {text}")
            return time.perf_counter() - started

    return await asyncio.gather(*map(send, range(len(chunks))))


async def timed(jobs: Sequence[Awaitable[list[float]]]) -> Phase:
    """The jobs at once, each giving its chunks' latencies."""
    cpu, started = own_cpu(), time.perf_counter()
    done = await asyncio.gather(*jobs)
    seconds, cpu = time.perf_counter() - started, own_cpu() - cpu
    return Phase(seconds, [latency for latencies in done for latency in latencies], cpu)


def message_form(index: int, chunk: memoryview) -> aiohttp.FormData:
    """A Discord message carrying one chunk, as discord.py posts it."""
    message = {"content": str(index), "attachments": [{"id": 0, "filename": str(index)}]}
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps(message), content_type="application/json")
    attachment = MemoryReader(chunk)  # sent in slices, as the service sends its posts
    form.add_field(
        "files[0]", attachment, filename=str(index), content_type="application/octet-stream"
    )
    return form


async def run_direct(on: Service, jobs: int, source: Source) -> Phase:
    """Every job's chunks straight to the Discord stand-in, each job in a channel of its own."""
    channels = fresh_channels(jobs)
    urls = [f"{on.discord.base_url}/channels/{channel}/messages" for channel in channels]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {on.token}"}) as session:
        phase = await timed([send_all(session, url, source.chunks, message_form) for url in urls])
    for channel in channels:  # kept, they would make the service phase's stand-in use fresh
        on.discord.forget(channel)  # memory, which costs this process
    return phase


async def run_service(
    on: Service, upload_ids: list[str], source: Source
) -> tuple[Phase, list[dict[str, Any]]]:
    """Every job's chunks to the service at once, each job to its finish packet; the finish
    packets in the order of the slots."""
    finishes: dict[str, dict[str, Any]] = {}

    async def job(slot: Slot, upload_id: str) -> list[float]:
        form = functools.partial(chunk_form, upload_id)
        latencies = await send_all(on.session, slot.address, source.chunks, form)
        finishes[slot.channel] = await slot.connection.next_finish()
        return latencies

    phase = await timed([job(*pair) for pair in zip(on.slots, upload_ids, strict=True)])
    return phase, [finishes[slot.channel] for slot in on.slots]


async def run_once(jobs: int, source: Source) -> dict[str, float]:
    crypto_floor, socket_floor = floors(source.chunks)
    async with stage(fresh_channels(jobs)) as on:
        upload_ids = [await on.start_job(slot, source) for slot in on.slots]
        idle = rss(on.pid)
        log(f"  pid {on.pid}, {jobs} job(s) started, idle RSS {idle / MIB:.1f} MiB")
        direct = await run_direct(on, jobs, source)
        before = ProcessTimes.of(on.pid)
        async with health_probed(on.settings.port) as probes, loop_lag() as bench_lag:
            service, finishes = await run_service(on, upload_ids, source)
        spent, peak = ProcessTimes.of(on.pid) - before, rss(on.pid, "VmHWM")
        ends = {0, len(source.chunks) - 1}  # decrypting every chunk would double the wait
        pairs = zip(on.slots, finishes, strict=True)
        on.check([on.problems(slot, end, source, compared=ends) for slot, end in pairs], "job")
    total, cpu, probed = jobs * source.size, spent.cpu, probes.seconds
    cpu_per_gib = cpu / (total / GIB)
    return {
        "jobs": jobs,
        "mib_per_job": source.size / MIB,
        "service_mib_s": total / MIB / service.seconds,
        "direct_mib_s": total / MIB / direct.seconds,
        "throughput_ratio": direct.seconds / service.seconds,
        # the most the ratio can be while the service's one event loop needs `cpu` seconds
        "throughput_bound": direct.seconds / cpu if cpu else math.nan,
        "chunk_p50_ms": percentile(service.latencies, 50) * 1000,
        "chunk_p99_ms": percentile(service.latencies, 99) * 1000,
        "direct_chunk_p50_ms": percentile(direct.latencies, 50) * 1000,
        "direct_chunk_p99_ms": percentile(direct.latencies, 99) * 1000,
        "peak_rss_mib": peak / MIB,
        "idle_rss_mib": idle / MIB,
        "rss_per_job_mib": (peak - idle) / jobs / MIB,
        # against each slot's default CHUNK_MEMORY_MIB (no cgroup limit in the benchmark)
        "rss_vs_budget": (peak - idle) / (jobs * default_budget(slots=1, limit=None)),
        "cpu_s": cpu,
        "cpu_s_per_gib": cpu_per_gib,
        "cpu_system_pct": 100 * spent.system / cpu if cpu else 0.0,
        "minor_faults_per_chunk": spent.minor_faults / (jobs * len(source.chunks)),
        "floor_s_per_gib": crypto_floor,
        "cpu_vs_floor": cpu_per_gib / crypto_floor,
        "socket_floor_s_per_gib": socket_floor,
        "loop_lag_max_ms": max(probed, default=math.nan) * 1000,
        "loop_lag_p99_ms": percentile(probed, 99) * 1000,
        "probe_samples": float(len(probed)),
        "probe_failures": float(probes.failures),
        "bench_cpu_s_service_phase": service.bench_cpu,
        "bench_cpu_s_direct_phase": direct.bench_cpu,
        "bench_loop_lag_max_ms": max(bench_lag, default=0.0) * 1000,
    }


async def run(plan: CapacityPlan) -> Report:
    sources = {size: Source.random(size) for size in {plan.size_for(jobs) for jobs in plan.jobs}}
    figures: dict[str, dict[str, Any]] = {}
    for jobs in plan.jobs:
        source = sources[plan.size_for(jobs)]
        limit = RUN_TIMEOUT_BASE + 2 * jobs * source.size / MIB / SLOWEST_MIB_S
        once = functools.partial(run_once, jobs, source)
        runs = await measured(f"capacity, jobs={jobs}", plan.runs, limit, once, COLUMNS)
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        figures[str(jobs)] = {"median": median, "targets": targets(jobs, median), "runs": runs}
    lines = [
        *figures_table(COLUMNS, [found["median"] for found in figures.values()]),
        "",
        f"Targets (for 1 job of 256 MiB; the RSS limit is {RSS_BASE_MIB} MiB + N x "
        f"{RSS_PER_CHUNK_IN_FLIGHT} x chunk size x {BROWSER_CHUNKS_IN_FLIGHT}):",
        "",
        *targets_table("jobs", [(jobs, found["targets"]) for jobs, found in figures.items()]),
    ]
    about = (
        f"One service process of N slots (UPLOAD_SLOTS=N), one job each, encryption on; "
        f"chunks of {MANAGER_CHUNK_SIZE} bytes, {BROWSER_CHUNKS_IN_FLIGHT} in flight per job; "
        f"medians of {plan.runs} run(s);"
    )
    return Report("Capacity", about, lines, figures)


SCENARIO = Scenario(
    "capacity",
    "throughput, latency, memory and CPU against Discord directly",
    run,
    CapacityPlan(),
    CapacityPlan(size=12, runs=1, jobs=(1, 2)),
)
