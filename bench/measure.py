"""What the benchmark measures with: a process's CPU and RSS (now and peak) from /proc,
percentiles, the crypto and socket floors, the benchmark's own loop lag, and the random file
every job uploads."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from report import GIB

from service.chunks.sealing import ChunkSealer, buffer_size
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.verify import chunks_of

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
        return ProcessTimes(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def process_times(pid: int) -> ProcessTimes:
    """A live process's times from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may hold spaces) start at field 3, "state";
    # minflt, utime and stime are fields 10, 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return ProcessTimes(
        int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS, int(fields[7])
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
    """CPU seconds per GiB for the service's sealing (SHA-256 plus AES-256-GCM) of `chunks`
    into one buffer, in this one thread."""
    buffer = bytearray(buffer_size(max(len(chunk) for chunk in chunks)))
    started = time.thread_time()
    for chunk in chunks:
        sealer = ChunkSealer(len(chunk), key, buffer=buffer)
        sealer.write(chunk)
        sealer.seal()
    return (time.thread_time() - started) / (sum(map(len, chunks)) / GIB)


def socket_floor(chunks: Sequence[memoryview]) -> float:
    """CPU seconds per GiB for sending `chunks` once and receiving them once over a loopback
    TCP connection with blocking calls in two threads: what the kernel alone charges for
    moving the bytes in and out of a process, with no HTTP and no Python per byte."""
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
    return (sender_seconds + receiver_seconds[0]) / (sum(map(len, chunks)) / GIB)


@contextlib.asynccontextmanager
async def meanwhile(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`work` as a task while inside, cancelled on leaving."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def loop_lag(interval: float = 0.02) -> AsyncIterator[list[float]]:
    """This process's own event-loop lag (how late a short sleep wakes up), sampled inside."""
    samples: list[float] = []

    async def sample() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(interval)
            samples.append(max(time.perf_counter() - started - interval, 0.0))

    async with meanwhile(sample()):
        yield samples


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
