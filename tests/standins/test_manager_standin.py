"""The manager stand-in over a real WebSocket: what it drops, it records, so a test fails."""

from __future__ import annotations

import uuid

import aiohttp
from conftest import PASSWORD, until

from service.local.manager import ManagerStandIn
from service.manager import outgoing


async def test_a_binary_frame_or_a_float_is_recorded_as_dropped() -> None:
    async with ManagerStandIn(password=PASSWORD) as manager, aiohttp.ClientSession() as session:
        query = {"type": "upload", "key": PASSWORD, "address": "http://127.0.0.1:1/"}
        async with session.ws_connect(manager.address, params=query) as socket:
            await socket.send_bytes(outgoing.finish_failure("No chunk was received").encode())
            await socket.send_str(
                outgoing.encode(
                    "generic:boolean", {"success": True, "n": 0.5}, reply_uuid=str(uuid.uuid4())
                )
            )
            await until(lambda: len(manager.dropped) == 2)
    binary, floating = (dropped.why for dropped in manager.dropped)
    assert "binary" in binary
    assert "data/n: 0.5 is not an integer" in floating
