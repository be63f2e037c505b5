"""A job that does not succeed leaves nothing behind on Discord: for each way a job can end
without success, the stand-in's channel holds none of its messages once the clean-up has
run; a successful job's messages are never touched."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from conftest import (
    CHANNEL,
    SMALL_CHUNK,
    TOKEN,
    Harness,
    HarnessFactory,
    messages_of,
    reassembled,
    store_some,
    until,
)
from discord import http as discord_http

from service.discord.client import DiscordClients
from service.discord.store import DiscordStore
from service.local.discord_api import DiscordStandIn, Fault, Route
from service.metrics import Metrics
from service.uploads.cleanup import Cleanup, Orphans, batches, content_prefix, snowflake_at
from service.uploads.journal import Journal, State
from service.uploads.outcome import Outcome

CHUNKS = 3


async def stored_job(harness: Harness, count: int = 2) -> str:
    """Start a job of CHUNKS chunks and store `count` of them, all found on Discord; its
    upload id."""
    upload_id = await store_some(harness.link, harness.http, stored=count, chunks=CHUNKS)
    assert len(messages_of(harness.discord, upload_id)) == count
    return upload_id


async def with_an_unlearned_message(harness: Harness) -> str:
    """Start a job of CHUNKS chunks and store chunk 0; chunk 1 is stored too, but its answer
    is lost and both retries fail (502): the service never learns that message's id. The
    upload id."""
    upload_id = await stored_job(harness, count=1)
    harness.discord.inject(Fault(store_then_drop=True), Fault(status=503), Fault(drop=True))
    assert (await harness.post(upload_id, 1, os.urandom(SMALL_CHUNK)))[0] == 502
    assert len(messages_of(harness.discord, upload_id)) == 2  # the service knows only one
    return upload_id


async def cleaned(harness: Harness, upload_id: str) -> list[str]:
    """Once nothing is being received or deleted: the upload's messages still on Discord."""
    await harness.service.endpoint.idle()
    await harness.service.cleanup.settled()
    return messages_of(harness.discord, upload_id)


BULK_DELETE_ROUTE = "POST /channels/{channel_id}/messages/bulk-delete"
DELETE_ROUTE = "DELETE /channels/{channel_id}/messages/{message_id}"


def requests_to(harness: Harness, route: str) -> float:
    """Requests the service sent to Discord on `route`, whatever their answers."""
    return sum(
        sample.value
        for family in harness.service.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "upload_discord_requests_total" and sample.labels["route"] == route
    )


async def test_an_aborted_job_leaves_nothing_and_uses_one_bulk_delete(harness: Harness) -> None:
    upload_id = await stored_job(harness)
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == []
    assert harness.discord.deleted == 2
    assert (requests_to(harness, BULK_DELETE_ROUTE), requests_to(harness, DELETE_ROUTE)) == (1, 0)
    assert harness.metric("upload_discord_messages_deleted_total") == 2
    assert harness.service.journal.uploads() == []  # nothing left for the next start


async def test_a_bot_without_manage_messages_deletes_its_messages_one_by_one(
    harness: Harness,
) -> None:
    """A bulk delete needs the Manage Messages permission, which a bot that only posts is
    seldom given; deleting its own messages one by one does not: Discord's 403 to the bulk
    delete is not the end of the clean-up. The next clean-up in the channel deletes one by
    one at once: no request Discord is known to refuse (a 403 counts towards Cloudflare's
    ban of the IP)."""
    upload_id = await stored_job(harness)
    harness.discord.deny_manage_messages()
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == []
    assert harness.metric("upload_discord_messages_deleted_total") == 2
    assert harness.metric("upload_discord_messages_left_total") == 0
    assert harness.service.journal.uploads() == []

    upload_id = await stored_job(harness)
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == []
    assert (requests_to(harness, BULK_DELETE_ROUTE), requests_to(harness, DELETE_ROUTE)) == (1, 4)


async def test_a_timed_out_job_leaves_nothing(start_service: HarnessFactory) -> None:
    harness = await start_service(upload_inactivity_timeout=0.3)
    await harness.configure()
    upload_id = await stored_job(harness)
    assert (await harness.link.next_finish())["success"] is False
    assert await cleaned(harness, upload_id) == []


async def test_a_job_discord_refuses_leaves_nothing(harness: Harness) -> None:
    upload_id = await stored_job(harness)
    harness.discord.inject(Fault(status=403))
    assert (await harness.post(upload_id, 2, os.urandom(SMALL_CHUNK)))[0] == 502
    assert (await harness.link.next_finish())["success"] is False
    assert await cleaned(harness, upload_id) == []


