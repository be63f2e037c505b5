"""The memory benchmark: the chunk memory budget against floods, bursts, backlogs and trickles.

    python bench/memory.py [--scenarios a,b,c,d] [--in-flight N] [--tries N] [--burst-answer S]
                           [--repeats N] [--smoke]
    python bench/run.py --memory [the same flags]

Issue 13's targets, each scenario on a fresh service process (CHUNK_MEMORY_MIB=128,
CLIENT_READ_TIMEOUT=6, CLIENT_MIN_RATE at its default, encryption on, the manager's real
chunk size) between a Discord and a manager stand-in in this process. Its slots: the
scenario's, sharing one channel, and the other slot, with a channel of its own.

  (a) claim flood: 60 raw connections each send a chunk POST's head, its `id` and `chunk`
      fields and 512 bytes of the file part, then one byte every 2 s; while they hold on, the
      other slot's job (e); then a browser uploads the flood's job (5 at once, 10 tries);
  (b) 40 chunks of one job POSTed at once by 40 browser-like clients (10 tries each) while
      Discord answers each post in 1 s, as in the issue's report;
  (c) backlog: 6 browsers (5 at once, 10 tries), each uploading a job of 4 chunks on a slot
      of its own, all 6 slots sharing a channel where Discord stores one message a second
      (the stand-in's per-channel window; the service's pacer holds the chunks, in memory,
      until their turn): 24 chunks wait for Discord, and 12 of them for memory;
  (d) one trickling client alone: its claim to its 408, and its 408 to the service holding
      no chunk any more.

Every browser-like client runs in a process of its own (bench/uploader.py). Peak RSS is the
service's VmHWM at the end, idle RSS its VmRSS once every slot is configured, before any
chunk. (e) During (a)-(c), once the scenario is under way, a job of 8 chunks on the other
slot (5 at once, as the browser) is timed, from its first POST to its finish packet, against
the same job on the same service while idle (after a run that warms the buffers; in (a),
where it takes a few tenths of a second, the median of 3 runs each). (b) and (c) run 3 times
each (--repeats), each run on a fresh service timing the other job once: the report shows the
run of median ratio, every run's ratio, and the worst run's RSS and honest jobs.

Tables of targets on stdout, progress on stderr; exit status 1 if an upload that should have
completed did not, or did not verify. Figures and the report: memory_figures.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from children import Child
from console import BenchFailure, log
from measure import MIB, current_rss, peak_rss
from memory_figures import SAMPLE, JobRun, Scenario, Trickle, memory_report
from pacing import positive_int
from prometheus_client.parser import text_string_to_metric_families
from runs import Credentials
from services import UNLIMITED_RATE, ServiceProcess, connect_all, log_tails, spawn_service
from source import Source
from uploader import READY as UPLOADER_READY

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from service.local.browser import TRIES
from service.local.discord_api import DiscordStandIn
from service.local.manager import ManagerStandIn, ServiceConnection
from service.local.verify import attachments_in, finish_problems

CHANNELS = ("1500000000000000001", "1500000000000000002")  # the scenario's slot, the other
BOUNDARY = "----memory-bench-7MA4YWxkTrZu0gW"
FIRST_BYTES = 512  # of the file part a trickling client sends at once
POLL = 0.05  # seconds between /metrics reads where the service offers no event
UPLOADER = Path(__file__).resolve().parent / "uploader.py"
UPLOAD_TIMEOUT = 300.0  # seconds the uploader may take for a scenario's job
SHORT_SIDE_RUNS = 3  # of the other slot's job in (a), where it takes a few tenths of a second


@dataclass(frozen=True)
class MemoryPlan:
    scenarios: tuple[str, ...] = ("a", "b", "c", "d")
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


# --- a trickling client ----------------------------------------------------------------------


def chunk_post(port: int, path: str, upload_id: str, index: int, length: int) -> bytes:
    """A chunk POST's head and form up to the file part's bytes, as the browser writes it,
    for a file part of `length` bytes."""
    fields = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="id"\r\n\r\n{upload_id}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="chunk"\r\n\r\n{index}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body_length = len(fields) + length + len(f"\r\n--{BOUNDARY}--\r\n")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()
    return head + fields


async def trickle(
    service: ServiceProcess, upload_id: str, index: int, chunk: memoryview, plan: MemoryPlan
) -> Trickle:
    """Claim chunk `index` with its first bytes, then send one byte every trickle_interval
    until the service answers (or closes, or 3 x CLIENT_READ_TIMEOUT + 10 s pass)."""
    path = aiohttp.client.URL(service.address).path
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(chunk_post(service.port, path, upload_id, index, len(chunk)))
        writer.write(chunk[:FIRST_BYTES])
        await writer.drain()
        claimed = time.perf_counter()
        answer = asyncio.create_task(reader.readline())
        sent = FIRST_BYTES
        try:
            async with asyncio.timeout(3 * plan.read_timeout + 10):
                while not (await asyncio.wait([answer], timeout=plan.trickle_interval))[0]:
                    writer.write(chunk[sent : sent + 1])
                    sent += 1
        except TimeoutError:
            answer.cancel()
            return Trickle(None, time.perf_counter() - claimed)
        seconds = time.perf_counter() - claimed
        line = answer.result() if not answer.exception() else b""
        parts = line.split()
        return Trickle(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None, seconds)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# --- the service and its stand-ins -----------------------------------------------------------


@dataclass(frozen=True)
class BenchSlot:
    connection: ServiceConnection
    channel: str


@dataclass
class Bench:
    """A fresh service, every slot configured, and what drives it."""

    plan: MemoryPlan
    service: ServiceProcess
    discord: DiscordStandIn
    session: aiohttp.ClientSession
    credentials: Credentials
    slots: list[BenchSlot]  # the scenario's, then the other slot
    files: Path  # the uploaders' files, one per source

    @property
    def scenario_slots(self) -> list[BenchSlot]:
        return self.slots[:-1]

    @property
    def other(self) -> BenchSlot:
        return self.slots[-1]

    async def gauge(self, name: str) -> float:
        """An unlabelled sample of the service's /metrics."""
        return (await self.gauges(name))[0]

    async def gauges(self, *names: str) -> list[float]:
        """Unlabelled samples of the service's /metrics, read once."""
        url = f"http://127.0.0.1:{self.service.metrics_port}/metrics"
        async with self.session.get(url) as answer:
            text = await answer.text()
        found = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in names and not sample.labels
        }
        if missing := [name for name in names if name not in found]:
            raise BenchFailure(f"the service's /metrics has no {', '.join(missing)}")
        return [found[name] for name in names]

    @contextlib.asynccontextmanager
    async def sampled(self, scenario: Scenario) -> AsyncIterator[None]:
        """Meanwhile, the most chunk memory the service held and the most chunks waiting for
        it, read from /metrics every SAMPLE seconds."""

        async def sample() -> None:
            while True:
                memory, waiting = await self.gauges(
                    "upload_chunk_memory_bytes", "upload_chunks_waiting_for_memory"
                )
                scenario.most_memory = max(scenario.most_memory, memory)
                scenario.most_waiting = max(scenario.most_waiting, int(waiting))
                await asyncio.sleep(SAMPLE)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start(self, slot: BenchSlot, source: Source) -> str:
        upload_id, reply = await slot.connection.start_upload(
            size=source.size, name="memory.bin", chunk_size=source.chunk_size
        )
        if not reply.get("success"):
            raise BenchFailure(f"upload-start was refused: {reply.get('message')}")
        return upload_id

    async def job(
        self, slot: BenchSlot, source: Source, tries: int, upload_id: str | None = None
    ) -> JobRun:
        """One browser's job (5 at once) on `slot`."""
        upload_ids = None if upload_id is None else [upload_id]
        return (await self.jobs([slot], source, BROWSER_CHUNKS_IN_FLIGHT, tries, upload_ids))[0]

    async def jobs(
        self,
        slots: list[BenchSlot],
        source: Source,
        concurrency: int,
        tries: int,
        upload_ids: list[str] | None = None,
    ) -> list[JobRun]:
        """A job on each slot, uploaded at once by browser-like clients in a process of their
        own (bench/uploader.py): clients in this process, beside the Discord stand-in taking
        the other jobs' posts, would time this process rather than the service. Each job is
        timed from the first POST to its finish packet, then its finish verified; failures
        are the runs' problems."""
        runs = [JobRun(len(source.chunks), concurrency, tries) for _ in slots]
        upload_ids = upload_ids or [await self.start(slot, source) for slot in slots]

        async def finished(slot: BenchSlot) -> tuple[dict[str, Any], float]:
            return await slot.connection.next_finish(), time.perf_counter()

        finishes = [asyncio.create_task(finished(slot)) for slot in slots]
        try:
            addresses = [slot.connection.own_address for slot in slots]
            began = await self._send(runs, addresses, upload_ids, source)
            for run, slot, waiting in zip(runs, slots, finishes, strict=True):
                if run.problems:
                    continue
                finish, arrived = await waiting
                run.seconds = arrived - began
                attachments = attachments_in(self.discord, slot.channel)
                key = self.credentials.key
                run.problems = finish_problems(
                    finish, source.chunks, slot.channel, key, attachments
                )
        finally:
            for waiting in finishes:
                waiting.cancel()
        for channel in {slot.channel for slot in slots}:
            self.discord.forget(channel)
        return runs

    def _file_of(self, source: Source) -> Path:
        """`source` as the uploader's file, written the first time it is sent: the other
        slot's job is sent first while the service is idle, and writing its 80 MiB again
        while a scenario runs would take the machine from the job about to be timed."""
        path = self.files / f"{id(source)}.bin"
        if not path.exists():
            path.write_bytes(source.data)
        return path

    async def _send(
        self, runs: list[JobRun], addresses: list[str], upload_ids: list[str], source: Source
    ) -> float:
        """Run the uploader; when its first POSTs went out (it said it was ready)."""
        counts = (str(source.chunk_size), str(runs[0].concurrency), str(runs[0].tries))
        pairs = [part for pair in zip(addresses, upload_ids, strict=True) for part in pair]
        child, _ = await Child.start(
            "the uploader",
            [str(UPLOADER), str(self._file_of(source)), *counts, *pairs],
            ready=UPLOADER_READY,
        )
        began = time.perf_counter()
        await child.finish(patience=UPLOAD_TIMEOUT)  # it ends when its jobs are sent
        if child.returncode != 0:
            raise child.failure("failed")
        for run, report in zip(runs, json.loads(child.lines[-1]), strict=True):
            run.problems = report["problems"]
            run.attempts = report["attempts"]
            run.statuses = Counter({int(s): n for s, n in report["statuses"].items()})
        return began


