"""The memory scenario: the chunk memory budget against (a) a claim flood, (b) a burst while
Discord answers slowly, (c) a backlog behind a slow channel and (d) a lone trickler, each on a
fresh service, with (e) another slot's job timed beside them; what each case does and its
targets: bench/README.md, "Memory"."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from measure import Source, current_rss, peak_rss
from memory_report import Case, JobRun, memory_report
from memory_stage import FIRST_BYTES, MemoryBench, memory_bench
from report import MIB, Report, log, machine
from scenario import POSITIVE_INT, Scenario

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from service.local.browser import TRIES

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
    repeats: int = 3  # runs of (b) and (c), whose other-slot job is timed once per run

    @property
    def cutoff_limit(self) -> float:
        """When a trickler must have its 408 by: the timeout, the trickle's granularity and
        a second of slack."""
        return self.read_timeout + self.trickle_interval + 1.0

    def settings(self) -> dict[str, object]:
        chosen = {"chunk_memory_mib": self.budget_mib, "client_read_timeout": self.read_timeout}
        if self.in_flight:
            chosen["chunks_in_flight_per_upload"] = self.in_flight
        return chosen

    def case(self, key: str, title: str) -> Case:
        return Case(key, title, self.budget_mib * MIB, cutoff_limit=self.cutoff_limit)


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
    repeats=1,
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
    given = {
        "cases": args.cases,
        "in_flight": args.in_flight,
        "tries": args.tries,
        "burst_answer": args.burst_answer,
        "repeats": args.runs,
    }
    plan = SMOKE if args.smoke else MemoryPlan()
    return replace(plan, **{name: value for name, value in given.items() if value is not None})


async def polled(check: Callable[[], Awaitable[bool]]) -> None:
    """Until `check()` holds. For what only the service's /metrics show, which offer no
    event to await: read every POLL seconds (the caller bounds the wait)."""
    while not await check():  # noqa: ASYNC110
        await asyncio.sleep(POLL)


async def side_jobs(bench: MemoryBench, side: Source, runs: int) -> JobRun:
    """The other slot's job `runs` times in a row; the run of median time (a job of a few
    tenths of a second is at the mercy of the scheduler's noise on a shared machine)."""
    done = [await bench.job(bench.other, side) for _ in range(runs)]
    failed = [run for run in done if not run.ok]
    return failed[0] if failed else sorted(done, key=lambda run: run.seconds)[runs // 2]


async def side_baseline(bench: MemoryBench, case: Case, side: Source, runs: int = 1) -> None:
    """The other slot's job on the idle service: a warm-up run, then the baseline."""
    case.idle_rss = current_rss(bench.pid)
    await bench.job(bench.other, side)
    case.side_idle = await side_jobs(bench, side, runs)


async def claim_flood(plan: MemoryPlan, side: Source) -> Case:
    """(a) Trickling claims of one job's chunks: the other slot's job while they hold on,
    then that job uploaded by a browser."""
    case = plan.case("a", f"claim flood: {plan.tricklers} trickling claims")
    source = Source.random(plan.flood_chunks * MANAGER_CHUNK_SIZE)
    async with memory_bench(plan.settings(), plan.tries) as bench:
        await side_baseline(bench, case, side, SHORT_SIDE_RUNS)
        async with bench.sampled(case):
            slot = bench.case_slots[0]
            upload_id = await bench.on.start_job(slot, source)
            every = {"interval": plan.trickle_interval, "give_up_after": 3 * plan.read_timeout + 10}
            claimed = [i % len(source.chunks) for i in range(plan.tricklers)]
            trickles = [
                asyncio.create_task(bench.trickle(upload_id, i, source.chunks[i], **every))
                for i in claimed
            ]

            async def established() -> bool:  # each claim answered at once or held
                (held,) = await bench.gauges("upload_chunks_in_flight")
                return sum(t.done() for t in trickles) + held >= len(trickles)

            async with asyncio.timeout(plan.read_timeout):
                await polled(established)
            log(f"  flood established: {sum(t.done() for t in trickles)} claims answered at once")
            case.side_loaded = await side_jobs(bench, side, SHORT_SIDE_RUNS)
            case.side_runs = SHORT_SIDE_RUNS
            case.jobs = [await bench.job(slot, source, upload_id)]
            case.trickles = list(await asyncio.gather(*trickles))
        case.peak_rss = peak_rss(bench.pid)
    return case


async def under_load(
    bench: MemoryBench, case: Case, side: Source, source: Source, at_once: int
) -> None:
    """(b), (c): a job of `source` on each case slot, `at_once` chunks at once, and the other
    slot's job once the first chunk is at Discord."""
    await side_baseline(bench, case, side)
    async with bench.sampled(case):
        main = asyncio.create_task(bench.jobs(bench.case_slots, source, at_once))
        discord = bench.on.discord
        under_way = asyncio.ensure_future(discord.wait_for_posts(discord.posts + 1))
        await asyncio.wait([main, under_way], return_when=asyncio.FIRST_COMPLETED)
        if under_way.done():
            case.side_loaded = await bench.job(bench.other, side)
        else:
            under_way.cancel()
        case.jobs = await main
    case.peak_rss = peak_rss(bench.pid)


async def burst(plan: MemoryPlan, side: Source) -> Case:
    """(b) Every chunk of one job POSTed at once, retried as the browser does, while Discord
    answers each post slowly."""
    chunks = plan.burst_chunks
    title = f"{chunks} concurrent honest chunks of one job, Discord answering each post in"
    case = plan.case("b", f"{title} {plan.burst_answer:g} s")
    source = Source.random(chunks * MANAGER_CHUNK_SIZE)
    async with memory_bench(plan.settings(), plan.tries, answer=plan.burst_answer) as bench:
        await under_load(bench, case, side, source, chunks)
    return case


async def backlog(plan: MemoryPlan, side: Source) -> Case:
    """(c) Browsers on several slots sharing one channel that stores a post a second: their
    chunks wait for Discord, and for memory."""
    jobs, chunks = plan.backlog_jobs, plan.backlog_chunks
    case = plan.case(
        "c",
        f"{chunks} chunks of {jobs} browsers' jobs waiting for a Discord storing one per "
        f"{plan.backlog_window:g} s in their shared channel",
    )
    source = Source.random(chunks // jobs * MANAGER_CHUNK_SIZE)
    window = plan.backlog_window
    async with memory_bench(plan.settings(), plan.tries, jobs, window=window) as bench:
        await under_load(bench, case, side, source, BROWSER_CHUNKS_IN_FLIGHT)
    return case


async def lone_trickle(plan: MemoryPlan) -> Case:
    """(d) One trickling client: its claim to its 408, then to no chunk held."""
    case = plan.case("d", f"one client trickling a byte every {plan.trickle_interval:g} s")
    source = Source.random(MANAGER_CHUNK_SIZE)
    async with memory_bench(plan.settings(), plan.tries) as bench:
        case.idle_rss = current_rss(bench.pid)
        upload_id = await bench.on.start_job(bench.case_slots[0], source)
        async with bench.sampled(case):
            every = {"interval": plan.trickle_interval, "give_up_after": 3 * plan.read_timeout + 10}
            case.trickles = [await bench.trickle(upload_id, 0, source.chunks[0], **every)]
        answered = time.perf_counter()

        # The buffer is given back as the claim ends, before the endpoint stops counting the
        # POST in upload_chunks_in_flight (endpoint.py): its 0 is the release, seen outside.
        async def released() -> bool:
            return await bench.gauges("upload_chunks_in_flight") == [0]

        async with asyncio.timeout(plan.read_timeout):
            await polled(released)
        case.release_seconds = time.perf_counter() - answered
        (case.memory_after,) = await bench.gauges("upload_chunk_memory_bytes")
        case.rss_after = current_rss(bench.pid)
        case.peak_rss = peak_rss(bench.pid)
    return case


async def repeated(plan: MemoryPlan, once: Callable[[], Awaitable[Case]]) -> Case:
    """`plan.repeats` runs of a case whose other-slot job is timed once per run; the run of
    median ratio, holding them all (a job of two seconds, timed once on a shared machine, is
    at the mercy of its noise)."""
    runs = [await once() for _ in range(plan.repeats)]
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
        case = await cases[key]()
        log(f"memory ({key}) took {time.perf_counter() - began:.0f} s")
        for target in case.targets():
            log(f"  {target.name}: {target.value} ({target.limit}: {target.verdict})")
        done.append(case)
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
