"""The token's global limit in one process, over real sockets against the Discord stand-in.

A request holds its place in the global limit until a second after its last byte was written
(Discord has counted it by then), not until a second after its answer, which a Discord
storing an attachment sends later. A global 429 nevertheless puts every request back on
holding its place until its answer. No test measures time: each proves its point by the
order of what the stand-in saw.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from conftest import TOKEN
from discord import File
from discord.http import Route, handle_message_parameters

from service.chunks.memory_file import MemoryReader
from service.discord.client import DiscordClient, DiscordClients, Patience
from service.discord.store import DiscordStore
from service.local.discord_api import DiscordStandIn, Fault
from service.local.discord_api import Route as StandInRoute
from service.metrics import Metrics
from service.refusals import DiscordBusy

CHANNELS = ("1100000000000000001", "1100000000000000002", "1100000000000000003")
WAIT = 30.0


@pytest.fixture
async def discord(request: pytest.FixtureRequest) -> AsyncIterator[DiscordStandIn]:
    async with DiscordStandIn(token=TOKEN, answer_delay=getattr(request, "param", 0.0)) as standin:
        base, Route.BASE = Route.BASE, standin.base_url
        yield standin
        Route.BASE = base


@pytest.fixture
async def metrics() -> Metrics:
    return Metrics([], [])


@pytest.fixture
async def client(discord: DiscordStandIn, metrics: Metrics) -> AsyncIterator[DiscordClient]:
    """The token's client, keeping to 1 request a second."""
    registry = DiscordClients(global_rate=1, request_timeout=120.0, metrics=metrics)
    client = registry.client(TOKEN)
    await client.login(WAIT)
    yield client
    await registry.close()


async def post(
    client: DiscordClient, channel: str, size: int = 256 * 1024, *, wait: float = WAIT
) -> None:
    """Post `size` random bytes as a message's attachment, as the store does, waiting at most
    `wait` s for the limits; it is stored."""
    data = memoryview(bytearray(os.urandom(size)))
    params = handle_message_parameters(
        content="chunk", file=File(MemoryReader(data), filename="0"), nonce=secrets.token_hex(8)
    )
    answer = await client.post_message(channel, params, patience=Patience(wait))
    assert answer["attachments"][0]["size"] == size


@pytest.mark.parametrize("discord", [60.0], indirect=True)
async def test_the_next_request_goes_a_second_after_the_last_byte_not_after_the_answer(
    client: DiscordClient, discord: DiscordStandIn
) -> None:
    """Discord answers each post a minute after counting it: the next post does not wait
    for that answer (it would not come within the test's time)."""
    first = asyncio.create_task(post(client, CHANNELS[0]))
    second = asyncio.create_task(post(client, CHANNELS[1]))
    async with asyncio.timeout(WAIT):
        await discord.wait_for_posts(2)
    assert not first.done()
    assert discord.rate_limited == 0
    assert discord.busiest_second() == 1  # the login and the two posts: a second apart
    for task in (first, second):
        task.cancel()


async def test_a_global_429_holds_every_place_until_its_answer_for_a_while(
    client: DiscordClient,
    discord: DiscordStandIn,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A global 429 that the pacing did not expect (Discord counted later than it seemed).
    discord.inject(Fault(status=429, is_global=True, retry_after=0.05))
    with caplog.at_level(logging.WARNING):
        await post(client, CHANNELS[0])
    assert metrics.registry.get_sample_value("upload_discord_global_rate_limited_total") == 1
    assert any("global 429" in record.getMessage() for record in caplog.records)

    # Now Discord answers the next post 2 s after counting it: the one after that waits
    # for the answer (and a second), where its last byte alone would have let it go.
    discord.inject(Fault(delay=2.0))
    slow = asyncio.create_task(post(client, CHANNELS[1]))
    following = asyncio.create_task(post(client, CHANNELS[2]))
    async with asyncio.timeout(WAIT):
        await discord.wait_for_posts(4)  # the refused post, its retry, the slow one, the next
    assert slow.done()
    await asyncio.gather(slow, following)
    assert discord.busiest_second() == 1


async def test_a_cloudflare_429_holds_every_channel_of_the_token(
    client: DiscordClient, discord: DiscordStandIn
) -> None:
    """Cloudflare refuses the IP, not a channel: after its 429 to one channel, a post to
    another waits and is refused too, without a request to Discord."""
    discord.inject(Fault(cloudflare=True))
    with pytest.raises(DiscordBusy, match="Cloudflare"):
        await post(client, CHANNELS[0])
    with pytest.raises(DiscordBusy):
        await post(client, CHANNELS[1], wait=0.2)
    assert discord.posts == 1


async def test_a_delete_or_search_whose_connection_dropped_is_tried_again_only_paced(
    client: DiscordClient, discord: DiscordStandIn
) -> None:
    """aiohttp sends a GET or DELETE whose connection closed unanswered again at once, past
    the pacer, and the place it held would be given back twice: the client refuses that
    resend and the store tries the request again, paced. Discord then never counts more
    than the rate in a second, then or later."""
    message = discord.add_message(CHANNELS[0], "chunk 0")
    discord.inject(Fault(drop=True), route=StandInRoute.DELETE_MESSAGE)
    store = DiscordStore(
        client=client, channel_id=CHANNELS[0], max_ratelimit_wait=WAIT, metrics=Metrics([], [])
    )
    async with asyncio.timeout(WAIT):
        await store.delete_messages([message.id])
        await asyncio.gather(post(client, CHANNELS[1]), post(client, CHANNELS[2]))
    assert discord.messages(CHANNELS[0]) == []
    assert discord.busiest_second() == 1
