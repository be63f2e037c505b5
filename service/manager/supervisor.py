"""Keeps every slot's manager link running, and says when one cannot be kept alive.

`ManagerLink.run` is built to end only when cancelled. Should it end any other way (a bug,
an exception nobody foresaw), the slot would silently stop taking jobs for good, while the
process looked healthy. The supervisor logs such an end with its traceback and starts the
link again after the usual backoff; a link that keeps dying makes the process unhealthy
(`/healthz` 503), so an orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .link import backoff_delay

log = logging.getLogger(__name__)

RESTART_LIMIT = 5  # unexpected ends within RESTART_WINDOW that make the process unhealthy
RESTART_WINDOW = 300.0


@dataclass
class _Supervised:
    name: str
    run: Callable[[], Awaitable[None]]
    task: asyncio.Task[None] | None = None
    ends: deque[float] = field(default_factory=deque)  # monotonic times of unexpected ends


class LinkSupervisor:
    def __init__(self, restart_delay: Callable[[int], float] = backoff_delay) -> None:
        self._restart_delay = restart_delay  # seconds before a restart, by recent failures
        self._links: list[_Supervised] = []
        self._stopping = False

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` (a link's loop) for as long as the supervisor is not stopped."""
        link = _Supervised(name, run)
        self._links.append(link)
        link.task = asyncio.get_running_loop().create_task(self._keep_running(link))

    @property
    def healthy(self) -> bool:
        """False once some link ended unexpectedly RESTART_LIMIT times in RESTART_WINDOW."""
        return all(len(self._recent(link)) < RESTART_LIMIT for link in self._links)

    def unhealthy_links(self) -> list[str]:
        return [link.name for link in self._links if len(self._recent(link)) >= RESTART_LIMIT]

    async def stop(self) -> None:
        """Cancel every link and wait for each, whatever state it is in; never raises."""
        self._stopping = True
        tasks = [link.task for link in self._links if link.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links = []

    async def _keep_running(self, link: _Supervised) -> None:
        while not self._stopping:
            try:
                await link.run()
                log.error(
                    "the manager link ended by itself; starting it again", extra={"slot": link.name}
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "the manager link failed; starting it again", extra={"slot": link.name}
                )
            link.ends.append(time.monotonic())
            await asyncio.sleep(self._restart_delay(len(self._recent(link))))

    def _recent(self, link: _Supervised) -> deque[float]:
        while link.ends and link.ends[0] < time.monotonic() - RESTART_WINDOW:
            link.ends.popleft()
        return link.ends
