"""Pacing requests to Discord's rate limits: arithmetic only, no sockets, no clock of its own.

Discord limits a bot token twice (PROTOCOL.md section 3): message posts have a bucket per
(token, channel), a fixed window whose state every answer reports in X-RateLimit-* headers;
and a global limit spans every route, reported by no header at all. The `Pacer` decides,
before a request goes out, whether both have room, from the answers it has seen and the
requests it has in flight, and it never over-grants:

- A window has room for its limit less what this process may have spent in it, and never
  for more than the least `remaining` its answers reported less the requests still in
  flight (which that figure may not include). The first answer of a window therefore
  cannot raise the count above what the service itself has spent, which is where
  discord.py's own buckets over-grant (`adapter.py`).
- A window ends at the earliest time one of its answers said it would: the answer's arrival
  plus its Reset-After, never before Discord's own reset. The requests still in flight then
  are charged to the next window too, since Discord may yet count them there; an answer
  that shows its request counted in an earlier window gives that place back.
- A request counts against the global limit at some moment between its first byte and the
  arrival of its last, so it holds one of the `rate` places per second from its start until
  a second after its last byte was written (plus `COUNT_MARGIN` for the network), or after
  its answer if that comes first: no second of Discord's clock can then see more than `rate`
  of them, whatever the time Discord takes to answer (a post is answered only once its
  attachment is stored). While `careful`, after a global 429 this rule did not prevent, a
  request holds its place until its answer, as Discord may count later than it seems.

The global limit is an interface (`GlobalBudget`): `GlobalLimit` here keeps it within one
process; `shared_limit.SharedGlobalLimit` shares one budget among processes through Redis.
Callers pass `now` (the event loop's monotonic clock) so that tests can drive time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

GLOBAL_PERIOD = 1.0  # Discord's global limit counts requests per second
COUNT_MARGIN = 0.05  # seconds from the last byte written until Discord has it all, at most
SAME_WINDOW = 0.05  # X-RateLimit-Reset values this close name the same window (ms precision)


@dataclass(frozen=True)
class RateHeaders:
    """A bucket's state as one answer reports it, right after its request counted."""

    limit: int
    remaining: int
    reset_after: float  # seconds until the window resets
    reset: float | None  # X-RateLimit-Reset: the reset time by Discord's clock, naming the window

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateHeaders | None:
        """The headers' bucket state; None if they have none (errors, Cloudflare pages).

        `headers` must look names up case-insensitively, as aiohttp's do."""
        try:
            limit = int(headers["X-RateLimit-Limit"])
            remaining = int(headers["X-RateLimit-Remaining"])
            reset_after = float(headers["X-RateLimit-Reset-After"])
        except (KeyError, ValueError):
            return None
        if limit < 1 or remaining < 0 or not (0 <= reset_after < math.inf):
            return None
        try:
            reset: float | None = float(headers.get("X-RateLimit-Reset", ""))
        except ValueError:
            reset = None
        if reset is not None and not math.isfinite(reset):
            reset = None
        return cls(limit, remaining, reset_after, reset)


def _same(a: float, b: float) -> bool:
    return abs(a - b) < SAME_WINDOW


