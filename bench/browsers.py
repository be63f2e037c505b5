"""Browsers uploading jobs at once, in a process of their own: clients in the benchmark's
process, beside the Discord stand-in taking the posts, would time that process rather than
the service. Each is `service.local.browser.upload` (retries, backoff, only 200 counts)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from children import READY, Child
from measure import Source
from services import Slot, Stage

from service.local.browser import UploadFailed, upload

UPLOAD_TIMEOUT = 300.0  # seconds the browsers may take for their jobs


@dataclass
class JobRun:
    """One browser's job: its chunks' answers and whether its finish verified."""

    chunks: int
    concurrency: int
    tries: int
    seconds: float = 0.0  # the browsers' first POST to this job's finish packet
    finished_at: float = 0.0  # time.time() when the finish packet arrived
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # [] once completed and verified

    @property
    def ok(self) -> bool:
        return not self.problems

    def outcome(self) -> str:
        if not self.ok:
            return "NO: " + "; ".join(self.problems)[:300]
        answers = ", ".join(f"{n} x {s}" for s, n in sorted(self.statuses.items()))
        return (
            f"yes: {self.chunks} chunks in {self.seconds:.1f} s, {self.attempts} POSTs ({answers})"
        )


def upload_in_child(
    pipe: Connection, file: str, chunk_size: int, concurrency: int, tries: int, uploads: list
) -> None:
    """(In a child) upload `file` to each (address, upload id) at once; then one
    {"attempts", "statuses", "problems"} per upload, in their order."""

    async def one(session: aiohttp.ClientSession, address: str, upload_id: str) -> dict:
        report: dict[str, Any] = {"attempts": 0, "statuses": {}, "problems": []}
        try:
            sent = await upload(
                session,
                address,
                upload_id,
                Path(file),
                chunk_size,
                concurrency=concurrency,
                tries=tries,
            )
            report["attempts"], report["statuses"] = sent.attempts, dict(sent.statuses)
        except* UploadFailed as failed:
            report["problems"] = [str(error) for error in failed.exceptions]
        return report

    async def every() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            pipe.send(READY)  # the first POSTs go out now
            return await asyncio.gather(*(one(session, *pair) for pair in uploads))

    pipe.send(asyncio.run(every()))


async def upload_jobs(
    on: Stage,
    slots: list[Slot],
    source: Source,
    concurrency: int,
    tries: int,
    upload_ids: list[str] | None = None,
) -> list[JobRun]:
    """A job of `source` on each slot (started unless `upload_ids` are given), uploaded at
    once, each timed from the browsers' first POST to its finish packet, then verified."""
    runs = [JobRun(len(source.chunks), concurrency, tries) for _ in slots]
    upload_ids = upload_ids or [await on.start_job(slot, source) for slot in slots]

    async def finished(slot: Slot) -> tuple[dict[str, Any], float, float]:
        return await slot.connection.next_finish(), time.perf_counter(), time.time()

    finishes = [asyncio.create_task(finished(slot)) for slot in slots]
    try:
        uploads = [
            (slot.address, upload_id) for slot, upload_id in zip(slots, upload_ids, strict=True)
        ]
        how = (source.chunk_size, concurrency, tries, uploads)
        async with Child("the browsers", upload_in_child, str(on.file_of(source)), *how) as child:
            began = time.perf_counter()
            reports = await child.receive(UPLOAD_TIMEOUT)
        for run, slot, waiting, report in zip(runs, slots, finishes, reports, strict=True):
            run.attempts = report["attempts"]
            run.statuses = Counter({int(s): n for s, n in report["statuses"].items()})
            run.problems = report["problems"]
            if not run.problems:
                finish, arrived, run.finished_at = await waiting
                run.seconds = arrived - began
                run.problems = on.problems(slot, finish, source)
    finally:
        for waiting in finishes:
            waiting.cancel()
    return runs
