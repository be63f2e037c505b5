"""Issue 6's benchmark: the upload service's throughput, latency and cost against the network.

    python bench/run.py [--mode slots|processes] [--size MiB] [--multi-size MiB] [--runs N]
                        [--jobs 1,2,4,8] [--json out.json] [--smoke]

Each run, for each number of jobs N, in this process: a Discord stand-in and a manager
stand-in, and the upload service (`python -m service run`, so its RSS and CPU are its own):
with --mode slots (the default) one process with UPLOAD_SLOTS=N, which opens N manager links
on one HTTP port; with --mode processes N processes of one slot each. Either way the manager
sees N services, each configured with encryption on and its own channel, and given one job.
Then:

1. direct baseline: every job's chunks POSTed straight to the Discord stand-in's messages
   route, 5 at once per job, all jobs at once;
2. transport floor: the same chunks POSTed, the same way, to bench/relay.py, which receives,
   parses and re-sends them to the Discord stand-in with no crypto (its CPU per GiB);
3. service: the same chunks POSTed to the services as the browser does (5 at once per job,
   all jobs at once), each job timed from its first POST to its finish packet, which is
   checked against hashlib over the source (and the stored attachments' sizes, and the first
   and last chunk decrypted);
4. crypto floor: SHA-256 plus AES-256-GCM over the same bytes in one thread;
5. socket floor: the same bytes sent and received once over loopback TCP with blocking
   calls in two threads (the kernel's cost of moving them, no HTTP).

While the services work, a separate prober process (bench/probe.py) times `GET /healthz`
on each service port every 20 ms: the service's loop lag as seen from outside. Service CPU
is utime + stime from /proc/<pid>/stat over the upload; peak RSS is VmHWM from
/proc/<pid>/status, idle RSS its VmRSS once the jobs are started, before any chunk.

Reports medians of the runs as markdown on stdout (progress goes to stderr) and, with
--json, every run's figures. Exits 1 if any upload failed or did not verify; missing a
target is reported, not an error: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.exceptions import InvalidTag
from measure import (
    LoopLag,
    ProcessTimes,
    crypto_floor,
    current_rss,
    peak_rss,
    process_times,
    socket_floor,
)
from relay import message_form
from report import (
    CHUNK_SIZE,
    CONCURRENCY,
    MIB,
    MODES,
    Mode,
    RunResult,
    figures,
    medians,
    results_table,
    rss_limit,
    rss_limit_formula,
    targets,
    targets_table,
)

from service.jobs.job import file_hash
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn
from service.local.loopback import free_port
from service.local.manager import ManagerStandIn, ServiceConnection
from service.storage.sealing import open_attachment

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "probe.py"
RELAY = Path(__file__).resolve().parent / "relay.py"
PROBE_INTERVAL = 0.02
SERVICE_CHANNEL_BASE = 1100000000000000000
DIRECT_CHANNEL_BASE = 1200000000000000000
RELAY_CHANNEL = 1300000000000000000
CONNECT_TIMEOUT = 60.0
CONNECT_POLL = 0.5
RUN_TIMEOUT_BASE = 60.0  # seconds one run may take, plus its bytes at SLOWEST_MIB_S, twice
SLOWEST_MIB_S = 10.0
STOP_TIMEOUT = 15.0

DEFAULT_MODE: Mode = "slots"
DEFAULT_SIZE_MIB = 256
DEFAULT_MULTI_SIZE_MIB = 64
SMOKE_SIZE_MIB = 12
SMOKE_JOBS = (1, 2)


def run_timeout(total_bytes: int) -> float:
    """How long one run may take before the benchmark gives up on it (a hung service)."""
    return RUN_TIMEOUT_BASE + 2 * total_bytes / MIB / SLOWEST_MIB_S  # direct, then service


class BenchFailure(Exception):
    """An upload failed or did not verify; the benchmark's figures would be meaningless."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The bytes every job uploads, cut into chunks, with the hashes the service must report."""

    data: bytes
    chunks: list[memoryview]
    digests: list[str]

    @classmethod
    def random(cls, size: int) -> Source:
        data = os.urandom(size)
        view = memoryview(data)
        chunks = [view[start : start + CHUNK_SIZE] for start in range(0, size, CHUNK_SIZE)]
        digests = [hashlib.sha256(chunk).hexdigest() for chunk in chunks]
        return cls(data, chunks, digests)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def file_hash(self) -> str:
        return file_hash(self.digests)