async def test_a_job_voided_by_a_lost_link_leaves_nothing(harness: Harness) -> None:
    upload_id = await stored_job(harness, count=1)  # one message: a single delete
    await harness.link.close()
    await harness.link.closed.wait()
    await until(lambda: harness.service.slots[0].upload is None)
    assert await cleaned(harness, upload_id) == []
    assert harness.discord.deleted == 1


async def test_a_job_stopped_by_shutdown_leaves_nothing(harness: Harness) -> None:
    upload_id = await stored_job(harness)
    await harness.service.shutdown()
    assert messages_of(harness.discord, upload_id) == []


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([Fault(hold=True)], id="its id known"),
        # stored, its answer lost; both retries fail: the service never learns its id
        pytest.param(
            [Fault(hold=True, store_then_drop=True), Fault(status=503), Fault(drop=True)],
            id="its id never learned",
        ),
    ],
)
async def test_a_chunk_stored_after_an_abort_is_deleted_too(
    harness: Harness, faults: list[Fault]
) -> None:
    upload_id = await stored_job(harness)
    harness.discord.inject(*faults)
    late = asyncio.create_task(harness.post(upload_id, 2, os.urandom(SMALL_CHUNK)))
    await harness.discord.wait_for_posts(3)
    assert await harness.link.abort() == {"success": True}
    harness.discord.release_held()
    assert (await late)[0] == 410
    assert await cleaned(harness, upload_id) == []
    assert harness.discord.deleted == 3


LIST_ROUTE = "GET /channels/{channel_id}/messages"


def searches(harness: Harness) -> float:
    """Pages of the channel the service has listed."""
    labels = {"route": LIST_ROUTE, "status": "200"}
    registry = harness.service.metrics.registry
    return registry.get_sample_value("upload_discord_requests_total", labels) or 0.0


def unknown_messages(harness: Harness, upload_id: str, count: int) -> None:
    """Messages of the upload stored under ids the service never learned."""
    for index in range(count):
        harness.discord.add_message(CHANNEL, f"{content_prefix(upload_id)} chunk {index}")


