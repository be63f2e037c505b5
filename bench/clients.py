"""The benchmark's clients that run in processes of their own, so that their work does not share
the measuring process and its loop: the health prober and the browsers. Processes are spawned,
not forked: this one runs an event loop and threads, which a fork would copy half-way."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from measure import Source
from report import BenchFailure
from services import Service, Slot

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import UploadFailed, upload

READY = "ready"
READY_TIMEOUT = 60.0  # seconds a child may take to start (it imports the benchmark)
STOP_TIMEOUT = 15.0  # seconds a child may take to exit once its pipe closes
UPLOAD_TIMEOUT = 300.0  # seconds the browsers may take for their jobs
PROBE_INTERVAL = 0.02  # seconds between two GET /healthz
PROBE_TIMEOUT = 10.0
_CONTEXT = multiprocessing.get_context("spawn")


class Child:
    """`target(pipe, *args)` in a child process while inside: entering waits for its READY
    (sent once it is about to begin, then what it reports), leaving for its exit."""

    def __init__(self, name: str, target: Callable[..., None], *args: object) -> None:
        self.name = name
        self._pipe, self._child_end = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=target, args=(self._child_end, *args))

    async def __aenter__(self) -> Child:
        self._process.start()
        self._child_end.close()
        if await self.receive(READY_TIMEOUT) != READY:
            raise BenchFailure(f"{self.name} did not say it was ready")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._pipe.close()
        await asyncio.to_thread(self._process.join, STOP_TIMEOUT)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join)

    def send(self, message: object) -> None:
        self._pipe.send(message)

    async def receive(self, patience: float) -> Any:
        """The child's next message; BenchFailure if it exits or is silent for `patience` s."""

        def wait() -> Any:
            if not self._pipe.poll(patience):
                raise BenchFailure(f"{self.name} said nothing for {patience:g} s")
            return self._pipe.recv()

        try:
            return await asyncio.to_thread(wait)
        except EOFError:
            await asyncio.to_thread(self._process.join, STOP_TIMEOUT)
            status = self._process.exitcode
            raise BenchFailure(f"{self.name} exited (status {status}); see its output") from None


def probe_health(pipe: Connection, port: int) -> None:
    """(In a child) GET /healthz every PROBE_INTERVAL until the parent says stop; then
    (response times, failed probes). A loop that stalls for 200 ms answers a probe sent
    during the stall up to 200 ms late: the service's loop lag, seen from outside."""
    seconds: list[float] = []
    failures = 0

    def probe(connection: http.client.HTTPConnection) -> float:
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise http.client.HTTPException(f"HTTP {response.status}")
        return time.perf_counter() - started

    probing = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    probe(probing)  # warm-up
    pipe.send(READY)
    while not pipe.poll(PROBE_INTERVAL):
        try:
            seconds.append(probe(probing))
        except (OSError, http.client.HTTPException):
            failures += 1
            probing.close()  # the next request opens a new connection
    pipe.send((seconds, failures))


@dataclass
class Probes:
    seconds: list[float] = field(default_factory=list)  # each GET /healthz's response time
    failures: int = 0


@contextlib.asynccontextmanager
async def health_probed(port: int) -> AsyncIterator[Probes]:
    """`probe_health` on the service's `port` in a child while inside; its probes after."""
    probes = Probes()
    async with Child("the health prober", probe_health, port) as prober:
        yield probes
        prober.send("stop")
        probes.seconds, probes.failures = await prober.receive(STOP_TIMEOUT)


@dataclass
class JobRun:
    """One browser's job: its chunks' answers and whether its finish verified."""

    chunks: int
    concurrency: int
    tries: int
    patient: bool  # it waits out each refusal's Retry-After, unlike the browser
    seconds: float = 0.0  # the browsers' first POST to this job's finish packet
    finished_at: float = 0.0  # time.time() when the finish packet arrived
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # [] once completed and verified
    finish: dict[str, Any] = field(default_factory=dict)  # the job's finish packet

    @property
    def ok(self) -> bool:
        return not self.problems


def upload_in_child(
    pipe: Connection, file: str, size: int, uploads: list[tuple[str, str]], job: JobRun
) -> None:
    """(In a child) upload `file` in chunks of `size` to each (address, upload id) at once,
    as `job` says; then each upload's JobRun, untimed and unverified."""

    async def one(session: aiohttp.ClientSession, address: str, upload_id: str) -> JobRun:
        run = JobRun(job.chunks, job.concurrency, job.tries, job.patient)
        try:
            sent = await upload(
                *(session, address, upload_id, Path(file), size),
                concurrency=job.concurrency,
                tries=job.tries,
                retry_after=job.patient,
            )
            run.attempts, run.statuses = sent.attempts, sent.statuses
        except* UploadFailed as failed:
            run.problems = [str(error) for error in failed.exceptions]
        return run

    async def every() -> list[JobRun]:
        # No cap on connections: 50 jobs keep 250 chunks in flight.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            pipe.send(READY)  # the first POSTs go out now
            return await asyncio.gather(*(one(session, *pair) for pair in uploads))

    pipe.send(asyncio.run(every()))


async def browse(
    on: Service, slots: list[Slot], upload_ids: list[str], source: Source, at_once: int, tries: int
) -> list[JobRun]:
    """The jobs `upload_ids` of `source` on `slots` (of `on` or of services beside it),
    uploaded at once by browsers in a child, each timed from the first POST to its finish
    packet; unverified."""

    async def finished(slot: Slot) -> tuple[dict[str, Any], float, float]:
        return await slot.connection.next_finish(), time.perf_counter(), time.time()

    finishes = [asyncio.create_task(finished(slot)) for slot in slots]
    try:
        uploads = list(zip((slot.address for slot in slots), upload_ids, strict=True))
        # More at once than the browser's 5 would draw refusals that its tries, made at once,
        # would spend in moments: a client sending more is one that reads Retry-After.
        job = JobRun(len(source.chunks), at_once, tries, at_once > BROWSER_CHUNKS_IN_FLIGHT)
        how = (str(on.file_of(source)), source.chunk_size, uploads, job)
        async with Child("the browsers", upload_in_child, *how) as child:
            began = time.perf_counter()
            runs: list[JobRun] = await child.receive(UPLOAD_TIMEOUT)
        for run, waiting in zip(runs, finishes, strict=True):
            if run.ok:
                run.finish, arrived, run.finished_at = await waiting
                run.seconds = arrived - began
    finally:
        for waiting in finishes:
            waiting.cancel()
    return runs


async def upload_jobs(
    on: Service,
    slots: list[Slot],
    source: Source,
    at_once: int,
    tries: int,
    ids: list[str] | None = None,
) -> list[JobRun]:
    """A job of `source` on each slot (started unless their `ids` are given), uploaded at once
    by `browse`, then verified."""
    ids = ids or [await on.start_job(slot, source) for slot in slots]
    runs = await browse(on, slots, ids, source, at_once, tries)
    for run, slot in zip(runs, slots, strict=True):
        if run.ok:
            run.problems = on.problems(slot, run.finish, source)
    return runs
