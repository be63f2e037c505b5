"""A chunk sent again while an earlier request for it is still at work (its post held at
Discord, its client gone): the browser tries again at once, up to 10 times, so the new
request waits for the earlier one to be done with the chunk, rather than a 409 at once."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter

import pytest
from conftest import SMALL_CHUNK, Harness, HarnessFactory, messages_of, reassembled, until

from service.local.browser import chunk_form, upload
from service.local.discord_api import Fault
from service.local.driver import raw_chunk_body, request_head

WAITING = "sent again while an earlier request stores it"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def waiting(logs: pytest.LogCaptureFixture) -> int:
    """How many requests have begun waiting for an earlier one, by the service's log."""
    return sum(WAITING in record.getMessage() for record in logs.records)


async def lost_request(harness: Harness, upload_id: str, index: int, data: bytes) -> None:
    """A request for the chunk whose client goes once its post is at Discord (an XHR error
    on the browser's side: the service, its body read whole, still stores the chunk)."""
    posts = harness.discord.posts
    port, path = harness.service.port, harness.service.settings.own_path
    content_type, body = raw_chunk_body(upload_id, index, data)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_head(port, path, len(body), content_type) + body)
    await harness.discord.wait_for_posts(posts + 1)
    writer.close()
    await writer.wait_closed()


async def lost_first_chunk(harness: Harness, fault: Fault | None = None) -> tuple[str, bytes]:
    """A 2-chunk upload whose chunk 0 request is lost once its post is at Discord, the post
    answered as `fault` says (held by default): the upload's id and its file."""
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(fault or Fault(hold=True))
    await lost_request(harness, upload_id, 0, data[:SMALL_CHUNK])
    return upload_id, data


async def finish(harness: Harness, upload_id: str, data: bytes) -> None:
    """Both chunks sent as the browser would, and the file the manager is told of checked."""
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK])) == (200, "0")
    assert (await harness.post(upload_id, 1, data[SMALL_CHUNK:]))[0] == 200
    assert reassembled(harness.discord, await harness.link.next_finish()) == data


