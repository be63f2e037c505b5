"""The manager's side of things: configuration, start, abort, timeout, reconnects."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import uuid
from typing import Any

import aiohttp
import pytest
from conftest import CHANNEL, KEY, PASSWORD, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, until

from service.config import Settings
from service.local.browser import upload
from service.local.loopback import free_port
from service.local.manager import ManagerStandIn
from service.manager import link as link_module
from service.manager import outgoing, packets
from service.manager.link import (
    BACKOFF_CAP,
    CLOSE_TIMEOUT,
    HANDLER_FAILED,
    MAX_FRAME,
    Answer,
    LinkState,
    ManagerLink,
    backoff_delay,
)
from service.server import UploadService


def start_data() -> dict[str, object]:
    """A valid `upload-start` packet's data, for tests to spoil one field of."""
    return {
        "name": "f",
        "path": "/",
        "size": 10,
        "client": str(uuid.uuid4()),
        "upload_id": str(uuid.uuid4()),
        "chunk_size": SMALL_CHUNK,
    }


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crypto", "channel", "expected"),
    [
        ({"enabled": True, "key": base64.b64encode(b"k" * 31).decode()}, CHANNEL, "32 bytes"),
        ({"enabled": True, "key": "not base64!"}, CHANNEL, "32 bytes"),
        ({"enabled": False}, "general", "snowflake"),
        ({"enabled": False}, "12345", "snowflake"),
    ],
)
async def test_bad_configuration_is_refused_with_a_reason(
    start_service: HarnessFactory, crypto: dict[str, Any], channel: str, expected: str
) -> None:
    harness = await start_service()
    reply = await harness.link.request(
        packets.CONFIGURATION,
        {"crypto": crypto, "discord_bot_token": TOKEN, "discord_channel_id": channel},
    )
    assert reply["success"] is False and expected in reply["message"]
    _, start = await harness.link.start_upload(size=1)
    assert start["success"] is False and "not been configured" in start["message"]


async def test_token_discord_rejects_is_refused(start_service: HarnessFactory) -> None:
    harness = await start_service()
    reply = await harness.link.configure(token="wrong", channel_id=CHANNEL, crypto_key=KEY)
    assert reply["success"] is False and "token" in reply["message"]


# --- upload-start ----------------------------------------------------------------------------


async def test_start_before_configuration_is_refused(start_service: HarnessFactory) -> None:
    harness = await start_service()
    _, reply = await harness.link.start_upload(size=10)
    assert reply == {"success": False, "message": "this upload service has not been configured yet"}


async def test_second_start_while_busy_is_refused(harness: Harness) -> None:
    first = await harness.start(10)
    _, reply = await harness.link.start_upload(size=10)
    assert reply["success"] is False and first in reply["message"]
    assert (await harness.post(first, 0, os.urandom(10)))[0] == 200


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "a/b", "slashes"),
        ("name", "x" * 128, "127"),
        ("path", "docs", "path"),
        ("size", -1, "size"),
        ("chunk_size", 0, "chunk_size"),
        ("upload_id", "not-a-uuid", "upload_id"),
        ("chunk_size", 10 * 1024 * 1024, "Discord's limit"),
    ],
)
async def test_invalid_start_values_are_refused(
    harness: Harness, field: str, value: object, expected: str
) -> None:
    data = {**start_data(), field: value}
    reply = await harness.link.request(packets.UPLOAD_START, data)
    assert reply["success"] is False and expected in reply["message"]
    await harness.start(10)  # nothing was left half-started


