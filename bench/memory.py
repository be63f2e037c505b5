"""The memory scenario: the chunk memory budget against a claim flood, a burst, a backlog and a
lone trickler, another slot's job timed beside them (bench/README.md, "Memory")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from clients import JobRun, upload_jobs
from measure import MIB, Source, meanwhile, rss
from memory_case import SAMPLE, Case, median_run
from report import BenchFailure, Report, log
from scenario import POSITIVE_INT, Scenario, letters, option
from services import Service, Slot, fresh_channels, stage

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from service.local.browser import TRIES
from service.local.driver import Trickled, trickle

FIRST_BYTES = 512  # of the file part a trickling client sends at once
POLL = 0.05  # seconds between /metrics reads where the service offers no event
SHORT_SIDE_RUNS = 3  # of the other slot's job in (a), where it takes a few tenths of a second
CASES = "abcd"


@dataclass(frozen=True)
class MemoryPlan:
    cases: str = option(CASES, letters(CASES), "which cases")
    budget_mib: int = 128
    read_timeout: float = 6.0
    trickle_interval: float = 2.0
    tricklers: int = 60
    flood_chunks: int = 60  # the job the tricklers claim chunks of, uploaded meanwhile
    burst_chunks: int = 40
    burst_answer: float = option(1.0, float, "seconds Discord takes per post in (b); 0: at once")
    backlog_chunks: int = 24
    backlog_jobs: int = 6  # browsers (and slots) sharing the backlog's chunks and channel
    backlog_window: float = 1.0  # Discord stores one message per this, per channel
    side_chunks: int = 8
    tries: int = option(TRIES, POSITIVE_INT, "tries per chunk")
    in_flight: int | None = option(None, POSITIVE_INT, "CHUNKS_IN_FLIGHT_PER_UPLOAD (its default)")
    runs: int = 3  # of (b) and (c), whose other-slot job is timed once per run

    def case(self, key: str, title: str) -> Case:
        # A trickler must have its 408 by the timeout, the trickle's granularity and a second.
        cutoff = self.read_timeout + self.trickle_interval + 1.0
        return Case(key, title, self.budget_mib * MIB, cutoff_limit=cutoff)


SMOKE = MemoryPlan(
    read_timeout=2.0,
    trickle_interval=0.5,
    tricklers=12,
    flood_chunks=12,
    burst_chunks=12,
    burst_answer=0.25,
    backlog_chunks=6,
    backlog_jobs=3,
    backlog_window=0.25,
    side_chunks=3,
    runs=2,  # (b) and (c) reported as several runs, as in a full run
)


@dataclass
class Bench:
    """A case's service: its slots sharing one channel, and the other slot."""

    on: Service
    plan: MemoryPlan

    @property
    def case_slots(self) -> list[Slot]:
        return self.on.slots[:-1]

    async def gauges(self, *names: str) -> list[float]:
        """Unlabelled samples of the service's /metrics, read once."""
        found = await self.on.metrics()
        if missing := [name for name in names if name not in found]:
            raise BenchFailure(f"the service's /metrics has no {', '.join(missing)}")
        return [found[name] for name in names]

    async def until(self, gauge: str, holds: Callable[[float], bool]) -> None:
        """Until `holds(gauge)`: /metrics offer no event, so read every POLL seconds."""
        async with asyncio.timeout(self.plan.read_timeout):
            while not holds((await self.gauges(gauge))[0]):  # noqa: ASYNC110
                await asyncio.sleep(POLL)

    def sampled(self, case: Case) -> contextlib.AbstractAsyncContextManager[None]:
        """Meanwhile, the most chunk memory held and chunks waiting for it, read every SAMPLE s."""

        async def sample() -> None:
            names = ("upload_chunk_memory_bytes", "upload_chunks_waiting_for_memory")
            while True:
                memory, waiting = await self.gauges(*names)
                case.most_memory = max(case.most_memory, memory)
                case.most_waiting = max(case.most_waiting, int(waiting))
                await asyncio.sleep(SAMPLE)

        return meanwhile(sample())

    async def trickle(self, upload_id: str, index: int, chunk: memoryview) -> Trickled:
        """A client claiming chunk `index` with FIRST_BYTES of it, then trickling."""
        settings, plan = self.on.settings, self.plan
        return await trickle(
            *(settings.port, settings.own_path, upload_id, index, chunk),
            interval=plan.trickle_interval,
            first_bytes=FIRST_BYTES,
            give_up_after=3 * plan.read_timeout + 10,
        )

    async def jobs(
        self, slots: list[Slot], source: Source, at_once: int, ids: list[str] | None = None
    ) -> list[JobRun]:
        """A browser's job on each of `slots`, `at_once` chunks at once."""
        runs = await upload_jobs(self.on, slots, source, at_once, self.plan.tries, ids)
        for channel in {slot.channel for slot in slots}:
            self.on.discord.forget(channel)
        return runs

    async def side_job(self, side: Source, runs: int = 1) -> JobRun:
        """The other slot's job `runs` times in a row; the run of median time."""
        other = self.on.slots[-1:]
        done = [(await self.jobs(other, side, BROWSER_CHUNKS_IN_FLIGHT))[0] for _ in range(runs)]
        failed = [run for run in done if not run.ok]
        return failed[0] if failed else sorted(done, key=lambda run: run.seconds)[runs // 2]


@contextlib.asynccontextmanager
async def serving(
    plan: MemoryPlan,
    case: Case,
    side: Source | None = None,
    side_runs: int = 1,
    case_slots: int = 1,
    window: float | None = None,
    answer: float = 0.0,
) -> AsyncIterator[Bench]:
    """A service of `case_slots` slots and the other, beside a Discord storing a post per
    `window` s per channel (if given) and answering `answer` s after a post's body: its idle
    RSS, the other slot's job of `side` on it idle (a warm-up, then the baseline); inside,
    /metrics sampled; after, its peak RSS."""
    discord: dict[str, Any] = {"answer_delay": answer}
    if window is not None:
        discord |= {"messages_per_window": 1, "window": window}
    settings = {"chunk_memory_mib": plan.budget_mib, "client_read_timeout": plan.read_timeout}
    if plan.in_flight:
        settings["chunks_in_flight_per_upload"] = plan.in_flight
    shared, other = fresh_channels(2)
    channels = [shared] * case_slots + [other]
    async with stage(channels, discord=discord, **settings) as on:
        bench = Bench(on, plan)
        case.idle_rss = rss(on.pid)
        if side is not None:
            warm_up = await bench.side_job(side)  # a failed one is the case's failure
            case.side_idle = await bench.side_job(side, side_runs) if warm_up.ok else warm_up
        async with bench.sampled(case):
            yield bench
        case.peak_rss = rss(on.pid, "VmHWM")


async def claim_flood(plan: MemoryPlan, side: Source) -> Case:
    """(a) Trickling claims of a job's chunks; the other slot's job; then that job's upload."""
    case = plan.case("a", f"claim flood: {plan.tricklers} trickling claims")
    source = Source.random(plan.flood_chunks * MANAGER_CHUNK_SIZE)
    async with serving(plan, case, side, SHORT_SIDE_RUNS) as bench:
        slot = bench.case_slots[0]
        upload_id = await bench.on.start_job(slot, source)
        claimed = [i % len(source.chunks) for i in range(plan.tricklers)]
        trickles = [
            asyncio.create_task(bench.trickle(upload_id, i, source.chunks[i])) for i in claimed
        ]

        def established(held: float) -> bool:  # each claim answered at once or held
            return sum(t.done() for t in trickles) + held >= len(trickles)

        await bench.until("upload_chunks_in_flight", established)
        log(f"  flood established: {sum(t.done() for t in trickles)} claims answered at once")
        case.side_loaded = await bench.side_job(side, SHORT_SIDE_RUNS)
        case.side_runs = SHORT_SIDE_RUNS
        case.jobs = await bench.jobs([slot], source, BROWSER_CHUNKS_IN_FLIGHT, [upload_id])
        case.trickles = list(await asyncio.gather(*trickles))
    return case


async def under_load(
    plan: MemoryPlan, case: Case, side: Source, source: Source, at_once: int, **service: Any
) -> Case:
    """(b), (c): a job of `source` on each case slot, `at_once` chunks at once; the other
    slot's job once the first chunk is at Discord."""
    async with serving(plan, case, side, **service) as bench:
        main = asyncio.create_task(bench.jobs(bench.case_slots, source, at_once))
        discord = bench.on.discord
        under_way = asyncio.ensure_future(discord.wait_for_posts(discord.posts + 1))
        await asyncio.wait([main, under_way], return_when=asyncio.FIRST_COMPLETED)
        if under_way.done():
            case.side_loaded = await bench.side_job(side)
        else:
            under_way.cancel()
        case.jobs = await main
    return case


async def burst(plan: MemoryPlan, side: Source) -> Case:
    """(b) Every chunk of one job at once, while Discord answers each post slowly."""
    chunks, answer = plan.burst_chunks, plan.burst_answer
    title = f"{chunks} concurrent honest chunks of one job, Discord answering each post in"
    case = plan.case("b", f"{title} {answer:g} s")
    source = Source.random(chunks * MANAGER_CHUNK_SIZE)
    return await under_load(plan, case, side, source, chunks, answer=answer)


async def backlog(plan: MemoryPlan, side: Source) -> Case:
    """(c) Browsers on several slots sharing a slow channel: chunks wait for it, and memory."""
    jobs, chunks, window = plan.backlog_jobs, plan.backlog_chunks, plan.backlog_window
    case = plan.case(
        "c",
        f"{chunks} chunks of {jobs} browsers' jobs waiting for a Discord storing one per "
        f"{window:g} s in their shared channel",
    )
    source = Source.random(chunks // jobs * MANAGER_CHUNK_SIZE)
    return await under_load(
        plan, case, side, source, BROWSER_CHUNKS_IN_FLIGHT, case_slots=jobs, window=window
    )


async def lone_trickle(plan: MemoryPlan) -> Case:
    """(d) One trickling client: its claim to its 408, then to no chunk held."""
    case = plan.case("d", f"one client trickling a byte every {plan.trickle_interval:g} s")
    source = Source.random(MANAGER_CHUNK_SIZE)
    async with serving(plan, case) as bench:
        upload_id = await bench.on.start_job(bench.case_slots[0], source)
        case.trickles = [await bench.trickle(upload_id, 0, source.chunks[0])]
        answered = time.perf_counter()
        # The buffer is given back as the claim ends, before the endpoint stops counting the
        # POST in upload_chunks_in_flight (endpoint.py): its 0 is the release, seen outside.
        await bench.until("upload_chunks_in_flight", lambda held: held == 0)
        case.release_seconds = time.perf_counter() - answered
        (case.memory_after,) = await bench.gauges("upload_chunk_memory_bytes")
        case.rss_after = rss(bench.on.pid)
    return case


async def run(plan: MemoryPlan) -> Report:
    side = Source.random(plan.side_chunks * MANAGER_CHUNK_SIZE)
    cases = {
        "a": lambda: claim_flood(plan, side),
        "b": lambda: median_run(plan.runs, lambda: burst(plan, side)),
        "c": lambda: median_run(plan.runs, lambda: backlog(plan, side)),
        "d": lambda: lone_trickle(plan),
    }
    done, lines = [], []
    for key in plan.cases:
        began = time.perf_counter()
        log(f"memory ({key}) ...")
        done.append(case := await cases[key]())
        log(f"memory ({key}) took {time.perf_counter() - began:.0f} s")
        for target in case.targets():
            log(f"  {target.name}: {target.value} ({target.limit}: {target.verdict})")
        lines += [*case.section(), ""]
    about = (
        f"One fresh service process per case: UPLOAD_SLOTS=2 ({plan.backlog_jobs + 1} in (c)), "
        f"CHUNK_MEMORY_MIB={plan.budget_mib}, CLIENT_READ_TIMEOUT={plan.read_timeout:g}, "
        f"CLIENT_MIN_RATE at its default, CHUNKS_IN_FLIGHT_PER_UPLOAD "
        f"{plan.in_flight or 'at its default'}, encryption on, chunks of {MANAGER_CHUNK_SIZE} "
        f"bytes. Trickling clients send 1 byte every {plan.trickle_interval:g} s after "
        f"{FIRST_BYTES} bytes of the file part. The other slot's job: {plan.side_chunks} "
        f"chunks, 5 at once."
    )
    figures, failed = {c.key: c.figures() for c in done}, any(c.failed for c in done)
    return Report("Memory (the chunk memory budget)", about, lines[:-1], figures, failed)


SCENARIO = Scenario(
    "memory",
    "the chunk memory budget against floods, bursts, backlogs and trickles",
    run,
    MemoryPlan(),
    SMOKE,
)
