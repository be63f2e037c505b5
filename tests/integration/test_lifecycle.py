"""The service as a process, started by its command and stopped by a signal: SIGTERM lets the
chunks already at Discord finish within the grace period, fails the job and exits 0; a
second SIGTERM or SIGINT during the grace period exits at once with 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from asyncio.subprocess import PIPE
from typing import Any

import aiohttp
import pytest
from conftest import CHANNEL, KEY, SMALL_CHUNK, TOKEN, Harness, HarnessFactory

from service.config import Settings
from service.discord.client import BAD_TOKEN
from service.exit_status import EXIT_CUT_SHORT
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn, Fault
from service.local.driver import spawn_service
from service.local.manager import ManagerStandIn
from service.uploads.slot import SHUTTING_DOWN


async def wait_for_line(stream: asyncio.StreamReader, text: str) -> None:
    """Read log lines until one holds `text`; fail if the output ends first."""
    while text not in (line := (await stream.readline()).decode()):
        assert line, f"the service ended before logging {text!r}"


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


# Far above what exiting takes, far below SHUTDOWN_GRACE: only a forced exit is this quick.
FORCED_EXIT_BOUND = 30.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_grace_period_exits_at_once_with_1(
    signum: signal.Signals,
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
) -> None:
    # A held post neither times out nor is given up within the test: the grace period runs.
    process = await spawn_service(
        settings,
        stderr=PIPE,
        SHUTDOWN_GRACE="300",
        DISCORD_REQUEST_TIMEOUT="300",
    )
    assert process.stderr is not None
    held: asyncio.Task[aiohttp.ClientResponse] | None = None
    try:
        link = await manager.next_service()
        await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        upload_id, _ = await link.start_upload(size=2 * SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        discord.inject(Fault(hold=True))  # the chunk stays at Discord: the grace period runs
        held = asyncio.create_task(
            http.post(link.own_address, data=chunk_form(upload_id, 0, os.urandom(SMALL_CHUNK)))
        )
        await discord.wait_for_posts(1)

        process.send_signal(signum)
        await wait_for_line(process.stderr, "stopping")
        process.send_signal(signum)
        rest = await asyncio.wait_for(process.stderr.read(), FORCED_EXIT_BOUND)
        assert await process.wait() == EXIT_CUT_SHORT == 1
        lines = rest.decode().splitlines()
        assert sum("cutting short" in line for line in lines) == 1
        assert (
            "second signal: exiting at once, cutting short uploads running: 1, chunks in "
            in lines[-1]
        )
        assert "chunks in flight: 1, messages still to delete on Discord: 0" in lines[-1]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        discord.release_held()
        if held is not None:
            with contextlib.suppress(aiohttp.ClientError):
                (await held).close()


async def test_a_slot_free_during_the_grace_period_refuses_new_jobs(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
) -> None:
    process = await spawn_service(settings, stderr=PIPE, SHUTDOWN_GRACE="20", UPLOAD_SLOTS="2")
    assert process.stderr is not None
    try:
        busy, free = await manager.next_service(), await manager.next_service()
        for link in (busy, free):
            await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        upload_id, _ = await busy.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        discord.inject(Fault(hold=True))  # the grace period runs while the chunk is at Discord
        held = asyncio.create_task(
            http.post(busy.own_address, data=chunk_form(upload_id, 0, os.urandom(SMALL_CHUNK)))
        )
        await discord.wait_for_posts(1)

        process.send_signal(signal.SIGTERM)
        await wait_for_line(process.stderr, "stopping")
        _, reply = await free.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        # Accepted, the job could never receive a chunk (each gets 503) and would fail.
        assert reply == {"success": False, "message": "the upload service is shutting down"}
        async with http.get(f"http://127.0.0.1:{settings.port}/readyz") as readiness:
            assert readiness.status == 503
            why = (await readiness.json())["why"]
            assert why == f"slot-0: {SHUTTING_DOWN}; slot-1: {SHUTTING_DOWN}"

        discord.release_held()
        async with await held as response:
            assert response.status == 200
        assert (await busy.next_finish())["success"] is True
        assert free.finishes == []
        assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def readiness(harness: Harness) -> tuple[int, dict[str, Any]]:
    async with harness.http.get(f"http://127.0.0.1:{harness.service.port}/readyz") as answer:
        return answer.status, await answer.json()


async def test_readyz_says_why_a_connected_slot_takes_no_job(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    """Connected yet not ready: /readyz names the reason an operator can act on (Discord
    refused the token the manager gave, at the configuration or later), not only that the
    slot is not "connected and configured"."""
    harness = await start_service()
    reply = await harness.link.configure(
        token="not-the-bot-token", channel_id=CHANNEL, crypto_key=KEY
    )
    assert reply["success"] is False
    status, body = await readiness(harness)
    assert status == 503 and body["connected"] == 1
    assert f"slot-0: its configuration was refused: {BAD_TOKEN}" in body["why"]

    assert (await harness.configure())["success"] is True
    assert (await readiness(harness))[0] == 200
    upload_id = await harness.start(SMALL_CHUNK)
    discord.revoke_token()  # reset by its owner: the next post is answered 401
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 502
    status, body = await readiness(harness)
    assert status == 503 and body["connected"] == 1
    assert f"slot-0: {BAD_TOKEN}" in body["why"]