# --- sending chunks, as the browser does ------------------------------------------------


SendOne = Callable[[int], Awaitable[None]]


async def send_all(count: int, send_one: SendOne, concurrency: int = CONCURRENCY) -> list[float]:
    """Send chunks 0..count-1, `concurrency` at once; each one's seconds, POST sent to 200."""
    pending = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for index in pending:
            started = time.perf_counter()
            await send_one(index)
            latencies.append(time.perf_counter() - started)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies


async def post_form(
    session: aiohttp.ClientSession, url: str, form: aiohttp.FormData, what: str, **kwargs: Any
) -> None:
    async with session.post(url, data=form, **kwargs) as response:
        body = await response.read()
        if response.status != 200:
            text = body[:300].decode("utf-8", "replace")
            raise BenchFailure(f"{what}: HTTP {response.status}: {text}")


def service_sender(
    session: aiohttp.ClientSession, address: str, upload_id: str, source: Source
) -> SendOne:
    async def send_one(index: int) -> None:
        form = chunk_form(upload_id, index, source.chunks[index])
        await post_form(session, address, form, f"chunk {index} to {address}")

    return send_one


def direct_sender(
    session: aiohttp.ClientSession,
    discord: DiscordStandIn,
    token: str,
    channel: str,
    source: Source,
) -> SendOne:
    url = f"{discord.base_url}/channels/{channel}/messages"
    headers = {"Authorization": f"Bot {token}"}

    async def send_one(index: int) -> None:
        form = message_form(str(index), source.chunks[index])
        await post_form(session, url, form, f"direct chunk {index}", headers=headers)

    return send_one


# --- service processes ------------------------------------------------------------------


@dataclass
class ServiceProcess:
    process: asyncio.subprocess.Process
    port: int
    log_path: Path
    slots: int  # manager links it opens, each a service with one job to the manager

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/upload"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def spawn_service(
    manager: ManagerStandIn, password: str, discord: DiscordStandIn, log_dir: Path, slots: int
) -> ServiceProcess:
    port = free_port()
    env = {
        **os.environ,
        "UPLOAD_SLOTS": str(slots),
        "MANAGER_ADDRESS": manager.address,
        "SERVICE_PASSWORD": password,
        "OWN_ADDRESS": f"http://127.0.0.1:{port}/upload",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DISCORD_API_BASE": discord.base_url,
        "LOG_LEVEL": "WARNING",
    }
    log_path = log_dir / f"service-{port}.log"
    with log_path.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "run",
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    return ServiceProcess(process, port, log_path, slots)


async def spawn_services(
    mode: Mode,
    jobs: int,
    manager: ManagerStandIn,
    password: str,
    discord: DiscordStandIn,
    log_dir: Path,
) -> list[ServiceProcess]:
    """One process of `jobs` slots (slots mode) or `jobs` processes of one slot each."""
    if mode == "slots":
        return [await spawn_service(manager, password, discord, log_dir, slots=jobs)]
    return [await spawn_service(manager, password, discord, log_dir, slots=1) for _ in range(jobs)]


async def stop_service(service: ServiceProcess) -> None:
    if service.process.returncode is not None:
        return
    service.process.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await service.process.wait()
    except TimeoutError:
        service.process.kill()
        await service.process.wait()