async def test_requests_to_clean_one_upload_make_one_search_and_delete_each_message_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Several posts of an upload that ended fail without a definite answer: each asks for
    a search of the channel, and they are one."""
    upload_id, store = str(uuid4()), harness.service.slots[0].store
    assert store is not None
    unknown_messages(harness, upload_id, 3)
    since = snowflake_at(time.time() - 300)
    for _ in range(3):
        orphans = Orphans(upload_id, (), "a post failed after the upload ended", since)
        harness.service.cleanup.delete(store, orphans)
    assert await cleaned(harness, upload_id) == []
    assert searches(harness) == 1
    assert harness.metric("upload_discord_messages_deleted_total") == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_search_asked_for_during_one_is_made_once_more_after_it(harness: Harness) -> None:
    """A message stored after a search began may be missed by it: one more search follows,
    however many ask for it meanwhile."""
    upload_id, store = str(uuid4()), harness.service.slots[0].store
    assert store is not None
    unknown_messages(harness, upload_id, 2)
    orphans = Orphans(upload_id, (), "a post failed", snowflake_at(time.time() - 300))
    harness.discord.inject(Fault(hold=True), route=Route.LIST_MESSAGES)
    harness.service.cleanup.delete(store, orphans)
    await until(lambda: harness.discord.faults_served == 1)  # the first search is at Discord
    unknown_messages(harness, upload_id, 1)  # stored meanwhile
    for _ in range(2):
        harness.service.cleanup.delete(store, orphans)
    harness.discord.release_held()
    assert await cleaned(harness, upload_id) == []
    assert searches(harness) == 2
    assert harness.metric("upload_discord_messages_deleted_total") == 3


async def test_a_successful_jobs_messages_stay(harness: Harness) -> None:
    upload_id = await stored_job(harness, count=CHUNKS)
    assert (await harness.link.next_finish())["success"] is True
    assert len(await cleaned(harness, upload_id)) == CHUNKS
    assert harness.discord.deleted == 0
    assert harness.service.journal.uploads() == []  # the manager has their ids


async def test_transient_delete_failures_are_retried(harness: Harness) -> None:
    upload_id = await stored_job(harness)
    harness.discord.inject(Fault(status=500), Fault(status=503), route=Route.BULK_DELETE)
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == []


async def test_what_cannot_be_deleted_is_logged_with_its_ids(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    upload_id = await stored_job(harness)
    left = messages_of(harness.discord, upload_id)
    # The bot lost access to the channel: its bulk delete is refused, and so is the first
    # message deleted alone.
    harness.discord.inject(Fault(status=403), route=Route.BULK_DELETE)
    harness.discord.inject(Fault(status=403), route=Route.DELETE_MESSAGE)
    assert await harness.link.abort() == {"success": True}
    assert sorted(await cleaned(harness, upload_id)) == sorted(left)
    [line] = [r for r in caplog.records if "are left" in r.getMessage()]
    assert all(message_id in line.getMessage() for message_id in left)
    assert "403" in line.getMessage()
    assert harness.metric("upload_discord_messages_left_total") == 2
    [kept] = harness.service.journal.uploads()  # for the next start to try again
    assert kept.state is State.FAILED and sorted(kept.message_ids) == sorted(left)


def test_old_messages_are_deleted_one_by_one_and_young_ones_in_bulk() -> None:
    now = datetime.now(UTC)
    young = [snowflake(now - timedelta(minutes=n)) for n in range(150)]
    old = [snowflake(now - timedelta(days=15))]
    requests = batches([*young, *old], now.timestamp())
    assert [len(batch) for batch in requests] == [100, 50, 1]
    assert requests[-1] == old


def snowflake(moment: datetime) -> str:
    return str(int((moment.timestamp() - 1420070400) * 1000) << 22)


async def test_what_shutdown_cannot_delete_in_time_is_logged_with_its_ids(
    start_service: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start_service(shutdown_grace=0.1)
    await harness.configure()
    upload_id = await stored_job(harness)
    left = messages_of(harness.discord, upload_id)
    harness.discord.inject(Fault(hold=True), route=Route.BULK_DELETE)  # Discord never answers
    await harness.service.shutdown()
    harness.discord.release_held()
    [line] = [r for r in caplog.records if "stopped before deleting" in r.getMessage()]
    assert all(message_id in line.getMessage() for message_id in left)
    assert line.upload_id == upload_id  # type: ignore[attr-defined]
    assert harness.metric("upload_discord_messages_left_total") == 2


async def test_a_post_whose_answer_was_lost_and_whose_retries_failed_is_deleted_too(
    harness: Harness,
) -> None:
    upload_id = await with_an_unlearned_message(harness)
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == []


async def test_a_post_whose_answer_was_lost_then_refused_is_deleted_too(harness: Harness) -> None:
    upload_id = await stored_job(harness, count=1)
    # chunk 1 is stored but its answer is lost; the retry is refused and ends the job
    harness.discord.inject(Fault(store_then_drop=True), Fault(status=403))
    status, _ = await harness.post(upload_id, 1, os.urandom(SMALL_CHUNK))
    assert status == 502
    assert (await harness.link.next_finish())["success"] is False
    assert await cleaned(harness, upload_id) == []


async def test_a_search_discord_refuses_is_logged_not_reported_as_done(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the line saying it is done is INFO: it must be seen
    upload_id = await with_an_unlearned_message(harness)
    _, unknown = messages_of(harness.discord, upload_id)
    # the bot may not read the channel's history: the search is refused
    harness.discord.inject(Fault(status=403), route=Route.LIST_MESSAGES)
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == [unknown]  # the known one is deleted
    [line] = [r for r in caplog.records if "could not be searched" in r.getMessage()]
    assert line.levelname == "WARNING" and "403" in line.getMessage()
    assert not [r for r in caplog.records if "deleted the 1 messages" in r.getMessage()]


async def test_a_search_that_fails_for_a_while_is_tried_again_and_finds_what_was_left(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The search shares the post's and the deletes' retry policy: a 5xx and a dropped
    connection are tried again (DISCORD_RETRIES), and the message found is deleted."""
    upload_id = await with_an_unlearned_message(harness)
    harness.discord.inject(Fault(status=500), Fault(drop=True), route=Route.LIST_MESSAGES)
    assert await harness.link.abort() == {"success": True}
    assert await cleaned(harness, upload_id) == []
    assert harness.discord.deleted == 2
    assert not [r for r in caplog.records if "could not be searched" in r.getMessage()]


