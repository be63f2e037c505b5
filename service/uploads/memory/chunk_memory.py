"""The process's chunk memory: the one object uploads take chunk buffers from.

`ChunkMemory` ties the rules of who may take how much (`policy.py`, where they are written),
the chunks waiting their turn (`queue.py`) and the buffers kept for reuse (`pool.py`), and
shows them in the metrics. What `take` hands out, a `ChunkBuffer`, gives itself back.
"""

from __future__ import annotations

import mmap

from ...metrics import Metrics
from ...refusals import MemoryBusy
from .policy import MemoryPolicy
from .pool import BufferPool
from .queue import MemoryQueue

MEMORY_RETRY_AFTER = 5.0
BUSY = "the upload service is busy with other chunks; try this one again shortly"


class ChunkMemory:
    def __init__(self, budget: int, metrics: Metrics) -> None:
        self._policy = MemoryPolicy(budget)
        self._queue = MemoryQueue(self._policy, metrics.chunks_waiting_for_memory)
        self._pool = BufferPool()
        metrics.chunk_memory_budget.set(budget)
        metrics.chunk_memory.set_function(lambda: self.in_use)

    @property
    def budget(self) -> int:
        return self._policy.budget

    @property
    def reserved(self) -> int:
        """Bytes of the buffers chunks hold now."""
        return self._policy.reserved

    @property
    def in_use(self) -> int:
        """Bytes held, idle buffers kept for reuse included."""
        return self._policy.reserved + self._pool.idle_bytes

    def held_by(self, owner: str) -> int:
        """How many buffers `owner` holds."""
        return self._policy.held_by(owner)

    def begin(self, owner: str, size: int) -> None:
        """`owner`'s upload, of buffers of `size` bytes, is under way: while it holds no
        buffer, one is kept for it."""
        self._policy.begin(owner, size)

    def end(self, owner: str) -> None:
        """`owner`'s upload ended: nothing is kept for it any more."""
        self._policy.end(owner)
        self._queue.grant()

    async def take(self, size: int, *, owner: str, wait: float) -> ChunkBuffer:
        """A buffer of `size` bytes for `owner`, waiting up to `wait` seconds for its turn;
        raise `MemoryBusy` if it does not come, or at once for a burst without spare memory."""
        if size > self.budget:
            raise MemoryBusy(f"a {size}-byte chunk exceeds CHUNK_MEMORY_MIB", MEMORY_RETRY_AFTER)
        if self._policy.is_burst(owner):
            if not self._policy.grants_burst(owner, size, queued=self._queue.queued):
                raise MemoryBusy(
                    f"upload {owner} holds {self.held_by(owner)} chunks in memory already and "
                    "the rest is kept for other uploads; try this one again shortly",
                    MEMORY_RETRY_AFTER,
                )
            self._policy.take(owner, size)
        else:
            try:
                await self._queue.wait(owner, size, wait)
            except TimeoutError:
                raise MemoryBusy(BUSY, MEMORY_RETRY_AFTER) from None
        try:
            return ChunkBuffer(self, self._pool.get(size, self._policy.spare), owner)
        except BaseException:  # the kernel refused the map: the reservation is not lost
            self._queue.give(owner, size)
            raise

    def _give(self, taken: ChunkBuffer) -> None:
        self._queue.give(taken.owner, len(taken.buffer))
        if taken.reusable:
            self._pool.keep(taken.buffer, self._policy.spare)


class ChunkBuffer:
    """A buffer `ChunkMemory.take` handed to `owner`; `give_back()`, or the end of its `with`
    block, returns it (once). While something may still read it (a post that failed midway
    may leave a writer behind), `reusable` is False: it is then dropped, never handed out
    again."""

    def __init__(self, memory: ChunkMemory, buffer: mmap.mmap, owner: str) -> None:
        self.buffer = buffer
        self.owner = owner
        self.reusable = True
        self._memory: ChunkMemory | None = memory  # None once given back

    def give_back(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            memory._give(self)