async def connect_all(
    mode: Mode, manager: ManagerStandIn, services: Sequence[ServiceProcess]
) -> list[ServiceConnection]:
    """Every slot's manager connection, one per job. In slots mode, in the order they arrived:
    the one process's slots all announce its one address. In processes mode, in the order of
    `services`, matched by the address each announces."""
    arrived = await await_connections(manager, services)
    if mode == "slots":
        return arrived
    announced = sorted(connection.own_address for connection in arrived)
    if announced != sorted(service.address for service in services):
        raise BenchFailure(f"the services announced {announced}, not one address each")
    by_address = {connection.own_address: connection for connection in arrived}
    return [by_address[service.address] for service in services]


async def await_connections(
    manager: ManagerStandIn, services: Sequence[ServiceProcess]
) -> list[ServiceConnection]:
    """As many manager connections as `services` have slots, in the order they arrived; fail
    fast if a service process exits (a wrong setting, an import error) or one does not
    connect in time."""
    expected = sum(service.slots for service in services)
    arrived: list[ServiceConnection] = []
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while len(arrived) < expected:
        if any(s.process.returncode is not None for s in services) or time.monotonic() > deadline:
            raise not_connected(services, arrived)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_POLL):
                arrived.append(await manager.next_service())
    return arrived


def not_connected(
    services: Sequence[ServiceProcess], arrived: Sequence[ServiceConnection]
) -> BenchFailure:
    """The failure naming the services short of connections, with their logs' tails."""
    missing = [s for s in services if sum(c.own_address == s.address for c in arrived) < s.slots]
    logs = "\n".join(
        f"--- service on port {s.port} ({s.slots} slot(s), exit status "
        f"{s.process.returncode}):\n{s.log_tail()}"
        for s in missing
    )
    expected = sum(s.slots for s in services)
    return BenchFailure(
        f"{expected - len(arrived)} of {expected} manager connection(s) did not arrive\n{logs}"
    )


# --- the health prober ------------------------------------------------------------------


class Prober:
    """bench/probe.py in its own process, timing GET /healthz on each port."""

    def __init__(self, ports: Sequence[int]) -> None:
        self._ports = list(ports)
        self._process: asyncio.subprocess.Process | None = None
        self.seconds: list[float] = []
        self.failures = 0

    async def __aenter__(self) -> Prober:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROBE),
            str(PROBE_INTERVAL),
            *map(str, self._ports),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        ready = await self._process.stdout.readline()
        if ready.strip() != b"ready":
            raise BenchFailure("the health prober did not start")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None
        output, _ = await self._process.communicate(b"stop\n")
        if self._process.returncode != 0 or not output:
            raise BenchFailure("the health prober failed")
        for samples in json.loads(output).values():
            self.seconds += samples["seconds"]
            self.failures += samples["failures"]


# --- the transport floor ----------------------------------------------------------------


class RelayProcess:
    """bench/relay.py in its own process: the chunks received, parsed and re-sent to the
    Discord stand-in with no crypto (see that file)."""

    def __init__(
        self, discord: DiscordStandIn, token: str, channel: str, jobs: int, size: int
    ) -> None:
        self._args = [discord.base_url, token, channel, str(jobs), str(size)]
        self._process: asyncio.subprocess.Process | None = None
        self.address = ""

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def __aenter__(self) -> RelayProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RELAY),
            *self._args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        ready = (await self._process.stdout.readline()).split()
        if len(ready) != 2 or ready[0] != b"ready":
            raise BenchFailure("the relay (bench/relay.py) did not start")
        self.address = f"http://127.0.0.1:{int(ready[1])}/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None
        await self._process.communicate(b"")


