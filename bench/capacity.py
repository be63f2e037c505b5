"""The capacity scenario: for N jobs in one service process of N slots, the same chunks sent
straight to the Discord stand-in (direct), then to the service as the browser does, with the
crypto and socket floors; every figure and target: bench/README.md, "Capacity"."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from capacity_report import RunResult, capacity_report
from measure import (
    LoopLag,
    Probes,
    Source,
    crypto_floor,
    current_rss,
    health_probed,
    peak_rss,
    process_times,
    socket_floor,
)
from report import MIB, BenchFailure, Report, log
from scenario import Scenario, counts
from services import Slot, Stage, stage

from service.chunks.memory_file import MemoryReader
from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import chunk_form

SERVICE_CHANNEL_BASE = 1100000000000000000
DIRECT_CHANNEL_BASE = 1200000000000000000
RUN_TIMEOUT_BASE = 60.0  # seconds one run may take, plus its bytes at SLOWEST_MIB_S, twice
SLOWEST_MIB_S = 10.0


@dataclass(frozen=True)
class CapacityPlan:
    size: int  # bytes per job with 1 job
    multi_size: int  # bytes per job with several jobs
    runs: int
    jobs: tuple[int, ...]

    def size_for(self, jobs: int) -> int:
        return self.size if jobs == 1 else self.multi_size


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--size", type=float, help="MiB for 1 job (default 256; smoke 12)")
    group.add_argument(
        "--multi-size", type=float, help="MiB per job with 2+ jobs (default: --size, at most 64)"
    )
    group.add_argument("--jobs", type=counts, help="numbers of jobs (default 1,2,4,8; smoke 1,2)")


def plan_from(args: argparse.Namespace) -> CapacityPlan:
    size_mib = args.size or (12 if args.smoke else 256)
    return CapacityPlan(
        size=max(int(size_mib * MIB), 1),
        multi_size=max(int((args.multi_size or min(size_mib, 64)) * MIB), 1),
        runs=args.runs or (1 if args.smoke else 3),
        jobs=args.jobs or ((1, 2) if args.smoke else (1, 2, 4, 8)),
    )


def bench_cpu() -> float:
    """This process's CPU seconds so far (the browser and the Discord stand-in)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send_all(count: int, post: Callable[[int], Awaitable[None]]) -> list[float]:
    """`post` chunks 0..count-1, 5 at once; each one's seconds, POST sent to 200."""
    pending = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for index in pending:
            started = time.perf_counter()
            await post(index)
            latencies.append(time.perf_counter() - started)

    async with asyncio.TaskGroup() as group:
        for _ in range(BROWSER_CHUNKS_IN_FLIGHT):
            group.create_task(worker())
    return latencies


async def post_form(
    session: aiohttp.ClientSession, url: str, form: aiohttp.FormData, **headers: str
) -> None:
    async with session.post(url, data=form, headers=headers) as response:
        body = await response.read()
        if response.status != 200:
            text = body[:300].decode("utf-8", "replace")
            raise BenchFailure(f"POST {url}: HTTP {response.status}: {text}")


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


async def run_direct(on: Stage, jobs: int, source: Source) -> tuple[float, list[float], float]:
    """Wall seconds, chunk latencies and this process's CPU seconds for the direct baseline."""
    auth = f"Bot {on.credentials.token}"
    channels = [str(DIRECT_CHANNEL_BASE + job) for job in range(jobs)]
    cpu, started = bench_cpu(), time.perf_counter()
    async with aiohttp.ClientSession() as session:

        def poster(channel: str) -> Callable[[int], Awaitable[None]]:
            url = f"{on.discord.base_url}/channels/{channel}/messages"
            return lambda i: post_form(
                session, url, message_form(i, source.chunks[i]), Authorization=auth
            )

        results = await asyncio.gather(
            *(send_all(len(source.chunks), poster(channel)) for channel in channels)
        )
    seconds, cpu = time.perf_counter() - started, bench_cpu() - cpu
    for channel in channels:  # kept, they would make the service phase's stand-in use fresh
        on.discord.forget(channel)  # memory, which costs this process (bench/README.md)
    return seconds, [latency for result in results for latency in result], cpu


