"""No client, honest or hostile, makes the service hold more chunk memory than its budget:
over real sockets, with a budget of two chunks."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time

from conftest import CHANNEL, KEY, TOKEN, Harness, HarnessFactory, reassembled, until

from service.chunks.sealing import buffer_size
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn, Fault
from service.local.driver import Trickled, raw_chunk_body, request_head, trickle
from service.local.manager import ManagerStandIn

CHUNK = 400 * 1024  # two chunk buffers fit in CHUNK_MEMORY_MIB=1
BUFFER = buffer_size(CHUNK)
OTHER_CHANNEL = "1100000000000000002"
THIRD_CHANNEL = "1100000000000000003"


async def memory_reserved(harness: Harness, size: int) -> None:
    """Until the service holds `size` bytes of chunk memory."""
    await until(lambda: harness.service.memory.reserved == size)


async def hold_all_memory(
    harness: Harness, upload_id: str, stop: asyncio.Event
) -> list[asyncio.Task[Trickled]]:
    """Two clients trickling a byte every 0.1 s (until `stop`): the whole budget of two chunks."""
    port, path = harness.service.port, harness.service.settings.own_path
    trickles = [
        asyncio.create_task(
            trickle(port, path, upload_id, i, os.urandom(CHUNK), interval=0.1, stop=stop)
        )
        for i in (0, 1)
    ]
    await memory_reserved(harness, 2 * BUFFER)
    return trickles


async def test_a_chunk_waits_for_memory_then_gets_503_and_comes_back_later(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(chunk_memory_mib=1, client_read_timeout=0.5, client_min_rate=1)
    await harness.configure()
    upload_id = await harness.start(4 * CHUNK, chunk_size=CHUNK)
    stop = asyncio.Event()
    trickles = await hold_all_memory(harness, upload_id, stop)

    data = os.urandom(CHUNK)
    async with harness.http.post(harness.address, data=chunk_form(upload_id, 2, data)) as answer:
        assert answer.status == 503
        assert int(answer.headers["Retry-After"]) > 0
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "busy" in (await answer.json())["error"]
    assert harness.service.memory.reserved == 2 * BUFFER  # the refusal took nothing

    stop.set()  # the trickling clients give up: their memory comes back
    await asyncio.gather(*trickles)
    await memory_reserved(harness, 0)
    assert (await harness.post(upload_id, 2, data))[0] == 200


async def test_a_chunk_waiting_for_memory_leaves_its_body_unread(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    big = 4 * 1024 * 1024  # two buffers fit in CHUNK_MEMORY_MIB=9, a third does not
    harness = await start_service(chunk_memory_mib=9, client_read_timeout=0.5, client_min_rate=1)
    await harness.configure()
    data = os.urandom(3 * big)
    upload_id = await harness.start(len(data), chunk_size=big)
    discord.inject(Fault(hold=True))  # the first post; the second waits for its answer
    held = [
        asyncio.create_task(harness.post(upload_id, i, data[i * big : (i + 1) * big]))
        for i in (0, 1)
    ]
    await memory_reserved(harness, 2 * buffer_size(big))
    await until(lambda: received(harness) >= 2 * big)  # both bodies are in
    before = received(harness)

    content_type, body = raw_chunk_body(upload_id, 2, data[2 * big :])
    # a small send buffer: what the service does not read stays in the client, not the kernel
    client = socket.create_connection(("127.0.0.1", harness.service.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    reader, writer = await asyncio.open_connection(sock=client)
    writer.write(request_head(harness.service.port, "/upload", len(body), content_type) + body)
    answer = await reader.readline()  # after 0.5 s waiting for memory
    assert answer.startswith(b"HTTP/1.1 503")
    assert writer.transport.get_write_buffer_size() > 0  # the client still holds its body
    assert received(harness) - before < big // 4  # the service read little of it
    writer.close()

    discord.release_held()
    assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]
    assert (await harness.post(upload_id, 2, data[2 * big :]))[0] == 200
    assert (await harness.link.next_finish())["success"] is True


async def test_a_buffer_whose_post_timed_out_is_never_handed_to_another_chunk(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    """A post cut off by its timeout may leave a writer still reading the chunk's buffer:
    the buffer is dropped, not kept for the next chunk to write over."""
    harness = await start_service(discord_request_timeout=0.3, discord_retries=1)
    await harness.configure()
    data = os.urandom(2 * CHUNK)
    upload_id = await harness.start(len(data), chunk_size=CHUNK)
    assert (await harness.post(upload_id, 0, data[:CHUNK]))[0] == 200
    assert harness.service.memory.in_use == BUFFER  # its buffer is kept for the next chunk
    discord.inject(Fault(hang=True))  # Discord never answers the next post
    assert (await harness.post(upload_id, 1, data[CHUNK:]))[0] == 502
    assert harness.service.memory.in_use == 0  # that buffer is dropped, not kept
    assert (await harness.post(upload_id, 1, data[CHUNK:]))[0] == 200
    assert reassembled(discord, await harness.link.next_finish()) == data


def received(harness: Harness) -> float:
    """Body bytes of chunk POSTs the service has read."""
    return harness.metric("upload_received_bytes_total")


async def test_a_trickling_client_is_cut_off_and_its_memory_freed(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(
        chunk_memory_mib=1, client_read_timeout=1.0, client_min_rate=100_000
    )
    await harness.configure()
    upload_id = await harness.start(4 * CHUNK, chunk_size=CHUNK)
    trickled = await asyncio.gather(*await hold_all_memory(harness, upload_id, asyncio.Event()))
    answers = [client.answer for client in trickled]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
    assert all(b"bytes per second" in answer for answer in answers)
    assert harness.service.memory.reserved == 0
    assert (await harness.post(upload_id, 0, os.urandom(CHUNK)))[0] == 200


async def test_one_chunk_over_the_per_upload_cap_is_refused_at_once_and_the_job_goes_on(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    harness = await start_service(chunks_in_flight_per_upload=2)
    await harness.configure()
    data = os.urandom(3 * CHUNK)
    upload_id = await harness.start(len(data), chunk_size=CHUNK)
    discord.inject(Fault(hold=True))  # the first post; the second waits for its answer
    chunks = [data[i * CHUNK : (i + 1) * CHUNK] for i in range(3)]
    held = [asyncio.create_task(harness.post(upload_id, i, chunks[i])) for i in (0, 1)]
    await memory_reserved(harness, 2 * BUFFER)
    status, text = await harness.post(upload_id, 2, chunks[2])
    assert status == 503 and "in flight" in text
    discord.release_held()
    assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]
    assert (await harness.post(upload_id, 2, chunks[2]))[0] == 200
    assert (await harness.link.next_finish())["success"] is True


async def test_one_uploads_flood_leaves_memory_for_another_uploads_browser(
    start_service: HarnessFactory, discord: DiscordStandIn, manager: ManagerStandIn
) -> None:
    harness = await start_service(slots=2, chunk_memory_mib=4)  # 10 chunk buffers
    other = await manager.next_service()
    await harness.configure()
    await other.configure(token=TOKEN, channel_id=OTHER_CHANNEL, crypto_key=KEY)
    flood_data, other_data = os.urandom(8 * CHUNK), os.urandom(5 * CHUNK)
    flood_id = await harness.start(len(flood_data), chunk_size=CHUNK)
    other_id, _ = await other.start_upload(size=len(other_data), chunk_size=CHUNK)
    discord.inject(Fault(hold=True), Fault(hold=True))  # each channel's first post: the rest
    # of its chunks wait for the pacer to learn the channel's limits, holding their memory

    def post(url: str, upload_id: str, data: bytes, index: int) -> asyncio.Task[tuple[int, str]]:
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        return asyncio.create_task(harness.post(upload_id, index, piece, url=url))

    flood = [post(harness.address, flood_id, flood_data, i) for i in range(8)]
    answered = asyncio.as_completed(flood)
    refusals = [await next(answered) for _ in range(3)]  # 5 of 10 buffers stay free for
    refused = [i for i, task in enumerate(flood) if task.done()]  # another upload's browser
    assert len(refused) == 3 and all(status == 503 for status, _ in refusals)
    assert "kept for other uploads" in refusals[0][1]
    await memory_reserved(harness, 5 * BUFFER)

    others = [post(other.own_address, other_id, other_data, i) for i in range(5)]
    await memory_reserved(harness, 10 * BUFFER)  # all 5 of the other browser's chunks at once
    discord.release_held()
    assert {status for status, _ in await asyncio.gather(*others)} == {200}
    for index in refused:
        assert (await post(harness.address, flood_id, flood_data, index))[0] == 200
    assert (await harness.link.next_finish())["success"] is True
    assert (await other.next_finish())["success"] is True


async def test_a_job_that_starts_after_others_spent_the_memory_begins_at_once(
    start_service: HarnessFactory, discord: DiscordStandIn, manager: ManagerStandIn
) -> None:
    harness = await start_service(slots=3, chunk_memory_mib=4)  # 10 chunk buffers
    links = [harness.link, await manager.next_service(), await manager.next_service()]
    channels = [CHANNEL, OTHER_CHANNEL, THIRD_CHANNEL]
    for link, channel in zip(links, channels, strict=True):
        await link.configure(token=TOKEN, channel_id=channel, crypto_key=KEY)
    data = os.urandom(5 * CHUNK)
    ids = [(await link.start_upload(size=len(data), chunk_size=CHUNK))[0] for link in links]
    discord.inject(*[Fault(hold=True) for _ in channels])  # each channel's first post

    def post(slot: int, index: int) -> asyncio.Task[tuple[int, str]]:
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        url = links[slot].own_address
        return asyncio.create_task(harness.post(ids[slot], index, piece, url=url))

    first = [post(0, i) for i in range(5)]
    await memory_reserved(harness, 5 * BUFFER)
    second = [post(1, i) for i in range(5)]
    await memory_reserved(harness, 9 * BUFFER)  # the 10th is kept for the third job
    assert harness.service.memory.held_by(ids[1]) == 4
    third = post(2, 0)
    await memory_reserved(harness, 10 * BUFFER)  # it began at once
    assert harness.service.memory.held_by(ids[2]) == 1
    discord.release_held()
    answers = await asyncio.gather(*first, *second, third)
    assert {status for status, _ in answers} == {200}
    for index in range(1, 5):
        assert (await post(2, index))[0] == 200
    for link in links:
        assert (await link.next_finish())["success"] is True


async def test_a_connection_that_sends_no_request_head_is_closed(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(client_read_timeout=0.5)
    # a small send buffer: what the service does not read stays in the client, not the kernel
    client = socket.create_connection(("127.0.0.1", harness.service.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    reader, writer = await asyncio.open_connection(sock=client)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # closed by the service
    writer.close()


async def test_an_upload_that_ends_as_a_wait_for_memory_times_out_ends_whole(
    start_service: HarnessFactory, discord: DiscordStandIn, manager: ManagerStandIn
) -> None:
    """One upload's end frees the memory kept for it in the very turn another upload's chunk
    gives up waiting for that memory (a loop busy sealing chunks lets both fall due at once):
    the ending still sends its finish packet and frees its slot, and no memory is lost."""
    timeout = 1.0
    harness = await start_service(
        slots=2,
        chunk_memory_mib=1,  # two chunk buffers
        client_read_timeout=timeout,  # how long a chunk waits for memory
        upload_inactivity_timeout=timeout,
    )
    other = await manager.next_service()
    await harness.configure()
    await other.configure(token=TOKEN, channel_id=OTHER_CHANNEL, crypto_key=KEY)
    idle_id = await harness.start(2 * CHUNK, chunk_size=CHUNK)  # times out first: no chunk
    data = os.urandom(2 * CHUNK)
    busy_id, _ = await other.start_upload(size=len(data), chunk_size=CHUNK)
    discord.inject(Fault(hold=True))
    stored = asyncio.create_task(harness.post(busy_id, 0, data[:CHUNK], url=other.own_address))
    await memory_reserved(harness, BUFFER)
    # the second buffer is kept for the idle upload: this chunk waits for it
    waiting = asyncio.create_task(harness.post(busy_id, 1, data[CHUNK:], url=other.own_address))
    await until(lambda: waiting_for_memory(harness) == 1)
    assert harness.service.slots[0].upload is not None  # the idle upload has not timed out yet
    time.sleep(timeout * 1.2)  # noqa: ASYNC251 - the loop is busy: both timers fall due at once

    finish = await harness.link.next_finish()
    assert finish["success"] is False and "No chunk was received" in finish["reason"]
    assert (await waiting)[0] == 503
    discord.release_held()
    assert (await stored)[0] == 200
    await memory_reserved(harness, 0)
    upload_id = await harness.start(CHUNK, chunk_size=CHUNK)  # the slot is free again
    assert (await harness.post(upload_id, 0, data[:CHUNK]))[0] == 200
    assert idle_id != upload_id


def waiting_for_memory(harness: Harness) -> float:
    return harness.metric("upload_chunks_waiting_for_memory")


async def test_the_buffer_kept_for_a_job_is_the_size_of_its_own_chunks(
    start_service: HarnessFactory, discord: DiscordStandIn, manager: ManagerStandIn
) -> None:
    """A job of small chunks keeps one buffer free for the other job under way, which has
    larger chunks: that job's first chunk must find a buffer of its size, not of the small."""
    small, large = 200 * 1024, 600 * 1024  # in CHUNK_MEMORY_MIB=1: 2 small and 1 large fit
    harness = await start_service(slots=2, chunk_memory_mib=1, client_read_timeout=5.0)
    other = await manager.next_service()
    await harness.configure()
    await other.configure(token=TOKEN, channel_id=OTHER_CHANNEL, crypto_key=KEY)
    small_data, large_data = os.urandom(3 * small), os.urandom(large)
    small_id = await harness.start(len(small_data), chunk_size=small)
    large_id, _ = await other.start_upload(size=len(large_data), chunk_size=large)
    discord.inject(Fault(hold=True))  # the small job's first post: its chunks stay in memory

    def post(index: int) -> asyncio.Task[tuple[int, str]]:
        piece = small_data[index * small : (index + 1) * small]
        return asyncio.create_task(harness.post(small_id, index, piece))

    flood = [post(i) for i in range(3)]
    job = harness.service.slots[0].upload
    assert job is not None
    await until(lambda: len(job.job.in_flight) == 3)  # each has its memory, or waits for it
    assert (await harness.post(large_id, 0, large_data, url=other.own_address))[0] == 200

    discord.release_held()
    for index, (status, _) in enumerate(await asyncio.gather(*flood)):
        if status != 200:  # waited longer than CLIENT_READ_TIMEOUT on a loaded machine
            assert (await post(index))[0] == 200
    assert (await harness.link.next_finish())["success"] is True
    assert (await other.next_finish())["success"] is True


