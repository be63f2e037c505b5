"""Discord's rate limits as pure fixed-window arithmetic: no sockets, no clock of its own.

Discord judges a request twice: first against the bot token's global limit (every route
counts), then against the route's bucket, one per (token, channel). Both are fixed windows: a
window opens with the first request after the previous one ended and admits `per_window`
requests until it ends. Callers pass `now` (time.monotonic()) so tests can drive time.
"""

import bisect
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

# What an unlimited bucket advertises: remaining never drops, so discord.py never throttles.
UNLIMITED = 10_000
# The window an unlimited bucket reports in X-RateLimit-Reset-After.
DEFAULT_WINDOW = 5.0


def busiest_second(counted: Sequence[float]) -> int:
    """The most of the sorted times `counted` within any one second: a sliding window, stricter
    than Discord's fixed windows, wherever they start."""
    return max((bisect.bisect_left(counted, t + 1.0) - i for i, t in enumerate(counted)), default=0)


class Scope(StrEnum):
    """X-RateLimit-Scope of a 429: which limit refused the request."""

    USER = "user"  # the route's bucket of this bot token
    GLOBAL = "global"  # the bot token's limit across all routes


@dataclass(frozen=True)
class Limit:
    """At most `per_window` requests per fixed window of `window` seconds."""

    per_window: int
    window: float = DEFAULT_WINDOW


@dataclass(frozen=True)
class BucketState:
    """What the X-RateLimit-* headers of an answer report, right after its request counted."""

    limit: int
    remaining: int
    reset_after: float  # seconds until the window resets


@dataclass(frozen=True)
class Verdict:
    """The judgement of one request: admitted when `refused_by` is None."""

    refused_by: Scope | None
    retry_after: float = 0.0
    bucket: BucketState | None = None  # the route bucket, when the route has one


@dataclass
class _Window:
    ends: float
    used: int = 0


class FixedWindows:
    """Fixed windows of one limit, one per key; `limit=None` admits everything."""

    def __init__(self, limit: Limit | None) -> None:
        self._limit = limit
        self._windows: dict[Hashable, _Window] = {}

    def take(self, key: Hashable, now: float) -> tuple[bool, BucketState]:
        """Count one request against key's window if there is room; whether it was admitted."""
        length = DEFAULT_WINDOW if self._limit is None else self._limit.window
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            window = self._windows[key] = _Window(ends=now + length)
        reset_after = max(window.ends - now, 0.0)
        if self._limit is None:
            return True, BucketState(UNLIMITED, UNLIMITED - 1, reset_after)
        admitted = window.used < self._limit.per_window
        if admitted:
            window.used += 1
        remaining = self._limit.per_window - window.used
        return admitted, BucketState(self._limit.per_window, remaining, reset_after)


class RateLimits:
    """The global limit per token, then a bucket per (token, channel) for each limited route."""

    def __init__(self, global_limit: Limit | None, routes: Mapping[str, Limit | None]) -> None:
        self._global = FixedWindows(global_limit)
        self._has_global = global_limit is not None
        self._routes = {route: FixedWindows(limit) for route, limit in routes.items()}

    def judge(self, token: str, route: str | None, channel_id: str, now: float) -> Verdict:
        """Count one request; route None is a route without a bucket of its own here.

        A request the global limit refuses does not count against its route; one the route
        refuses has still counted against the global limit, as on Discord.
        """
        if self._has_global:
            admitted, state = self._global.take(token, now)
            if not admitted:
                return Verdict(Scope.GLOBAL, retry_after=state.reset_after)
        if route is None:
            return Verdict(None)
        admitted, bucket = self._routes[route].take((token, channel_id), now)
        if not admitted:
            return Verdict(Scope.USER, retry_after=bucket.reset_after, bucket=bucket)
        return Verdict(None, bucket=bucket)