async def run_relay(discord: DiscordStandIn, token: str, jobs: int, source: Source) -> float:
    """The relay's CPU seconds for every job's chunks, sent as to the service; fail unless
    it stored each of them intact (a relay that lost bytes would look cheap)."""
    async with RelayProcess(discord, token, str(RELAY_CHANNEL), jobs, source.size) as relay:
        before = process_times(relay.pid)
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(
                *(
                    send_all(len(source.chunks), service_sender(session, relay.address, "", source))
                    for _ in range(jobs)
                )
            )
        cpu = (process_times(relay.pid) - before).cpu
    stored = discord.messages(str(RELAY_CHANNEL))  # each one's content is its chunk's index
    every_chunk_once_per_job = Counter(int(message.content) for message in stored) == Counter(
        {index: jobs for index in range(len(source.chunks))}
    )
    if not every_chunk_once_per_job or any(
        message.attachments[0].data != source.chunks[int(message.content)] for message in stored
    ):
        raise BenchFailure("the relay did not store every chunk intact")
    discord.forget(str(RELAY_CHANNEL))
    return cpu


# --- one run ----------------------------------------------------------------------------


@dataclass
class Credentials:
    token: str
    password: str
    key: bytes

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(16), os.urandom(32))


def bench_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


async def prepare_job(
    connection: ServiceConnection, credentials: Credentials, channel: str, source: Source
) -> str:
    """Configure a service (encryption on) and start its job; the job's upload id."""
    reply = await connection.configure(
        token=credentials.token, channel_id=channel, crypto_key=credentials.key
    )
    if not reply.get("success"):
        raise BenchFailure(f"the configuration was refused: {reply.get('message')}")
    upload_id, reply = await connection.start_upload(
        size=source.size, name="bench.bin", chunk_size=CHUNK_SIZE
    )
    if not reply.get("success"):
        raise BenchFailure(f"upload-start was refused: {reply.get('message')}")
    return upload_id


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


def decrypts_to(key: bytes, attachment: bytes, plain: memoryview) -> bool:
    """Whether `attachment` is iv (16) | tag (16) | AES-256-GCM ciphertext of `plain`."""
    try:
        return open_attachment(key, attachment) == plain
    except InvalidTag:
        return False


def verify_finish(
    finish: dict[str, Any], channel: str, source: Source, discord: DiscordStandIn, key: bytes
) -> list[str]:
    """What is wrong with a finished job, as the manager would see it; [] if nothing."""
    if not finish.get("success"):
        return [f"the upload failed: {finish.get('reason')}"]
    problems = []
    if finish.get("hash") != source.file_hash:
        problems.append("the finish packet's hash does not match hashlib over the source")
    if finish.get("is_encrypted") is not True:
        problems.append("the finish packet says the chunks are not encrypted")
    if finish.get("channel") != channel:
        problems.append(f"the finish packet names channel {finish.get('channel')}, not {channel}")
    messages = finish.get("messages") or []
    if len(messages) != len(source.chunks):
        return [*problems, f"{len(messages)} message ids for {len(source.chunks)} chunks"]
    for index, message_id in enumerate(messages):
        attachment = discord.message(channel, message_id).attachments[0].data
        if len(attachment) != len(source.chunks[index]) + 32:
            problems.append(f"chunk {index}'s attachment has {len(attachment)} bytes")
        elif index in (0, len(messages) - 1) and not decrypts_to(
            key, attachment, source.chunks[index]
        ):
            problems.append(f"chunk {index}'s attachment does not decrypt to the source's bytes")
    return problems


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


async def run_service_phase(
    services: Sequence[ServiceProcess],
    connections: Sequence[ServiceConnection],
    upload_ids: Sequence[str],
    source: Source,
) -> tuple[ServicePhase, list[dict[str, Any]]]:
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
    phase = ServicePhase(
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
    )
    return phase, [finish for _, finish in results]


@dataclass(frozen=True)
class Floors:
    crypto: float  # CPU s/GiB: SHA-256 + AES-256-GCM in one thread
    socket: float  # CPU s/GiB: the bytes sent and received once over loopback, no HTTP