@dataclass
class Bucket:
    """What this process knows of one channel's bucket, and what it has spent of it."""

    limit: int | None = None  # until an answer reports it, one request at a time probes it
    window: float | None = None  # the current window's name, once one of its answers came
    previous: float | None = None  # the name of the window before it
    ends: float | None = None  # when the current window ends, by our clock
    remaining: int | None = None  # the least remaining the current window's answers reported
    spent: int = 0  # requests that may count in the current window
    in_flight: int = 0
    longest: float = 0.0  # the longest Reset-After seen: a window lasts at least that long
    held_until: float = -math.inf  # a 429 asked to wait until then

    def room(self, now: float) -> int:
        return 0 if now < self.held_until else self._window_room(now)

    def take(self) -> None:
        self.spent += 1
        self.in_flight += 1

    def untake(self) -> None:
        """A request granted but never sent."""
        self.spent -= 1
        self.in_flight -= 1

    def answered(self, now: float, headers: RateHeaders | None, *, counted: bool) -> None:
        """A request has its answer (`headers` None: none reported, or no answer at all).

        `counted` is False for a 429: Discord refused the request, so it counts nowhere."""
        self._roll(now)
        self.in_flight -= 1
        if not counted:
            self.spent -= 1
        if headers is None:
            if self.window is None and self.ends is None and self.limit is not None:
                # A window nobody has named yet may have begun by now: let it end at the
                # latest a window could, so that a run of answers without headers cannot
                # hold the channel for ever.
                self.ends = now + self.longest
            return
        self.limit = headers.limit
        self.longest = max(self.longest, headers.reset_after)
        name = headers.reset if headers.reset is not None else now + headers.reset_after
        ends = now + headers.reset_after
        if self.window is not None and self.remaining is not None and _same(name, self.window):
            self.remaining = min(self.remaining, headers.remaining)
            self.ends = ends if self.ends is None else min(self.ends, ends)
        elif self._older(name):
            if counted:  # it counted in a window that has ended, not in this one
                self.spent -= 1
        else:
            if self.window is not None:  # a new window began before the one we knew ended
                self.previous = self.window
                self.spent = self.in_flight + (1 if counted else 0)
            self.window, self.remaining, self.ends = name, headers.remaining, ends

    def hold(self, until: float) -> None:
        self.held_until = max(self.held_until, until)

    def opens_window(self, now: float) -> bool:
        """Whether the next request here opens a window (nothing counts in one yet)."""
        self._roll(now)
        return self.spent == 0

    def wake_at(self, now: float) -> float | None:
        """When the clock alone may give this bucket room; None if only an answer can."""
        times = [t for t in (self.held_until, self.ends) if t is not None and t > now]
        return min(times, default=None)

    def delay(self, now: float) -> float:
        """At least this many seconds before there is room (0: maybe sooner)."""
        waits = [self.held_until - now]
        # A full window with nothing in flight: only its end can give room.
        if self._window_room(now) <= 0 and self.ends is not None and self.in_flight == 0:
            waits.append(self.ends - now)
        return max(0.0, *waits)

    def _window_room(self, now: float) -> int:
        self._roll(now)
        if self.limit is None:
            return 1 - self.in_flight
        room = self.limit - self.spent
        if self.remaining is not None:
            room = min(room, self.remaining - self.in_flight)
        return room

    def _older(self, name: float) -> bool:
        if self.window is not None:
            return name < self.window
        return self.previous is not None and (name < self.previous or _same(name, self.previous))

    def _roll(self, now: float) -> None:
        if self.ends is None or now < self.ends:
            return
        if self.window is not None:
            self.previous = self.window
        self.window = self.ends = self.remaining = None
        self.spent = self.in_flight  # what is still in flight may count in the new window


class GlobalBudget(Protocol):
    """The bot token's global limit as the `Pacer` sees it. Every `take` is followed by one
    `untake` (never sent), or by `written` (its last byte went out: when that frees its place,
    None while it does not) and then `answered`, given what `written` returned."""

    def room(self, now: float) -> int: ...
    def take(self, now: float) -> None: ...
    def untake(self) -> None: ...
    def written(self, now: float) -> float | None: ...
    def answered(self, now: float, *, released: float | None) -> float | None: ...
    def hold(self, until: float) -> None: ...
    def be_careful(self, until: float) -> None: ...
    def want(self, places: int, now: float) -> None: ...
    def wake_at(self, now: float) -> float | None: ...
    def delay(self, now: float) -> float: ...
    def watch(self, changed: Callable[[], None]) -> None: ...


