"""The Discord stand-in, driven by discord.py's real HTTPClient over real sockets.

Also the raw client the other test_discord_standin_* files share: `running(**options)`.
"""

import asyncio
import io
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from multidict import CIMultiDictProxy

from service.local.discord_api import BUCKETS, MESSAGES_BUCKET, DiscordStandIn, Fault, Route

TOKEN = "stand-in-token"
CHANNEL = "123456789012345678"
OTHER_CHANNEL = "223456789012345678"
SNOWFLAKE = re.compile(r"[0-9]{17,20}")
BOUNDARY = "stand-in-test-boundary"


def message_body(data: bytes, content: str = "x") -> bytes:
    """A message post's multipart body as discord.py sends it: payload_json, then files[0]."""
    payload = json.dumps({"content": content, "attachments": [{"id": 0, "filename": "0"}]})
    return b"".join(
        [
            f"--{BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="payload_json"\r\n\r\n',
            payload.encode(),
            f"\r\n--{BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="files[0]"; filename="0"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )


@dataclass
class Reply:
    """One answer, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Api:
    """A plain aiohttp client of one stand-in, authorised as its bot."""

    standin: DiscordStandIn
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, **options: Any) -> Reply:
        url = self.standin.base_url + path
        async with self.session.request(method, url, **options) as response:
            return Reply(response.status, response.headers, await response.read())

    async def post(
        self, body: bytes | AsyncIterable[bytes] | None = None, channel: str = CHANNEL
    ) -> Reply:
        """Post a message; `body` is a message_body(), by default of the attachment b"chunk"."""
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        path = f"/channels/{channel}/messages"
        data = message_body(b"chunk") if body is None else body
        return await self.request("POST", path, data=data, headers=headers)

    async def delete(self, message_id: str, channel: str = CHANNEL) -> Reply:
        return await self.request("DELETE", f"/channels/{channel}/messages/{message_id}")

    async def bulk_delete(self, ids: list[Any], channel: str = CHANNEL) -> Reply:
        path = f"/channels/{channel}/messages/bulk-delete"
        return await self.request("POST", path, json={"messages": ids})


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[Api]:
    """A stand-in (keyword arguments as DiscordStandIn's) and a client of it."""
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with (
        DiscordStandIn(token=TOKEN, **options) as standin,
        aiohttp.ClientSession(headers=headers) as session,
    ):
        yield Api(standin, session)


@asynccontextmanager
async def logged_in(api: Api, **options: Any) -> AsyncIterator[discord.http.HTTPClient]:
    """discord.py's HTTPClient (options as its own), logged in to the stand-in."""
    original = discord.http.Route.BASE
    discord.http.Route.BASE = api.standin.base_url
    http = discord.http.HTTPClient(asyncio.get_running_loop(), **options)
    try:
        await http.static_login(TOKEN)
        yield http
    finally:
        discord.http.Route.BASE = original
        await http.close()


StartStandIn = Callable[..., Awaitable[DiscordStandIn]]
Connect = Callable[..., Awaitable[discord.http.HTTPClient]]


@pytest.fixture
async def start_standin() -> AsyncIterator[StartStandIn]:
    """Start stand-ins (keyword arguments as DiscordStandIn's) and point discord.py at the last."""
    original_base = discord.http.Route.BASE
    started: list[DiscordStandIn] = []

    async def start(**options: Any) -> DiscordStandIn:
        standin = DiscordStandIn(token=TOKEN, **options)
        await standin.start()
        started.append(standin)
        discord.http.Route.BASE = standin.base_url
        return standin

    yield start
    discord.http.Route.BASE = original_base
    for standin in started:
        await standin.close()


@pytest.fixture
async def connect(start_standin: StartStandIn) -> AsyncIterator[Connect]:
    """Log discord.py HTTPClients in; closed before the stand-ins."""
    clients: list[discord.http.HTTPClient] = []

    async def login(token: str = TOKEN) -> discord.http.HTTPClient:
        http = discord.http.HTTPClient(asyncio.get_running_loop())
        clients.append(http)
        await http.static_login(token)
        return http

    yield login
    for http in clients:
        await http.close()


@pytest.fixture
async def standin(start_standin: StartStandIn) -> DiscordStandIn:
    return await start_standin()


def upload(data: bytes = b"chunk", *, content: str = "x", nonce: str | None = None) -> Any:
    """discord.py's parameters for a message with one attachment named "0"."""
    return discord.http.handle_message_parameters(
        content=content, file=discord.File(io.BytesIO(data), filename="0"), nonce=nonce
    )


async def test_message_round_trips(standin: DiscordStandIn, connect: Connect) -> None:
    http = await connect()
    data = bytes(range(256)) * 100

    sent = await http.send_message(CHANNEL, params=upload(data, content="hello", nonce="n-1"))

    assert isinstance(sent, dict)
    assert isinstance(sent["id"], str) and SNOWFLAKE.fullmatch(sent["id"])
    assert (sent["channel_id"], sent["content"], sent["nonce"]) == (CHANNEL, "hello", "n-1")
    assert sent["author"]["bot"] is True
    [attachment] = sent["attachments"]
    assert (attachment["filename"], attachment["size"]) == ("0", len(data))
    [stored] = standin.messages(CHANNEL)
    assert stored is standin.message(CHANNEL, sent["id"])
    assert (stored.content, stored.nonce) == ("hello", "n-1")
    assert [(a.id, a.filename, a.data) for a in stored.attachments] == [
        (attachment["id"], "0", data)
    ]

    fetched = await http.get_message(CHANNEL, sent["id"])
    assert fetched == sent
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as response:
        assert response.status == 200
        assert await response.read() == data


async def test_channel_messages_are_listed_newest_first_a_page_at_a_time(
    standin: DiscordStandIn, connect: Connect
) -> None:
    http = await connect()
    sent = [await http.send_message(CHANNEL, params=upload(content=f"m{i}")) for i in range(5)]
    newest_first = [message["id"] for message in reversed(sent)]

    page = await http.logs_from(CHANNEL, 2)
    assert [m["id"] for m in page] == newest_first[:2]
    assert page[0] == await http.get_message(CHANNEL, newest_first[0])
    older = await http.logs_from(CHANNEL, 100, before=page[-1]["id"])
    assert [m["id"] for m in older] == newest_first[2:]
    with pytest.raises(discord.HTTPException) as refused:  # Discord's most is 100
        await http.logs_from(CHANNEL, 101)
    assert (refused.value.status, refused.value.code) == (400, 50035)


async def test_listing_messages_is_a_route_of_its_own_with_its_bucket_and_faults() -> None:
    async with running() as api:
        await api.post()
        path = f"/channels/{CHANNEL}/messages?limit=10"
        listed = await api.request("GET", path)
        assert listed.status == 200 and len(listed.json()) == 1
        assert listed.headers["X-RateLimit-Bucket"] == BUCKETS[Route.LIST_MESSAGES]
        api.standin.inject(Fault(status=403), route=Route.LIST_MESSAGES)
        assert (await api.request("GET", path)).status == 403
        assert (await api.request("GET", path)).status == 200  # the fault was used once


async def test_forgotten_channel_loses_its_messages_and_no_other(
    standin: DiscordStandIn, connect: Connect
) -> None:
    http = await connect()
    other = "223456789012345678"
    forgotten = await http.send_message(CHANNEL, params=upload(b"a", nonce="n-1"))
    kept = await http.send_message(other, params=upload(b"b"))

    standin.forget(CHANNEL)

    assert standin.messages(CHANNEL) == []
    with pytest.raises(discord.NotFound):
        await http.get_message(CHANNEL, forgotten["id"])
    assert [m.attachments[0].data for m in standin.messages(other)] == [b"b"]
    assert await http.get_message(other, kept["id"]) == kept
    again = await http.send_message(CHANNEL, params=upload(b"a", nonce="n-1"))
    assert again["id"] != forgotten["id"]  # the nonce was forgotten with its message


async def test_responses_look_like_discords(standin: DiscordStandIn) -> None:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("payload_json", '{"content": "x", "attachments": [{"id": 0, "filename": "a"}]}')
    form.add_field("files[0]", b"abc", filename="a", content_type="application/octet-stream")
    headers = {"Authorization": f"Bot {TOKEN}"}
    url = f"{standin.base_url}/channels/{CHANNEL}/messages"
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(url, data=form) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-RateLimit-Bucket"] == MESSAGES_BUCKET
        for name in ("Limit", "Remaining", "Reset", "Reset-After"):
            float(response.headers[f"X-RateLimit-{name}"])
        sent = await response.json()
    assert standin.message(CHANNEL, sent["id"]).attachments[0].data == b"abc"
    with pytest.raises(KeyError):
        standin.message(CHANNEL, "1")


async def test_wrong_token_fails_login(standin: DiscordStandIn, connect: Connect) -> None:
    with pytest.raises(discord.LoginFailure):
        await connect("not-the-token")


async def test_a_revoked_token_is_refused_everywhere_as_discord_does(
    standin: DiscordStandIn, connect: Connect
) -> None:
    http = await connect()
    standin.revoke_token()
    with pytest.raises(discord.HTTPException) as caught:
        await http.send_message(CHANNEL, params=upload())
    assert (caught.value.status, caught.value.code, caught.value.text) == (
        401,
        0,
        "401: Unauthorized",
    )
    with pytest.raises(discord.HTTPException) as caught:
        await http.delete_message(CHANNEL, "1234567890123456789")
    assert caught.value.status == 401
    with pytest.raises(discord.LoginFailure):
        await connect()
    assert standin.messages(CHANNEL) == []

    standin.restore_token()  # a 401 Discord took back
    await (await connect()).send_message(CHANNEL, params=upload())
    assert len(standin.messages(CHANNEL)) == 1


async def test_unknown_channel_and_message(standin: DiscordStandIn, connect: Connect) -> None:
    http = await connect()
    with pytest.raises(discord.NotFound) as caught:
        await http.send_message("not-a-channel", params=upload())
    assert caught.value.code == 10003
    with pytest.raises(discord.NotFound) as caught:
        await http.get_message(CHANNEL, "1234567890123456789")
    assert caught.value.code == 10008


async def test_forbidden_channel(start_standin: StartStandIn, connect: Connect) -> None:
    await start_standin(forbidden_channels=frozenset({CHANNEL}))
    http = await connect()
    with pytest.raises(discord.Forbidden) as caught:
        await http.send_message(CHANNEL, params=upload())
    assert caught.value.code == 50001


@pytest.mark.parametrize("is_global", [False, True])
async def test_injected_429_is_waited_out(
    standin: DiscordStandIn, connect: Connect, is_global: bool
) -> None:
    http = await connect()
    standin.inject(Fault(status=429, retry_after=0.05, is_global=is_global))

    await http.send_message(CHANNEL, params=upload(b"once"))

    assert [m.attachments[0].data for m in standin.messages(CHANNEL)] == [b"once"]
    assert (standin.posts, standin.faults_served, standin.rate_limited) == (2, 1, 0)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, discord.HTTPException),
        (403, discord.Forbidden),
        (413, discord.HTTPException),
        # discord.py retries only 500, 502, 504 and 524 (sleeping 1 s+); 503 raises at once.
        (503, discord.DiscordServerError),
    ],
)
async def test_injected_status_raises(
    standin: DiscordStandIn, connect: Connect, status: int, error: type[Exception]
) -> None:
    http = await connect()
    standin.inject(Fault(status=status))
    with pytest.raises(error) as caught:
        await http.send_message(CHANNEL, params=upload())
    assert isinstance(caught.value, discord.HTTPException)
    assert caught.value.status == status
    assert standin.messages(CHANNEL) == []


