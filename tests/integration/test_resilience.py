"""Last lines of defence: nothing unexpected escapes as a bare 500, kills a manager link for
good, or stops a shutdown halfway; chunks a shutdown cuts short are told to come back."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from conftest import CHANNEL, KEY, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, until

from service.config import Settings
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn, Fault
from service.local.manager import ManagerStandIn
from service.logs import ContextFilter
from service.manager import outgoing
from service.manager.packets import MalformedPacket
from service.manager.supervisor import RESTART_LIMIT, LinkSupervisor
from service.server import UploadService
from service.uploads.upload import Upload


async def test_an_unexpected_exception_in_the_chunk_path_is_a_json_500_with_cors(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    upload_id = await harness.start(2 * SMALL_CHUNK)
    data = os.urandom(SMALL_CHUNK)

    async def broken_post(self: Upload, index: int, sealer: object) -> None:
        raise KeyError("id")  # what a Discord answer without an id once raised here

    with monkeypatch.context() as patch:
        patch.setattr(Upload, "post", broken_post)
        async with harness.http.post(
            harness.address, data=chunk_form(upload_id, 1, data)
        ) as answer:
            assert answer.status == 500
            assert answer.headers["Access-Control-Allow-Origin"] == "*"
            assert "unexpectedly" in (await answer.json())["error"]
    record = next(r for r in caplog.records if "failed unexpectedly" in r.getMessage())
    assert record.exc_info is not None
    assert (record.upload_id, record.chunk) == (upload_id, 1)  # type: ignore[attr-defined]
    # the claim was given back: the same chunk goes through now
    assert (await harness.post(upload_id, 1, data))[0] == 200


async def test_a_link_that_keeps_dying_is_restarted_and_makes_healthz_fail(
    settings: Settings, manager: ManagerStandIn, http: aiohttp.ClientSession
) -> None:
    service = UploadService(settings)
    service.links = LinkSupervisor(restart_delay=lambda failures: 0.0)
    runs = 0
    all_failed = asyncio.Event()

    async def dying_run() -> None:
        nonlocal runs
        runs += 1
        if runs >= RESTART_LIMIT:
            all_failed.set()
        raise RuntimeError("a bug in the link loop")

    async with service:
        async with http.get(f"http://127.0.0.1:{service.port}/healthz") as answer:
            assert answer.status == 200
        await service.links.stop()  # replace the real link's loop with a dying one
        service.links = LinkSupervisor(restart_delay=lambda failures: 0.0)
        service.links.start("slot-0", dying_run)
        await all_failed.wait()  # RESTART_LIMIT runs: each end was followed by a restart
        await until(lambda: not service.links.healthy)  # the last failure is counted
        async with http.get(f"http://127.0.0.1:{service.port}/healthz") as answer:
            assert answer.status == 503
            assert "slot-0" in (await answer.json())["why"]


async def test_a_link_restarted_after_a_failure_takes_jobs_again(
    settings: Settings, manager: ManagerStandIn
) -> None:
    service = UploadService(settings)
    async with service:
        slot = service.slots[0]
        original = await manager.next_service()
        real_run = slot.link.run
        failed = False

        async def run_failing_once() -> None:
            nonlocal failed
            if not failed:
                failed = True
                raise RuntimeError("a bug in the link loop")
            await real_run()

        await service.links.stop()
        await original.closed.wait()
        service.links = LinkSupervisor(restart_delay=lambda failures: 0.0)
        service.links.start(slot.name, run_failing_once)
        restarted = await manager.next_service()
        reply = await restarted.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        assert reply == {"success": True}
        assert failed


async def test_chunks_that_shutdown_cuts_short_get_503_with_retry_after(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    harness = await start_service(shutdown_grace=0.2)
    assert (await harness.configure())["success"] is True
    upload_id = await harness.start(2 * SMALL_CHUNK)
    discord.inject(Fault(hold=True))  # Discord takes longer than the grace period
    form = chunk_form(upload_id, 0, os.urandom(SMALL_CHUNK))
    posting = asyncio.create_task(harness.http.post(harness.address, data=form))
    await discord.wait_for_posts(1)
    await harness.service.shutdown()
    async with await posting as answer:
        assert answer.status == 503
        assert int(answer.headers["Retry-After"]) > 0
        assert "shutting down" in (await answer.json())["error"]
    discord.release_held()


async def test_a_success_finish_that_cannot_be_built_becomes_a_failure_finish(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = await harness.start(SMALL_CHUNK)

    def broken_finish(**fields: object) -> str:
        raise MalformedPacket("upload-finish messages must be snowflake strings")

    monkeypatch.setattr(outgoing, "finish_success", broken_finish)
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    finish = await harness.link.next_finish()
    assert finish["success"] is False
    assert "could not report" in finish["reason"]
    assert harness.service.slots[0].upload is None  # the slot is free for the next job
