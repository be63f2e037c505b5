"""The pacing benchmark: how closely the service keeps to Discord's rate limits.

    python bench/pacing.py [--slots 1,2,4,8] [--chunks 40] [--chunk-kib 64] [--limit 5]
                           [--window 1] [--global-limit 20] [--runs 1] [--smoke]
    python bench/run.py --pacing [the same flags]

Each run, for each number of slots N: a Discord stand-in that enforces a fixed window per
channel (--limit posts per --window seconds: Discord's 5 per 5 s scaled down), a manager
stand-in, and ONE service process with UPLOAD_SLOTS=N. Every slot is configured with the
same bot token, encryption on and a channel of its own, and given one job of --chunks
chunks of --chunk-kib KiB; then N browsers upload at once, 5 chunks in flight each, with
the browser's retries. Every finish packet is verified (every chunk decrypted).

The stand-in also enforces a global limit of --global-limit requests per second for the
token, across channels, and the service is told the same (DISCORD_GLOBAL_RATE): it is the
only process using the token.

Reported per run (pacing_figures.py): each job's time against the bucket's ideal, the
aggregate rate of stored posts against --global-limit, the 429s by scope (from the stand-in;
and as the service's /metrics counted them), the bytes the refused posts carried (the
stand-in counts every body it answered 429), the lag from a job's last stored post to its
finish packet, and the browsers' answers other than 200 by status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from console import BenchFailure, log
from pacing_figures import Limits, PacingRun, pacing_table
from phases import prepare_job
from plan import parse_counts
from prometheus_client.parser import text_string_to_metric_families
from runs import Credentials
from services import ServiceProcess, connect_all, log_tails, spawn_service, stop_services
from source import Source

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import UploadFailed, upload
from service.local.discord_api import DISCORD_EPOCH_MS, DiscordStandIn, Limit
from service.local.manager import ManagerStandIn, ServiceConnection
from service.local.verify import attachments_in, finish_problems

CHANNEL_BASE = 1400000000000000000
RUN_TIMEOUT_BASE = 60.0  # seconds a run may take beyond its ideal
DEFAULTS = {"slots": (1, 2, 4, 8), "chunks": 40, "runs": 1}
SMOKE = {"slots": (1, 2), "chunks": 20, "runs": 1}  # about 10 s


@dataclass(frozen=True)
class PacingPlan:
    slots: tuple[int, ...]
    chunks: int  # per job
    chunk_size: int
    runs: int
    limits: Limits


@dataclass
class JobOutcome:
    seconds: float  # the first POST of the run to this job's finish packet
    finished_at: float  # time.time() when the finish packet arrived
    finish: dict[str, Any]
    statuses: Counter[int]  # the browser's answers, by status


async def run_job(
    session: aiohttp.ClientSession,
    connection: ServiceConnection,
    upload_id: str,
    source: Source,
    started: float,
) -> JobOutcome:
    report = await upload(
        session,
        connection.own_address,
        upload_id,
        source.data,
        source.chunk_size,
        concurrency=BROWSER_CHUNKS_IN_FLIGHT,
    )
    finish = await connection.next_finish()
    return JobOutcome(time.perf_counter() - started, time.time(), finish, report.statuses)


def stored_at(message_id: str) -> float:
    """When the stand-in stored a message (its snowflake's milliseconds), as time.time()."""
    return ((int(message_id) >> 22) + DISCORD_EPOCH_MS) / 1000


async def service_429s(session: aiohttp.ClientSession, service: ServiceProcess) -> int:
    """The 429 answers the service's Discord client counted, from its /metrics."""
    async with session.get(f"http://127.0.0.1:{service.metrics_port}/metrics") as response:
        text = await response.text()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "upload_discord_requests_total"
            and sample.labels.get("status") == "429"
        )
    )


async def run_pacing(plan: PacingPlan, slots: int, source: Source) -> PacingRun:
    credentials = Credentials.fresh()
    channels = [str(CHANNEL_BASE + slot) for slot in range(slots)]
    limits = plan.limits
    async with (
        DiscordStandIn(
            token=credentials.token,
            messages_per_window=limits.per_channel,
            window=limits.window,
            global_limit=Limit(math.floor(limits.global_per_second), 1.0),
        ) as discord,
        ManagerStandIn(password=credentials.password) as manager,
    ):
        service = await spawn_service(
            manager,
            credentials.password,
            discord,
            slots=slots,
            discord_global_rate=math.floor(limits.global_per_second),
        )
        try:
            connections = await connect_all("slots", manager, [service])
            upload_ids = [
                await prepare_job(connection, credentials.token, credentials.key, channel, source)
                for connection, channel in zip(connections, channels, strict=True)
            ]
            async with aiohttp.ClientSession() as session:
                started, started_at = time.perf_counter(), time.time()
                jobs = await asyncio.gather(
                    *(
                        run_job(session, connection, upload_id, source, started)
                        for connection, upload_id in zip(connections, upload_ids, strict=True)
                    )
                )
                seen_429s = await service_429s(session, service)
        except BaseException as error:
            if not isinstance(error, BenchFailure):
                log(log_tails([service]))
            raise
        finally:
            await stop_services([service])
        problems = [
            f"slot {slot}: {problem}"
            for slot, (job, channel) in enumerate(zip(jobs, channels, strict=True))
            for problem in finish_problems(
                job.finish,
                source.chunks,
                channel,
                credentials.key,
                attachments_in(discord, channel),
            )
        ]
        if problems:
            raise BenchFailure("\n".join(problems))
        stored = [discord.messages(channel) for channel in channels]
        return PacingRun(
            slots=slots,
            chunks=len(source.chunks),
            chunk_size=source.chunk_size,
            seconds=max(job.seconds for job in jobs),
            job_seconds=[job.seconds for job in jobs],
            last_posts=[stored_at(messages[-1].id) - started_at for messages in stored],
            finish_lags=[
                job.finished_at - stored_at(messages[-1].id)
                for job, messages in zip(jobs, stored, strict=True)
            ],
            accepted=sum(len(messages) for messages in stored),
            posts=discord.posts,
            channel_429s=discord.rate_limited_by_scope["user"],
            global_429s=discord.rate_limited_by_scope["global"],
            wasted_bytes=discord.wasted_bytes,
            service_429s=seen_429s,
            client_statuses=sum(
                (Counter({s: n for s, n in job.statuses.items() if s != 200}) for job in jobs),
                Counter(),
            ),
        )


