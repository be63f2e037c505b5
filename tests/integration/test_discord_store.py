"""The store: a sealed chunk handed to aiohttp as the buffer itself, in slices, its length
known; and Discord's answer checked before a chunk counts as stored (the Discord stand-in
mangles its answers as a proxy in front of Discord might)."""

from __future__ import annotations

import asyncio
import os

import aiohttp.payload
import pytest
from conftest import CHANNEL, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, reassembled
from discord import http as discord_http

from service.chunks.memory_file import MemoryReader
from service.discord.client import DiscordClients
from service.discord.retry import RetryPolicy
from service.discord.store import DiscordStore
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn, Fault, OddAnswer, Route
from service.metrics import Metrics
from service.refusals import DiscordClosed


class Collect:
    """Stands in for aiohttp's stream writer: keeps what it is given, as given."""

    def __init__(self) -> None:
        self.writes: list[object] = []

    async def write(self, chunk: object) -> None:
        self.writes.append(chunk)


async def test_sealed_chunk_is_sent_from_its_buffer_without_a_copy() -> None:
    buffer = bytearray(range(256)) * 4096  # 1 MiB, more than one slice
    payload = aiohttp.payload.get_payload(MemoryReader(memoryview(buffer)))
    assert payload.size == len(buffer)  # so the request has a Content-Length, not chunks

    writer = Collect()
    await payload.write(writer)  # type: ignore[arg-type]

    assert len(writer.writes) > 1
    assert all(isinstance(w, memoryview) and w.obj is buffer for w in writer.writes)
    assert b"".join(writer.writes) == buffer  # type: ignore[arg-type]


WELL_STORED = [odd for odd in OddAnswer if odd is not OddAnswer.NO_ATTACHMENTS]


@pytest.mark.parametrize("odd", WELL_STORED, ids=str)
async def test_a_200_that_does_not_show_the_chunk_stored_is_retried_with_the_same_nonce(
    harness: Harness, odd: OddAnswer
) -> None:
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(answer=odd))

    assert (await harness.post(upload_id, 0, data))[0] == 200
    assert harness.discord.posts == 2  # the odd answer, then the same nonce again
    [message] = harness.discord.messages(CHANNEL)  # Discord de-duplicated the retry
    finish = await harness.link.next_finish()
    assert finish["messages"] == [message.id]
    assert reassembled(harness.discord, finish) == data


async def test_a_message_stored_without_its_attachment_never_counts(harness: Harness) -> None:
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(answer=OddAnswer.NO_ATTACHMENTS))

    status, body = await harness.post(upload_id, 0, data)  # the same nonce finds it again
    assert status == 502 and "attachment" in body
    assert (await harness.post(upload_id, 0, data))[0] == 200  # a new post: a new nonce
    finish = await harness.link.next_finish()
    assert reassembled(harness.discord, finish) == data


async def test_odd_200s_on_every_try_are_a_502_and_nothing_is_recorded(harness: Harness) -> None:
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    retries = harness.service.settings.discord_retries
    harness.discord.inject(*[Fault(answer=OddAnswer.WRONG_SIZE)] * retries)

    status, body = await harness.post(upload_id, 0, data)
    assert status == 502 and f"not the {SMALL_CHUNK + 32} sent" in body

    assert (await harness.post(upload_id, 0, data))[0] == 200  # the job lives
    finish = await harness.link.next_finish()
    assert reassembled(harness.discord, finish) == data


async def test_a_cloudflare_429_is_a_503_and_nothing_more_is_sent_for_a_while(
    start_service: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start_service(discord_max_ratelimit_wait=0.2)  # each try's wait
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(cloudflare=True))

    async with harness.http.post(harness.address, data=chunk_form(upload_id, 0, data)) as response:
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "Cloudflare" in (await response.json())["error"]
    assert "Cloudflare" in caplog.text and "banned" in caplog.text

    # Not retried in a loop: the chunk sent again waits, then is answered 503 without a
    # request to Discord.
    assert (await harness.post(upload_id, 0, data))[0] == 503
    assert harness.discord.posts == 1


async def test_a_post_after_the_session_closed_is_neither_tried_again_nor_maybe_stored(
    discord: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At shutdown the Discord clients close before the last posts give up: such a post was
    never sent, so it is not tried again (a backoff would only hold up the shutdown) and its
    upload's clean-up has no channel to search for it."""
    monkeypatch.setattr(discord_http.Route, "BASE", discord.base_url)
    metrics = Metrics([], [])
    retry = RetryPolicy(first_backoff=0.01)  # a retry would be counted, not waited for
    clients = DiscordClients(global_rate=50, request_timeout=5.0, metrics=metrics, retry=retry)
    store = DiscordStore(
        client=clients.client(TOKEN), channel_id=CHANNEL, max_ratelimit_wait=5.0, metrics=metrics
    )
    await store.open()
    await clients.close()

    with pytest.raises(DiscordClosed) as closed:
        await store.post("chunk 0", "0", memoryview(bytes(1024)))
    assert closed.value.maybe_stored is False
    assert metrics.registry.get_sample_value("upload_discord_retries_total") == 0
    assert discord.posts == 0


async def test_a_delete_rate_limited_longer_than_a_chunk_may_wait_is_sent_after_the_wait(
    discord: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody waits for a clean-up: where a chunk's post would be answered 503, a delete
    that Discord rate-limits for longer than DISCORD_MAX_RATELIMIT_WAIT waits it out."""
    monkeypatch.setattr(discord_http.Route, "BASE", discord.base_url)
    metrics = Metrics([], [])
    clients = DiscordClients(global_rate=50, request_timeout=5.0, metrics=metrics)
    store = DiscordStore(
        client=clients.client(TOKEN), channel_id=CHANNEL, max_ratelimit_wait=0.1, metrics=metrics
    )
    message = discord.add_message(CHANNEL, "chunk 0")
    discord.inject(Fault(status=429, retry_after=0.5), route=Route.DELETE_MESSAGE)
    try:
        await store.open()
        async with asyncio.timeout(10):
            await store.delete_messages([message.id])
    finally:
        await clients.close()
    assert discord.faults_served == 1
    assert discord.messages(CHANNEL) == []