async def test_shutdown_waits_for_deletions_begun_while_it_waits_and_logs_what_is_left(
    discord: DiscordStandIn, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean-up's shutdown on its own, with a real store: a post held at Discord comes
    back stored while `finish` waits for a slow bulk delete, and the single delete of its
    message never gets an answer."""
    monkeypatch.setattr(discord_http.Route, "BASE", discord.base_url)
    metrics = Metrics([], [])
    clients = DiscordClients(global_rate=50, request_timeout=5.0, metrics=metrics)
    store = DiscordStore(
        client=clients.client(TOKEN),
        channel_id=CHANNEL,
        max_ratelimit_wait=5.0,
        metrics=metrics,
    )
    await store.open()
    upload_id = "6f1c0e6e-5a61-4a8e-9a39-0d3f4a7c9b21"
    stored = [
        discord.add_message(CHANNEL, f"{content_prefix(upload_id)} chunk {i}") for i in (0, 1)
    ]
    discord.inject(Fault(hold=True))
    held = asyncio.create_task(
        store.post(f"{content_prefix(upload_id)} chunk 2", "2", memoryview(b"x"))
    )
    await discord.wait_for_posts(1)
    discord.inject(Fault(delay=0.2), route=Route.BULK_DELETE)  # slow
    discord.inject(Fault(hang=True), route=Route.DELETE_MESSAGE)  # never answers
    cleanup = Cleanup(metrics, Journal.in_memory())
    cleanup.delete(store, Orphans(upload_id, tuple(m.id for m in stored), "it was aborted"))

    finishing = asyncio.create_task(cleanup.finish(grace=1.0))
    await asyncio.sleep(0)  # it waits for the bulk delete
    discord.release_held()
    late = await held  # stored after its upload ended: the upload deletes it, as it does
    cleanup.delete(store, Orphans(upload_id, (late,), "stored after the upload ended"))
    await finishing
    # a post still at Discord when the clients close may have stored a message all the same
    cleanup.delete(store, Orphans(upload_id, (), "a post failed", search_since=0))
    await clients.close()

    assert [m.id for m in discord.messages(CHANNEL)] == [late]  # the bulk delete was done
    [left] = [r.getMessage() for r in caplog.records if "stopped before deleting" in r.getMessage()]
    assert left.endswith(late)
    assert metrics.registry.get_sample_value("upload_discord_messages_left_total") == 1
    [unsearched] = [r for r in caplog.records if "could not search for" in r.getMessage()]
    assert upload_id in unsearched.getMessage() and unsearched.levelname == "WARNING"


async def test_a_post_still_at_discord_at_shutdown_is_logged_as_maybe_left(
    start_service: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start_service(shutdown_grace=0.2)
    await harness.configure()
    upload_id = await stored_job(harness, count=1)
    harness.discord.inject(Fault(hold=True))
    at_discord = asyncio.create_task(harness.post(upload_id, 1, os.urandom(SMALL_CHUNK)))
    await harness.discord.wait_for_posts(2)
    await harness.service.shutdown()
    harness.discord.release_held()
    assert (await at_discord)[0] in (503, 410)
    [line] = [r for r in caplog.records if "could not search for" in r.getMessage()]
    assert upload_id in line.getMessage()


async def test_a_success_finish_the_closed_link_never_sent_voids_the_job_and_cleans_up(
    harness: Harness,
) -> None:
    upload_id = await harness.start(2 * SMALL_CHUNK)
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    harness.discord.inject(Fault(hold=True))
    last = asyncio.create_task(harness.post(upload_id, 1, os.urandom(SMALL_CHUNK)))
    await harness.discord.wait_for_posts(2)
    await harness.service.links.stop()  # the link is down; its slot has not been told yet
    harness.discord.release_held()
    assert (await last)[0] == 200  # stored; the finish packet cannot go out

    assert await cleaned(harness, upload_id) == []  # the manager records none of them
    registry = harness.service.metrics.registry
    assert registry.get_sample_value("upload_jobs_total", {"outcome": Outcome.VOIDED}) == 1
    assert registry.get_sample_value("upload_jobs_total", {"outcome": Outcome.SUCCEEDED}) == 0
    assert harness.service.slots[0].upload is None


async def test_a_copy_a_successful_upload_left_behind_its_retried_chunk_is_deleted(
    start_service: HarnessFactory,
) -> None:
    """A post whose answer was lost stored its message, the browser sent the chunk again
    and the upload succeeded: the first copy is deleted, every message the finish names
    stays."""
    harness = await start_service(discord_retries=1)
    assert await harness.configure() == {"success": True}
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(store_then_drop=True))  # stored, the answer lost
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK]))[0] == 502
    for index in (0, 1):
        chunk = data[index * SMALL_CHUNK :][:SMALL_CHUNK]
        assert (await harness.post(upload_id, index, chunk))[0] == 200
    finish = await harness.link.next_finish()
    assert finish["success"] is True

    assert sorted(await cleaned(harness, upload_id)) == sorted(finish["messages"])
    assert harness.discord.deleted == 1
    assert reassembled(harness.discord, finish) == data
