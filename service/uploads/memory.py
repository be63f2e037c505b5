"""The process's budget for chunk buffers (`CHUNK_MEMORY_MIB`), and the buffers kept for reuse.

A chunk must be held whole before it is posted (the GCM tag precedes the ciphertext), so
chunk buffers are the memory a busy service spends. A chunk reserves its buffer's size from
the budget when it is claimed, before its body is read: a chunk that has begun can always
finish, so chunks half-received can never starve one another. When the budget is spent,
a new chunk waits (its bytes stay in the client and the kernel) until memory frees, and is
refused with `MemoryBusy` (503, Retry-After) if that takes too long.

Buffers are anonymous memory maps: the kernel gives their pages only as the chunk's bytes
are written, so a claim that sends little costs little, and an evicted buffer goes back to
the kernel at once. Buffers are reused (a fresh one costs thousands of page faults), but
idle ones count against the budget too and are dropped first when it runs short.
"""

from __future__ import annotations

import asyncio
import mmap
from collections import deque
from pathlib import Path

from ..jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from ..metrics import Metrics
from ..refusals import MemoryBusy
from ..storage.sealing import buffer_size

MIB = 1024 * 1024
BASELINE = 96 * MIB  # what the process needs besides chunk buffers (idle RSS is about 60 MiB)
CGROUP_SHARE = 0.8  # of the memory limit left after the baseline
MEMORY_RETRY_AFTER = 5.0
BUSY = "the upload service is busy with other chunks; try this one again shortly"
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def cgroup_memory_limit(paths: tuple[Path, ...] = _CGROUP_LIMITS) -> int | None:
    """The memory limit of the cgroup this process runs in, if it has one."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 says "no limit" with a huge number
            return int(text)
    return None


def default_budget(slots: int, limit: int | None) -> int:
    """Every slot's browser sending its 5 chunks at once; under a memory limit, at most
    CGROUP_SHARE of what the baseline leaves, and never less than one chunk."""
    one_chunk = buffer_size(MANAGER_CHUNK_SIZE)
    wanted = slots * BROWSER_CHUNKS_IN_FLIGHT * one_chunk
    if limit is None:
        return wanted
    return max(one_chunk, min(wanted, int((limit - BASELINE) * CGROUP_SHARE)))


class ChunkMemory:
    def __init__(self, budget: int, metrics: Metrics) -> None:
        self.budget = budget
        self._metrics = metrics
        self._reserved = 0  # bytes of buffers handed out
        self._idle: deque[mmap.mmap] = deque()
        self._waiters: list[asyncio.Future[None]] = []  # chunks waiting for memory to free
        metrics.chunk_memory_budget.set(budget)
        metrics.chunk_memory.set_function(lambda: self.in_use)

    @property
    def reserved(self) -> int:
        """Bytes of the buffers chunks hold now."""
        return self._reserved

    @property
    def in_use(self) -> int:
        """Bytes held, idle buffers kept for reuse included."""
        return self._reserved + sum(len(buffer) for buffer in self._idle)

    async def take(self, size: int, wait: float) -> mmap.mmap:
        """A buffer of `size` bytes, waiting up to `wait` seconds for the budget to allow it;
        raise `MemoryBusy` if it does not."""
        if size > self.budget:
            raise MemoryBusy(f"a {size}-byte chunk exceeds CHUNK_MEMORY_MIB", MEMORY_RETRY_AFTER)
        if self._reserved + size > self.budget:
            self._metrics.chunks_waiting_for_memory.inc()
            try:
                async with asyncio.timeout(wait):
                    await self._freeing(size)
            except TimeoutError:
                raise MemoryBusy(BUSY, MEMORY_RETRY_AFTER) from None
            finally:
                self._metrics.chunks_waiting_for_memory.dec()
        self._reserved += size
        return self._reuse(size) or mmap.mmap(-1, size)

    def give(self, buffer: mmap.mmap, reusable: bool) -> None:
        """Return a buffer; keep it for reuse if `reusable` (nothing can still read it)."""
        self._reserved -= len(buffer)
        if reusable:
            self._idle.append(buffer)
            self._trim()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _freeing(self, size: int) -> None:
        """Return once `size` more bytes fit in the budget; woken by each `give`."""
        while self._reserved + size > self.budget:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)

    def _reuse(self, size: int) -> mmap.mmap | None:
        """An idle buffer of `size`, after dropping idle ones the budget no longer allows."""
        found = next((b for b in self._idle if len(b) == size), None)
        if found is not None:
            self._idle.remove(found)
        self._trim()
        return found

    def _trim(self) -> None:
        while self._idle and self.in_use > self.budget:
            self._idle.popleft()  # unmapped once the last view of it is gone
