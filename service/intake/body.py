"""A chunk POST's body as it arrives: counted against a limit, cut off when the client stalls
or trickles."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import Counter

from ..refusals import BodyTooLarge, ClientGone, ClientStalled


class ChunkBody:
    """`read()` gives the body's next piece (b"" at its end) or raises a refusal.

    aiohttp enforces no size limit on a streamed body, so it is counted here; a declared
    `Content-Length` over the limit is refused before a byte of the body is read. A client
    that sends nothing for `read_timeout` is cut off; so is one that, `read_timeout` after
    its chunk was claimed, has averaged less than `min_rate` bytes per second since (a
    trickle never trips a per-read timeout, and it holds a chunk's memory). The same rate
    holds from the request's start until the claim: fields trickled a byte at a time hold no
    memory, but they would hold the request, and a shutdown waiting for it, for days.
    """

    def __init__(
        self,
        request: web.Request,
        *,
        limit: int,
        read_timeout: float,
        min_rate: int,
        received: Counter,
    ) -> None:
        self._content = request.content
        self._received_total = received
        self._read_timeout = read_timeout
        self._min_rate = min_rate
        self._received = 0
        self._since = time.monotonic()  # the rate is measured from here: the start, the claim
        self._received_before = 0  # bytes received before `_since`
        self._declared = request.content_length
        self.limit_to(limit)

    def limit_to(self, limit: int) -> None:
        """The most bytes the body may have, from now on; raise `BodyTooLarge` at once if
        its declared length is over it."""
        self.limit = limit
        if self._declared is not None and self._declared > limit:
            raise self._too_large()

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._read_timeout):
                piece = await self._content.readany()
        except TimeoutError:
            raise ClientStalled(
                f"no data arrived for {self._read_timeout:g} seconds; the chunk was dropped"
            ) from None
        except ConnectionResetError:
            raise ClientGone("the connection was lost in the middle of the chunk") from None
        self._received += len(piece)
        self._received_total.inc(len(piece))
        if self._received > self.limit:
            raise self._too_large()
        self._check_rate()
        return piece

    def chunk_claimed(self) -> None:
        """From now on the body holds a chunk's memory: `min_rate` is measured afresh, the
        time the chunk waited for that memory left out."""
        self._since = time.monotonic()
        self._received_before = self._received

    def _check_rate(self) -> None:
        elapsed = time.monotonic() - self._since
        if elapsed < self._read_timeout:
            return
        rate = (self._received - self._received_before) / elapsed
        if rate < self._min_rate:
            raise ClientStalled(
                f"the chunk arrived at {rate:.0f} bytes per second, below the minimum of "
                f"{self._min_rate}; it was dropped"
            )

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"the request body is larger than {self.limit} bytes")