async def test_the_browser_sending_a_chunk_again_while_its_lost_request_is_stored_gets_200(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    """The browser's tries of chunk 0 wait for the lost request's held post instead of ten
    409s in moments; once Discord answers it, they get 200, and the upload finishes with one
    message per chunk."""
    upload_id, data = await lost_first_chunk(harness)
    browser = asyncio.create_task(
        upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    )
    await until(lambda: browser.done() or waiting(logs) == 1)
    harness.discord.release_held()

    report = await browser
    assert report.statuses == Counter({200: 2})
    assert len(messages_of(harness.discord, upload_id)) == 2
    assert reassembled(harness.discord, await harness.link.next_finish()) == data


async def sent_again(
    harness: Harness, logs: pytest.LogCaptureFixture, upload_id: str, index: int, data: bytes
) -> asyncio.Task[tuple[int, str]]:
    """The chunk sent again (one try), once it waits for the earlier request."""
    before = waiting(logs)
    answer = asyncio.create_task(harness.post(upload_id, index, data))
    await until(lambda: answer.done() or waiting(logs) == before + 1)
    return answer


async def test_a_chunk_whose_earlier_request_failed_at_discord_is_stored_by_the_one_sent_again(
    start_service: HarnessFactory, logs: pytest.LogCaptureFixture
) -> None:
    """The lost request's post fails (a 5xx, its one try spent): the request waiting for it
    claims the chunk and stores it itself."""
    harness = await start_service(discord_retries=1)
    await harness.configure()
    upload_id, data = await lost_first_chunk(harness, Fault(hold=True, status=500))
    again = await sent_again(harness, logs, upload_id, 0, data[:SMALL_CHUNK])
    harness.discord.release_held()

    assert await again == (200, "0")
    assert harness.discord.posts == 2  # the failed one, then the one sent again
    assert (await harness.post(upload_id, 1, data[SMALL_CHUNK:]))[0] == 200
    assert reassembled(harness.discord, await harness.link.next_finish()) == data


async def test_a_chunk_sent_again_with_other_bytes_than_the_earlier_request_stored_gets_409(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    upload_id, data = await lost_first_chunk(harness)
    again = await sent_again(harness, logs, upload_id, 0, os.urandom(SMALL_CHUNK))
    harness.discord.release_held()

    status, text = await again
    assert status == 409 and "different bytes" in text
    assert len(messages_of(harness.discord, upload_id)) == 1
    await finish(harness, upload_id, data)


async def test_a_chunk_sent_again_is_answered_410_at_once_when_its_upload_is_aborted(
    start_service: HarnessFactory, logs: pytest.LogCaptureFixture
) -> None:
    """It waits for nothing once its upload is aborted: 410 before Discord answers the earlier
    request (nor does that request time out meanwhile), whose message is then deleted; no
    chunk or memory is left counted."""
    harness = await start_service(discord_request_timeout=60.0)
    await harness.configure()
    upload_id, data = await lost_first_chunk(harness)
    again = await sent_again(harness, logs, upload_id, 0, data[:SMALL_CHUNK])
    assert await harness.link.abort() == {"success": True}

    status, text = await again  # the held post is not released yet
    assert status == 410 and "aborted" in text
    harness.discord.release_held()
    await until(lambda: harness.metric("upload_chunks_in_flight") == 0)
    assert harness.service.memory.in_use == 0
    await until(lambda: messages_of(harness.discord, upload_id) == [])


async def test_a_chunk_still_held_after_client_read_timeout_is_refused_with_409_naming_the_wait(
    start_service: HarnessFactory, logs: pytest.LogCaptureFixture
) -> None:
    harness = await start_service(client_read_timeout=0.5)
    await harness.configure()
    upload_id, data = await lost_first_chunk(harness)
    again = await sent_again(harness, logs, upload_id, 0, data[:SMALL_CHUNK])

    status, text = await again  # the held post is not released yet
    assert status == 409 and "still being received or stored by an earlier request" in text
    assert "waited 0.5 seconds" in text
    harness.discord.release_held()
    await finish(harness, upload_id, data)


async def test_a_chunk_sent_a_third_time_takes_the_waiting_ones_place(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    """The browser gave the waiting request up too (its body unread, the service cannot see
    it go): the newest waits in its place, and the older gets the 409."""
    upload_id, data = await lost_first_chunk(harness)
    older = await sent_again(harness, logs, upload_id, 0, data[:SMALL_CHUNK])
    newer = await sent_again(harness, logs, upload_id, 0, data[:SMALL_CHUNK])

    status, text = await older
    assert status == 409 and "the new request takes its place" in text
    harness.discord.release_held()
    assert await newer == (200, "0")
    assert len(messages_of(harness.discord, upload_id)) == 1


async def test_a_chunk_sent_again_is_answered_503_by_a_shutdown_that_does_not_wait_for_it(
    start_service: HarnessFactory, logs: pytest.LogCaptureFixture
) -> None:
    """The shutdown waits its grace period for the earlier request, as for any chunk being
    stored, then ends the upload: the waiting request gets 503 with Retry-After, and the
    shutdown is over (it did not wait for the request's CLIENT_READ_TIMEOUT)."""
    harness = await start_service(shutdown_grace=0.2, client_read_timeout=60.0)
    await harness.configure()
    upload_id, data = await lost_first_chunk(harness)
    form = chunk_form(upload_id, 0, data[:SMALL_CHUNK])
    again = asyncio.create_task(harness.http.post(harness.address, data=form))
    await until(lambda: waiting(logs) == 1)

    await harness.service.shutdown()
    async with await again as answer:
        assert answer.status == 503 and int(answer.headers["Retry-After"]) > 0
        assert "shutting down" in (await answer.json())["error"]
    harness.discord.release_held()
