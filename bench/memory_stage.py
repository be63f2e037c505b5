"""What the memory scenario's cases drive: a service with the case's slots sharing one channel
and the other slot with a channel of its own, browsers, trickling clients, and the service's
/metrics sampled meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from browsers import JobRun, upload_jobs
from measure import Source
from memory_report import SAMPLE, Case
from report import BenchFailure
from services import Slot, Stage, stage

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.driver import Trickled, scrape_metrics, trickle

CHANNELS = ("1500000000000000001", "1500000000000000002")  # the case's slots, the other
FIRST_BYTES = 512  # of the file part a trickling client sends at once


@dataclass
class MemoryBench:
    """A fresh service, every slot configured, and what drives it."""

    on: Stage
    session: aiohttp.ClientSession
    tries: int

    @property
    def case_slots(self) -> list[Slot]:
        return self.on.slots[:-1]

    @property
    def other(self) -> Slot:
        return self.on.slots[-1]

    @property
    def pid(self) -> int:
        return self.on.service.pid

    async def gauges(self, *names: str) -> list[float]:
        """Unlabelled samples of the service's /metrics, read once."""
        found = await scrape_metrics(self.session, self.on.service.metrics_port)
        if missing := [name for name in names if name not in found]:
            raise BenchFailure(f"the service's /metrics has no {', '.join(missing)}")
        return [found[name] for name in names]

    @contextlib.asynccontextmanager
    async def sampled(self, case: Case) -> AsyncIterator[None]:
        """Meanwhile, the most chunk memory the service held and the most chunks waiting for
        it, read from /metrics every SAMPLE seconds."""

        async def sample() -> None:
            while True:
                memory, waiting = await self.gauges(
                    "upload_chunk_memory_bytes", "upload_chunks_waiting_for_memory"
                )
                case.most_memory = max(case.most_memory, memory)
                case.most_waiting = max(case.most_waiting, int(waiting))
                await asyncio.sleep(SAMPLE)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def trickle(self, upload_id: str, index: int, chunk: memoryview, **how: Any) -> Trickled:
        """A client claiming chunk `index` with FIRST_BYTES of it, then trickling."""
        port, path = self.on.service.port, self.on.service.settings.own_path
        return await trickle(port, path, upload_id, index, chunk, first_bytes=FIRST_BYTES, **how)

    async def job(self, slot: Slot, source: Source, upload_id: str | None = None) -> JobRun:
        """One browser's job (5 at once) on `slot`."""
        upload_ids = None if upload_id is None else [upload_id]
        return (await self.jobs([slot], source, BROWSER_CHUNKS_IN_FLIGHT, upload_ids))[0]

    async def jobs(
        self,
        slots: list[Slot],
        source: Source,
        concurrency: int,
        upload_ids: list[str] | None = None,
    ) -> list[JobRun]:
        runs = await upload_jobs(self.on, slots, source, concurrency, self.tries, upload_ids)
        for channel in {slot.channel for slot in slots}:
            self.on.discord.forget(channel)
        return runs


@contextlib.asynccontextmanager
async def memory_bench(
    settings: dict[str, Any],
    tries: int,
    case_slots: int = 1,
    window: float | None = None,
    answer: float = 0.0,
) -> AsyncIterator[MemoryBench]:
    """A service of its own with `case_slots` slots sharing the case's channel and the other
    slot. With `window`, Discord stores one post per `window` seconds per channel; it answers
    each post `answer` seconds after its body arrives."""
    discord: dict[str, Any] = {"answer_delay": answer}
    if window is not None:
        discord |= {"messages_per_window": 1, "window": window}
    channels = [CHANNELS[0]] * case_slots + [CHANNELS[1]]
    async with (
        stage(channels, discord=discord, **settings) as on,
        aiohttp.ClientSession() as session,
    ):
        yield MemoryBench(on, session, tries)