async def test_a_chunk_of_an_upload_that_ended_while_it_waited_leaves_the_memory_to_others(
    start_service: HarnessFactory, discord: DiscordStandIn, manager: ManagerStandIn
) -> None:
    """An aborted upload's chunk waiting for memory, which would come first when memory
    frees (its upload holds none), is answered 410 as the upload ends, not read, and leaves
    the line: the live upload's chunk gets the buffer."""
    harness = await start_service(
        slots=2, chunk_memory_mib=1, client_read_timeout=3.0, client_min_rate=1
    )
    other = await manager.next_service()
    await harness.configure()
    await other.configure(token=TOKEN, channel_id=OTHER_CHANNEL, crypto_key=KEY)
    data = os.urandom(2 * CHUNK)
    live_id = await harness.start(len(data), chunk_size=CHUNK)
    ended_id, _ = await other.start_upload(size=len(data), chunk_size=CHUNK)
    port, path = harness.service.port, harness.service.settings.own_path

    def trickled(index: int, stop: asyncio.Event) -> asyncio.Task[Trickled]:
        """A client that sends on until `stop` (or for 10 s, longer than any wait here)."""
        chunk = data[index * CHUNK : (index + 1) * CHUNK]
        work = trickle(
            port, path, ended_id, index, chunk, interval=0.1, stop=stop, give_up_after=10
        )
        return asyncio.create_task(work)

    discord.inject(Fault(hold=True))
    live = [asyncio.create_task(harness.post(live_id, 0, data[:CHUNK]))]
    await memory_reserved(harness, BUFFER)
    stop_first = asyncio.Event()
    first = trickled(0, stop_first)  # the aborted upload's first chunk holds the other buffer
    await memory_reserved(harness, 2 * BUFFER)
    live.append(asyncio.create_task(harness.post(live_id, 1, data[CHUNK:])))
    await until(lambda: waiting_for_memory(harness) == 1)
    second = trickled(1, asyncio.Event())  # then it waits, behind the live chunk
    await until(lambda: waiting_for_memory(harness) == 2)
    assert await other.abort() == {"success": True}

    stop_first.set()  # its buffer frees: the aborted upload holds none, the live one holds one
    await first
    assert (await second).status == 410
    discord.release_held()
    assert [status for status, _ in await asyncio.gather(*live)] == [200, 200]
    assert (await harness.link.next_finish())["success"] is True


