"""The chunk endpoint's refusals: each names what is wrong and leaves the job intact.

The HTTP contract is checked with httpx, a client independent of the aiohttp server, so a
quirk shared by aiohttp's client and server cannot hide. The tests that cut a connection
half-way write the request by hand on a raw socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import (
    CHANNEL,
    KEY,
    PASSWORD,
    SMALL_CHUNK,
    TOKEN,
    Harness,
    HarnessFactory,
    chunk_files,
    messages_of,
    post_chunk,
    until,
)

from service.config import Settings
from service.local.discord_api import DiscordStandIn
from service.local.driver import (
    BOUNDARY,
    CONTENT_TYPE,
    FORM_TAIL,
    form_head,
    raw_chunk_body,
    request_head,
)
from service.local.loopback import loopback_settings
from service.local.manager import ManagerStandIn

MiB = 1024 * 1024
OTHER_CHANNEL = "1100000000000000002"


def received(harness: Harness) -> float:
    """Chunks claimed so far: POSTs whose file part began arriving."""
    return harness.metric("upload_chunks_received_total")


def refused(response: httpx.Response) -> tuple[int, str]:
    """The status and the sentence of a refusal, which any origin may read, as JSON."""
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    return response.status_code, response.json()["error"]


async def finishes_intact(
    harness: Harness, client: httpx.AsyncClient, upload_id: str, data: bytes
) -> None:
    """The job still completes after the refusals, byte-exact: every chunk (those already
    stored included) is answered 200 on the same client."""
    for index, offset in enumerate(range(0, len(data), SMALL_CHUNK)):
        chunk = data[offset : offset + SMALL_CHUNK]
        response = await post_chunk(client, harness.address, upload_id, index, chunk)
        assert (response.status_code, response.text) == (200, str(index))
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert len(finish["messages"]) == -(-len(data) // SMALL_CHUNK)


class Relay:
    """A TCP relay in front of the service that sees when the service first answers.

    httpx reads no answer before it has sent the whole request body, so an answer given
    early cannot be seen through httpx alone. The relay notes how many request bytes had
    reached the service when the first byte of its answer came back, and sets `answered`
    once that byte is on its way to the client. What the client sends after the answer
    is dropped: the service has refused the request, and only the answer matters.
    """

    def __init__(self, service_port: int) -> None:
        self._service_port = service_port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.answered = asyncio.Event()
        self.delivered = 0  # request bytes (head and body) passed on to the service
        self.delivered_at_answer: int | None = None

    def url(self, address: str) -> str:
        """`address` (the service's) through the relay."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return str(httpx.URL(address).copy_with(port=port))

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()  # each side's reader sees the end: the relaying tasks return
        await asyncio.gather(*self._connections)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.append(to_client)
        service, to_service = await asyncio.open_connection("127.0.0.1", self._service_port)
        self._writers.append(to_service)
        with contextlib.suppress(ConnectionError):
            await asyncio.gather(
                self._request(client, to_service), self._answer(service, to_client)
            )
        to_client.close()
        to_service.close()

    async def _request(
        self, client: asyncio.StreamReader, to_service: asyncio.StreamWriter
    ) -> None:
        while piece := await client.read(MiB):
            if not self.answered.is_set():
                to_service.write(piece)
                await to_service.drain()
                self.delivered += len(piece)

    async def _answer(self, service: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        while piece := await service.read(MiB):
            if self.delivered_at_answer is None:
                self.delivered_at_answer = self.delivered
            to_client.write(piece)
            await to_client.drain()
            self.answered.set()


Job = tuple[str, bytes]  # an upload id, its file


@pytest.fixture
async def job(harness: Harness) -> Job:
    data = os.urandom(2 * SMALL_CHUNK + 100)
    return await harness.start(len(data)), data


def test_the_test_client_sends_the_browsers_form() -> None:
    """httpx writes `id`, `chunk`, then `file` named `blob`, with a Content-Length."""
    request = httpx.Request("POST", "http://x/", files=chunk_files("u", 3, b"DATA"))
    body = request.read()
    parts = [
        b'name="id"\r\n\r\nu\r\n',
        b'name="chunk"\r\n\r\n3\r\n',
        b'name="file"; filename="blob"\r\nContent-Type: application/octet-stream\r\n\r\nDATA\r\n',
    ]
    positions = [body.find(part) for part in parts]
    assert -1 not in positions and positions == sorted(positions)
    assert body.count(b"Content-Disposition") == 3
    assert request.headers["Content-Length"] == str(len(body))
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")


async def test_body_that_is_not_multipart_is_refused(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    status, error = refused(await client.post(harness.address, json={"id": job[0]}))
    assert status == 400 and "multipart/form-data" in error
    await finishes_intact(harness, client, *job)


@pytest.mark.parametrize("missing", ["id", "chunk", "file"])
async def test_missing_field_is_named(
    harness: Harness, client: httpx.AsyncClient, job: Job, missing: str
) -> None:
    upload_id, data = job
    files = chunk_files(upload_id, 0, data[:SMALL_CHUNK])
    del files[missing]  # still multipart: the other fields are parts without a filename
    status, error = refused(await client.post(harness.address, files=files))
    assert status == 400 and repr(missing) in error
    await finishes_intact(harness, client, *job)


async def test_unknown_upload_id_is_refused(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    response = await post_chunk(client, harness.address, str(uuid.uuid4()), 0, job[1][:SMALL_CHUNK])
    status, error = refused(response)
    assert status == 404 and "not known" in error
    await finishes_intact(harness, client, *job)


@pytest.mark.parametrize("index", ["-1", "1.5", "x", "", "3", "99999999999999999999"])
async def test_bad_chunk_index_is_refused(
    harness: Harness, client: httpx.AsyncClient, job: Job, index: str
) -> None:
    response = await post_chunk(client, harness.address, job[0], index, job[1][:SMALL_CHUNK])
    status, error = refused(response)
    assert status == 400 and "chunk index" in error
    await finishes_intact(harness, client, *job)


@pytest.mark.parametrize(
    ("index", "length"),
    [(0, SMALL_CHUNK - 1), (0, SMALL_CHUNK + 1), (2, 99), (2, 101), (2, SMALL_CHUNK)],
)
async def test_chunk_of_the_wrong_length_is_refused(
    harness: Harness, client: httpx.AsyncClient, job: Job, index: int, length: int
) -> None:
    response = await post_chunk(client, harness.address, job[0], index, os.urandom(length))
    status, error = refused(response)
    expected = SMALL_CHUNK if index < 2 else 100
    assert status == 400 and f"{expected} bytes" in error
    assert harness.stored() == []
    await finishes_intact(harness, client, *job)


async def test_boundary_longer_than_the_parser_takes_is_refused_with_400(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    """python-multipart takes boundaries of up to 256 bytes (RFC 2046 allows 70): a longer
    one is the client's mistake, not a bug's 500."""
    upload_id, data = job
    boundary = "b" * 300
    _, body = raw_chunk_body(upload_id, 0, data[:SMALL_CHUNK])
    body = body.replace(BOUNDARY.encode(), boundary.encode())
    content_type = f"multipart/form-data; boundary={boundary}"
    response = await client.post(
        harness.address, content=body, headers={"Content-Type": content_type}
    )
    status, error = refused(response)
    assert status == 400 and "boundary" in error
    await finishes_intact(harness, client, *job)


@pytest.mark.parametrize("tail", [b"-\r\n", b"x\r\n"])
async def test_file_part_followed_by_a_broken_delimiter_is_refused_with_400(
    harness: Harness, client: httpx.AsyncClient, job: Job, tail: bytes
) -> None:
    """The chunk's bytes are followed by the boundary, but not by what ends a delimiter
    (`--`, or a line break): the parser takes it all as more of the file part."""
    upload_id, data = job
    content_type, body = raw_chunk_body(upload_id, 0, data[:SMALL_CHUNK])
    body = body.removesuffix(b"--\r\n") + tail
    response = await client.post(
        harness.address, content=body, headers={"Content-Type": content_type}
    )
    status, error = refused(response)
    assert status == 400 and f"not exactly {SMALL_CHUNK} bytes" in error
    assert harness.stored() == []
    await finishes_intact(harness, client, *job)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_far_larger_than_a_chunk_is_refused_before_it_is_read(
    harness: Harness, client: httpx.AsyncClient, job: Job, framing: str
) -> None:
    announced = 200 * MiB
    head = b"--x\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    if framing == "content-length":
        headers["Content-Length"] = str(announced)

    async with Relay(harness.service.port) as relay:

        async def announced_body() -> AsyncIterator[bytes]:
            yield head
            await relay.answered.wait()  # the length alone must be refused
            remaining = announced - len(head)
            while remaining:  # what Content-Length owes; the relay drops it
                piece = min(MiB, remaining)
                remaining -= piece
                yield bytes(piece)

        async def streamed_body() -> AsyncIterator[bytes]:
            yield head
            sent = len(head)
            while sent < announced and not relay.answered.is_set():  # it must be counted
                sent += MiB
                yield bytes(MiB)

        body = announced_body() if framing == "content-length" else streamed_body()
        response = await client.post(relay.url(harness.address), content=body, headers=headers)
    status, error = refused(response)
    assert status == 413 and "larger than" in error
    if framing == "content-length":
        # refused on the length alone: only the request's head and 5 bytes had arrived
        assert relay.delivered_at_answer is not None and relay.delivered_at_answer < 1024
    else:  # refused long before the end (what sits in socket buffers may have gone through)
        assert relay.delivered_at_answer is not None
        assert relay.delivered_at_answer < announced // 8
    await finishes_intact(harness, client, *job)


async def test_stored_chunk_sent_again_with_same_bytes_gets_200(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    upload_id, data = job
    first = await post_chunk(client, harness.address, upload_id, 0, data[:SMALL_CHUNK])
    assert first.status_code == 200
    again = await post_chunk(client, harness.address, upload_id, 0, data[:SMALL_CHUNK])
    assert (again.status_code, again.text) == (200, "0")
    assert again.headers["Access-Control-Allow-Origin"] == "*"
    assert len(harness.stored()) == 1


def held_chunk(
    client: httpx.AsyncClient, address: str, upload_id: str, index: int, chunk: bytes
) -> tuple[asyncio.Task[httpx.Response], asyncio.Event]:
    """A POST of the chunk whose first 100 bytes go out at once and the rest once the event
    is set: a slow link, held for as long as a test needs."""
    head, tail, go_on = form_head(upload_id, index), FORM_TAIL, asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield head + chunk[:100]
        await go_on.wait()
        yield chunk[100:] + tail

    headers = {"Content-Type": CONTENT_TYPE, "Content-Length": str(len(head + chunk + tail))}
    return asyncio.create_task(client.post(address, content=body(), headers=headers)), go_on


async def test_stored_chunk_sent_again_as_its_upload_is_aborted_is_refused(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    """A chunk stored already and sent again is only compared, never posted: if its upload
    is aborted while its bytes arrive, its message is deleted with the rest, and the answer
    is a 410, not a 200 saying it is stored."""
    upload_id, data = job
    chunk = data[:SMALL_CHUNK]
    assert (await post_chunk(client, harness.address, upload_id, 0, chunk)).status_code == 200
    answer, go_on = held_chunk(client, harness.address, upload_id, 0, chunk)
    await until(lambda: received(harness) == 2)  # the chunk sent again is claimed
    assert await harness.link.abort() == {"success": True}
    go_on.set()
    status, error = refused(await answer)
    assert status == 410 and "has ended" in error
    await until(lambda: messages_of(harness.discord, upload_id) == [])  # it was deleted


@pytest.mark.parametrize("stored", [False, True], ids=["new", "sent-again"])
async def test_a_chunk_arriving_slowly_holds_off_the_inactivity_timeout(
    start_service: HarnessFactory, manager: ManagerStandIn, client: httpx.AsyncClient, stored: bool
) -> None:
    """A chunk whose bytes are still arriving (a slow link), new or sent again after a lost
    200, keeps its upload active past UPLOAD_INACTIVITY_TIMEOUT. The clock: another slot's
    upload, started later with the same timeout, times out first."""
    harness = await start_service(slots=2, upload_inactivity_timeout=0.3)
    other = await manager.next_service()
    for link, channel in ((harness.link, CHANNEL), (other, OTHER_CHANNEL)):
        await link.configure(token=TOKEN, channel_id=channel, crypto_key=KEY)
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    first, second = data[:SMALL_CHUNK], data[SMALL_CHUNK:]
    assert (await post_chunk(client, harness.address, upload_id, 0, first)).status_code == 200
    slow, go_on = held_chunk(
        client, harness.address, upload_id, 0 if stored else 1, first if stored else second
    )
    await until(lambda: received(harness) == 2)  # its timer restarts with this claim
    _, reply = await other.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
    assert reply == {"success": True}
    assert (await other.next_finish())["success"] is False  # its timer fell due after ours

    go_on.set()
    assert (await slow).status_code == 200
    if stored:
        assert (await post_chunk(client, harness.address, upload_id, 1, second)).status_code == 200
    finish = await harness.link.next_finish()
    assert finish["success"] is True and len(finish["messages"]) == 2


@pytest.mark.parametrize("stored", [False, True], ids=["new", "sent-again"])
async def test_a_chunk_that_took_most_of_the_inactivity_timeout_leaves_all_of_it_for_the_next(
    start_service: HarnessFactory,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    client: httpx.AsyncClient,
    stored: bool,
) -> None:
    """UPLOAD_INACTIVITY_TIMEOUT counts from the last chunk that arrived: a chunk whose bytes
    took 3/4 of it to arrive (a slow link) leaves the client the whole timeout for its next
    one, not the quarter left since the chunk began. The clock: the uploads of a second
    service whose timeout is 3/4 of this one's, each failing as it falls due."""
    harness = await start_service(upload_inactivity_timeout=1.2)
    other = loopback_settings(discord, manager, PASSWORD)  # its own ports and address
    clock = await start_service(
        port=other.port,
        metrics_port=other.metrics_port,
        own_address=other.own_address,
        upload_inactivity_timeout=0.9,
    )
    for each in (harness, clock):
        await each.configure()
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    first, second = data[:SMALL_CHUNK], data[SMALL_CHUNK:]
    if stored:
        assert (await post_chunk(client, harness.address, upload_id, 0, first)).status_code == 200
    slow, go_on = held_chunk(client, harness.address, upload_id, 0, first)
    await until(lambda: received(harness) == 1 + stored)  # the timer restarts with its claim

    await clock.start(1)
    assert (await clock.link.next_finish())["success"] is False  # 3/4 of the timeout went by
    go_on.set()
    assert (await slow).status_code == 200
    await clock.start(1)
    assert (await clock.link.next_finish())["success"] is False  # 3/4 more since the chunk
    assert harness.link.finishes == []  # the upload waits for its next chunk all the same

    assert (await post_chunk(client, harness.address, upload_id, 1, second)).status_code == 200
    finish = await harness.link.next_finish()
    assert finish["success"] is True and len(finish["messages"]) == 2


async def test_stored_chunk_sent_again_with_other_bytes_gets_409(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    upload_id, data = job
    first = await post_chunk(client, harness.address, upload_id, 0, data[:SMALL_CHUNK])
    assert first.status_code == 200
    response = await post_chunk(client, harness.address, upload_id, 0, os.urandom(SMALL_CHUNK))
    status, error = refused(response)
    assert status == 409 and "different bytes" in error
    assert len(harness.stored()) == 1
    await finishes_intact(harness, client, *job)


async def test_chunks_of_an_ended_job_are_refused(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    data = os.urandom(10)
    upload_id = await harness.start(len(data))
    assert (await post_chunk(client, harness.address, upload_id, 0, data)).status_code == 200
    await harness.link.next_finish()
    status, error = refused(await post_chunk(client, harness.address, upload_id, 0, data))
    assert status == 410 and "has ended" in error


async def test_preflight_allows_cross_origin_posts(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    headers = {
        "Origin": "http://client.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    response = await client.options(harness.address, headers=headers)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "content-type" in response.headers["Access-Control-Allow-Headers"]


async def test_success_and_unknown_paths_carry_cors_headers(
    harness: Harness, client: httpx.AsyncClient, job: Job
) -> None:
    status, _ = refused(await client.get(f"http://127.0.0.1:{harness.service.port}/nope"))
    assert status == 404
    response = await post_chunk(client, harness.address, job[0], 0, job[1][:SMALL_CHUNK])
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/u/a%20b/", "/u/%C3%A4/", "/u/{name}/", "/u/./x/"])
async def test_chunks_are_taken_at_own_address_as_written_whatever_its_path(
    start_service: HarnessFactory, settings: Settings, client: httpx.AsyncClient, path: str
) -> None:
    own_address = f"http://127.0.0.1:{settings.port}{path}"
    harness = await start_service(own_address=own_address)
    assert harness.address == own_address  # announced to the manager as written
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    response = await post_chunk(client, own_address, upload_id, 0, data)
    assert (response.status_code, response.text) == (200, "0")
    preflight = await client.options(own_address, headers={"Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204


async def test_a_method_the_chunk_path_does_not_take_is_a_json_405_naming_those_it_does(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    response = await client.get(harness.address)
    status, _ = refused(response)
    assert status == 405
    assert {"POST", "OPTIONS"} <= {m.strip() for m in response.headers["Allow"].split(",")}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_that_drops_mid_chunk_loses_nothing(
    harness: Harness,
    client: httpx.AsyncClient,
    job: Job,
    framing: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upload_id, data = job
    content_type, body = raw_chunk_body(upload_id, 0, data[:SMALL_CHUNK])
    half = body[: len(body) // 2]
    if framing == "chunked":
        head, sent = "Transfer-Encoding: chunked", f"{len(body):x}\r\n".encode() + half
    else:
        head, sent = f"Content-Length: {len(body)}", half
    _, writer = await asyncio.open_connection("127.0.0.1", harness.service.port)
    request = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{head}\r\n"
    writer.write(request.encode() + b"\r\n" + sent)
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    # the half-sent chunk is not stuck "in flight": the retry is taken and stored
    await finishes_intact(harness, client, *job)
    assert len(harness.stored()) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no 500, no trace


async def test_client_that_stalls_mid_chunk_is_cut_off(
    start_service: HarnessFactory, client: httpx.AsyncClient
) -> None:
    harness = await start_service(client_read_timeout=0.2)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    content_type, body = raw_chunk_body(upload_id, 0, data)
    half = body[: len(body) // 2]

    async with Relay(harness.service.port) as relay:

        async def stalling_body() -> AsyncIterator[bytes]:
            yield half
            await relay.answered.wait()  # the rest never comes while the service waits

        response = await client.post(
            relay.url(harness.address),
            content=stalling_body(),
            headers={"Content-Type": content_type},
        )
    status, error = refused(response)
    assert status == 408 and "no data arrived" in error
    assert relay.delivered_at_answer is not None and relay.delivered_at_answer < len(body)
    assert (await post_chunk(client, harness.address, upload_id, 0, data)).status_code == 200


async def test_a_client_trickling_the_fields_before_its_chunk_is_cut_off(
    start_service: HarnessFactory,
) -> None:
    """Before its chunk is claimed a request holds no memory, but it holds its connection, a
    task and a place among the chunks in flight, which a shutdown waits for: a client
    sending the form's small fields a byte at a time, never pausing for CLIENT_READ_TIMEOUT,
    is held to the same minimum rate as a chunk, and cut off before its fields are read."""
    harness = await start_service(client_read_timeout=1.0)
    await harness.configure()
    upload_id = await harness.start(SMALL_CHUNK)
    fields, port = form_head(upload_id, 0), harness.service.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_head(port, "/", len(fields) + SMALL_CHUNK + len(FORM_TAIL)))
    answer = asyncio.create_task(reader.read(4096))
    sent = 0
    while sent < len(fields) and not (await asyncio.wait([answer], timeout=0.02))[0]:
        writer.write(fields[sent : sent + 1])  # 50 bytes a second, far below 16 KiB
        sent += 1
    assert sent < len(fields), "the service read every field of a 50 bytes/s trickle"
    assert (await answer).startswith(b"HTTP/1.1 408") and b"bytes per second" in answer.result()
    writer.close()
    assert received(harness) == 0  # no chunk was claimed
    await until(lambda: harness.metric("upload_chunks_in_flight") == 0)