async def test_too_large_attachment(start_standin: StartStandIn, connect: Connect) -> None:
    standin = await start_standin(max_attachment_size=1000)
    http = await connect()

    await http.send_message(CHANNEL, params=upload(b"a" * 1000))
    with pytest.raises(discord.HTTPException) as caught:
        await http.send_message(CHANNEL, params=upload(b"a" * 1001))

    assert (caught.value.status, caught.value.code) == (413, 40005)
    assert len(standin.messages(CHANNEL)) == 1


async def test_same_nonce_stores_one_message(standin: DiscordStandIn, connect: Connect) -> None:
    http = await connect()
    first = await http.send_message(CHANNEL, params=upload(b"1", nonce="chunk-7"))
    second = await http.send_message(CHANNEL, params=upload(b"2", nonce="chunk-7"))
    other = await http.send_message(CHANNEL, params=upload(b"3", nonce="chunk-8"))

    assert second == first
    assert [m.id for m in standin.messages(CHANNEL)] == [first["id"], other["id"]]


async def test_a_nonce_over_25_characters_is_refused(
    standin: DiscordStandIn, connect: Connect
) -> None:
    http = await connect()
    await http.send_message(CHANNEL, params=upload(nonce="n" * 25))
    with pytest.raises(discord.HTTPException) as caught:
        await http.send_message(CHANNEL, params=upload(nonce="n" * 26))

    assert (caught.value.status, caught.value.code) == (400, 50035)
    assert "nonce" in caught.value.text
    assert len(standin.messages(CHANNEL)) == 1