async def test_a_declared_length_over_its_uploads_chunks_is_refused_before_the_body_is_read(
    start_service: HarnessFactory, manager: ManagerStandIn
) -> None:
    """Another upload has larger chunks, so the length passes the check made before the
    upload is known; once it is, its own limit refuses the length before a buffer is taken."""
    harness = await start_service(slots=2)
    other = await manager.next_service()
    await harness.configure()
    await other.configure(token=TOKEN, channel_id=OTHER_CHANNEL, crypto_key=KEY)
    upload_id = await harness.start(2 * CHUNK, chunk_size=CHUNK)
    await other.start_upload(size=4 * CHUNK, chunk_size=4 * CHUNK)
    before = received(harness)
    status, text = await harness.post(upload_id, 0, os.urandom(2 * CHUNK))
    assert status == 413 and "larger than" in text
    assert received(harness) - before < CHUNK  # the fields, not a chunk's worth
    assert harness.service.memory.in_use == 0  # no buffer was taken for it
    assert (await harness.post(upload_id, 0, os.urandom(CHUNK)))[0] == 200


async def test_a_chunk_sent_again_while_its_lost_request_waits_for_memory_takes_its_place(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    """A browser whose request is lost while its chunk waits for memory (a dropped
    connection, a timeout of its own) sends the chunk again. The service reads nothing of a
    waiting chunk's body, so it cannot see the first request go: the new one takes its place,
    instead of a 409 for every try until that wait runs out (CLIENT_READ_TIMEOUT)."""
    harness = await start_service(chunk_memory_mib=1, client_read_timeout=60, client_min_rate=1)
    await harness.configure()
    data = os.urandom(3 * CHUNK)
    upload_id = await harness.start(len(data), chunk_size=CHUNK)
    stop = asyncio.Event()
    trickles = await hold_all_memory(harness, upload_id, stop)

    port, path = harness.service.port, harness.service.settings.own_path
    content_type, body = raw_chunk_body(upload_id, 2, data[2 * CHUNK :])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_head(port, path, len(body), content_type) + body[: len(body) // 2])
    await until(lambda: waiting_for_memory(harness) == 1)
    again = asyncio.create_task(harness.post(upload_id, 2, data[2 * CHUNK :]))
    head = await reader.readuntil(b"\r\n\r\n")  # the browser gave up on this request
    length = re.search(rb"Content-Length: (\d+)", head)
    assert length is not None
    lost = head + await reader.readexactly(int(length[1]))
    writer.close()
    assert lost.startswith(b"HTTP/1.1 409") and b"sent again" in lost
    stop.set()  # the trickling clients give up: their memory comes back
    await asyncio.gather(*trickles)

    assert await again == (200, "2")
    for index in (0, 1):
        assert (await harness.post(upload_id, index, data[index * CHUNK :][:CHUNK]))[0] == 200
    assert reassembled(discord, await harness.link.next_finish()) == data