async def run_all(plan: PacingPlan) -> list[PacingRun] | None:
    """Every run, or None (the failures logged) if one failed or did not verify."""
    source = Source.random(plan.chunks * plan.chunk_size, plan.chunk_size)
    ideal = plan.limits.ideal(plan.chunks)
    results: list[PacingRun] | None = []
    try:
        for slots in plan.slots:
            for run in range(plan.runs):
                async with asyncio.timeout(RUN_TIMEOUT_BASE + 2 * ideal):
                    result = await run_pacing(plan, slots, source)
                results.append(result)
                log(
                    f"pacing, slots={slots} run {run + 1}/{plan.runs}: jobs "
                    f"{max(result.job_seconds):.2f} s (ideal {ideal:.2f} s), "
                    f"{result.channel_429s} channel and {result.global_429s} global 429s, "
                    f"{result.posts} posts"
                )
    except* (BenchFailure, UploadFailed, aiohttp.ClientError, TimeoutError) as failures:
        for failure in failures.exceptions:
            log(f"pacing benchmark failed: {type(failure).__name__}: {failure}")
        results = None
    return results


def markdown(plan: PacingPlan, runs: list[PacingRun], seconds: float) -> str:
    limits = plan.limits
    return "\n".join(
        [
            "## Pacing benchmark (Discord rate limits)",
            "",
            f"One service process of N slots, one job each in its own channel, one bot token; "
            f"{plan.chunks} chunks of {plan.chunk_size // 1024} KiB per job, "
            f"{BROWSER_CHUNKS_IN_FLIGHT} in flight; per-channel limit {limits.per_channel} "
            f"posts per {limits.window:g} s (fixed window); global limit "
            f"{limits.global_per_second:g} per s for the token. Ideal per job: "
            f"(ceil(chunks / limit) - 1) x window = {limits.ideal(plan.chunks):.2f} s. "
            f"{plan.runs} run(s) per N; took {seconds:.0f} s.",
            "",
            *pacing_table(runs, limits),
            "",
            "- job: the run's first POST to the job's finish packet; last post: to the job's "
            "last stored message (its id's time). x/ideal 1.0 is a perfect pacer (the ideal "
            "leaves out the posts' own transfer); for each job, job = last post + finish lag.",
            "- posts/s: messages stored in all channels / the run's time.",
            "- 429 channel / global: refused by a channel's window / the token's global limit "
            "(the stand-in's counts); 429 seen by service: upload_discord_requests_total"
            '{status="429"} in its /metrics.',
            "- wasted MiB: the bodies of every post the stand-in answered 429 (each carried its "
            "whole chunk).",
            "- finish lag: a job's last stored post (its message id's time) to its finish "
            "packet at the manager.",
        ]
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=parse_counts, help="numbers of slots (default 1,2,4,8)")
    parser.add_argument("--chunks", type=positive_int, help="chunks per job (default 40)")
    parser.add_argument("--chunk-kib", type=positive_int, default=64, help="default 64")
    parser.add_argument("--limit", type=positive_int, default=5, help="posts per window")
    parser.add_argument("--window", type=positive_seconds, default=1.0, help="seconds")
    parser.add_argument(
        "--global-limit",
        type=positive_seconds,
        default=20.0,
        help="posts per second the aggregate rate is compared with (default 20)",
    )
    parser.add_argument("--runs", type=positive_int, help="runs per number of slots")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"quick check: slots {SMOKE['slots']}, {SMOKE['chunks']} chunks (flags still win)",
    )
    return parser


def plan_from(args: argparse.Namespace) -> PacingPlan:
    base = SMOKE if args.smoke else DEFAULTS
    plan = PacingPlan(
        slots=args.slots or base["slots"],
        chunks=args.chunks or base["chunks"],
        chunk_size=args.chunk_kib * 1024,
        runs=args.runs or base["runs"],
        limits=Limits(args.limit, args.window, args.global_limit),
    )
    if plan.chunks <= plan.limits.per_channel:
        raise SystemExit("pacing: --chunks must exceed --limit, or no job waits for a window")
    return plan


def main(argv: list[str] | None = None) -> int:
    plan = plan_from(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    runs = asyncio.run(run_all(plan))
    if runs is None:
        return 1
    print(markdown(plan, runs, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