async def test_dropped_after_storing_then_retried_with_nonce(
    standin: DiscordStandIn, connect: Connect
) -> None:
    http = await connect()
    standin.inject(Fault(store_then_drop=True))
    # discord.py retries a reset connection only for errnos 54/10054 (macOS/Windows), not Linux.
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.send_message(CHANNEL, params=upload(nonce="n"))

    retried = await http.send_message(CHANNEL, params=upload(nonce="n"))

    assert [m.id for m in standin.messages(CHANNEL)] == [retried["id"]]


async def test_drop_delay_and_hang(standin: DiscordStandIn, connect: Connect) -> None:
    http = await connect()
    standin.inject(Fault(drop=True), Fault(delay=0.01), Fault(hang=True))

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.send_message(CHANNEL, params=upload(b"dropped"))
    await http.send_message(CHANNEL, params=upload(b"delayed"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(http.send_message(CHANNEL, params=upload(b"hung")), 0.1)

    assert [m.attachments[0].data for m in standin.messages(CHANNEL)] == [b"delayed"]
    assert (standin.posts, standin.faults_served) == (3, 3)


async def test_rate_limit_across_clients(start_standin: StartStandIn, connect: Connect) -> None:
    standin = await start_standin(messages_per_window=2, window=0.5)
    # Separate clients (think: separate processes) do not share discord.py's bucket state, so
    # one of three concurrent posts gets a 429, which discord.py waits out and retries.
    clients = [await connect() for _ in range(3)]

    await asyncio.gather(
        *(http.send_message(CHANNEL, params=upload(bytes([i]))) for i, http in enumerate(clients))
    )

    assert sorted(m.attachments[0].data for m in standin.messages(CHANNEL)) == [b"\0", b"\1", b"\2"]
    assert standin.rate_limited == 1
    assert standin.posts == 4


async def test_one_client_throttles_itself(start_standin: StartStandIn, connect: Connect) -> None:
    standin = await start_standin(messages_per_window=2, window=0.2)
    http = await connect()

    for i in range(3):
        await http.send_message(CHANNEL, params=upload(bytes([i])))

    # discord.py reads X-RateLimit-Remaining: 0 and sleeps until the reset: no 429 needed.
    assert len(standin.messages(CHANNEL)) == 3
    assert standin.rate_limited == 0
