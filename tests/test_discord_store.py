"""The store: a sealed chunk handed to aiohttp as the buffer itself, in slices, its length
known; and Discord's answer checked before a chunk counts as stored."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import aiohttp.payload
import pytest
from aiohttp import BodyPartReader, web
from conftest import SMALL_CHUNK, HarnessFactory

from service.local.browser import chunk_form
from service.storage.discord_store import MemoryReader


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


class FakeDiscord:
    """A Discord that answers each message post from a script, then faithfully: for answers
    today's stand-in cannot give (odd 200s, Cloudflare's 429)."""

    def __init__(self) -> None:
        self.script: list[web.Response] = []
        self.nonces: list[str] = []
        self.ids: list[str] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_post("/api/v10/channels/{channel_id}/messages", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/v10"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _me(self, request: web.Request) -> web.Response:
        return _json({"id": "1000000000000000001", "bot": True})

    async def _post(self, request: web.Request) -> web.Response:
        size, payload = 0, {}
        async for part in await request.multipart():
            assert isinstance(part, BodyPartReader)
            if part.name == "payload_json":
                payload = await part.json() or {}
            else:
                size = len(await part.read())
        self.nonces.append(payload["nonce"])
        if self.script:
            return self.script.pop(0)
        message_id = str(1200000000000000000 + len(self.ids))
        self.ids.append(message_id)
        answer = {"id": message_id, "attachments": [{"id": "1300000000000000000", "size": size}]}
        return _json(answer)


VIA = {"Via": "1.1 google"}


def _json(body: object) -> web.Response:
    # discord.py decodes a body only when its Content-Type is exactly application/json.
    return web.Response(
        body=json.dumps(body).encode(), headers={"Content-Type": "application/json", **VIA}
    )


ODD_ANSWERS = {
    "an HTML page": lambda: web.Response(text="<html>ok</html>", content_type="text/html"),
    "invalid JSON": lambda: web.Response(
        body=b'{"id": "12', headers={"Content-Type": "application/json", **VIA}
    ),
    "JSON without id": lambda: _json({"attachments": [{"size": SMALL_CHUNK + 32}]}),
    "a null id": lambda: _json({"id": None, "attachments": [{"size": SMALL_CHUNK + 32}]}),
    "a numeric id": lambda: _json(
        {"id": 1200000000000000099, "attachments": [{"size": SMALL_CHUNK + 32}]}
    ),
    "no attachment": lambda: _json({"id": "1200000000000000099", "attachments": []}),
    "a wrong size": lambda: _json({"id": "1200000000000000099", "attachments": [{"size": 7}]}),
}


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.mark.parametrize("odd", ODD_ANSWERS)
async def test_a_200_that_does_not_show_the_chunk_stored_is_retried_with_the_same_nonce(
    start_service: HarnessFactory, fake_discord: FakeDiscord, odd: str
) -> None:
    harness = await start_service(discord_api_base=fake_discord.base_url)
    await harness.configure()
    upload_id = await harness.start(SMALL_CHUNK)
    fake_discord.script.append(ODD_ANSWERS[odd]())

    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert len(fake_discord.nonces) == 2 and len(set(fake_discord.nonces)) == 1
    finish = await harness.link.next_finish()
    assert finish["messages"] == fake_discord.ids  # the odd answer's id was never recorded


async def test_odd_200s_on_every_try_are_a_502_and_nothing_is_recorded(
    start_service: HarnessFactory, fake_discord: FakeDiscord
) -> None:
    harness = await start_service(discord_api_base=fake_discord.base_url)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    retries = harness.service.settings.discord_retries
    fake_discord.script.extend(ODD_ANSWERS["a wrong size"]() for _ in range(retries))

    status, body = await harness.post(upload_id, 0, data)
    assert status == 502 and "7 bytes" in body

    assert (await harness.post(upload_id, 0, data))[0] == 200  # the job lives
    assert (await harness.link.next_finish())["messages"] == fake_discord.ids


async def test_a_cloudflare_429_is_a_503_and_nothing_more_is_sent_for_a_while(
    start_service: HarnessFactory, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start_service(discord_api_base=fake_discord.base_url)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    fake_discord.script.append(
        web.Response(status=429, text="<html>banned</html>", content_type="text/html")
    )

    async with harness.http.post(harness.address, data=chunk_form(upload_id, 0, data)) as response:
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "Cloudflare" in (await response.json())["error"]
    assert "Cloudflare" in caplog.text and "banned" in caplog.text

    # Not retried in a loop: the chunk sent again is answered without a request to Discord.
    assert (await harness.post(upload_id, 0, data))[0] == 503
    assert len(fake_discord.nonces) == 1
