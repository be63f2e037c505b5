"""Pacing over real sockets: the service against a rate-limited Discord stand-in.

No test here measures time: each proves its point by what the stand-in counted, or by
finishing inside a window the service must not sleep out (a post after it is still refused).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import CHANNEL, KEY, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, reassembled

from service.local.browser import upload
from service.local.discord_api import DiscordStandIn
from service.local.manager import ManagerStandIn

OTHER_CHANNEL = "1100000000000000002"


@pytest.fixture
async def discord(request: pytest.FixtureRequest) -> AsyncIterator[DiscordStandIn]:
    """The stand-in, with the rate limit a test names through indirect parametrization."""
    async with DiscordStandIn(token=TOKEN, **getattr(request, "param", {})) as standin:
        yield standin


@pytest.mark.parametrize("discord", [{"messages_per_window": 5, "window": 0.4}], indirect=True)
async def test_a_burst_at_the_buckets_edge_draws_no_429(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    harness = await start_service()
    await harness.configure()
    data = os.urandom(30 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))

    report = await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)

    assert discord.rate_limited == 0
    assert report.retries == 0
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert reassembled(discord, finish) == data


@pytest.mark.parametrize("discord", [{"messages_per_window": 5, "window": 30.0}], indirect=True)
async def test_the_post_that_empties_the_bucket_is_answered_without_sleeping_out_the_window(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    """discord.py 2.7.1 would hold the fifth post's answer for the rest of the 30 s window."""
    harness = await start_service()
    await harness.configure()
    data = os.urandom(5 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))

    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()

    assert finish["success"] is True
    assert discord.rate_limited == 0
    # The upload ended inside the window its posts emptied: a post now is still refused.
    assert await another_post(harness, discord) == 429


async def another_post(harness: Harness, discord: DiscordStandIn) -> int:
    """The status Discord answers one more post to CHANNEL with, sent past the service."""
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("payload_json", '{"content": "x", "attachments": [{"id": 0, "filename": "0"}]}')
    form.add_field("files[0]", b"x", filename="0", content_type="application/octet-stream")
    url = f"{discord.base_url}/channels/{CHANNEL}/messages"
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with harness.http.post(url, data=form, headers=headers) as answer:
        return answer.status


async def test_slots_with_one_token_share_one_client_and_one_login(
    start_service: HarnessFactory, manager: ManagerStandIn, discord: DiscordStandIn
) -> None:
    harness = await start_service(slots=2)
    second = await manager.next_service()
    assert await harness.link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
        "success": True
    }
    assert await second.configure(token=TOKEN, channel_id=OTHER_CHANNEL, crypto_key=KEY) == {
        "success": True
    }

    service = harness.service
    assert service.discord_clients is not None and len(service.discord_clients) == 1
    first_store, second_store = (slot.store for slot in service.slots)
    assert first_store is not None and second_store is not None
    assert first_store.client is second_store.client
    logins = service.metrics.registry.get_sample_value(
        "upload_discord_requests_total", {"route": "GET /users/@me", "status": "200"}
    )
    assert logins == 1  # the only request so far: one GET /users/@me for both slots

    data = os.urandom(SMALL_CHUNK)
    first_id = await harness.start(len(data))
    second_id, reply = await second.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
    assert reply == {"success": True}
    answers = await asyncio.gather(
        harness.post(first_id, 0, data), harness.post(second_id, 0, data)
    )
    assert [status for status, _ in answers] == [200, 200]
    assert len(discord.messages(CHANNEL)) == len(discord.messages(OTHER_CHANNEL)) == 1
