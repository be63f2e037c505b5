"""The fleet scenario: one bot token's global limit across the slots of one process and across
processes sharing it through one real redis-server (bench/README.md, "Fleet")."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import operator
import secrets
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from clients import READY, READY_TIMEOUT, STOP_TIMEOUT, Child, browse, health_probed
from measure import MIB, Source, percentile, rss
from report import BenchFailure, Column, Report, Target, figures_table, log, target, targets_table
from scenario import Scenario, letters, measured, option
from services import fleet, fresh_channels

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import TRIES
from service.local.discord_api import DiscordStandIn, Limit, created_at
from service.local.redis_server import RedisServer, redis_server_path

CHUNK = 64 * 1024  # small chunks: the limits, not the bytes, set the pace
MEMORY_MIB = 32  # CHUNK_MEMORY_MIB of every process
RSS_OVER_IDLE = MEMORY_MIB + 16  # MiB: the peak RSS target, over the idle RSS
MAX_LAG_MS = 100.0
RUN_TIMEOUT_BASE = 120.0  # seconds a run may take beyond twice its ideal


@dataclass(frozen=True)
class Case:
    """`busy[i]` jobs on process i (of `slots` slots, or one per job); Redis stopped for
    `redis_outage` s a third of the way in, back empty; the rest: bench/README.md's table."""

    name: str
    busy: tuple[int, ...]
    rate: int
    per_window: int
    window: float
    answer: float
    chunks: int
    target: float  # rate while busy / the limit, at least (`by_time`: ideal / taken)
    global_429s: float = 0.0  # global 429s at most, as a share of the posts
    slots: int = 0
    redis_outage: float = 0.0
    by_time: bool = False  # the target is on the time both limits allow (the channels' too)

    def slots_of(self, jobs: int) -> int:
        return max(jobs, self.slots, 1)

    def limits(self) -> dict[str, Any]:
        """The Discord stand-in's options."""
        return {
            "messages_per_window": self.per_window,
            "window": self.window,
            "global_limit": Limit(self.rate, 1.0),
            "answer_delay": self.answer,
        }

    def ideal(self) -> float:
        """The seconds the limits allow together: every post at the token's rate, or each
        channel's windows."""
        windows = math.ceil(self.chunks / self.per_window) - 1
        return max(sum(self.busy) * self.chunks / self.rate, windows * self.window)

    def scaled(self, share: float) -> Case:
        """`share` of the chunks per job, at least a window's and one more."""
        return replace(self, chunks=max(self.per_window + 1, round(self.chunks * share)))

    def describe(self) -> str:
        away = f", Redis away {self.redis_outage:g} s" if self.redis_outage else ""
        return (
            f"{self.name}: jobs {'+'.join(map(str, self.busy))} of {self.chunks} chunks on "
            f"{'+'.join(str(self.slots_of(jobs)) for jobs in self.busy)} slots; token "
            f"{self.rate}/s, channels {self.per_window} per {self.window:g} s, answers "
            f"{self.answer:g} s after counting{away}"
        )


CASES = {
    "a": Case("one process, 3 x the limit", (12,), 20, 5, 1.0, 0.5, 30, 0.9),
    "b": Case("one process, answers 1 s", (12,), 20, 5, 1.0, 1.0, 30, 0.9),
    "c": Case("3 processes, jobs on one", (8, 0, 0), 20, 5, 1.0, 0.5, 30, 0.9, 0.01, slots=8),
    "d": Case("3 processes, spread, 6 x the limit", (8, 8, 8), 20, 5, 1.0, 0.5, 15, 0.9, 0.01),
    "e": Case("3 processes, Redis away", (8, 8, 8), 20, 5, 1.0, 0.5, 20, 0.9, 0.01, redis_outage=3),
    "f": Case("one process, 50 slots", (50,), 50, 5, 5.0, 0.2, 12, 0.85, by_time=True),
}


@dataclass(frozen=True)
class FleetPlan:
    fleet_cases: str = option("".join(CASES), letters("".join(CASES)), "which cases")
    share: float = 1.0  # of each case's chunks per job
    runs: int = 1