@contextlib.asynccontextmanager
async def fresh_service(
    plan: MemoryPlan, scenario_slots: int = 1, window: float | None = None, answer: float = 0.0
) -> AsyncIterator[Bench]:
    """A service process of its own with `scenario_slots` slots sharing the scenario's
    channel and one more, the other slot, with a channel of its own. With `window`, Discord
    stores one post per `window` seconds per channel; it answers each post `answer` seconds
    after its body arrives."""
    credentials = Credentials.fresh()
    limit = {"messages_per_window": 1, "window": window} if window is not None else {}
    in_flight = {"chunks_in_flight_per_upload": plan.in_flight} if plan.in_flight else {}
    channels = [CHANNELS[0]] * scenario_slots + [CHANNELS[1]]
    async with (
        DiscordStandIn(token=credentials.token, answer_delay=answer, **limit) as discord,
        ManagerStandIn(password=credentials.password) as manager,
    ):
        service = await spawn_service(
            manager,
            credentials.password,
            discord,
            slots=len(channels),
            chunk_memory_mib=plan.budget_mib,
            client_read_timeout=plan.read_timeout,
            discord_global_rate=UNLIMITED_RATE,
            **in_flight,
        )
        try:
            connections = await connect_all("slots", manager, [service])
            slots = [BenchSlot(c, ch) for c, ch in zip(connections, channels, strict=True)]
            for slot in slots:
                reply = await slot.connection.configure(
                    token=credentials.token, channel_id=slot.channel, crypto_key=credentials.key
                )
                if not reply.get("success"):
                    raise BenchFailure(f"the configuration was refused: {reply.get('message')}")
            async with aiohttp.ClientSession() as session:
                with tempfile.TemporaryDirectory(prefix="memory-bench-") as files:
                    yield Bench(plan, service, discord, session, credentials, slots, Path(files))
        except BaseException as error:
            if not isinstance(error, BenchFailure):
                log(log_tails([service]))
            raise
        finally:
            await service.child.terminate()