async def test_a_chunk_size_the_chunk_memory_cannot_hold_is_refused(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(chunk_memory_mib=1)
    assert await harness.configure() == {"success": True}
    # Accepted, every chunk of it would get 503 (no buffer can ever be that large) until the
    # browser gives up.
    _, reply = await harness.link.start_upload(size=4 << 20, chunk_size=2 << 20)
    assert reply["success"] is False and "CHUNK_MEMORY_MIB" in reply["message"]
    await harness.start(10)  # chunks the memory holds are taken


# --- abort and timeout -----------------------------------------------------------------------


async def test_abort_drops_the_job_without_a_finish(harness: Harness) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    aborted = await harness.start(len(data))
    assert (await harness.post(aborted, 0, data[:SMALL_CHUNK]))[0] == 200

    assert await harness.link.abort() == {"success": True}
    status, body = await harness.post(aborted, 1, data[SMALL_CHUNK:])
    assert status == 410 and "aborted" in body

    # the next finish the manager sees belongs to the next job, not the aborted one
    upload_id = await harness.start(5)
    await harness.post(upload_id, 0, b"hello")
    assert (await harness.link.next_finish())["success"] is True
    assert harness.link.finishes == [harness.link.finishes[0]]


async def test_abort_without_a_job_is_answered_false(harness: Harness) -> None:
    reply = await harness.link.abort()
    assert reply["success"] is False and reply["message"]


async def test_inactivity_timeout_fails_the_job_and_frees_the_service(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(upload_inactivity_timeout=0.2)
    await harness.configure()
    upload_id = await harness.start(2 * SMALL_CHUNK)
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200

    finish = await harness.link.next_finish()
    assert finish == {"success": False, "reason": "No chunk was received for 0.2 seconds"}
    status, _ = await harness.post(upload_id, 1, os.urandom(SMALL_CHUNK))
    assert status == 410
    await harness.start(1)


# --- the link itself -------------------------------------------------------------------------


async def test_malformed_packets_are_ignored_without_effect(harness: Harness) -> None:
    start = start_data()

    def frame(packet_id: str, data: object, **extra: object) -> str:
        return json.dumps({"id": packet_id, "uuid": str(uuid.uuid4()), "data": data, **extra})

    garbage = [
        "not json",
        "[1, 2]",
        frame("u2s:upload-start", start),
        frame("s2u:upload-begin", start),
        frame(packets.UPLOAD_START, {**start, "size": 10.0}),
        frame(packets.UPLOAD_START, {**start, "size": None}),
        frame(packets.UPLOAD_START, {k: v for k, v in start.items() if k != "name"}),
        frame(packets.UPLOAD_START, [start]),
        json.dumps({"id": packets.UPLOAD_START, "uuid": str(uuid.uuid4()).upper(), "data": start}),
    ]
    for text in garbage:
        await harness.link.send_raw(text)
    await harness.link.socket.send_bytes(b"\x00binary")

    # none of them started a job: an abort finds nothing, and the real start works
    assert (await harness.link.abort())["success"] is False
    await harness.start(10)


async def test_link_drop_voids_the_job_and_the_service_reconnects(
    harness: Harness, manager: ManagerStandIn
) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    voided = await harness.start(len(data))
    assert (await harness.post(voided, 0, data[:SMALL_CHUNK]))[0] == 200

    await harness.link.close()
    again = await manager.next_service()

    status, body = await harness.post(voided, 1, data[SMALL_CHUNK:])
    assert status == 410 and "manager" in body
    _, reply = await again.start_upload(size=1)
    assert reply["success"] is False and "not been configured" in reply["message"]

    await again.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
    upload_id, reply = await again.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
    assert reply["success"] is True
    await upload(harness.http, again.own_address, upload_id, data, SMALL_CHUNK)
    assert (await again.next_finish())["success"] is True
    assert harness.link.finishes == []


async def test_manager_down_at_start_is_retried_until_it_is_up(settings: Settings) -> None:
    port = free_port()
    attempts = 0
    two_attempts = asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            two_attempts.set()
        writer.close()

    refuser = await asyncio.start_server(refuse, "127.0.0.1", port)
    manager = ManagerStandIn(password=PASSWORD, port=port)
    address = f"ws://127.0.0.1:{port}/upload-service"
    async with (
        UploadService(dataclasses.replace(settings, manager_address=address)) as service,
        aiohttp.ClientSession() as http,
    ):
        await two_attempts.wait()
        async with http.get(f"http://127.0.0.1:{service.port}/readyz") as answer:
            assert answer.status == 503
            why = (await answer.json())["links_down"]["slot-0"]
            assert why.startswith(f"cannot reach the manager at {address}")
        refuser.close()
        await refuser.wait_closed()
        async with manager:
            link = await manager.next_service()
            reply = await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=None)
            assert reply == {"success": True}


def test_backoff_grows_is_jittered_and_capped() -> None:
    samples = {n: [backoff_delay(n) for _ in range(200)] for n in range(1, 30)}
    assert max(samples[1]) <= 1.0
    assert min(samples[4]) > max(samples[1])  # it grows
    assert all(len(set(delays)) > 100 for delays in samples.values())  # jittered
    assert max(max(delays) for delays in samples.values()) <= BACKOFF_CAP
    assert max(samples[29]) > BACKOFF_CAP / 2  # the cap is reached


# --- hostile frames and bugs do not kill the link --------------------------------------------


def link_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "service.manager.link"]


