"""Holding requests until the pacer has room: the `Pacer`'s decisions, on the event loop.

The requests of one bot token wait in one queue. Whenever an answer or the clock may have
made room, every request that fits now goes: those that open a channel's window first
(`Pacer.opens_window`), then the others, each in order of arrival; a request for a full
channel does not hold up one for another. The
requests that only the global limit holds back are what it is asked for (`want`): a limit
shared through Redis asks Redis for that many places, and calls back when it has news.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from ..refusals import DiscordBusy
from .pacing import Pacer, RateHeaders


@dataclass
class _Waiter:
    channel: str | None
    future: asyncio.Future[None]
    arrival: int


class GivenUp(Exception):
    """The caller gave a request up while it waited for the gate (`enter`'s `unless`)."""


class _Turn(NamedTuple):
    """A channel's place in a pump: first those whose next request opens a window."""

    fills: bool
    arrival: int  # of the channel's first waiting request
    channel: str | None


class PaceGate:
    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self._loop = asyncio.get_running_loop()
        self._queue: list[_Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self._arrivals = 0
        pacer.global_limit.watch(self._pump)

    async def enter(
        self, channel: str | None, max_wait: float, *, unless: asyncio.Future[None] | None = None
    ) -> None:
        """Return once a request to `channel` may go out, its place taken; raise `DiscordBusy`
        after `max_wait` seconds without room, even when the limits are known to need longer:
        the browser tries a chunk again at once, without reading Retry-After, so a refusal at
        once would spend its 10 tries in moments, where waits make them last. Raise `GivenUp`,
        no place taken, as soon as `unless` is done first (the caller no longer wants it)."""
        self._arrivals += 1
        waiter = _Waiter(channel, self._loop.create_future(), self._arrivals)
        self._queue.append(waiter)
        self._pump()
        waits = (waiter.future,) if unless is None else (waiter.future, unless)
        try:
            async with asyncio.timeout(max_wait):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self._abandon(waiter)
            raise DiscordBusy(max(1.0, self.pacer.delay(channel, self._loop.time()))) from None
        except BaseException:
            self._abandon(waiter)
            raise
        if not waiter.future.done():
            self._abandon(waiter)
            raise GivenUp()

    def untake(self, channel: str | None) -> None:
        """A request that `enter` let through did not go out after all."""
        self.pacer.untake(channel)
        self._pump()

    def written(self) -> float | None:
        """A request that went out has written its last byte: when its global place frees
        (None: only after its answer); give it to `answered`."""
        released = self.pacer.written(self._loop.time())
        self._pump()
        return released

    def answered(
        self,
        channel: str | None,
        headers: RateHeaders | None,
        *,
        counted: bool = True,
        released: float | None = None,
    ) -> None:
        """A request that went out has its answer (or none will come)."""
        self.pacer.answered(channel, self._loop.time(), headers, counted=counted, released=released)
        self._pump()

    def hold(self, channel: str | None, seconds: float) -> None:
        """Let nothing go to `channel` (None: nothing at all) for `seconds`."""
        self.pacer.hold(channel, self._loop.time() + seconds)
        self._pump()

    def be_careful(self, seconds: float) -> None:
        """Hold every request's global place until its answer for `seconds`."""
        self.pacer.global_limit.be_careful(self._loop.time() + seconds)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _turn(self, waiter: _Waiter, now: float) -> _Turn:
        opens = self.pacer.opens_window(waiter.channel, now)
        return _Turn(not opens, waiter.arrival, waiter.channel)

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.future.done() and not waiter.future.cancelled():
            self.untake(waiter.channel)  # let through just as its caller gave up
        else:
            waiter.future.cancel()
            self._pump()

    def _pump(self) -> None:
        now = self._loop.time()
        channels: dict[str | None, deque[_Waiter]] = {}  # each channel's waiters, in order
        for waiter in self._queue:
            if not waiter.future.done():
                channels.setdefault(waiter.channel, deque()).append(waiter)
        turns = [self._turn(waiting[0], now) for waiting in channels.values()]
        heapq.heapify(turns)
        while turns and self.pacer.global_limit.room(now) > 0:
            turn = heapq.heappop(turns)
            waiting = channels[turn.channel]
            if (current := self._turn(waiting[0], now)) != turn:
                heapq.heappush(turns, current)  # one of its channel went first
            elif self.pacer.try_take(turn.channel, now):
                waiting.popleft().future.set_result(None)
                if waiting:
                    heapq.heappush(turns, self._turn(waiting[0], now))
        self._queue = [waiter for waiter in self._queue if not waiter.future.done()]
        wanted = sum(  # requests only the global limit holds back
            len(waiting) for channel, waiting in channels.items()
            if waiting and self.pacer.waits_for_global(channel, now)
        )  # fmt: skip
        self.pacer.global_limit.want(wanted, now)
        self.close()
        wakes = [
            self.pacer.wake_at(channel, now) for channel, waiting in channels.items() if waiting
        ]
        wake = min((t for t in wakes if t is not None), default=None)
        if wake is not None:
            self._timer = self._loop.call_at(wake, self._pump)
