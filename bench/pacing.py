"""The pacing scenario: N slots' jobs against Discord's per-channel and global rate limits
(bench/README.md, "Pacing")."""

from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from clients import upload_jobs
from measure import MIB, Source
from report import Column, Report, Target, figures_table, tally, target, targets_table
from scenario import POSITIVE_INT, POSITIVE_SECONDS, Scenario, counts, measured, option
from services import fresh_channels, stage

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import TRIES
from service.local.discord_api import Limit, created_at

RUN_TIMEOUT_BASE = 60.0  # seconds a run may take beyond twice its ideal
MAX_JOB_VS_IDEAL = 1.05
MAX_FINISH_LAG_MS = 50.0
GLOBAL_429S_SHARE = 0.01  # of the posts, at most, when the slots offer the limit or more
MIN_RATE_VS_GLOBAL = 0.9


@dataclass(frozen=True)
class PacingPlan:
    slots: tuple[int, ...] = option((1, 2, 4, 8), counts, "numbers of slots")
    chunks: int = option(40, POSITIVE_INT, "chunks per job")
    chunk_kib: int = option(64, POSITIVE_INT, "KiB per chunk")
    runs: int = 1
    limit: int = option(5, POSITIVE_INT, "posts per window in one channel")
    window: float = option(1.0, POSITIVE_SECONDS, "seconds")
    global_limit: int = option(20, POSITIVE_INT, "the token's requests per second")

    def __post_init__(self) -> None:
        if self.chunks <= self.limit:
            raise SystemExit("pacing: --chunks must exceed --limit, or no job waits for a window")

    def ideal(self) -> float:
        """Seconds a perfect pacer needs for one job."""
        return (math.ceil(self.chunks / self.limit) - 1) * self.window

    def within_global(self, slots: int) -> bool:
        """Whether `slots` channels' windows together offer less than the global limit."""
        return slots * self.limit / self.window < self.global_limit


async def run_once(plan: PacingPlan, slots: int, source: Source) -> dict[str, Any]:
    limits = {
        "messages_per_window": plan.limit,
        "window": plan.window,
        "global_limit": Limit(plan.global_limit, 1.0),
    }
    channels = fresh_channels(slots)
    async with stage(channels, discord=limits, discord_global_rate=plan.global_limit) as on:
        jobs = await upload_jobs(on, on.slots, source, BROWSER_CHUNKS_IN_FLIGHT, TRIES)
        metrics = await on.metrics()
        on.check([job.problems for job in jobs], "slot")
        stored = [on.discord.messages(slot.channel) for slot in on.slots]
        discord = on.discord
    last_posts = [created_at(messages[-1].id).timestamp() for messages in stored]
    began = min(job.finished_at - job.seconds for job in jobs)  # the first POST, time.time()
    seconds, ideal = [job.seconds for job in jobs], plan.ideal()
    rate = sum(len(messages) for messages in stored) / max(seconds)
    finish_lag = max(job.finished_at - at for job, at in zip(jobs, last_posts, strict=True))
    non_200 = sum((job.statuses for job in jobs), Counter())
    del non_200[200]
    return {
        "slots": slots,
        "chunks": plan.chunks,
        "job_s_median": statistics.median(seconds),
        "job_s_max": max(seconds),
        "ideal_s": ideal,
        "job_vs_ideal_median": statistics.median(seconds) / ideal,
        "job_vs_ideal_max": max(seconds) / ideal,
        "last_post_vs_ideal_max": (max(last_posts) - began) / ideal,
        "posts_per_s": rate,
        "posts_per_s_vs_global": rate / plan.global_limit,
        "posts": discord.posts,
        "channel_429s": discord.rate_limited_by_scope["user"],
        "global_429s": discord.rate_limited_by_scope["global"],
        "service_429s": sum(
            value
            for sample, value in metrics.items()
            if sample.startswith("upload_discord_requests_total{") and 'status="429"' in sample
        ),
        "wasted_mib": discord.wasted_bytes / MIB,
        "finish_lag_ms_max": finish_lag * 1000,
        "client_non_200": tally(non_200) or "none",
        "client_non_200_count": sum(non_200.values()),
    }


