"""The memory scenario: the chunk memory budget against (a) a claim flood, (b) a burst while
Discord answers slowly, (c) a backlog behind a slow channel and (d) a lone trickler, each on a
fresh service, with (e) another slot's job timed beside them; what each case does and its
targets: bench/README.md, "Memory"."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from clients import JobRun, upload_jobs
from measure import Source, current_rss, meanwhile, peak_rss
from memory_report import SAMPLE, Case, memory_report
from report import MIB, BenchFailure, Report, log, machine
from scenario import POSITIVE_INT, Scenario, planned
from services import Slot, Stage, stage

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from service.local.browser import TRIES
from service.local.driver import Trickled, trickle

CHANNELS = ("1500000000000000001", "1500000000000000002")  # the case's slots', the other's
FIRST_BYTES = 512  # of the file part a trickling client sends at once
POLL = 0.05  # seconds between /metrics reads where the service offers no event
SHORT_SIDE_RUNS = 3  # of the other slot's job in (a), where it takes a few tenths of a second
CASES = "abcd"


@dataclass(frozen=True)
class MemoryPlan:
    cases: str = CASES
    budget_mib: int = 128
    read_timeout: float = 6.0
    trickle_interval: float = 2.0
    tricklers: int = 60
    flood_chunks: int = 60  # the job the tricklers claim chunks of, uploaded meanwhile
    burst_chunks: int = 40
    burst_answer: float = 1.0  # seconds Discord takes to answer each post in (b)
    backlog_chunks: int = 24
    backlog_jobs: int = 6  # browsers (and slots) sharing the backlog's chunks and channel
    backlog_window: float = 1.0  # Discord stores one message per this, per channel
    side_chunks: int = 8
    tries: int = TRIES
    in_flight: int | None = None  # CHUNKS_IN_FLIGHT_PER_UPLOAD; None: the default
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
    runs=1,
)


def case_keys(text: str) -> str:
    if not text or any(key not in CASES for key in text.split(",")):
        raise argparse.ArgumentTypeError("cases are a, b, c, d separated by commas")
    return text.replace(",", "")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--cases", type=case_keys, help="which of a,b,c,d (default all)")
    group.add_argument("--in-flight", type=POSITIVE_INT, help="CHUNKS_IN_FLIGHT_PER_UPLOAD")
    group.add_argument("--tries", type=POSITIVE_INT, help=f"tries per chunk (default {TRIES})")
    group.add_argument(
        "--burst-answer", type=float, help="seconds Discord takes per post in (b); 0: at once"
    )


def plan_from(args: argparse.Namespace) -> MemoryPlan:
    flags = ("cases", "in_flight", "tries", "burst_answer", "runs")
    return planned(args, MemoryPlan(), SMOKE, *flags)


@dataclass
class Bench:
    """A fresh service for one case: the case's slots sharing one channel, and the other slot
    with a channel of its own."""

    on: Stage
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
        """Until `holds(gauge)`, for what only /metrics show, which offer no event to await:
        read every POLL seconds, for at most CLIENT_READ_TIMEOUT."""
        async with asyncio.timeout(self.plan.read_timeout):
            while not holds((await self.gauges(gauge))[0]):  # noqa: ASYNC110
                await asyncio.sleep(POLL)

    def sampled(self, case: Case) -> contextlib.AbstractAsyncContextManager[None]:
        """Meanwhile, the most chunk memory the service held and the most chunks waiting for
        it, read from /metrics every SAMPLE seconds."""

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
        self,
        slots: list[Slot],
        source: Source,
        at_once: int = BROWSER_CHUNKS_IN_FLIGHT,
        upload_ids: list[str] | None = None,
    ) -> list[JobRun]:
        """A browser's job on each of `slots`, `at_once` chunks at once."""
        runs = await upload_jobs(self.on, slots, source, at_once, self.plan.tries, upload_ids)
        for channel in {slot.channel for slot in slots}:
            self.on.discord.forget(channel)
        return runs

    async def side_job(self, side: Source, runs: int = 1) -> JobRun:
        """The other slot's job `runs` times in a row; the run of median time (a job of a few
        tenths of a second is at the mercy of the scheduler's noise on a shared machine)."""
        done = [(await self.jobs(self.on.slots[-1:], side))[0] for _ in range(runs)]
        failed = [run for run in done if not run.ok]
        return failed[0] if failed else sorted(done, key=lambda run: run.seconds)[runs // 2]

    @contextlib.asynccontextmanager
    async def measured(
        self, case: Case, side: Source | None, side_runs: int = 1
    ) -> AsyncIterator[None]:
        """The idle RSS and, given `side`, the other slot's job on the idle service (a warm-up,
        then the baseline); inside, /metrics sampled; after, the peak RSS."""
        case.idle_rss = current_rss(self.on.pid)
        if side is not None:
            await self.side_job(side)
            case.side_idle = await self.side_job(side, side_runs)
        async with self.sampled(case):
            yield
        case.peak_rss = peak_rss(self.on.pid)


@contextlib.asynccontextmanager
async def fresh(
    plan: MemoryPlan, case_slots: int = 1, window: float | None = None, answer: float = 0.0
) -> AsyncIterator[Bench]:
    """A service of its own with `case_slots` slots sharing the case's channel and the other
    slot. With `window`, Discord stores one post per `window` seconds per channel; it answers
    each post `answer` seconds after its body arrives."""
    discord: dict[str, Any] = {"answer_delay": answer}
    if window is not None:
        discord |= {"messages_per_window": 1, "window": window}
    settings: dict[str, Any] = {"chunk_memory_mib": plan.budget_mib}
    settings["client_read_timeout"] = plan.read_timeout
    if plan.in_flight:
        settings["chunks_in_flight_per_upload"] = plan.in_flight
    channels = [CHANNELS[0]] * case_slots + [CHANNELS[1]]
    async with stage(channels, discord=discord, **settings) as on:
        yield Bench(on, plan)


async def claim_flood(plan: MemoryPlan, side: Source) -> Case:
    """(a) Trickling claims of one job's chunks: the other slot's job while they hold on,
    then that job uploaded by a browser."""
    case = plan.case("a", f"claim flood: {plan.tricklers} trickling claims")
    source = Source.random(plan.flood_chunks * MANAGER_CHUNK_SIZE)
    async with fresh(plan) as bench, bench.measured(case, side, SHORT_SIDE_RUNS):
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
        case.jobs = await bench.jobs([slot], source, upload_ids=[upload_id])
        case.trickles = list(await asyncio.gather(*trickles))
    return case


async def under_load(
    plan: MemoryPlan, case: Case, side: Source, source: Source, at_once: int, **service: Any
) -> Case:
    """(b), (c): a job of `source` on each case slot, `at_once` chunks at once, and the other
    slot's job once the first chunk is at Discord."""
    async with fresh(plan, **service) as bench, bench.measured(case, side):
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
    """(b) Every chunk of one job POSTed at once, retried as the browser does, while Discord
    answers each post slowly."""
    chunks, answer = plan.burst_chunks, plan.burst_answer
    title = f"{chunks} concurrent honest chunks of one job, Discord answering each post in"
    case = plan.case("b", f"{title} {answer:g} s")
    source = Source.random(chunks * MANAGER_CHUNK_SIZE)
    return await under_load(plan, case, side, source, chunks, answer=answer)


async def backlog(plan: MemoryPlan, side: Source) -> Case:
    """(c) Browsers on several slots sharing one channel that stores a post a second: their
    chunks wait for Discord, and for memory."""
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
    async with fresh(plan) as bench:
        async with bench.measured(case, side=None):
            upload_id = await bench.on.start_job(bench.case_slots[0], source)
            case.trickles = [await bench.trickle(upload_id, 0, source.chunks[0])]
        answered = time.perf_counter()
        # The buffer is given back as the claim ends, before the endpoint stops counting the
        # POST in upload_chunks_in_flight (endpoint.py): its 0 is the release, seen outside.
        await bench.until("upload_chunks_in_flight", lambda held: held == 0)
        case.release_seconds = time.perf_counter() - answered
        (case.memory_after,) = await bench.gauges("upload_chunk_memory_bytes")
        case.rss_after = current_rss(bench.on.pid)
        case.peak_rss = peak_rss(bench.on.pid)
    return case


async def repeated(plan: MemoryPlan, once: Callable[[], Awaitable[Case]]) -> Case:
    """`plan.runs` runs of a case whose other-slot job is timed once per run; the run of
    median ratio, holding them all (a job of two seconds, timed once on a shared machine, is
    at the mercy of its noise)."""
    runs = [await once() for _ in range(plan.runs)]
    if len(runs) == 1:
        return runs[0]
    median = sorted(runs, key=lambda run: run.side_ratio or float("inf"))[len(runs) // 2]
    median.repeats = runs
    return median


async def run(plan: MemoryPlan) -> Report:
    started = time.perf_counter()
    side = Source.random(plan.side_chunks * MANAGER_CHUNK_SIZE)
    cases = {
        "a": lambda: claim_flood(plan, side),
        "b": lambda: repeated(plan, lambda: burst(plan, side)),
        "c": lambda: repeated(plan, lambda: backlog(plan, side)),
        "d": lambda: lone_trickle(plan),
    }
    done = []
    for key in plan.cases:
        began = time.perf_counter()
        log(f"memory ({key}) ...")
        done.append(case := await cases[key]())
        log(f"memory ({key}) took {time.perf_counter() - began:.0f} s")
        for target in case.targets():
            log(f"  {target.name}: {target.value} ({target.limit}: {target.verdict})")
    header = (
        f"One fresh service process per case: UPLOAD_SLOTS=2 ({plan.backlog_jobs + 1} in (c)), "
        f"CHUNK_MEMORY_MIB={plan.budget_mib}, CLIENT_READ_TIMEOUT={plan.read_timeout:g}, "
        f"CLIENT_MIN_RATE at its default, CHUNKS_IN_FLIGHT_PER_UPLOAD "
        f"{plan.in_flight or 'at its default'}, encryption on, chunks of {MANAGER_CHUNK_SIZE} "
        f"bytes. Trickling clients send 1 byte every {plan.trickle_interval:g} s after "
        f"{FIRST_BYTES} bytes of the file part. The other slot's job: {plan.side_chunks} "
        f"chunks, 5 at once. {machine()}; took {time.perf_counter() - started:.0f} s. "
        "Every figure and target: bench/README.md."
    )
    return memory_report(header, done)


SCENARIO = Scenario(
    name="memory",
    summary="the chunk memory budget against floods, bursts, backlogs and trickles",
    add_arguments=add_arguments,
    plan=plan_from,
    run=run,
)
