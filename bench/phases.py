"""The phases of one run, each over the same chunks: the direct baseline, the transport
floor (the relay) and the service itself, with the jobs' configuration before them."""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from console import BenchFailure
from helpers import Prober, Relay
from measure import LoopLag, ProcessTimes, peak_rss, process_times
from sending import direct_sender, send_all, service_sender
from services import ServiceProcess
from source import Source

from service.local.discord_api import DiscordStandIn
from service.local.manager import ServiceConnection

DIRECT_CHANNEL_BASE = 1200000000000000000
RELAY_CHANNEL = "1300000000000000000"


def bench_cpu() -> float:
    """This process's CPU seconds so far (the browser and the Discord stand-in)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def prepare_job(
    connection: ServiceConnection, token: str, key: bytes | None, channel: str, source: Source
) -> str:
    """Configure a service and start its job; the job's upload id."""
    reply = await connection.configure(token=token, channel_id=channel, crypto_key=key)
    if not reply.get("success"):
        raise BenchFailure(f"the configuration was refused: {reply.get('message')}")
    upload_id, reply = await connection.start_upload(
        size=source.size, name="bench.bin", chunk_size=source.chunk_size
    )
    if not reply.get("success"):
        raise BenchFailure(f"upload-start was refused: {reply.get('message')}")
    return upload_id


async def run_direct(
    discord: DiscordStandIn, token: str, jobs: int, source: Source
) -> tuple[float, list[float], float]:
    """Wall seconds, chunk latencies and the benchmark's CPU seconds for the direct baseline."""
    cpu, started = bench_cpu(), time.perf_counter()
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(
                send_all(
                    len(source.chunks),
                    direct_sender(session, discord, token, str(DIRECT_CHANNEL_BASE + job), source),
                )
                for job in range(jobs)
            )
        )
    seconds = time.perf_counter() - started
    cpu = bench_cpu() - cpu
    for job in range(jobs):  # nothing checks these; keeping them would make the next
        discord.forget(str(DIRECT_CHANNEL_BASE + job))  # phases' stand-in use fresh memory
    return seconds, [latency for result in results for latency in result], cpu


async def run_relay(discord: DiscordStandIn, token: str, jobs: int, source: Source) -> float:
    """The relay's CPU seconds for every job's chunks, sent as to the service; fail unless
    it stored each of them intact (a relay that lost bytes would look cheap)."""
    async with Relay(discord.base_url, token, RELAY_CHANNEL, jobs, source.size) as relay:
        before = process_times(relay.pid)
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(
                *(
                    send_all(len(source.chunks), service_sender(session, relay.address, "", source))
                    for _ in range(jobs)
                )
            )
        cpu = (process_times(relay.pid) - before).cpu
    stored = discord.messages(RELAY_CHANNEL)  # each one's content is its chunk's index
    every_chunk_once_per_job = Counter(int(message.content) for message in stored) == Counter(
        {index: jobs for index in range(len(source.chunks))}
    )
    if not every_chunk_once_per_job or any(
        message.attachments[0].data != source.chunks[int(message.content)] for message in stored
    ):
        raise BenchFailure("the relay did not store every chunk intact")
    discord.forget(RELAY_CHANNEL)
    return cpu


async def upload_job(
    session: aiohttp.ClientSession,
    connection: ServiceConnection,
    upload_id: str,
    source: Source,
) -> tuple[list[float], dict[str, Any]]:
    """Send every chunk to the service; the chunk latencies and the finish packet."""
    sender = service_sender(session, connection.own_address, upload_id, source)
    latencies = await send_all(len(source.chunks), sender)
    return latencies, await connection.next_finish()


@dataclass
class ServicePhase:
    seconds: float
    latencies: list[float]
    times: ProcessTimes  # summed over the service processes, during the upload
    peak_rss: int
    probe_seconds: list[float]
    probe_failures: int
    bench_cpu: float
    bench_lag: float
    finishes: list[dict[str, Any]]  # each job's finish packet, in the order of the jobs


async def run_service_phase(
    services: Sequence[ServiceProcess],
    connections: Sequence[ServiceConnection],
    upload_ids: Sequence[str],
    source: Source,
) -> ServicePhase:
    before = [process_times(service.pid) for service in services]
    async with Prober([service.port for service in services]) as prober, LoopLag() as lag:
        bench_before, started = bench_cpu(), time.perf_counter()
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                *(
                    upload_job(session, connection, upload_id, source)
                    for connection, upload_id in zip(connections, upload_ids, strict=True)
                )
            )
        seconds = time.perf_counter() - started
        bench_spent = bench_cpu() - bench_before
    spent = [process_times(s.pid) - b for s, b in zip(services, before, strict=True)]
    return ServicePhase(
        seconds=seconds,
        latencies=[latency for latencies, _ in results for latency in latencies],
        times=ProcessTimes(
            user=sum(t.user for t in spent),
            system=sum(t.system for t in spent),
            minor_faults=sum(t.minor_faults for t in spent),
        ),
        peak_rss=sum(peak_rss(service.pid) for service in services),
        probe_seconds=prober.seconds,
        probe_failures=prober.failures,
        bench_cpu=bench_spent,
        bench_lag=lag.worst,
        finishes=[finish for _, finish in results],
    )