COLUMNS: list[Column] = [
    ("slots", "slots", "d"),
    ("chunks/job", "chunks", "d"),
    ("job s p50/max", ("job_s_median", "job_s_max"), ".2f"),
    ("ideal s", "ideal_s", ".2f"),
    ("job/ideal p50/max", ("job_vs_ideal_median", "job_vs_ideal_max"), ".2f"),
    ("last post/ideal max", "last_post_vs_ideal_max", ".2f"),
    ("posts/s", "posts_per_s", ".1f"),
    ("posts/s / global", "posts_per_s_vs_global", ".2f"),
    ("429 channel", "channel_429s", "d"),
    ("429 global", "global_429s", "d"),
    ("429 seen by service", "service_429s", ".0f"),
    ("wasted MiB", "wasted_mib", ".2f"),
    ("finish lag max ms", "finish_lag_ms_max", ".0f"),
    ("client non-200", "client_non_200", "s"),
]


def targets(plan: PacingPlan, f: dict[str, Any]) -> list[Target]:
    """A run's targets: a perfect pacer's while the slots offer less than the global limit,
    the limit's use beyond it (bench/README.md, "The ideal")."""
    if not plan.within_global(f["slots"]):
        allowed = math.floor(GLOBAL_429S_SHARE * f["posts"])
        return [
            target("global 429s", f["global_429s"], "d", "<=", allowed, "d"),
            target("posts/s / global", f["posts_per_s_vs_global"], ".2f", ">=", MIN_RATE_VS_GLOBAL),
        ]
    refused = f["channel_429s"] + f["global_429s"]
    return [
        target("429s, channel + global", refused, "d", "<=", 0, "d"),
        target("job/ideal max", f["job_vs_ideal_max"], ".2f", "<=", MAX_JOB_VS_IDEAL, "g"),
        target("finish lag max ms", f["finish_lag_ms_max"], ".0f", "<=", MAX_FINISH_LAG_MS, "g"),
        target("client non-200", f["client_non_200_count"], "d", "<=", 0, "d"),
    ]


async def run(plan: PacingPlan) -> Report:
    source = Source.random(plan.chunks * plan.chunk_kib * 1024, plan.chunk_kib * 1024)
    figures, limit = [], RUN_TIMEOUT_BASE + 2 * plan.ideal()
    for slots in plan.slots:
        once = functools.partial(run_once, plan, slots, source)
        figures += await measured(f"pacing, slots={slots}", plan.runs, limit, once, COLUMNS)
    about = (
        f"One service process of N slots, one job each in its own channel, one bot token; "
        f"{plan.chunks} chunks of {plan.chunk_kib} KiB per job, "
        f"{BROWSER_CHUNKS_IN_FLIGHT} in flight; per-channel limit {plan.limit} posts "
        f"per {plan.window:g} s (fixed window); global limit {plan.global_limit} per s "
        f"for the token. Ideal per job: (ceil(chunks / limit) - 1) x window = "
        f"{plan.ideal():.2f} s. {plan.runs} run(s) per N;"
    )
    runs = [row | {"targets": targets(plan, row)} for row in figures]
    lines = [
        *figures_table(COLUMNS, figures),
        "",
        f"Targets: a perfect pacer's while N x {plan.limit} per {plan.window:g} s is less than "
        f"the global limit, {plan.global_limit} per s; from there on, the limit's use:",
        "",
        *targets_table("slots", [(row["slots"], row["targets"]) for row in runs]),
    ]
    return Report("Pacing (Discord's rate limits)", about, lines, {"runs": runs})


SCENARIO = Scenario(
    "pacing",
    "N slots' jobs against Discord's per-channel and global rate limits",
    run,
    PacingPlan(),
    PacingPlan(slots=(1, 4), chunks=20),  # 4 offer the global limit: its targets too
)
