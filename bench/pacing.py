"""The pacing scenario: how closely the service keeps to Discord's rate limits.

For each number of slots N, each run: a Discord stand-in that enforces a fixed window per
channel (--limit posts per --window seconds: Discord's 5 per 5 s scaled down) and a global
limit of --global-limit requests per second for the token, and ONE service process of N
slots told the same global limit (DISCORD_GLOBAL_RATE). Every slot has the same bot token, a
channel of its own and one job of --chunks chunks; N browsers upload at once, 5 chunks in
flight each, with the browser's retries. Every finish packet is verified.

The ideal is the time a perfect pacer needs for one job of C chunks in a channel allowed L
posts per window of W seconds. The stand-in opens a channel's window with its first post, so
a perfect pacer posts chunk k at floor(k / L) x W, the last one at (ceil(C / L) - 1) x W.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from browsers import upload_jobs
from measure import Source
from report import MIB, BenchFailure, Report, log, machine, table
from scenario import POSITIVE_INT, POSITIVE_SECONDS, Scenario, counts
from services import stage

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import TRIES
from service.local.discord_api import DISCORD_EPOCH_MS, Limit
from service.local.driver import scrape_metrics

CHANNEL_BASE = 1400000000000000000
RUN_TIMEOUT_BASE = 60.0  # seconds a run may take beyond twice its ideal


@dataclass(frozen=True)
class PacingPlan:
    slots: tuple[int, ...]
    chunks: int  # per job
    chunk_size: int
    runs: int
    per_channel: int  # posts per window in one channel
    window: float  # seconds
    global_per_second: int  # the token's global limit, in the stand-in and the service

    def ideal(self) -> float:
        """Seconds a perfect pacer needs for one job (see the module's docstring)."""
        return (math.ceil(self.chunks / self.per_channel) - 1) * self.window


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--slots", type=counts, help="numbers of slots (default 1,2,4,8; smoke 1,2)")
    group.add_argument("--chunks", type=POSITIVE_INT, help="chunks per job (default 40; smoke 20)")
    group.add_argument("--chunk-kib", type=POSITIVE_INT, default=64, help="default 64")
    group.add_argument("--limit", type=POSITIVE_INT, default=5, help="posts per window (5)")
    group.add_argument("--window", type=POSITIVE_SECONDS, default=1.0, help="seconds (1)")
    group.add_argument(
        "--global-limit", type=POSITIVE_INT, default=20, help="requests per second (20)"
    )


def plan_from(args: argparse.Namespace) -> PacingPlan:
    plan = PacingPlan(
        slots=args.slots or ((1, 2) if args.smoke else (1, 2, 4, 8)),
        chunks=args.chunks or (20 if args.smoke else 40),
        chunk_size=args.chunk_kib * 1024,
        runs=args.runs or 1,
        per_channel=args.limit,
        window=args.window,
        global_per_second=args.global_limit,
    )
    if plan.chunks <= plan.per_channel:
        raise SystemExit("pacing: --chunks must exceed --limit, or no job waits for a window")
    return plan


@dataclass
class PacingRun:
    """One run: N slots, one job each in its own channel, all at once."""

    slots: int
    seconds: float  # the first POST to the last finish packet
    job_seconds: list[float]  # each job's first POST to its finish packet
    last_posts: list[float]  # the run's first POST to each job's last stored post
    finish_lags: list[float]  # each job's last stored post to its finish packet
    accepted: int  # messages stored, all channels
    posts: int  # POSTs that reached the messages route, refused ones included
    channel_429s: int  # refused by a channel's window (the stand-in's count)
    global_429s: int  # refused by the token's global limit (the stand-in's count)
    wasted_bytes: int  # bodies of the posts the stand-in answered 429
    service_429s: int  # 429 answers the service's Discord client counted (/metrics)
    client_statuses: Counter[int]  # the browsers' answers other than 200, by status

    def figures(self, plan: PacingPlan) -> dict[str, Any]:
        ideal, rate = plan.ideal(), self.accepted / self.seconds
        return {
            "slots": self.slots,
            "job_s_median": statistics.median(self.job_seconds),
            "job_s_max": max(self.job_seconds),
            "ideal_s": ideal,
            "job_vs_ideal_median": statistics.median(self.job_seconds) / ideal,
            "job_vs_ideal_max": max(self.job_seconds) / ideal,
            "last_post_vs_ideal_max": max(self.last_posts) / ideal,
            "posts_per_s": rate,
            "posts_per_s_vs_global": rate / plan.global_per_second,
            "posts": self.posts,
            "channel_429s": self.channel_429s,
            "global_429s": self.global_429s,
            "service_429s": self.service_429s,
            "wasted_mib": self.wasted_bytes / MIB,
            "finish_lag_ms_max": max(self.finish_lags) * 1000,
            "client_non_200": {str(status): n for status, n in self.client_statuses.items()},
        }


def stored_at(message_id: str) -> float:
    """When the stand-in stored a message (its snowflake's milliseconds), as time.time()."""
    return ((int(message_id) >> 22) + DISCORD_EPOCH_MS) / 1000


async def run_once(plan: PacingPlan, slots: int, source: Source) -> PacingRun:
    limits = {
        "messages_per_window": plan.per_channel,
        "window": plan.window,
        "global_limit": Limit(plan.global_per_second, 1.0),
    }
    channels = [str(CHANNEL_BASE + slot) for slot in range(slots)]
    async with stage(channels, discord=limits, discord_global_rate=plan.global_per_second) as on:
        jobs = await upload_jobs(on, on.slots, source, BROWSER_CHUNKS_IN_FLIGHT, TRIES)
        async with aiohttp.ClientSession() as session:
            metrics = await scrape_metrics(session, on.service.port)
        problems = [f"slot {i}: {p}" for i, job in enumerate(jobs) for p in job.problems]
        if problems := problems + on.dropped():
            raise BenchFailure("\n".join(problems))
        stored = [on.discord.messages(slot.channel) for slot in on.slots]
        last = [stored_at(messages[-1].id) for messages in stored]
        began = min(job.finished_at - job.seconds for job in jobs)  # the first POST, time.time()
        return PacingRun(
            slots=slots,
            seconds=max(job.seconds for job in jobs),
            job_seconds=[job.seconds for job in jobs],
            last_posts=[at - began for at in last],
            finish_lags=[job.finished_at - at for job, at in zip(jobs, last, strict=True)],
            accepted=sum(len(messages) for messages in stored),
            posts=on.discord.posts,
            channel_429s=on.discord.rate_limited_by_scope["user"],
            global_429s=on.discord.rate_limited_by_scope["global"],
            wasted_bytes=on.discord.wasted_bytes,
            service_429s=int(
                sum(
                    value
                    for sample, value in metrics.items()
                    if sample.startswith("upload_discord_requests_total{")
                    and 'status="429"' in sample
                )
            ),
            client_statuses=sum(
                (Counter({s: n for s, n in job.statuses.items() if s != 200}) for job in jobs),
                Counter(),
            ),
        )


def row(f: dict[str, Any], chunks: int) -> list[object]:
    non_200 = ", ".join(f"{s}: {n}" for s, n in sorted(f["client_non_200"].items())) or "none"
    return [
        f["slots"],
        chunks,
        f"{f['job_s_median']:.2f}/{f['job_s_max']:.2f}",
        f"{f['ideal_s']:.2f}",
        f"{f['job_vs_ideal_median']:.2f}/{f['job_vs_ideal_max']:.2f}",
        f"{f['last_post_vs_ideal_max']:.2f}",
        f"{f['posts_per_s']:.1f}",
        f"{f['posts_per_s_vs_global']:.2f}",
        f["channel_429s"],
        f["global_429s"],
        f["service_429s"],
        f"{f['wasted_mib']:.2f}",
        f"{f['finish_lag_ms_max']:.0f}",
        non_200,
    ]


HEADER = [
    "slots",
    "chunks/job",
    "job s p50/max",
    "ideal s",
    "job/ideal p50/max",
    "last post/ideal max",
    "posts/s",
    "posts/s / global",
    "429 channel",
    "429 global",
    "429 seen by service",
    "wasted MiB",
    "finish lag max ms",
    "client non-200",
]


async def run(plan: PacingPlan) -> Report:
    started = time.perf_counter()
    source = Source.random(plan.chunks * plan.chunk_size, plan.chunk_size)
    figures = []
    for slots in plan.slots:
        for run_index in range(plan.runs):
            async with asyncio.timeout(RUN_TIMEOUT_BASE + 2 * plan.ideal()):
                result = await run_once(plan, slots, source)
            figures.append(f := result.figures(plan))
            log(
                f"pacing, slots={slots} run {run_index + 1}/{plan.runs}: jobs "
                f"{f['job_s_max']:.2f} s (ideal {f['ideal_s']:.2f} s), {f['channel_429s']} "
                f"channel and {f['global_429s']} global 429s, {f['posts']} posts"
            )
    lines = [
        f"One service process of N slots, one job each in its own channel, one bot token; "
        f"{plan.chunks} chunks of {plan.chunk_size // 1024} KiB per job, "
        f"{BROWSER_CHUNKS_IN_FLIGHT} in flight; per-channel limit {plan.per_channel} posts "
        f"per {plan.window:g} s (fixed window); global limit {plan.global_per_second} per s "
        f"for the token. Ideal per job: (ceil(chunks / limit) - 1) x window = "
        f"{plan.ideal():.2f} s. {plan.runs} run(s) per N; {machine()}; took "
        f"{time.perf_counter() - started:.0f} s. Every figure: bench/README.md.",
        "",
        *table(HEADER, [row(f, plan.chunks) for f in figures]),
    ]
    return Report("Pacing (Discord's rate limits)", lines, {"runs": figures})


SCENARIO = Scenario(
    name="pacing",
    summary="N slots' jobs against Discord's per-channel and global rate limits",
    add_arguments=add_arguments,
    plan=plan_from,
    run=run,
)