@dataclass
class GlobalLimit:
    """The bot token's global limit kept by this process alone: `rate` places per second."""

    rate: int  # requests per second
    in_flight: int = 0  # requests whose place is held until their last byte or answer
    releases: list[float] = field(default_factory=list)  # a heap: when each held place frees
    held_until: float = -math.inf
    careful_until: float = -math.inf  # until then, a place is held until the answer

    def room(self, now: float) -> int:
        while self.releases and self.releases[0] <= now:  # as `wake_at` adds
            heapq.heappop(self.releases)
        if now < self.held_until:
            return 0
        return self.rate - self.in_flight - len(self.releases)

    def take(self, now: float) -> None:
        self.in_flight += 1

    def untake(self) -> None:
        self.in_flight -= 1

    def written(self, now: float) -> float | None:
        """The request's last byte was written: when its place frees, or None while careful
        (it then frees a second after the answer)."""
        if now < self.careful_until:
            return None
        return self._release(now + COUNT_MARGIN + GLOBAL_PERIOD)

    def answered(self, now: float, *, released: float | None) -> float | None:
        """The request has its answer (or none will come), its place freeing at `released`
        since its last byte (None: not yet); when its place frees now, if that changed.
        Discord counted it by its answer: an answer sooner than the margin frees it sooner."""
        if released is None:
            return self._release(now + GLOBAL_PERIOD)
        if now + GLOBAL_PERIOD >= released:
            return None
        self.releases.remove(released)
        self.releases.append(now + GLOBAL_PERIOD)
        heapq.heapify(self.releases)
        return now + GLOBAL_PERIOD

    def hold(self, until: float) -> None:
        self.held_until = max(self.held_until, until)

    def be_careful(self, until: float) -> None:
        self.careful_until = max(self.careful_until, until)

    def want(self, places: int, now: float) -> None:
        """Only the clock frees places here: nothing to ask for."""

    def wake_at(self, now: float) -> float | None:
        times = [self.held_until, *self.releases[:1]]
        return min((t for t in times if t > now), default=None)

    def delay(self, now: float) -> float:
        if self.room(now) > 0:
            return 0.0
        return max(0.0, self.held_until - now)

    def watch(self, changed: Callable[[], None]) -> None:
        """Only the clock and answers change the room here: the gate watches those."""

    def _release(self, at: float) -> float:
        self.in_flight -= 1
        heapq.heappush(self.releases, at)
        return at


class Pacer:
    """The global limit of one bot token and the buckets of the channels it posts to.

    A request names its channel, or None for one that only the global limit paces (the
    login). Every `try_take` that returns True must be followed by exactly one `untake` (the
    request did not go out), or by at most one `written` and then one `answered`."""

    def __init__(self, global_limit: GlobalBudget) -> None:
        self.global_limit = global_limit
        self.buckets: dict[str, Bucket] = {}

    def try_take(self, channel: str | None, now: float) -> bool:
        bucket = self._bucket(channel)
        if (bucket is not None and bucket.room(now) <= 0) or self.global_limit.room(now) <= 0:
            return False
        self.global_limit.take(now)
        if bucket is not None:
            bucket.take()
        return True

    def waits_for_global(self, channel: str | None, now: float) -> bool:
        """Whether only the global limit holds a request to `channel` back."""
        bucket = self._bucket(channel)
        return bucket is None or bucket.room(now) > 0

    def opens_window(self, channel: str | None, now: float) -> bool:
        """Whether a request to `channel` would open its window, whose time runs from then:
        when the global limit is short, such requests should go before those that fill a
        window already open. In order of arrival alone, each channel's posts go in a burst
        at its window's start, and the last channels' windows open late."""
        bucket = self._bucket(channel)
        return bucket is None or bucket.opens_window(now)

    def untake(self, channel: str | None) -> None:
        self.global_limit.untake()
        if (bucket := self._bucket(channel)) is not None:
            bucket.untake()

    def written(self, now: float) -> float | None:
        """A request's last byte was written: when its global place frees (None: only after
        its answer); give it to `answered`."""
        return self.global_limit.written(now)

    def answered(
        self,
        channel: str | None,
        now: float,
        headers: RateHeaders | None,
        *,
        counted: bool = True,
        released: float | None = None,
    ) -> None:
        self.global_limit.answered(now, released=released)
        if (bucket := self._bucket(channel)) is not None:
            bucket.answered(now, headers, counted=counted)

    def hold(self, channel: str | None, until: float) -> None:
        """Send nothing to `channel` (None: nothing at all) before `until`: a 429 said so."""
        target = self.global_limit if channel is None else self._bucket(channel)
        assert target is not None
        target.hold(until)

    def wake_at(self, channel: str | None, now: float) -> float | None:
        bucket = self._bucket(channel)
        times = [self.global_limit.wake_at(now), bucket.wake_at(now) if bucket else None]
        return min((t for t in times if t is not None), default=None)

    def delay(self, channel: str | None, now: float) -> float:
        """At least this many seconds before `channel` has room (0: maybe sooner)."""
        bucket = self._bucket(channel)
        return max(self.global_limit.delay(now), bucket.delay(now) if bucket else 0.0)

    def _bucket(self, channel: str | None) -> Bucket | None:
        if channel is None:
            return None
        # Not setdefault, which would build a Bucket on every call.
        if (bucket := self.buckets.get(channel)) is None:
            bucket = self.buckets[channel] = Bucket()
        return bucket
