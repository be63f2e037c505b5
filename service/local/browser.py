"""An uploader that sends a file's chunks the way discord-cloud's browser client does.

Multipart fields `id`, `chunk`, `file` in that order (the file part named `blob`), up to 5
chunks of one file at once in any order, each tried up to 10 times, and only HTTP 200
counts as success. A failed try is followed by the next at once, as the real client does
(it neither waits between tries nor reads `Retry-After`), so a refusal that only time would
cure spends every try in moments. The demo and the tests use it to play the browser.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ..chunks.memory_file import MemoryReader
from ..jobs.layout import BROWSER_CHUNKS_IN_FLIGHT

TRIES = 10


class UploadFailed(Exception):
    """A chunk was refused on every try; the message holds the last answer."""


@dataclass
class UploadReport:
    chunks: int = 0
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    last_errors: dict[int, str] = field(default_factory=dict)

    @property
    def retries(self) -> int:
        return self.attempts - self.chunks


def chunk_form(upload_id: str, index: int | str, data: bytes | memoryview) -> aiohttp.FormData:
    """The form the browser sends: `id`, `chunk`, then the bytes as a file named `blob`."""
    form = aiohttp.FormData()
    form.add_field("id", upload_id)
    form.add_field("chunk", str(index))
    blob = MemoryReader(memoryview(data))  # sent in slices, not copied per try
    form.add_field("file", blob, filename="blob", content_type="application/octet-stream")
    return form


def source_size(source: bytes | Path) -> int:
    return source.stat().st_size if isinstance(source, Path) else len(source)


def read_chunk(source: bytes | Path, offset: int, length: int) -> bytes:
    if isinstance(source, Path):
        with source.open("rb") as file:
            file.seek(offset)
            return file.read(length)
    return source[offset : offset + length]


async def upload(
    session: aiohttp.ClientSession,
    address: str,
    upload_id: str,
    source: bytes | Path,
    chunk_size: int,
    *,
    concurrency: int = BROWSER_CHUNKS_IN_FLIGHT,
    tries: int = TRIES,
    give_up_on: frozenset[int] = frozenset(),
    on_chunk_done: Callable[[int, bytes], object] | None = None,
    retry_after: bool = False,
) -> UploadReport:
    """Upload every chunk of `source` (bytes, or a file's path); raise `UploadFailed`.

    `on_chunk_done(index, data)` is called for each chunk answered 200. A status in
    `give_up_on` (say 410, when the job is known to be over) fails the chunk at once. With
    `retry_after`, a refusal's `Retry-After` is waited out before the next try, as a client
    other than the browser may do.
    """
    size = source_size(source)
    report = UploadReport()
    pending: asyncio.Queue[int] = asyncio.Queue()
    for index in range(math.ceil(size / chunk_size)):
        pending.put_nowait(index)

    async def send(index: int) -> None:
        data = await asyncio.to_thread(read_chunk, source, index * chunk_size, chunk_size)
        for _ in range(tries):
            report.attempts += 1
            form = chunk_form(upload_id, index, data)
            try:
                async with session.post(address, data=form) as response:
                    report.statuses[response.status] += 1
                    if response.status == 200:
                        report.chunks += 1
                        if on_chunk_done is not None:
                            on_chunk_done(index, data)
                        return
                    report.last_errors[index] = f"HTTP {response.status}: {await response.text()}"
                    if response.status in give_up_on:
                        break
                    wait = float(response.headers.get("Retry-After", 0)) if retry_after else 0
            except (aiohttp.ClientError, OSError) as error:
                report.last_errors[index] = f"{type(error).__name__}: {error}"
                wait = 0
            await asyncio.sleep(wait)
        raise UploadFailed(f"chunk {index} failed; last answer: {report.last_errors[index]}")

    async def worker() -> None:
        while not pending.empty():
            await send(pending.get_nowait())

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return report
