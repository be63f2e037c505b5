"""One run of the benchmark for N jobs, and the whole plan's runs.

A run, in this process: a Discord stand-in and a manager stand-in (fresh per run); the
service in its own process(es), each job configured with encryption on and its own channel
and started; then the direct baseline, the relay and the service phase over the same chunks
(phases.py), and every finish packet verified as the manager would (`service.local.verify`:
hash, channel, encryption, count, every attachment's size, the first and last chunk
decrypted)."""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass

from console import BenchFailure, log
from measure import MIB, crypto_floor, current_rss, socket_floor
from phases import prepare_job, run_direct, run_relay, run_service_phase
from plan import Mode, Plan
from results import RunResult, figures
from services import connect_all, log_tails, spawn_services, stop_services
from source import Source

from service.local.discord_api import DiscordStandIn
from service.local.manager import ManagerStandIn
from service.local.verify import attachments_in, finish_problems

SERVICE_CHANNEL_BASE = 1100000000000000000
RUN_TIMEOUT_BASE = 60.0  # seconds one run may take, plus its bytes at SLOWEST_MIB_S, twice
SLOWEST_MIB_S = 10.0


def run_timeout(total_bytes: int) -> float:
    """How long one run may take before the benchmark gives up on it (a hung service)."""
    return RUN_TIMEOUT_BASE + 2 * total_bytes / MIB / SLOWEST_MIB_S  # direct, then service


@dataclass
class Credentials:
    token: str
    password: str
    key: bytes

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(16), os.urandom(32))


@dataclass(frozen=True)
class Floors:
    crypto: float  # CPU s/GiB: SHA-256 + AES-256-GCM in one thread
    socket: float  # CPU s/GiB: the bytes sent and received once over loopback, no HTTP


async def run_once(mode: Mode, jobs: int, source: Source, floors: Floors) -> RunResult:
    credentials = Credentials.fresh()
    channels = [str(SERVICE_CHANNEL_BASE + job) for job in range(jobs)]
    async with (
        DiscordStandIn(token=credentials.token) as discord,
        ManagerStandIn(password=credentials.password) as manager,
    ):
        services = await spawn_services(mode, jobs, manager, credentials.password, discord)
        try:
            connections = await connect_all(mode, manager, services)
            upload_ids = [
                await prepare_job(connection, credentials.token, credentials.key, channel, source)
                for connection, channel in zip(connections, channels, strict=True)
            ]
            idle_rss = sum(current_rss(service.pid) for service in services)
            log(
                f"  {mode}: pids {' '.join(str(s.pid) for s in services)}, "
                f"{len(connections)} job(s) started, idle RSS {idle_rss / MIB:.1f} MiB"
            )
            direct_seconds, direct_latencies, direct_cpu = await run_direct(
                discord, credentials.token, jobs, source
            )
            relay_cpu = await run_relay(discord, credentials.token, jobs, source)
            phase = await run_service_phase(services, connections, upload_ids, source)
        except BaseException as error:
            if not isinstance(error, BenchFailure):  # those name their cause already
                log(log_tails(services))
            raise
        finally:
            await stop_services(services)
        ends = {0, len(source.chunks) - 1}  # decrypting every chunk would double the wait
        problems = [
            f"job {job}: {problem}"
            for job, (finish, channel) in enumerate(zip(phase.finishes, channels, strict=True))
            for problem in finish_problems(
                finish,
                source.chunks,
                channel,
                credentials.key,
                attachments_in(discord, channel),
                compared=ends,
            )
        ]
        problems += [f"the manager dropped a packet: {d.why}" for d in manager.dropped]
    if problems:
        raise BenchFailure("\n".join(problems))
    return RunResult(
        jobs=jobs,
        mode=mode,
        size_per_job=source.size,
        service_seconds=phase.seconds,
        direct_seconds=direct_seconds,
        service_latencies=phase.latencies,
        direct_latencies=direct_latencies,
        service_cpu=phase.times.cpu,
        service_system_cpu=phase.times.system,
        service_minor_faults=phase.times.minor_faults,
        service_peak_rss=phase.peak_rss,
        service_idle_rss=idle_rss,
        probe_seconds=phase.probe_seconds,
        probe_failures=phase.probe_failures,
        floor_per_gib=floors.crypto,
        socket_floor_per_gib=floors.socket,
        relay_cpu=relay_cpu,
        bench_cpu_service=phase.bench_cpu,
        bench_cpu_direct=direct_cpu,
        bench_loop_lag=phase.bench_lag,
        pids=[service.pid for service in services],
    )


async def run_plan(plan: Plan) -> dict[int, list[RunResult]]:
    sources: dict[int, Source] = {}
    results: dict[int, list[RunResult]] = {jobs: [] for jobs in plan.jobs}
    for jobs in plan.jobs:
        size = plan.size_for(jobs)
        if size not in sources:
            sources[size] = Source.random(size)
        source = sources[size]
        for run in range(plan.runs):
            floors = Floors(
                crypto=crypto_floor(source.chunks, os.urandom(32)),
                socket=socket_floor(source.chunks),
            )
            async with asyncio.timeout(run_timeout(jobs * size)):
                result = await run_once(plan.mode, jobs, source, floors)
            results[jobs].append(result)
            log(
                f"{plan.mode}, jobs={jobs} run {run + 1}/{plan.runs}: "
                f"service {result.total_bytes / MIB / result.service_seconds:.0f} MiB/s, "
                f"direct {result.total_bytes / MIB / result.direct_seconds:.0f} MiB/s, "
                f"service CPU {result.service_cpu:.2f} s, "
                f"peak RSS {result.service_peak_rss / MIB:.0f} MiB, "
                f"{figures(result)['rss_per_job_mib']:.0f} MiB/job over idle"
            )
    return results
