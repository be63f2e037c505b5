"""The bot token's global limit shared by every process through Redis (REDIS_URL).

Discord counts a token's requests across every process that uses it. With REDIS_URL set, the
processes draw from one budget of DISCORD_GLOBAL_RATE places per second that Redis keeps for
each token, under keys named by a hash of the token (never the token itself):

- `counted`: a sorted set of the requests Discord may still count in a window, each scored
  by when its place frees (a second after its last byte, or its answer: `pacing.py`);
- `in_flight`: per process, the places it holds for requests not yet written (and places
  granted but not yet used);
- `alive`: the processes, scored by their last call (their heartbeat): a process that has not
  called for `STALE` seconds is gone, and so are its places in flight;
- `calls`: per process, the number of its last call, so that a late one changes nothing;
- `careful`: present, with a TTL, while a global 429 holds the fleet's places to answers;
- `born`: when this state began: a young one means Redis came back empty, or a process came
  back from its own share (below), which Redis does not know.

Each call is one Lua script (`shared_limit.lua`), atomic, with Redis's own TIME as the
clock, so the processes' clocks do not matter. A call says everything about its process (its
heartbeat, its count in flight, every request it sent that still holds a place, as a time
left), never a difference: a call that timed out and ran all the same is corrected by the
next one, and a Redis that restarted empty gets every process's requests back with its next
call. Every process calls every `TICK` seconds, and as soon as its requests wait for places.

Redis away does not stop the service: a call gets `CALL_TIMEOUT`, and once Redis has not
answered for `FALLBACK_AFTER` seconds the process keeps to its own share of the rate (the rate
divided by the processes it last saw alive), until Redis answers again. Its first call then
begins the state anew, as the others may have kept to their shares too: a Redis that kept its
state (a partition, a stall, a failover) knows nothing of what was sent without it. For `STALE`
seconds after Redis came back empty or a state began anew (every process has called again by
then) a process also keeps to that share, and one that never saw the fleet before waits, so
the first second after an outage cannot be over-granted (a new fleet's first requests wait
those seconds too). The per-channel buckets stay in each process: a channel belongs to one
slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
from collections.abc import Callable
from importlib import resources
from urllib.parse import unquote, urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ..metrics import Metrics
from .pacing import GlobalLimit

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between a process's calls (its heartbeat) when it needs no places
CALL_TIMEOUT = 0.05  # seconds one call may take on an open connection
CONNECT_TIMEOUT = 1.0  # ... and when it must connect first (TLS, a Redis far away)
RETRY = 0.1  # seconds before a failed call is tried again
FALLBACK_AFTER = 1.0  # seconds without an answer before a process keeps to its own share
STALE = 1.5  # seconds without a call before a process counts as gone
KEEP = 60.0  # seconds the keys outlive the last process's last call

# The script of every call; its KEYS, ARGV and answer are written at its top.
SCRIPT = resources.files(__package__).joinpath("shared_limit.lua").read_text()

_KEYS = ("counted", "in_flight", "alive", "calls", "careful", "born")


def token_keys(token: str) -> list[str]:
    """The token's keys: named by a hash of it, in one Redis Cluster slot ({...})."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    return [f"upload-service:global:{{{digest}}}:{name}" for name in _KEYS]