@dataclass(frozen=True)
class Counted:
    """What the Discord stand-in counted, and the attachments stored in the channels named."""

    posts: int  # messages stored
    rate_limited: dict[str, int]  # 429s by scope: "user" (a channel's window), "global"
    busiest_second: int  # the most requests the global limit counted within one second
    stored_span: float  # seconds from the first message stored in the channels to the last
    stored: dict[str, dict[str, bytes]]  # channel: message id: its attachment


def serve_discord(pipe: Connection, token: str, options: dict[str, Any]) -> None:
    """(In a child: sharing the benchmark's loop, its counting lagged) the Discord stand-in
    with `options`: READY, its base URL, then, once the parent names channels, `Counted`."""

    async def serve() -> Counted:
        async with DiscordStandIn(token=token, **options) as discord:
            pipe.send(READY)
            pipe.send(discord.base_url)
            channels = await asyncio.to_thread(pipe.recv)
            stored = {
                channel: {m.id: m.attachments[0].data for m in discord.messages(channel)}
                for channel in channels
            }
            scopes = dict(discord.rate_limited_by_scope)
            times = [created_at(i).timestamp() for messages in stored.values() for i in messages]
            span = max(times, default=0.0) - min(times, default=0.0)
            return Counted(discord.posts_stored, scopes, discord.busiest_second(), span, stored)

    with contextlib.suppress(EOFError, BrokenPipeError):  # the parent gave up
        pipe.send(asyncio.run(serve()))


async def away(redis: RedisServer | None, after: float, seconds: float) -> None:
    """Stop Redis (if any) `after` s from now for `seconds`, then start it empty, as a pod."""
    if redis is None or not seconds:
        return
    await asyncio.sleep(after)
    await redis.stop()
    await asyncio.sleep(seconds)
    await redis.start()


async def run_once(key: str, case: Case) -> dict[str, Any]:
    token, source = secrets.token_urlsafe(24), Source.random(case.chunks * CHUNK, CHUNK)
    discord = Child("the Discord stand-in", serve_discord, token, case.limits())
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(discord)
        base_url = await discord.receive(READY_TIMEOUT)
        settings = {"discord_global_rate": case.rate, "chunk_memory_mib": MEMORY_MIB}
        channels = [fresh_channels(case.slots_of(jobs)) for jobs in case.busy]
        processes = fleet(base_url, token, channels, **settings)
        services, redis = await stack.enter_async_context(processes)
        busy = zip(services, case.busy, strict=True)
        jobs = [(on, slot) for on, n in busy for slot in on.slots[:n]]
        upload_ids = [await on.start_job(slot, source) for on, slot in jobs]
        idle = [rss(on.pid) for on in services]
        async with contextlib.AsyncExitStack() as probing:
            probed = [health_probed(on.settings.port) for on in services]
            probes = [await probing.enter_async_context(prober) for prober in probed]
            slots = [slot for _, slot in jobs]
            uploads = browse(
                services[0], slots, upload_ids, source, BROWSER_CHUNKS_IN_FLIGHT, TRIES
            )
            outage = away(redis, case.ideal() / 3, case.redis_outage)
            runs, _ = await asyncio.gather(uploads, outage)
        peaks = [rss(on.pid, "VmHWM") for on in services]
        discord.send([slot.channel for slot in slots])
        counted: Counted = await discord.receive(STOP_TIMEOUT)
    for run, (on, slot) in zip(runs, jobs, strict=True):
        if run.ok:
            run.problems = on.problems(slot, run.finish, source, counted.stored[slot.channel].get)
        for problem in run.problems:
            log(f"  the job in channel {slot.channel}: {problem}")
    lags = [probe.seconds for probe in probes]
    p99 = [percentile(lag, 99) * 1000 for lag in lags]
    most = [max(lag, default=math.nan) * 1000 for lag in lags]
    limits = [rss / MIB + RSS_OVER_IDLE for rss in idle]
    taken = max(run.seconds for run in runs)
    return {
        "case": key,
        "jobs": len(jobs),
        "posts": counted.posts,
        "seconds": taken,
        "ideal_s": case.ideal(),
        "ratio": case.ideal() / taken,
        "rate_ratio": (counted.posts - 1) / counted.stored_span / case.rate,  # while storing
        "target": case.target,
        "global_429s": counted.rate_limited["global"],
        "global_429s_allowed": math.floor(case.global_429s * counted.posts),
        "channel_429s": counted.rate_limited["user"],
        "busiest_second": counted.busiest_second,
        "rate": case.rate,
        "failed_jobs": sum(not run.ok for run in runs),
        "loop_lag_p99_ms": p99,
        "loop_lag_max_ms": most,
        "lag_ms": ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(p99, most, strict=True)),
        "probe_failures": [probe.failures for probe in probes],
        "idle_rss_mib": [rss / MIB for rss in idle],
        "peak_rss_mib": [rss / MIB for rss in peaks],
        "rss_limit_mib": limits,
        "rss_mib": ", ".join(f"{p / MIB:.0f}/{b:.0f}" for p, b in zip(peaks, limits, strict=True)),
    }