@dataclass
class ServicePhase:
    seconds: float
    latencies: list[float]
    finishes: list[dict[str, Any]]  # each job's finish packet, in the order of the slots
    probes: Probes
    bench_cpu: float
    bench_lag: float


async def run_service_phase(on: Stage, upload_ids: list[str], source: Source) -> ServicePhase:
    """Every job's chunks to the service at once, each job to its finish packet."""

    async def upload(session: aiohttp.ClientSession, slot: Slot, upload_id: str) -> list[float]:
        async def post(i: int) -> None:
            await post_form(session, slot.address, chunk_form(upload_id, i, source.chunks[i]))

        latencies = await send_all(len(source.chunks), post)
        finishes[slot.channel] = await slot.connection.next_finish()
        return latencies

    finishes: dict[str, dict[str, Any]] = {}
    async with health_probed(on.service.port) as probes, LoopLag() as lag:
        cpu, started = bench_cpu(), time.perf_counter()
        async with aiohttp.ClientSession() as session:
            jobs = [
                upload(session, slot, upload_id)
                for slot, upload_id in zip(on.slots, upload_ids, strict=True)
            ]
            results = await asyncio.gather(*jobs)
        seconds, cpu = time.perf_counter() - started, bench_cpu() - cpu
    latencies = [latency for result in results for latency in result]
    in_order = [finishes[slot.channel] for slot in on.slots]
    return ServicePhase(seconds, latencies, in_order, probes, cpu, lag.worst)


async def run_once(jobs: int, source: Source) -> RunResult:
    floors = crypto_floor(source.chunks, os.urandom(32)), socket_floor(source.chunks)
    channels = [str(SERVICE_CHANNEL_BASE + job) for job in range(jobs)]
    async with stage(channels) as on:
        upload_ids = [await on.start_job(slot, source) for slot in on.slots]
        pid = on.service.pid
        idle_rss = current_rss(pid)
        log(f"  pid {pid}, {jobs} job(s) started, idle RSS {idle_rss / MIB:.1f} MiB")
        direct_seconds, direct_latencies, direct_cpu = await run_direct(on, jobs, source)
        before = process_times(pid)
        phase = await run_service_phase(on, upload_ids, source)
        spent, peak = process_times(pid) - before, peak_rss(pid)
        ends = {0, len(source.chunks) - 1}  # decrypting every chunk would double the wait
        problems = [
            f"job {job}: {problem}"
            for job, (slot, finish) in enumerate(zip(on.slots, phase.finishes, strict=True))
            for problem in on.problems(slot, finish, source, ends)
        ]
        problems += on.dropped()
    if problems:
        raise BenchFailure("\n".join(problems))
    return RunResult(
        jobs=jobs,
        size_per_job=source.size,
        service_seconds=phase.seconds,
        direct_seconds=direct_seconds,
        service_latencies=phase.latencies,
        direct_latencies=direct_latencies,
        service_times=spent,
        service_peak_rss=peak,
        service_idle_rss=idle_rss,
        probe_seconds=phase.probes.seconds,
        probe_failures=phase.probes.failures,
        floor_per_gib=floors[0],
        socket_floor_per_gib=floors[1],
        bench_cpu_service=phase.bench_cpu,
        bench_cpu_direct=direct_cpu,
        bench_loop_lag=phase.bench_lag,
    )


async def run(plan: CapacityPlan) -> Report:
    started = time.perf_counter()
    results: dict[int, list[RunResult]] = {jobs: [] for jobs in plan.jobs}
    sources: dict[int, Source] = {}
    for jobs in plan.jobs:
        size = plan.size_for(jobs)
        if size not in sources:
            sources[size] = Source.random(size)
        source = sources[size]
        for run_index in range(plan.runs):
            async with asyncio.timeout(RUN_TIMEOUT_BASE + 2 * jobs * size / MIB / SLOWEST_MIB_S):
                result = await run_once(jobs, source)
            results[jobs].append(result)
            log(f"capacity, jobs={jobs} run {run_index + 1}/{plan.runs}: {result.summary()}")
    return capacity_report(plan.runs, results, time.perf_counter() - started)


SCENARIO = Scenario(
    name="capacity",
    summary="throughput, latency, memory and CPU against Discord directly",
    add_arguments=add_arguments,
    plan=plan_from,
    run=run,
)
