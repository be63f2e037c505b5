"""The manager stand-in over a real WebSocket: what it drops, it records, so a test fails."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest
from conftest import PASSWORD, until

from service.local.manager import ManagerStandIn
from service.manager import outgoing


async def test_a_binary_frame_or_a_float_is_recorded_as_dropped() -> None:
    async with ManagerStandIn(password=PASSWORD) as manager, aiohttp.ClientSession() as session:
        query = {"type": "upload", "key": PASSWORD, "address": "http://127.0.0.1:1/"}
        async with session.ws_connect(manager.address, params=query) as socket:
            await socket.send_bytes(outgoing.finish_failure("No chunk was received").encode())
            reply = json.loads(outgoing.reply(str(uuid.uuid4()), True))
            await socket.send_str(json.dumps({**reply, "n": 0.5}))
            await until(lambda: len(manager.dropped) == 2)
    binary, floating = (dropped.why for dropped in manager.dropped)
    assert "binary" in binary
    assert "n: 0.5 is not an integer" in floating


async def answer(socket: aiohttp.ClientWebSocketResponse, success: bool) -> None:
    """Play the service: answer the manager's next request."""
    request = json.loads((await socket.receive()).data)
    await socket.send_str(outgoing.reply(request["uuid"], success))


async def test_a_finish_is_taken_only_while_the_manager_sees_an_upload_running() -> None:
    """As the manager does, the stand-in takes a finish only between the `success: true`
    reply to an upload-start and the upload's end (its finish, or an abort acknowledged);
    any other finish is dropped: before a start, twice, after an abort."""
    finish = outgoing.finish_failure("No chunk was received for 120 seconds")
    async with ManagerStandIn(password=PASSWORD) as manager, aiohttp.ClientSession() as session:
        query = {"type": "upload", "key": PASSWORD, "address": "http://127.0.0.1:1/"}
        async with session.ws_connect(manager.address, params=query) as socket:
            connection = await manager.next_service()
            await socket.send_str(finish)  # nothing started yet
            started = asyncio.gather(connection.start_upload(size=1), answer(socket, False))
            assert (await started)[0][1]["success"] is False
            await socket.send_str(finish)  # a start refused starts nothing
            started = asyncio.gather(connection.start_upload(size=1), answer(socket, True))
            (upload_id, _), _ = await started
            assert connection.running == upload_id

            await socket.send_str(finish)
            assert await connection.next_finish() == json.loads(finish)["data"]
            await socket.send_str(finish)  # a second finish for the same upload

            await asyncio.gather(connection.start_upload(size=1), answer(socket, True))
            await asyncio.gather(connection.abort(), answer(socket, True))
            assert connection.running is None
            await socket.send_str(finish)  # the abort's reply was the upload's answer
            await until(lambda: len(manager.dropped) == 4)
    assert connection.finishes == [json.loads(finish)["data"]]
    assert {dropped.why for dropped in manager.dropped} == {
        "an upload-finish while no upload runs on this service"
    }


@pytest.mark.parametrize(
    "address", ["upload.example.com/u", "ftp://upload.example.com/", "http://"]
)
async def test_an_address_that_is_not_an_http_url_is_refused_before_the_upgrade(
    address: str,
) -> None:
    """The manager hands clients the address as it came: it takes an http(s) URL alone."""
    async with ManagerStandIn(password=PASSWORD) as manager, aiohttp.ClientSession() as session:
        query = {"type": "upload", "key": PASSWORD, "address": address}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(manager.address, params=query)
    assert refused.value.status == 400
    assert (manager.refused_handshakes, manager.services) == (1, [])