async def test_deeply_nested_frame_is_dropped_and_the_same_connection_works(
    start_service: HarnessFactory, manager: ManagerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start_service()
    await harness.link.send_nested(200_000)
    await harness.link.send_nested(100_000, opener='{"a":')
    assert await harness.configure() == {"success": True}
    assert len(manager.services) == 1 and harness.service.slots[0].link.reconnects == 0
    assert sum("nested too deeply" in m for m in link_messages(caplog)) == 2


async def test_frame_too_large_is_named_and_the_link_reconnects(
    harness: Harness, manager: ManagerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.link.send_oversized(5 * 1024 * 1024)
    again = await manager.next_service()
    assert harness.link.closed.is_set()
    broke = [m for m in link_messages(caplog) if "frame too large" in m]
    assert broke == [
        f"the link to the manager broke: frame too large (5242880 bytes, limit {MAX_FRAME} bytes)"
    ]
    _, reply = await again.start_upload(size=1)
    assert "not been configured" in reply["message"]  # the new connection starts afresh
    assert await again.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
        "success": True
    }
    assert (await again.start_upload(size=1))[1] == {"success": True}


async def test_binary_frames_are_ignored(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.link.send_binary(b"\x00\xff binary")
    await harness.link.send_binary(json.dumps({"id": packets.UPLOAD_START}).encode())
    await harness.start(10)
    assert link_messages(caplog).count("ignored a non-text frame (BINARY)") == 2


async def test_handler_raising_is_answered_logged_and_the_link_reconnects(
    harness: Harness,
    manager: ManagerStandIn,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slot = harness.service.slots[0]

    async def broken(request: packets.Request) -> Answer:
        raise RuntimeError("a bug in the handler")

    monkeypatch.setattr(slot, "handle", broken)
    assert await harness.link.abort() == {"success": False, "message": HANDLER_FAILED}
    again = await manager.next_service()
    monkeypatch.undo()

    [record] = [r for r in caplog.records if r.exc_info and r.name == "service.manager.link"]
    assert record.getMessage() == "unexpected RuntimeError in the link; reconnecting"
    assert record.exc_text and "a bug in the handler" in record.exc_text
    assert "Traceback" in record.exc_text
    assert (slot.link.reconnects, slot.link.failures) == (1, 0)
    assert slot.link.last_error == "unexpected RuntimeError in the link"
    assert await again.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
        "success": True
    }


async def test_disconnected_raising_does_not_stop_the_reconnection(
    harness: Harness,
    manager: ManagerStandIn,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug in disconnected")

    monkeypatch.setattr(harness.service.slots[0], "disconnected", broken)
    await harness.link.close()
    again = await manager.next_service()
    monkeypatch.undo()
    assert "the handler failed to take the disconnection" in link_messages(caplog)
    assert (await again.abort())["success"] is False  # answered: the link serves


# --- a ManagerLink on its own: states and cancellation ---------------------------------------


class BlockingHandler:
    """Holds every request until released; counts disconnections."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.disconnections = 0

    async def handle(self, request: packets.Request) -> Answer:
        await self.release.wait()
        return Answer(True)

    async def disconnected(self) -> None:
        self.disconnections += 1


def bare_link(
    address: str, session: aiohttp.ClientSession, handler: BlockingHandler
) -> ManagerLink:
    return ManagerLink(
        address=address,
        password=PASSWORD,
        own_address="http://127.0.0.1:1/upload",
        handler=handler,
        session=session,
        name="bare",
    )


async def wait_for_state(link: ManagerLink, state: LinkState) -> None:
    """Poll: the state is a plain attribute, as a supervisor reads it."""
    await until(lambda: link.state is state)


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    async with asyncio.timeout(CLOSE_TIMEOUT + 1):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancelling_while_handling_closes_the_socket(
    manager: ManagerStandIn, http: aiohttp.ClientSession
) -> None:
    link = bare_link(manager.address, http, BlockingHandler())
    task = asyncio.create_task(link.run())
    service = await manager.next_service()
    await wait_for_state(link, LinkState.CONNECTED)
    await service.send_raw(outgoing.encode(packets.UPLOAD_ABORT, {}))
    await wait_for_state(link, LinkState.HANDLING)
    await cancel(task)
    async with asyncio.timeout(5):
        await service.closed.wait()
    assert link.state is LinkState.STOPPED and not link.connected


async def test_cancelling_while_connecting_or_waiting_ends_at_once(
    manager: ManagerStandIn, http: aiohttp.ClientSession
) -> None:
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    link = bare_link(f"ws://127.0.0.1:{port}/upload-service", http, BlockingHandler())
    task = asyncio.create_task(link.run())
    await wait_for_state(link, LinkState.CONNECTING)
    await until(lambda: bool(accepted))  # the TCP connection is open; the handshake never answers
    await cancel(task)
    for writer in accepted:
        writer.close()
    silent.close()
    await silent.wait_closed()

    handler = BlockingHandler()
    link = bare_link(manager.address, http, handler)
    task = asyncio.create_task(link.run())
    await (await manager.next_service()).close()
    await wait_for_state(link, LinkState.WAITING)
    await cancel(task)
    assert handler.disconnections == 1 and link.state is LinkState.STOPPED


async def test_connections_that_answer_nothing_count_as_failures(
    manager: ManagerStandIn, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_module, "BACKOFF_FIRST", 0.01)
    handler = BlockingHandler()
    handler.release.set()
    link = bare_link(manager.address, http, handler)
    task = asyncio.create_task(link.run())
    for _ in range(2):
        await (await manager.next_service()).close()
    service = await manager.next_service()
    assert (link.reconnects, link.failures) == (2, 2)
    assert link.last_error == "the manager closed the link"
    assert await service.abort() == {"success": True}
    await service.close()
    await manager.next_service()
    assert (link.reconnects, link.failures) == (3, 0)
    await cancel(task)
