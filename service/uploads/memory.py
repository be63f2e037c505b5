"""The process's budget for chunk buffers (`CHUNK_MEMORY_MIB`), and the buffers kept for reuse.

A chunk must be held whole before it is posted (the GCM tag precedes the ciphertext), so
chunk buffers are the memory a busy service spends. A chunk reserves its buffer's size from
the budget when it is claimed, before its body is read: a chunk that has begun can always
finish, so chunks half-received can never starve one another. When the budget is spent,
a new chunk waits (its bytes stay in the client and the kernel) until memory frees, and is
refused with `MemoryBusy` (503, Retry-After) if that takes too long.

The budget is shared fairly between uploads, so that one upload's flood cannot slow
another's browser:
- memory that frees goes to the waiting chunk whose upload holds the fewest buffers
  (first come, first served among equals);
- an upload already holding a browser's worth of buffers (5) gets more only from spare
  memory: never while a chunk waits, and never the last 5 buffers' worth (nor those kept
  below), so that another browser's 5 chunks can start at once. Such a burst is refused at
  once;
- each upload under way that holds no buffer has one kept for it: an upload that holds
  buffers takes another only if one stays free for each of them, so that a job starting
  after the others have spent the budget begins at once.

Buffers are anonymous memory maps: the kernel gives their pages only as the chunk's bytes
are written, so a claim that sends little costs little, and an evicted buffer goes back to
the kernel at once. Buffers are reused (a fresh one costs thousands of page faults), but
idle ones count against the budget too and are dropped first when it runs short.
"""

from __future__ import annotations

import asyncio
import itertools
import mmap
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from ..chunks.sealing import buffer_size
from ..jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE
from ..metrics import Metrics
from ..refusals import MemoryBusy

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


@dataclass(eq=False)
class _Waiter:
    owner: str
    size: int
    arrived: int
    granted: asyncio.Future[None]


class ChunkMemory:
    def __init__(self, budget: int, metrics: Metrics) -> None:
        self.budget = budget
        self._metrics = metrics
        self._under_way: set[str] = set()  # owners (upload ids) that began and did not end
        self._reserved = 0  # bytes of buffers handed out
        self._held: Counter[str] = Counter()  # buffers handed out, by owner (upload id)
        self._idle: deque[mmap.mmap] = deque()
        self._waiters: list[_Waiter] = []  # chunks waiting for memory to free
        self._arrivals = itertools.count()
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

    def held_by(self, owner: str) -> int:
        """How many buffers `owner` holds."""
        return self._held[owner]

    def begin(self, owner: str) -> None:
        """`owner`'s upload is under way: while it holds no buffer, one is kept for it."""
        self._under_way.add(owner)

    def end(self, owner: str) -> None:
        """`owner`'s upload ended: nothing is kept for it any more."""
        self._under_way.discard(owner)
        self._grant()

    async def take(self, size: int, *, owner: str, wait: float) -> mmap.mmap:
        """A buffer of `size` bytes for `owner`, waiting up to `wait` seconds for its turn;
        raise `MemoryBusy` if it does not come, or at once for a burst without spare memory."""
        if size > self.budget:
            raise MemoryBusy(f"a {size}-byte chunk exceeds CHUNK_MEMORY_MIB", MEMORY_RETRY_AFTER)
        held = self._held[owner]
        if held >= BROWSER_CHUNKS_IN_FLIGHT:  # a burst: spare memory at once, or nothing
            if self._waiters or not self._allows(owner, size):
                raise MemoryBusy(
                    f"upload {owner} holds {held} chunks in memory already and the rest is "
                    "kept for other uploads; try this one again shortly",
                    MEMORY_RETRY_AFTER,
                )
            self._reserve(size, owner)
        else:
            await self._wait_for_turn(size, owner, wait)
        try:
            return self._reuse(size) or mmap.mmap(-1, size)
        except BaseException:  # the kernel refused the map: the reservation is not lost
            self._release(size, owner)
            raise

    def give(self, buffer: mmap.mmap, *, owner: str, reusable: bool) -> None:
        """Return `owner`'s buffer; keep it for reuse if `reusable` (nothing can still read
        it)."""
        self._release(len(buffer), owner)
        if reusable:
            self._idle.append(buffer)
            self._trim()

    async def _wait_for_turn(self, size: int, owner: str, wait: float) -> None:
        """Queue for memory; return once granted (at once when it is this chunk's turn)."""
        granted = asyncio.get_running_loop().create_future()
        waiter = _Waiter(owner, size, next(self._arrivals), granted)
        self._waiters.append(waiter)
        self._grant()
        if granted.done():
            return
        self._metrics.chunks_waiting_for_memory.inc()
        try:
            async with asyncio.timeout(wait):
                await granted
        except BaseException as error:
            if granted.done() and not granted.cancelled():
                self._release(size, owner)  # granted as the wait ended: pass it on
            if isinstance(error, TimeoutError):
                raise MemoryBusy(BUSY, MEMORY_RETRY_AFTER) from None
            raise
        finally:
            self._metrics.chunks_waiting_for_memory.dec()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _allows(self, owner: str, size: int) -> bool:
        """Whether `owner` may take `size` more bytes now."""
        return self._reserved + size + self._kept_from(owner, size) <= self.budget

    def _reserve(self, size: int, owner: str) -> None:
        self._reserved += size
        self._held[owner] += 1

    def _release(self, size: int, owner: str) -> None:
        self._reserved -= size
        self._held[owner] -= 1
        if not self._held[owner]:
            del self._held[owner]
        self._grant()

    def _grant(self) -> None:
        """Hand free memory to the waiting chunks whose uploads hold the fewest buffers. A
        wait cancelled (its timeout, its client gone) leaves the queue only when its task next
        runs: until then it is skipped, or its grant would be lost with it."""
        self._waiters = [w for w in self._waiters if not w.granted.done()]
        while self._waiters:
            first = min(self._waiters, key=lambda w: (self._held[w.owner], w.arrived))
            if not self._allows(first.owner, first.size):
                return
            self._waiters.remove(first)
            self._reserve(first.size, first.owner)
            first.granted.set_result(None)

    def _kept_from(self, owner: str, size: int) -> int:
        """Memory `owner` may not take: nothing while it holds no buffer (among those, first
        come, first served); else one buffer for each other upload under way that holds
        none, and once it holds a browser's 5, at least 5 buffers' worth."""
        held = self._held[owner]
        if not held:
            return 0
        waiting_for_first = sum(1 for u in self._under_way if u != owner and not self._held[u])
        if held >= BROWSER_CHUNKS_IN_FLIGHT:
            return max(waiting_for_first, BROWSER_CHUNKS_IN_FLIGHT) * size
        return waiting_for_first * size

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