# --- the scenarios ---------------------------------------------------------------------------


async def polled(check: Callable[[], Awaitable[bool]]) -> None:
    """Until `check()` holds. For what only the service's /metrics show, which offer no
    event to await: read every POLL seconds (the caller bounds the wait)."""
    while not await check():  # noqa: ASYNC110
        await asyncio.sleep(POLL)


async def side_jobs(bench: Bench, side: Source, runs: int) -> JobRun:
    """The other slot's job `runs` times in a row; the run of median time (a job of a few
    tenths of a second is at the mercy of the scheduler's noise on a shared machine)."""
    done = [await bench.job(bench.other, side, bench.plan.tries) for _ in range(runs)]
    failed = [run for run in done if not run.ok]
    return failed[0] if failed else sorted(done, key=lambda run: run.seconds)[runs // 2]


async def side_baseline(bench: Bench, scenario: Scenario, side: Source, runs: int = 1) -> None:
    """The other slot's job on the idle service: a warm-up run, then the baseline."""
    await bench.job(bench.other, side, bench.plan.tries)
    scenario.side_idle = await side_jobs(bench, side, runs)


async def side_during(
    bench: Bench,
    scenario: Scenario,
    side: Source,
    main: asyncio.Task[list[JobRun]],
    under_way: Awaitable[object],
) -> None:
    """Once the scenario is `under_way`, the other slot's job; then the scenario's own jobs."""
    started = asyncio.ensure_future(under_way)
    await asyncio.wait([main, started], return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        scenario.side_loaded = await bench.job(bench.other, side, bench.plan.tries)
    else:
        started.cancel()
    scenario.jobs = await main


async def first_post(bench: Bench) -> None:
    """Once the next chunk reaches Discord: the scenario's chunks fill the service."""
    await bench.discord.wait_for_posts(bench.discord.posts + 1)


def new_scenario(plan: MemoryPlan, key: str, title: str) -> Scenario:
    return Scenario(key, title, plan.budget_mib * MIB, cutoff_limit=plan.cutoff_limit)


async def start_flood(bench: Bench, upload_id: str, source: Source) -> list[asyncio.Task[Trickle]]:
    """The trickling clients, once each claim is answered at once or held by the service."""
    plan, chunks = bench.plan, len(source.chunks)
    trickles = [
        asyncio.create_task(
            trickle(bench.service, upload_id, i % chunks, source.chunks[i % chunks], plan)
        )
        for i in range(plan.tricklers)
    ]

    async def established() -> bool:
        held = await bench.gauge("upload_chunks_in_flight")
        return sum(t.done() for t in trickles) + held >= len(trickles)

    async with asyncio.timeout(plan.read_timeout):
        await polled(established)
    log(f"  flood established: {sum(t.done() for t in trickles)} claims answered at once")
    return trickles


async def claim_flood(plan: MemoryPlan, side: Source) -> Scenario:
    """(a) Trickling claims of one job's chunks: the other slot's job while they hold on,
    then that job uploaded by a browser."""
    scenario = new_scenario(plan, "a", f"claim flood: {plan.tricklers} trickling claims")
    source = Source.random(plan.flood_chunks * MANAGER_CHUNK_SIZE)
    async with fresh_service(plan) as bench:
        scenario.idle_rss = current_rss(bench.service.pid)
        await side_baseline(bench, scenario, side, SHORT_SIDE_RUNS)
        async with bench.sampled(scenario):
            slot = bench.scenario_slots[0]
            upload_id = await bench.start(slot, source)
            trickles = await start_flood(bench, upload_id, source)
            scenario.side_loaded = await side_jobs(bench, side, SHORT_SIDE_RUNS)
            scenario.side_runs = SHORT_SIDE_RUNS
            scenario.jobs = [await bench.job(slot, source, plan.tries, upload_id)]
            scenario.trickles = list(await asyncio.gather(*trickles))
        scenario.peak_rss = peak_rss(bench.service.pid)
    return scenario


async def burst(plan: MemoryPlan, side: Source) -> Scenario:
    """(b) Every chunk of one job POSTed at once, retried as the browser does, while Discord
    answers each post slowly."""
    chunks = plan.burst_chunks
    scenario = new_scenario(
        plan,
        "b",
        f"{chunks} concurrent honest chunks of one job, Discord answering each post in "
        f"{plan.burst_answer:g} s",
    )
    source = Source.random(chunks * MANAGER_CHUNK_SIZE)
    async with fresh_service(plan, answer=plan.burst_answer) as bench:
        await under_load(bench, scenario, side, source, chunks)
    return scenario


async def backlog(plan: MemoryPlan, side: Source) -> Scenario:
    """(c) Browsers on several slots sharing one channel that stores a post a second: their
    chunks wait for Discord, and for memory."""
    jobs, chunks = plan.backlog_jobs, plan.backlog_chunks
    scenario = new_scenario(
        plan,
        "c",
        f"{chunks} chunks of {jobs} browsers' jobs waiting for a Discord storing one per "
        f"{plan.backlog_window:g} s in their shared channel",
    )
    source = Source.random(chunks // jobs * MANAGER_CHUNK_SIZE)
    async with fresh_service(plan, jobs, window=plan.backlog_window) as bench:
        await under_load(bench, scenario, side, source, BROWSER_CHUNKS_IN_FLIGHT)
    return scenario


async def under_load(
    bench: Bench, scenario: Scenario, side: Source, source: Source, concurrency: int
) -> None:
    """(b), (c): a job of `source` on each scenario slot, `concurrency` chunks at once, and
    the other slot's job once the first chunk is at Discord."""
    scenario.idle_rss = current_rss(bench.service.pid)
    await side_baseline(bench, scenario, side)
    async with bench.sampled(scenario):
        main = bench.jobs(bench.scenario_slots, source, concurrency, bench.plan.tries)
        await side_during(bench, scenario, side, asyncio.create_task(main), first_post(bench))
    scenario.peak_rss = peak_rss(bench.service.pid)


async def lone_trickle(plan: MemoryPlan) -> Scenario:
    """(d) One trickling client: its claim to its 408, then to no chunk held."""
    scenario = new_scenario(
        plan, "d", f"one client trickling a byte every {plan.trickle_interval:g} s"
    )
    source = Source.random(MANAGER_CHUNK_SIZE)
    async with fresh_service(plan) as bench:
        scenario.idle_rss = current_rss(bench.service.pid)
        upload_id = await bench.start(bench.scenario_slots[0], source)
        async with bench.sampled(scenario):
            alone = await trickle(bench.service, upload_id, 0, source.chunks[0], plan)
        scenario.trickles = [alone]
        answered = time.perf_counter()

        # The buffer is given back as the claim ends, before the endpoint stops counting the
        # POST in upload_chunks_in_flight (endpoint.py): its 0 is the release, seen outside.
        async def released() -> bool:
            return await bench.gauge("upload_chunks_in_flight") == 0

        async with asyncio.timeout(plan.read_timeout):
            await polled(released)
        scenario.release_seconds = time.perf_counter() - answered
        scenario.memory_after = await bench.gauge("upload_chunk_memory_bytes")
        scenario.rss_after = current_rss(bench.service.pid)
        scenario.peak_rss = peak_rss(bench.service.pid)
    return scenario


async def repeated(plan: MemoryPlan, scenario: Callable[[], Awaitable[Scenario]]) -> Scenario:
    """`plan.repeats` runs of a scenario whose other-slot job is timed once per run; the run
    of median ratio, holding them all (a job of two seconds, timed once on a shared machine,
    is at the mercy of its noise)."""
    runs = [await scenario() for _ in range(plan.repeats)]
    if len(runs) == 1:
        return runs[0]
    median = sorted(runs, key=lambda run: run.side_ratio or float("inf"))[len(runs) // 2]
    median.repeats = runs
    return median


async def run_all(plan: MemoryPlan) -> list[Scenario]:
    side = Source.random(plan.side_chunks * MANAGER_CHUNK_SIZE)
    runs = {
        "a": lambda: claim_flood(plan, side),
        "b": lambda: repeated(plan, lambda: burst(plan, side)),
        "c": lambda: repeated(plan, lambda: backlog(plan, side)),
        "d": lambda: lone_trickle(plan),
    }
    scenarios = []
    for key in plan.scenarios:
        started = time.perf_counter()
        log(f"scenario ({key}) ...")
        scenario = await runs[key]()
        log(f"scenario ({key}) took {time.perf_counter() - started:.0f} s")
        for target in scenario.targets():
            log(f"  {target.name}: {target.value} ({target.limit}: {target.verdict})")
        scenarios.append(scenario)
    return scenarios


async def measure(plan: MemoryPlan) -> list[Scenario] | None:
    """Every scenario's figures; None (the failures logged) if the benchmark broke down."""
    try:
        return await run_all(plan)
    except* (BenchFailure, aiohttp.ClientError, TimeoutError) as failures:
        for failure in failures.exceptions:
            log(f"memory benchmark failed: {type(failure).__name__}: {failure}")
    return None


def header(plan: MemoryPlan, seconds: float) -> list[str]:
    in_flight = plan.in_flight or "default (8)"
    return [
        f"One fresh service process per scenario: UPLOAD_SLOTS=2 ({plan.backlog_jobs + 1} in (c)), "
        f"CHUNK_MEMORY_MIB="
        f"{plan.budget_mib}, CLIENT_READ_TIMEOUT={plan.read_timeout:g}, CLIENT_MIN_RATE 16384 "
        f"(default), CHUNKS_IN_FLIGHT_PER_UPLOAD {in_flight}, encryption on, chunks of "
        f"{MANAGER_CHUNK_SIZE} bytes. Trickling clients send 1 byte every "
        f"{plan.trickle_interval:g} s after {FIRST_BYTES} bytes of the file part. The other "
        f"slot's job: {plan.side_chunks} chunks, 5 at once. Took {seconds:.0f} s.",
    ]


def scenario_keys(text: str) -> tuple[str, ...]:
    keys = tuple(text.split(","))
    if not keys or any(key not in "abcd" or not key for key in keys):
        raise argparse.ArgumentTypeError("scenarios are a, b, c, d separated by commas")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=scenario_keys, help="default a,b,c,d")
    parser.add_argument(
        "--in-flight", type=positive_int, help="CHUNKS_IN_FLIGHT_PER_UPLOAD (default: its own)"
    )
    parser.add_argument(
        "--tries", type=positive_int, help=f"tries per chunk in (a), (b), (e) (default {TRIES})"
    )
    parser.add_argument(
        "--burst-answer",
        type=float,
        help="seconds Discord takes to answer each post in (b); 0: at once (default 1)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        help="runs of (b) and (c), each timing the other job once (default 3)",
    )
    parser.add_argument("--smoke", action="store_true", help="smaller counts, shorter timeouts")
    return parser


def plan_from(args: argparse.Namespace) -> MemoryPlan:
    plan = SMOKE if args.smoke else MemoryPlan()
    given = {
        "scenarios": args.scenarios,
        "in_flight": args.in_flight,
        "tries": args.tries,
        "burst_answer": args.burst_answer,
        "repeats": args.repeats,
    }
    return replace(plan, **{name: value for name, value in given.items() if value is not None})


def main(argv: list[str] | None = None) -> int:
    plan = plan_from(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    scenarios = asyncio.run(measure(plan))
    if scenarios is None:
        return 1
    print(memory_report(header(plan, time.perf_counter() - started), scenarios))
    return 1 if any(scenario.failed for scenario in scenarios) else 0


if __name__ == "__main__":
    sys.exit(main())