COLUMNS: list[Column] = [
    ("case", "case", "s"),
    ("jobs", "jobs", "d"),
    ("posts", "posts", "d"),
    ("s", "seconds", ".1f"),
    ("ideal s", "ideal_s", ".1f"),
    ("ideal/s", "ratio", ".2f"),
    ("rate/limit", "rate_ratio", ".2f"),
    ("target", "target", "g"),
    ("429 global/channel", ("global_429s", "channel_429s"), "d"),
    ("busiest second/limit", ("busiest_second", "rate"), "d"),
    ("failed jobs", "failed_jobs", "d"),
    ("lag p99/max ms", "lag_ms", "s"),
    ("peak RSS/limit MiB", "rss_mib", "s"),
]


def targets(f: dict[str, Any]) -> list[Target]:
    by_time = CASES[f["case"]].by_time
    name, key = ("ideal / taken", "ratio") if by_time else ("rate while busy / limit", "rate_ratio")
    growth = max(map(operator.sub, f["peak_rss_mib"], f["idle_rss_mib"]))
    return [
        target(name, f[key], ".3f", ">=", f["target"], "g"),
        target("global 429s", f["global_429s"], "d", "<=", f["global_429s_allowed"], "d"),
        target("channel 429s", f["channel_429s"], "d", "<=", 0, "d"),
        target("failed jobs", f["failed_jobs"], "d", "<=", 0, "d"),
        target("loop lag p99 ms, worst", max(f["loop_lag_p99_ms"]), ".0f", "<", MAX_LAG_MS, "g"),
        target("peak RSS - idle MiB, worst", growth, ".0f", "<=", RSS_OVER_IDLE, "d"),
    ]


async def run(plan: FleetPlan) -> Report:
    if redis_server_path() is None and any(len(CASES[key].busy) > 1 for key in plan.fleet_cases):
        raise BenchFailure("redis-server is not installed (apt install redis-server): c-e need it")
    rows = []
    for key in plan.fleet_cases:
        case = CASES[key].scaled(plan.share)
        once = functools.partial(run_once, key, case)
        seconds = RUN_TIMEOUT_BASE + 2 * case.ideal()
        rows += await measured(f"fleet ({key}) {case.name}", plan.runs, seconds, once, COLUMNS)
    runs = [row | {"targets": targets(row)} for row in rows]
    about = (
        "Each case: a Discord stand-in in a process of its own (each channel's window, the "
        "token's global limit, each post answered a while after it is counted); service "
        f"processes with CHUNK_MEMORY_MIB={MEMORY_MIB}, every slot configured, encryption on, "
        "sharing the token through one redis-server when there are several; jobs of "
        f"{CHUNK // 1024} KiB chunks uploaded by browsers ({BROWSER_CHUNKS_IN_FLIGHT} in "
        f"flight per job, {TRIES} tries) from a process of their own. {plan.runs} run(s) per "
        "case;"
    )
    lines = [
        *(f"- ({key}) {CASES[key].scaled(plan.share).describe()}" for key in plan.fleet_cases),
        "",
        *figures_table(COLUMNS, rows),
        "",
        *targets_table("case", [(row["case"], row["targets"]) for row in runs]),
    ]
    failed = any(row["failed_jobs"] for row in rows)
    title = "Fleet (one bot token, many slots and processes)"
    return Report(title, about, lines, {"runs": runs}, failed)


SCENARIO = Scenario(
    "fleet",
    "one token's global limit across slots and processes sharing it through Redis",
    run,
    FleetPlan(),
    FleetPlan(fleet_cases="ae", share=1 / 3),
)
