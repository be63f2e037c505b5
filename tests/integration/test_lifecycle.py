"""The service as a process: started by its command, stopped by a signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from asyncio.subprocess import PIPE

import aiohttp
from conftest import CHANNEL, KEY, SMALL_CHUNK, TOKEN

from service.config import Settings
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn, Fault
from service.local.driver import spawn_service
from service.local.manager import ManagerStandIn


async def wait_for_line(stream: asyncio.StreamReader, text: str) -> None:
    while text not in (await stream.readline()).decode():
        pass


async def test_sigterm_lets_stored_chunks_finish_fails_the_job_and_exits_0(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
) -> None:
    process = await spawn_service(settings, stderr=PIPE, SHUTDOWN_GRACE="20")
    assert process.stderr is not None
    try:
        link = await manager.next_service()
        await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        data = os.urandom(2 * SMALL_CHUNK)
        upload_id, _ = await link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        discord.inject(Fault(hold=True))
        first = asyncio.create_task(
            http.post(link.own_address, data=chunk_form(upload_id, 0, data[:SMALL_CHUNK]))
        )
        await discord.wait_for_posts(1)

        process.send_signal(signal.SIGTERM)
        await wait_for_line(process.stderr, "stopping")
        form = chunk_form(upload_id, 1, data[SMALL_CHUNK:])
        async with http.post(link.own_address, data=form) as late:
            assert late.status == 503
            assert "shutting down" in (await late.json())["error"]

        discord.release_held()
        async with await first as response:
            assert response.status == 200  # it was at Discord: the grace period let it finish
        finish = await link.next_finish()
        assert finish == {"success": False, "reason": "the upload service is shutting down"}
        await link.closed.wait()
        assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_log_format_json_gives_one_json_object_a_line(
    settings: Settings, manager: ManagerStandIn
) -> None:
    process = await spawn_service(settings, stderr=PIPE, LOG_FORMAT="json")
    assert process.stderr is not None
    try:
        await manager.next_service()
        while True:
            entry = json.loads(await process.stderr.readline())
            if "connected to the manager" in entry["message"]:
                break
        assert entry["slot"] == "slot-0" and entry["level"] == "INFO"
    finally:
        process.terminate()
        assert await process.wait() == 0
