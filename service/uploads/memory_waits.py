"""One upload's chunks waiting for memory, each wait ended early when a newer request for the
same chunk takes over its claim, or when the upload ends (its `ending`).

A waiting chunk's body is not read (that is the point of waiting), so the service cannot see
its client give the request up: a browser whose connection dropped sends the chunk again, and
that request takes the waiting one's place rather than a 409 until the wait runs out.
"""

from __future__ import annotations

import asyncio

from .memory import ChunkBuffer, ChunkMemory


class MemoryWaits:
    def __init__(
        self,
        memory: ChunkMemory,
        owner: str,
        *,
        size: int,
        longest: float,
        ending: asyncio.Future[None],
    ) -> None:
        self._memory = memory
        self._owner = owner
        self._size = size  # of each chunk's buffer
        self._longest = longest  # seconds a chunk may wait (CLIENT_READ_TIMEOUT)
        self._ending = ending  # done once the upload ends
        self._ended: dict[int, asyncio.Future[None]] = {}  # each waiting chunk's early end

    async def buffer(self, index: int) -> ChunkBuffer | None:
        """Chunk `index`'s buffer, once its turn comes (`ChunkMemory.take` raises as it
        says); None if its wait was ended early (`take_over`, the upload's end)."""
        loop = asyncio.get_running_loop()
        taking = loop.create_task(
            self._memory.take(self._size, owner=self._owner, wait=self._longest)
        )
        ended = self._ended[index] = loop.create_future()
        buffer = None
        try:
            waits = (taking, ended, self._ending)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            buffer = None if ended.done() or self._ending.done() else taking.result()
            return buffer
        finally:
            if self._ended.get(index) is ended:
                del self._ended[index]
            if buffer is None:  # ended early, refused or cancelled: a buffer that came goes back
                _give_up(taking)

    def take_over(self, index: int) -> bool:
        """End the wait of a request for chunk `index`, if one waits: True if one did (its
        claim is the caller's now)."""
        if (ended := self._ended.pop(index, None)) is None:
            return False
        ended.set_result(None)
        return True


def _give_up(taking: asyncio.Task[ChunkBuffer]) -> None:
    """Stop waiting for a chunk's memory; give its buffer back if it came meanwhile."""
    if not taking.cancel() and not taking.cancelled() and taking.exception() is None:
        taking.result().give_back()