def redis_host(url: str) -> str:
    """host:port of a redis:// or rediss:// URL: what the logs may name (no credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def redis_error(error: Exception, url: str) -> str:
    """What Redis or redis-py said, for the logs, without the URL's user and password."""
    said, parts = f"{type(error).__name__}: {error}", urlsplit(url)
    for credential in filter(None, (parts.username, parts.password)):
        said = said.replace(unquote(credential), "[hidden]")
    return said


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class SharedGlobalLimit:
    """One token's global limit, shared through Redis (see the module's docstring); a
    `pacing.GlobalBudget`. `local` keeps this process's own requests, which are what it puts
    back into Redis and what its own share is counted against."""

    def __init__(self, script: AsyncScript, keys: list[str], *, rate: int, url: str) -> None:
        self.rate = rate
        self.local = GlobalLimit(rate)
        self.alive = 1  # processes seen alive at the last answer, this one included
        self.shared: bool | None = None  # None until Redis first answers; False: fallen back
        self._script = script
        self._keys = keys
        self._url = url  # REDIS_URL: only its host, port and errors are logged
        self._name = keys[0].split("{")[1][:8]  # for the logs: a piece of the token's hash
        self._process = secrets.token_hex(8)
        self._calls = 0
        self._members = 0
        self._holding: list[tuple[float, str]] = []  # (when its place frees, member)
        self._pool = 0  # places Redis granted that no request has taken yet
        self._wanted = 0
        self._careful_until = -math.inf
        self._warm_until = -math.inf  # the state in Redis is young until then
        self._known = False  # it knows how many processes there are (answered for STALE)
        self._first_answer: float | None = None
        self._changed: Callable[[], None] = lambda: None
        self._loop = asyncio.get_running_loop()
        self._last_answer = self._loop.time()
        self._last_call = -math.inf
        self._grant_at = -math.inf
        self._connected = False
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    # --- pacing.GlobalBudget -------------------------------------------------------------

    def room(self, now: float) -> int:
        own = self._own_room(now)
        return own if self.shared is False else min(own, self._pool)

    def take(self, now: float) -> None:
        self.local.take(now)
        if self.shared is not False:
            self._pool -= 1

    def untake(self) -> None:
        self.local.untake()
        if self.shared is not False:
            self._pool += 1

    def written(self, now: float) -> float | None:
        return self._holds(self.local.written(now))

    def answered(self, now: float, *, released: float | None) -> float | None:
        frees = self.local.answered(now, released=released)
        if released is None:
            return self._holds(frees)
        if frees is not None:  # sooner: Redis keeps the later time if it has it already
            self._holding = [(frees if at == released else at, m) for at, m in self._holding]
        return frees

    def hold(self, until: float) -> None:
        self.local.hold(until)

    def be_careful(self, until: float) -> None:
        self.local.be_careful(until)
        self._careful_until = max(self._careful_until, until)

    def want(self, places: int, now: float) -> None:
        self._wanted = max(0, min(places, self._own_room(now)))  # none while held
        self._pool = min(self._pool, self._wanted)  # the rest goes back with the next call
        if self._wanted > self._pool:
            self._wake.set()

    def wake_at(self, now: float) -> float | None:
        times = [self.local.wake_at(now), self._warm_until]
        return min((t for t in times if t is not None and t > now), default=None)

    def delay(self, now: float) -> float:
        return self.local.delay(now)

    def watch(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    # --- Redis ---------------------------------------------------------------------------

    @property
    def share(self) -> int:
        """This process's share of the rate while it cannot rely on Redis."""
        return max(1, self.rate // self.alive)

    async def close(self) -> None:
        """Stop calling; tell Redis this process left (its places in flight with it)."""
        # Not by the cancel alone: redis-py (8.2) can end a call it was cancelled in with its
        # reply, the cancel lost, and the calls would go on for ever.
        self._closing = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):
            await self._call(leaving=True)

    def warming(self, now: float) -> bool:
        """Whether the state in Redis is younger than `STALE`: Redis came back empty (or the
        fleet just began), and not every process has put its requests back yet."""
        return now < self._warm_until

    def _own_room(self, now: float) -> int:
        """The places this process may take by its own count: all but those it holds, or
        its share of them while Redis is away or young; none while Redis is young and this
        process does not know how many others there were."""
        room = self.local.room(now)
        if self.shared is None or (self.warming(now) and not self._known):
            return 0  # Redis has not answered yet, or Redis is young and the fleet unknown
        if self.shared is not True or self.warming(now):
            room -= self.rate - self.share
        return room

    def _holds(self, frees: float | None) -> float | None:
        if frees is not None:
            self._members += 1
            self._holding.append((frees, f"{self._process}:{self._members}"))
        return frees

    async def _run(self) -> None:
        while not self._closing:
            now = self._loop.time()
            due = self._last_call + TICK
            if self._wanted > self._pool and self.shared is not False:
                due = min(due, self._grant_at)
            if due > now:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._wake.wait()
                self._wake.clear()
                continue
            await self._call()

    async def _call(self, *, leaving: bool = False) -> None:
        now = self._loop.time()
        self._last_call = now
        self._holding = [(frees, member) for frees, member in self._holding if frees > now]
        wanted = 0 if leaving else max(0, self._wanted - self._pool)
        self._calls += 1
        args: list[str | int] = [
            self._process,
            self._calls,
            0 if leaving else self.local.in_flight + self._pool,
            wanted,
            self.rate,
            _ms(STALE),
            _ms(max(0.0, self._careful_until - now)),
            int(leaving),
            _ms(KEEP),
            int(self.shared is False),
        ]
        for frees, member in self._holding:
            args += [member, _ms(frees - now)]
        try:
            async with asyncio.timeout(CALL_TIMEOUT if self._connected else CONNECT_TIMEOUT):
                reply = await self._script(keys=self._keys, args=args)
            granted, alive, wait, careful, age = (int(value) for value in reply)
        except Exception as error:  # any failure is Redis not answering: never the service's end
            self._failed(now, error)
            return
        self._answered(now, wanted, granted, alive, wait, careful, age)

    def _failed(self, now: float, error: Exception) -> None:
        self._connected = False
        self._grant_at = now + RETRY
        if self.shared is not False and now - self._last_answer >= FALLBACK_AFTER:
            self.shared = False
            self._pool = 0
            log.warning(
                "Redis at %s has not answered for %.1f s (%s): this process keeps to its own "
                "share of bot token %s's global limit, %d requests/s (%d / %d processes last "
                "seen), until Redis answers again",
                redis_host(self._url),
                now - self._last_answer,
                redis_error(error, self._url),
                self._name,
                self.share,
                self.rate,
                self.alive,
            )
            self._changed()

    def _answered(
        self, now: float, wanted: int, granted: int, alive: int, wait: int, careful: int, age: int
    ) -> None:
        self._connected = True
        self._last_answer = now
        if granted < 0:  # a late call: Redis ignored it
            return
        self.local.be_careful(now + careful / 1000)
        if self._first_answer is None:
            self._first_answer = now
        if age < _ms(STALE):  # processes may be missing yet: never count fewer than before
            self._warm_until = now + (_ms(STALE) - age) / 1000
            self.alive = max(self.alive, alive)
        else:
            self.alive = max(1, alive)
        # Answered for STALE, it has seen every process that calls, however young the state
        # (a process that keeps coming back from its share keeps it young).
        if age >= _ms(STALE) or now - self._first_answer >= STALE:
            self._known = True
        self._pool += granted
        later = TICK if wait < 0 else min(TICK, wait / 1000)
        self._grant_at = now if granted >= wanted else now + later
        if self.shared is not True:
            log.info(
                "%s: the global limit of bot token %s is shared through Redis at %s, %d "
                "requests/s for every process using it (%d alive)",
                "Redis answers again" if self.shared is False else "joined",
                self._name,
                redis_host(self._url),
                self.rate,
                self.alive,
            )
            self.shared = True
        self._changed()


class SharedLimits:
    """The process's connection to Redis and its shared limits, one per bot token."""

    def __init__(self, url: str, *, rate: int, metrics: Metrics) -> None:
        self.where = redis_host(url)
        self._url = url
        self._rate = rate
        # No retries of its own: a call that fails is the next call's business.
        self._redis = redis.asyncio.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, retry=Retry(NoBackoff(), 0)
        )
        self._script = self._redis.register_script(SCRIPT)
        self._limits: dict[str, SharedGlobalLimit] = {}
        metrics.global_limit_shared.labels(self.where).set_function(self._all_shared)

    def limit(self, token: str) -> SharedGlobalLimit:
        keys = token_keys(token)
        if (limit := self._limits.get(keys[0])) is None:
            limit = self._limits[keys[0]] = SharedGlobalLimit(
                self._script, keys, rate=self._rate, url=self._url
            )
        return limit

    async def close(self) -> None:
        limits, self._limits = list(self._limits.values()), {}
        for limit in limits:
            await limit.close()
        await self._redis.aclose()

    def _all_shared(self) -> float:
        return float(all(limit.shared is not False for limit in self._limits.values()))
