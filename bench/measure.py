"""What the benchmark measures with: a process's CPU and RSS (now and peak) from /proc,
percentiles, the crypto and socket floors (with the service's sealed layout), the service's
loop lag as a health prober in a process of its own sees it, the benchmark's own loop lag,
and the random file every job uploads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import math
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from children import READY, STOP_TIMEOUT, Child, stopped
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from report import GIB

from service.chunks.sealing import HEADER_SIZE, IV_SIZE, buffer_size
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.verify import chunks_of

PROBE_INTERVAL = 0.02  # seconds between two GET /healthz on one port
PROBE_TIMEOUT = 10.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SOCKET_PIECE = 256 * 1024  # bytes per send and per receive, as asyncio reads


@dataclass(frozen=True)
class ProcessTimes:
    """CPU seconds (all threads) and minor page faults of a process so far."""

    user: float
    system: float
    minor_faults: int

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def __sub__(self, other: ProcessTimes) -> ProcessTimes:
        return ProcessTimes(
            self.user - other.user,
            self.system - other.system,
            self.minor_faults - other.minor_faults,
        )


def process_times(pid: int) -> ProcessTimes:
    """A live process's times from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may hold spaces) start at field 3, "state";
    # minflt, utime and stime are fields 10, 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return ProcessTimes(
        user=int(fields[11]) / _CLOCK_TICKS,
        system=int(fields[12]) / _CLOCK_TICKS,
        minor_faults=int(fields[7]),
    )


def _status_bytes(pid: int, name: str) -> int:
    """A size field (given in kB) of a live process's /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {name} line")


def peak_rss(pid: int) -> int:
    """A live process's peak resident set size (VmHWM) in bytes."""
    return _status_bytes(pid, "VmHWM")


def current_rss(pid: int) -> int:
    """A live process's resident set size now (VmRSS) in bytes."""
    return _status_bytes(pid, "VmRSS")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (fraction in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def crypto_floor(chunks: Sequence[memoryview], key: bytes) -> float:
    """CPU seconds per GiB for SHA-256 plus AES-256-GCM over `chunks`, in this one thread."""
    largest = max((len(chunk) for chunk in chunks), default=0)
    out = memoryview(bytearray(buffer_size(largest)))  # iv | tag | ciphertext, as sealed
    total = sum(len(chunk) for chunk in chunks)
    started = time.thread_time()
    for chunk in chunks:
        hashlib.sha256(chunk).hexdigest()
        encryptor = Cipher(algorithms.AES(key), modes.GCM(os.urandom(IV_SIZE))).encryptor()
        encryptor.update_into(chunk, out[HEADER_SIZE:])
        encryptor.finalize()
        out[IV_SIZE:HEADER_SIZE] = encryptor.tag
    seconds = time.thread_time() - started
    return seconds / (total / GIB) if total else math.nan


def socket_floor(chunks: Sequence[memoryview]) -> float:
    """CPU seconds per GiB for sending `chunks` once and receiving them once over a loopback
    TCP connection with blocking calls in two threads: what the kernel alone charges for
    moving the bytes in and out of a process, with no HTTP and no Python per byte."""
    total = sum(len(chunk) for chunk in chunks)
    receiver_seconds: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def receive() -> None:
            connection, _ = listener.accept()
            buffer = bytearray(_SOCKET_PIECE)
            started = time.thread_time()
            with connection:
                while connection.recv_into(buffer):
                    pass
            receiver_seconds.append(time.thread_time() - started)

        receiver = threading.Thread(target=receive)
        receiver.start()
        with socket.create_connection(listener.getsockname()) as sender:
            started = time.thread_time()
            for chunk in chunks:
                for offset in range(0, len(chunk), _SOCKET_PIECE):
                    sender.sendall(chunk[offset : offset + _SOCKET_PIECE])
            sender_seconds = time.thread_time() - started
        receiver.join()
    return (sender_seconds + receiver_seconds[0]) / (total / GIB) if total else math.nan


class LoopLag:
    """Samples this process's own event-loop lag (how late a short sleep wakes up)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def worst(self) -> float:
        return max(self.samples, default=0.0)

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(max(time.perf_counter() - started - self.interval, 0.0))


def _probe(connection: http.client.HTTPConnection) -> float:
    """One GET /healthz; its response time in seconds. Raise on any failure."""
    started = time.perf_counter()
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise http.client.HTTPException(f"HTTP {response.status}")
    return time.perf_counter() - started


def _probe_until(port: int, stop: threading.Event, seconds: list[float], failed: list[str]) -> None:
    """Probe `port` every PROBE_INTERVAL until `stop`: each response time, or why it failed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    while not stop.wait(PROBE_INTERVAL):
        try:
            seconds.append(_probe(connection))
        except (OSError, http.client.HTTPException) as error:
            failed.append(str(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    connection.close()


def probe_health(pipe: Connection, port: int) -> None:
    """(In a child) GET /healthz every PROBE_INTERVAL, from a thread, until the parent says
    stop; then (response times, failed probes). A loop that stalls for 200 ms answers a probe
    sent during the stall up to 200 ms late: the service's loop lag, seen from outside."""
    _probe(http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT))  # warm-up
    stop, seconds, failed = threading.Event(), [], []
    thread = threading.Thread(target=_probe_until, args=(port, stop, seconds, failed))
    thread.start()
    pipe.send(READY)
    stopped(pipe)
    stop.set()
    thread.join()
    pipe.send((seconds, len(failed)))


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


@dataclass(frozen=True)
class Source:
    """The file a job uploads: random bytes cut into chunks."""

    data: bytes
    chunk_size: int
    chunks: list[memoryview]

    @classmethod
    def random(cls, size: int, chunk_size: int = MANAGER_CHUNK_SIZE) -> Source:
        data = os.urandom(size)
        return cls(data, chunk_size, chunks_of(data, chunk_size))

    @property
    def size(self) -> int:
        return len(self.data)
