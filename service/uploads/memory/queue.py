"""Chunks waiting for memory, on the event loop: the policy's turns handed out as futures.

A chunk whose wait ends (its timeout, its client gone, the service stopping) leaves the line
only when its task next runs; until then its future is done, and it is skipped, never granted:
a grant it could not take would be lost with it.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from prometheus_client import Gauge

from .policy import Claim, MemoryPolicy


@dataclass(eq=False)
class _Waiter:
    claim: Claim
    granted: asyncio.Future[None]


class MemoryQueue:
    def __init__(self, policy: MemoryPolicy, waiting: Gauge) -> None:
        self._policy = policy
        self._waiting = waiting  # the chunks waiting, for the metrics
        self._waiters: list[_Waiter] = []
        self._arrivals = itertools.count()

    @property
    def queued(self) -> bool:
        """Whether a chunk waits for memory."""
        return any(not w.granted.done() for w in self._waiters)

    async def wait(self, owner: str, size: int, longest: float) -> None:
        """Queue for `size` bytes; return once they are reserved for `owner` (at once when it
        is its turn); raise `TimeoutError` after `longest` seconds without."""
        granted = asyncio.get_running_loop().create_future()
        waiter = _Waiter(Claim(owner, size, next(self._arrivals)), granted)
        self._waiters.append(waiter)
        self.grant()
        if granted.done():
            return
        self._waiting.inc()
        try:
            async with asyncio.timeout(longest):
                await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self.give(owner, size)  # granted as the wait ended: pass it on
            raise
        finally:
            self._waiting.dec()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def give(self, owner: str, size: int) -> None:
        """`owner` gives `size` bytes back: they go to the chunks whose turn it is."""
        self._policy.give(owner, size)
        self.grant()

    def grant(self) -> None:
        """Hand free memory to the waiting chunks whose turn it is."""
        self._waiters = [w for w in self._waiters if not w.granted.done()]
        while (claim := self._policy.next_turn(w.claim for w in self._waiters)) is not None:
            [waiter] = [w for w in self._waiters if w.claim is claim]
            self._waiters.remove(waiter)
            self._policy.take(claim.owner, claim.size)
            waiter.granted.set_result(None)
