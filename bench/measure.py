"""What the benchmark measures with: a process's CPU and RSS from /proc, percentiles, the crypto
and socket floors, the benchmark's own loop lag, and the random file every job uploads."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from service.chunks.sealing import ChunkSealer, buffer_size
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.verify import chunks_of

MIB = 1024**2
GIB = 1024**3
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SOCKET_PIECE = 256 * 1024  # bytes per send and per receive, as asyncio reads


@dataclass(frozen=True)
class ProcessTimes:
    """CPU seconds (all threads) and minor page faults of a process so far."""

    user: float
    system: float
    minor_faults: int

    @classmethod
    def of(cls, pid: int) -> ProcessTimes:
        # The fields after the command name (which may hold spaces) start at field 3, "state";
        # minflt, utime and stime are fields 10, 14 and 15.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return cls(int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS, int(fields[7]))

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def __sub__(self, other: ProcessTimes) -> ProcessTimes:
        return ProcessTimes(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def own_cpu() -> float:
    """This process's CPU seconds so far (the benchmark's clients and stand-ins)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss(pid: int, field: str = "VmRSS") -> int:
    """A live process's resident set size in bytes: now (VmRSS) or its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field} line")


def percentile(values: Sequence[float], percent: int) -> float:
    """The `percent`th percentile, linearly interpolated; NaN for no values."""
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def floors(chunks: Sequence[memoryview]) -> tuple[float, float]:
    """The crypto and socket floors of `chunks`, CPU seconds per GiB (bench/README.md)."""
    buffer, key = bytearray(buffer_size(max(len(chunk) for chunk in chunks))), os.urandom(32)
    started = time.thread_time()
    for chunk in chunks:
        sealer = ChunkSealer(len(chunk), key, buffer=buffer)
        sealer.write(chunk)
        sealer.seal()
    crypto, gib = time.thread_time() - started, sum(map(len, chunks)) / GIB
    return crypto / gib, _socket_seconds(chunks) / gib


def _socket_seconds(chunks: Sequence[memoryview]) -> float:
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
    return sender_seconds + receiver_seconds[0]


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
