"""One upload's chunks sent again while an earlier request still holds them, each waiting
for that request to be done with its chunk.

The browser sends a chunk again at once, up to 10 times, when its request is lost on its
side (the XHR errored: a network switch, a proxy that dropped the connection), while the
service may still be storing the chunk: its post at Discord, or waiting for the pacer. A 409
at once would spend every try in moments, so the new request waits, its body unread, until
the earlier one is done, and then looks again: the chunk stored (its bytes only compared), or
free to claim. As with the memory waits, the service cannot see a waiting request's client
give it up, so a newer request for the same chunk takes the waiting one's place.
"""

from __future__ import annotations

import asyncio
import logging

from ..refusals import ChunkInFlight

log = logging.getLogger(__name__)


class ResendWaits:
    def __init__(self, *, longest: float, ending: asyncio.Future[None]) -> None:
        self._longest = longest  # seconds a request may wait (CLIENT_READ_TIMEOUT)
        self._ending = ending  # done once the upload ends
        self._waiting: dict[int, asyncio.Future[bool]] = {}  # True: a newer one took its place

    async def wait(self, index: int) -> None:
        """Return once the request holding chunk `index` is done with it (`done`) or the
        upload ended (its `ending`); raise `ChunkInFlight` if a newer request for the chunk
        takes this one's place, or once it has waited `longest` seconds."""
        if (older := self._waiting.pop(index, None)) is not None:
            older.set_result(True)
        log.info(
            "chunk %d sent again while an earlier request stores it: waiting up to %g s for it",
            index,
            self._longest,
        )
        turn = self._waiting[index] = asyncio.get_running_loop().create_future()
        try:
            waits = (turn, self._ending)
            await asyncio.wait(waits, timeout=self._longest, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._waiting.get(index) is turn:
                del self._waiting[index]
        if turn.done() and turn.result():
            raise ChunkInFlight(
                f"chunk {index} was sent again while this request waited for an earlier one; "
                "the new request takes its place"
            )
        if not turn.done() and not self._ending.done():
            raise ChunkInFlight(
                f"chunk {index} is still being received or stored by an earlier request; this "
                f"one waited {self._longest:g} seconds for it to be done"
            )

    def done(self, index: int) -> None:
        """The request holding chunk `index` is done with it: the one waiting looks again."""
        if (turn := self._waiting.pop(index, None)) is not None:
            turn.set_result(False)