async def run_once(
    mode: Mode, jobs: int, source: Source, floors: Floors, log_dir: Path
) -> RunResult:
    credentials = Credentials.fresh()
    channels = [str(SERVICE_CHANNEL_BASE + job) for job in range(jobs)]
    async with (
        DiscordStandIn(token=credentials.token) as discord,
        ManagerStandIn(password=credentials.password) as manager,
    ):
        services = await spawn_services(mode, jobs, manager, credentials.password, discord, log_dir)
        try:
            connections = await connect_all(mode, manager, services)
            upload_ids = [
                await prepare_job(connection, credentials, channel, source)
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
            phase, finishes = await run_service_phase(services, connections, upload_ids, source)
        except BaseException as error:
            if not isinstance(error, BenchFailure):  # those name their cause already
                for service in services:
                    if tail := service.log_tail():
                        log(f"--- service on port {service.port}:\n{tail}")
            raise
        finally:
            await asyncio.gather(*(stop_service(service) for service in services))
        problems = [
            f"job {job}: {problem}"
            for job, (finish, channel) in enumerate(zip(finishes, channels, strict=True))
            for problem in verify_finish(finish, channel, source, discord, credentials.key)
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


# --- the whole benchmark ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    mode: Mode
    size: int  # bytes per job with 1 job
    multi_size: int  # bytes per job with several jobs
    runs: int
    jobs: tuple[int, ...]

    def size_for(self, jobs: int) -> int:
        return self.size if jobs == 1 else self.multi_size


async def run_plan(plan: Plan, log_dir: Path) -> dict[int, list[RunResult]]:
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
                result = await run_once(plan.mode, jobs, source, floors, log_dir)
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


MODE_SETUP: dict[Mode, str] = {
    "slots": "one service process with UPLOAD_SLOTS=N (N manager links, one job each, "
    "every job's chunks to its one port)",
    "processes": "N service processes of one slot each (one job each, each on its own port)",
}
MODE_SCOPE: dict[Mode, str] = {
    "slots": "are the one service process's",
    "processes": "are summed over the N service processes",
}


def header(plan: Plan, seconds: float) -> list[str]:
    sizes = ", ".join(
        f"{jobs} job(s): {plan.size_for(jobs) / MIB:g} MiB each" for jobs in plan.jobs
    )
    return [
        "## Upload service benchmark",
        "",
        f"Mode: {plan.mode}, {MODE_SETUP[plan.mode]}. "
        f"Medians of {plan.runs} run(s); encryption on; chunks of {CHUNK_SIZE} bytes; "
        f"{CONCURRENCY} chunks in flight per job; file size per job: {sizes}. "
        f"{os.cpu_count()} CPU(s); Python {sys.version.split()[0]}; took {seconds:.0f} s.",
    ]


def notes(mode: Mode) -> list[str]:
    return [
        "- throughput: bytes of all jobs / wall time from the first POST to the last finish "
        "packet (service) or the last 200 (direct: the same chunks straight to the Discord "
        "stand-in, same concurrency). ratio = service / direct.",
        "- chunk p50/p99: one chunk's POST sent to its 200 received, over all jobs' chunks.",
        f"- peak RSS (VmHWM) and CPU (utime+stime during the upload) {MODE_SCOPE[mode]}; "
        "CPU/floor compares CPU s/GiB with SHA-256 + AES-256-GCM over the same bytes in one "
        "thread. sys % is the kernel's share of that CPU; faults/chunk counts minor page "
        "faults (memory touched for the first time) per chunk.",
        "- RSS/job: (peak RSS - idle RSS) / N, idle RSS being VmRSS once the N jobs are "
        "configured and started, before any chunk: the memory one more job costs.",
        "- lag: GET /healthz response time on each service port, probed every 20 ms from a "
        "separate process during the upload (an outside estimate of the event-loop lag).",
    ]


def targets_section(mode: Mode, summary: Sequence[tuple[int, int, dict[str, float]]]) -> list[str]:
    return [
        "### Targets (issue 6)",
        "",
        "Defined for 1 job of 256 MiB on this 2-core machine; shown for every row. The RSS "
        f"limit for N jobs is {rss_limit_formula(mode)}.",
        "",
        *targets_table(summary, mode),
    ]


def markdown(plan: Plan, results: dict[int, list[RunResult]], seconds: float) -> str:
    summary = [(jobs, plan.size_for(jobs), medians(results[jobs])) for jobs in plan.jobs]
    lines = [
        *header(plan, seconds),
        "",
        *results_table(summary),
        "",
        *notes(plan.mode),
        "",
        *targets_section(plan.mode, summary),
    ]
    return "\n".join(lines)


def json_report(plan: Plan, results: dict[int, list[RunResult]], seconds: float) -> dict[str, Any]:
    return {
        "mode": plan.mode,
        "plan": {**asdict(plan), "chunk_size": CHUNK_SIZE, "concurrency": CONCURRENCY},
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "results": [
            {
                "jobs": jobs,
                "size_per_job": plan.size_for(jobs),
                "median": (summary := medians(results[jobs])),
                "targets": [
                    {**asdict(target), "verdict": target.verdict}
                    for target in targets(jobs, plan.mode, summary)
                ],
                "rss_limit_mib": rss_limit(jobs, plan.mode),
                "runs": [figures(run) | {"pids": run.pids} for run in results[jobs]],
            }
            for jobs in plan.jobs
        ],
    }


def parse_jobs(text: str) -> tuple[int, ...]:
    try:
        jobs = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("must be numbers separated by commas") from None
    if not jobs or min(jobs) < 1:
        raise argparse.ArgumentTypeError("every number of jobs must be at least 1")
    return jobs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help="N jobs in one service process of N slots, or in N processes "
        f"(default {DEFAULT_MODE})",
    )
    parser.add_argument("--size", type=float, help=f"MiB for 1 job (default {DEFAULT_SIZE_MIB})")
    parser.add_argument(
        "--multi-size",
        type=float,
        help=f"MiB per job with 2+ jobs (default: --size, at most {DEFAULT_MULTI_SIZE_MIB})",
    )
    parser.add_argument("--runs", type=int, help="runs per number of jobs (default 3)")
    parser.add_argument("--jobs", type=parse_jobs, help="numbers of jobs (default 1,2,4,8)")
    parser.add_argument("--json", type=Path, help="write every figure as JSON to this file")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny run for CI: {SMOKE_SIZE_MIB} MiB, 1 run, jobs {SMOKE_JOBS} (flags still win)",
    )
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the flags ask for; --multi-size defaults to the smaller of --size and 64."""
    size_mib = args.size or (SMOKE_SIZE_MIB if args.smoke else DEFAULT_SIZE_MIB)
    multi_mib = args.multi_size or min(size_mib, DEFAULT_MULTI_SIZE_MIB)
    return Plan(
        mode=args.mode,
        size=max(int(size_mib * MIB), 1),
        multi_size=max(int(multi_mib * MIB), 1),
        runs=args.runs or (1 if args.smoke else 3),
        jobs=args.jobs or (SMOKE_JOBS if args.smoke else (1, 2, 4, 8)),
    )


async def measure_all(plan: Plan) -> dict[int, list[RunResult]] | None:
    """Every run's results; None (the failures logged) if an upload failed or did not verify."""
    results: dict[int, list[RunResult]] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-") as log_dir:
        try:
            results = await run_plan(plan, Path(log_dir))
        except* (BenchFailure, aiohttp.ClientError, TimeoutError) as failures:
            for failure in failures.exceptions:
                log(f"benchmark failed: {type(failure).__name__}: {failure}")
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    plan = plan_from(args)
    started = time.perf_counter()
    results = asyncio.run(measure_all(plan))
    if results is None:
        return 1
    seconds = time.perf_counter() - started
    print(markdown(plan, results, seconds))
    if args.json is not None:
        args.json.write_text(json.dumps(json_report(plan, results, seconds), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
