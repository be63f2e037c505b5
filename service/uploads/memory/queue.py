"""Chunks waiting for memory, on the event loop: the policy's turns handed out as futures.

A chunk whose wait ends (its timeout, a newer request for it taking its place, the service
stopping) leaves the line only when its task next runs; until then its future is done, and it
is skipped, never granted: a grant it could not take would be lost with it. A chunk that
leaves ungranted lets the ones behind it take what it was waiting for (a larger buffer than
theirs).
"""

from __future__ import annotations

import asyncio
import itertools

from prometheus_client import Gauge

from .policy import Claim, MemoryPolicy


class MemoryQueue:
    def __init__(self, policy: MemoryPolicy, waiting: Gauge) -> None:
        self._policy = policy
        self._waiting = waiting  # the chunks waiting, for the metrics
        self._waiters: dict[Claim, asyncio.Future[None]] = {}  # each claim's grant
        self._arrivals = itertools.count()

    @property
    def queued(self) -> bool:
        """Whether a chunk waits for memory."""
        return any(not granted.done() for granted in self._waiters.values())

    async def wait(self, owner: str, size: int, longest: float) -> None:
        """Queue for `size` bytes; return once they are reserved for `owner` (at once when it
        is its turn); raise `TimeoutError` after `longest` seconds without."""
        claim = Claim(owner, size, next(self._arrivals))
        granted = self._waiters[claim] = asyncio.get_running_loop().create_future()
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
            if self._waiters.pop(claim, None) is not None:
                self.grant()  # first in line, it may have kept the chunks behind it waiting

    def give(self, owner: str, size: int) -> None:
        """`owner` gives `size` bytes back: they go to the chunks whose turn it is."""
        self._policy.give(owner, size)
        self.grant()

    def grant(self) -> None:
        """Hand free memory to the waiting chunks whose turn it is."""
        while (claim := self._policy.next_turn(self._waiting_claims())) is not None:
            self._policy.take(claim.owner, claim.size)
            self._waiters.pop(claim).set_result(None)

    def _waiting_claims(self) -> list[Claim]:
        """The claims still waiting (one whose wait ended is skipped until it leaves)."""
        return [claim for claim, granted in self._waiters.items() if not granted.done()]
