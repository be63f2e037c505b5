"""A chunk POST's body as it arrives: counted against a limit, cut off when the client stalls."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import Counter

from ..refusals import BodyTooLarge, ClientGone, ClientStalled


class ChunkBody:
    """`read()` gives the body's next piece (b"" at its end) or raises a refusal.

    aiohttp enforces no size limit on a streamed body, so it is counted here; a declared
    `Content-Length` over the limit is refused before a byte of the body is read.
    """

    def __init__(
        self, request: web.Request, *, limit: int, read_timeout: float, received: Counter
    ) -> None:
        self._content = request.content
        self._received_total = received
        self._read_timeout = read_timeout
        self._received = 0
        self.limit = limit
        if request.content_length is not None and request.content_length > limit:
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
        return piece

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"the request body is larger than {self.limit} bytes")
