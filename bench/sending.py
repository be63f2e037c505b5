"""Sending chunks as the browser does (`id`, `chunk`, `file`; 5 at once), to the service or
the relay, or straight to the Discord stand-in's messages route for the direct baseline;
each chunk's latency, POST sent to 200 received."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from console import BenchFailure
from relay import message_form
from source import Source

from service.chunks.memory_file import MemoryReader
from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn

SendOne = Callable[[int], Awaitable[None]]


async def send_all(
    count: int, send_one: SendOne, concurrency: int = BROWSER_CHUNKS_IN_FLIGHT
) -> list[float]:
    """Send chunks 0..count-1, `concurrency` at once; each one's seconds, POST sent to 200."""
    pending = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for index in pending:
            started = time.perf_counter()
            await send_one(index)
            latencies.append(time.perf_counter() - started)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies


async def post_form(
    session: aiohttp.ClientSession, url: str, form: aiohttp.FormData, what: str, **kwargs: Any
) -> None:
    async with session.post(url, data=form, **kwargs) as response:
        body = await response.read()
        if response.status != 200:
            text = body[:300].decode("utf-8", "replace")
            raise BenchFailure(f"{what}: HTTP {response.status}: {text}")


def service_sender(
    session: aiohttp.ClientSession, address: str, upload_id: str, source: Source
) -> SendOne:
    async def send_one(index: int) -> None:
        form = chunk_form(upload_id, index, source.chunks[index])
        await post_form(session, address, form, f"chunk {index} to {address}")

    return send_one


def direct_sender(
    session: aiohttp.ClientSession,
    discord: DiscordStandIn,
    token: str,
    channel: str,
    source: Source,
) -> SendOne:
    url = f"{discord.base_url}/channels/{channel}/messages"
    headers = {"Authorization": f"Bot {token}"}

    async def send_one(index: int) -> None:
        form = message_form(str(index), MemoryReader(source.chunks[index]))  # as the browser
        await post_form(session, url, form, f"direct chunk {index}", headers=headers)

    return send_one
