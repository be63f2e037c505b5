"""What a request passes before its route's own rules: token and channel, the rate limits, and
an injected fault, in Discord's order; with the counters of what the gate refused.

The gate sees a request only once its whole body has arrived, as Discord (behind Cloudflare)
does, so the bytes of a request it answers with a 429 are counted as wasted.
"""

import asyncio
import re
import time
from typing import TypeAlias

from aiohttp import hdrs, web

from .answers import bucket_headers, cloudflare_page, drop, error, rate_limited
from .faults import Fault, FaultQueues
from .ratelimit import RateLimits, Scope
from .routes import BUCKETS, Route

_CHANNEL_ID = re.compile(r"[0-9]{15,22}")
# A request let through: the fault still to apply (stored-then-dropped, odd answer) and the
# headers its answer carries.
Admitted: TypeAlias = tuple[Fault | None, dict[str, str]]


class Gate:
    """Judges requests for one bot token; `faults` is the per-route queue tests fill."""

    def __init__(self, token: str, forbidden_channels: frozenset[str], limits: RateLimits) -> None:
        self._token = token
        self._revoked = False  # once revoked, every request gets 401
        self._forbidden_channels = forbidden_channels
        self._limits = limits
        self.faults = FaultQueues()
        self.held = asyncio.Event()
        self.closing = asyncio.Event()
        self.faults_served = 0
        self.rate_limited_by_scope: dict[str, int] = {Scope.USER: 0, Scope.GLOBAL: 0}
        self.counted: list[float] = []  # when the global limit counted each request
        self.wasted_bytes = 0

    def authorized(self, request: web.Request) -> bool:
        given = request.headers.get(hdrs.AUTHORIZATION)
        return not self._revoked and given == f"Bot {self._token}"

    def revoke(self) -> None:
        self._revoked = True

    def restore(self) -> None:
        self._revoked = False

    def refusal(self, request: web.Request, channel_id: str) -> web.Response | None:
        """The error for a bad token or an inaccessible channel, if any."""
        if not self.authorized(request):
            return error(401)
        if channel_id in self._forbidden_channels:
            return error(403)
        if not _CHANNEL_ID.fullmatch(channel_id):
            return error(404)
        return None

    async def enter(
        self, request: web.Request, route: Route, channel_id: str, size: int
    ) -> web.Response | Admitted:
        """The answer that stops the request, or what it goes on with."""
        if (refusal := self.refusal(request, channel_id)) is not None:
            return refusal
        admitted = self.admit(route, channel_id, size)
        if isinstance(admitted, web.Response):
            return admitted
        fault = self.faults.pop(route)
        if fault is None:
            return None, admitted
        answer = await self._serve(request, fault, admitted)
        if answer is None:
            return fault, admitted
        if answer.status == 429:
            self.wasted_bytes += size
        return answer

    def admit(
        self, route: Route | None, channel_id: str, size: int
    ) -> web.Response | dict[str, str]:
        """A real 429, or the bucket headers for the answer (none for a route without one)."""
        now = time.monotonic()
        verdict = self._limits.judge(self._token, route, channel_id, now)
        if verdict.refused_by is not Scope.GLOBAL:
            self.counted.append(now)
        headers = {}
        if route is not None and verdict.bucket is not None:
            headers = bucket_headers(verdict.bucket, BUCKETS[route])
        if verdict.refused_by is None:
            return headers
        self.rate_limited_by_scope[verdict.refused_by] += 1
        self.wasted_bytes += size
        return rate_limited(verdict.retry_after, verdict.refused_by, headers=headers)

    async def _serve(
        self, request: web.Request, fault: Fault, headers: dict[str, str]
    ) -> web.Response | None:
        """The fault's answer, or None when the request goes on (to be stored, perhaps oddly)."""
        self.faults_served += 1
        await asyncio.sleep(fault.delay)
        if fault.hold:
            await self.held.wait()
        if fault.hang:
            await self.closing.wait()
        if fault.drop or fault.hang:
            return drop(request)
        if fault.cloudflare:
            return cloudflare_page(fault.status or 429)
        if fault.status == 429:
            if fault.is_global:  # the global limit is no route's bucket
                return rate_limited(fault.retry_after, Scope.GLOBAL)
            return rate_limited(fault.retry_after, Scope.USER, headers=headers)
        if fault.status is not None:
            return error(fault.status, headers=headers)
        return None
