"""An upload's inactivity timer (PROTOCOL.md section 5): the upload fails once no chunk has
arrived for UPLOAD_INACTIVITY_TIMEOUT seconds; every chunk that arrives restarts it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class InactivityTimer:
    """Calls `expired` `seconds` after the last `restart`, unless `busy()` says a chunk is
    still arriving or being stored then: it waits another `seconds`. Once `stop`ped (the
    upload ended), it never runs again, and holds nothing that would keep the upload alive."""

    def __init__(
        self, seconds: float, *, busy: Callable[[], bool], expired: Callable[[], None]
    ) -> None:
        self.seconds = seconds
        self._busy = busy
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False

    def restart(self) -> None:
        if self._stopped:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = asyncio.get_running_loop().call_later(self.seconds, self._fire)

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        if self._busy():
            self.restart()
        else:
            self._expired()
