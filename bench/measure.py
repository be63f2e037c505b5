"""Measuring helpers: a process's CPU and RSS (now and peak) from /proc, percentiles, the
crypto and socket floors (with the service's sealed layout), and the benchmark's own
event-loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from service.chunks.sealing import HEADER_SIZE, IV_SIZE, buffer_size

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
