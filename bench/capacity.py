"""The capacity scenario: for N jobs in one service process of N slots, the same chunks sent
straight to the Discord stand-in (direct), then to the service as the browser does, with the
crypto and socket floors; every figure and target: bench/README.md, "Capacity"."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from capacity_report import COLUMNS, Phase, Run, capacity_report
from clients import health_probed
from measure import (
    Source,
    crypto_floor,
    current_rss,
    loop_lag,
    peak_rss,
    process_times,
    socket_floor,
)
from report import MIB, BenchFailure, Report, log
from scenario import Scenario, counts, measured
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
    size: float = 256  # MiB per job with 1 job
    multi_size: float | None = None  # MiB per job with several jobs; None: size, at most 64
    runs: int = 3
    jobs: tuple[int, ...] = (1, 2, 4, 8)

    def size_for(self, jobs: int) -> int:
        mib = self.size if jobs == 1 else (self.multi_size or min(self.size, 64))
        return max(int(mib * MIB), 1)


def bench_cpu() -> float:
    """This process's CPU seconds so far (the browser and the Discord stand-in)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send_all(
    session: aiohttp.ClientSession,
    url: str,
    chunks: Sequence[memoryview],
    form: Callable[[int, memoryview], aiohttp.FormData],
) -> list[float]:
    """POST each chunk to `url` as `form(index, chunk)`, 5 at once; each one's seconds, POST
    sent to 200."""
    pending = iter(range(len(chunks)))
    latencies: list[float] = []

    async def worker() -> None:
        for index in pending:
            started = time.perf_counter()
            async with session.post(url, data=form(index, chunks[index])) as response:
                body = await response.read()
            if response.status != 200:
                text = body[:300].decode("utf-8", "replace")
                raise BenchFailure(f"POST {url}: HTTP {response.status}: {text}")
            latencies.append(time.perf_counter() - started)

    async with asyncio.TaskGroup() as group:
        for _ in range(BROWSER_CHUNKS_IN_FLIGHT):
            group.create_task(worker())
    return latencies


async def timed(jobs: Sequence[Awaitable[list[float]]]) -> Phase:
    """The jobs at once, each giving its chunks' latencies."""
    cpu, started = bench_cpu(), time.perf_counter()
    done = await asyncio.gather(*jobs)
    seconds, cpu = time.perf_counter() - started, bench_cpu() - cpu
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


async def run_direct(on: Stage, jobs: int, source: Source) -> Phase:
    """Every job's chunks straight to the Discord stand-in, each job in a channel of its own."""
    channels = [str(DIRECT_CHANNEL_BASE + job) for job in range(jobs)]
    urls = [f"{on.discord.base_url}/channels/{channel}/messages" for channel in channels]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {on.token}"}) as session:
        phase = await timed([send_all(session, url, source.chunks, message_form) for url in urls])
    for channel in channels:  # kept, they would make the service phase's stand-in use fresh
        on.discord.forget(channel)  # memory, which costs this process (bench/README.md)
    return phase


async def run_service(
    on: Stage, upload_ids: list[str], source: Source
) -> tuple[Phase, list[dict[str, Any]]]:
    """Every job's chunks to the service at once, each job to its finish packet; the finish
    packets in the order of the slots."""
    finishes: dict[str, dict[str, Any]] = {}

    async def job(slot: Slot, upload_id: str) -> list[float]:
        form = functools.partial(chunk_form, upload_id)
        latencies = await send_all(on.session, slot.address, source.chunks, form)
        finishes[slot.channel] = await slot.connection.next_finish()
        return latencies

    phase = await timed(
        [job(slot, upload_id) for slot, upload_id in zip(on.slots, upload_ids, strict=True)]
    )
    return phase, [finishes[slot.channel] for slot in on.slots]


async def run_once(jobs: int, source: Source) -> dict[str, float]:
    floors = crypto_floor(source.chunks, os.urandom(32)), socket_floor(source.chunks)
    async with stage([str(SERVICE_CHANNEL_BASE + job) for job in range(jobs)]) as on:
        upload_ids = [await on.start_job(slot, source) for slot in on.slots]
        idle_rss = current_rss(on.pid)
        log(f"  pid {on.pid}, {jobs} job(s) started, idle RSS {idle_rss / MIB:.1f} MiB")
        direct = await run_direct(on, jobs, source)
        before = process_times(on.pid)
        async with health_probed(on.settings.port) as probes, loop_lag() as lag:
            service, finishes = await run_service(on, upload_ids, source)
        spent, peak = process_times(on.pid) - before, peak_rss(on.pid)
        ends = {0, len(source.chunks) - 1}  # decrypting every chunk would double the wait
        on.check(
            [
                f"job {job}: {problem}"
                for job, (slot, finish) in enumerate(zip(on.slots, finishes, strict=True))
                for problem in on.problems(slot, finish, source, ends)
            ]
        )
    return Run(
        jobs, source.size, direct, service, spent, peak, idle_rss, *floors, probes, lag
    ).figures()


async def run(plan: CapacityPlan) -> Report:
    started = time.perf_counter()
    sources = {size: Source.random(size) for size in {plan.size_for(jobs) for jobs in plan.jobs}}
    results: dict[int, list[dict[str, float]]] = {}
    for jobs in plan.jobs:
        source = sources[plan.size_for(jobs)]
        limit = RUN_TIMEOUT_BASE + 2 * jobs * source.size / MIB / SLOWEST_MIB_S
        once = functools.partial(run_once, jobs, source)
        results[jobs] = await measured(f"capacity, jobs={jobs}", plan.runs, limit, once, COLUMNS)
    return capacity_report(plan.runs, results, time.perf_counter() - started)


SCENARIO = Scenario.of(
    "capacity",
    "throughput, latency, memory and CPU against Discord directly",
    run,
    CapacityPlan(),
    CapacityPlan(size=12, runs=1, jobs=(1, 2)),
    ("--size", float, "MiB for 1 job (default 256; smoke 12)"),
    ("--multi-size", float, "MiB per job with 2+ jobs (default: --size, at most 64)"),
    ("--jobs", counts, "numbers of jobs (default 1,2,4,8; smoke 1,2)"),
)
