"""The chunk endpoint's refusals: each names what is wrong and leaves the job intact."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import SMALL_CHUNK, Harness, HarnessFactory, raw_chunk_body

from service.local.browser import chunk_form, upload
from service.local.discord_api import Fault


async def refused(response: aiohttp.ClientResponse) -> tuple[int, str]:
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.content_type == "application/json"
    return response.status, (await response.json())["error"]


async def finishes_intact(harness: Harness, upload_id: str, data: bytes) -> None:
    """The job still completes after the refusals, byte-exact."""
    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert len(finish["messages"]) == -(-len(data) // SMALL_CHUNK)


@pytest.fixture
async def job(harness: Harness) -> tuple[str, bytes]:
    data = os.urandom(2 * SMALL_CHUNK + 100)
    return await harness.start(len(data)), data


async def test_body_that_is_not_multipart_is_refused(harness: Harness, job) -> None:
    async with harness.http.post(harness.address, json={"id": job[0]}) as response:
        status, error = await refused(response)
    assert status == 400 and "multipart/form-data" in error
    await finishes_intact(harness, *job)


@pytest.mark.parametrize("missing", ["id", "chunk", "file"])
async def test_missing_field_is_named(harness: Harness, job, missing: str) -> None:
    upload_id, data = job
    form = aiohttp.FormData(default_to_multipart=True)
    fields = {"id": upload_id, "chunk": "0"}
    for name, value in fields.items():
        if name != missing:
            form.add_field(name, value)
    if missing != "file":
        form.add_field("file", data[:SMALL_CHUNK], filename="blob")
    async with harness.http.post(harness.address, data=form) as response:
        status, error = await refused(response)
    assert status == 400 and repr(missing) in error
    await finishes_intact(harness, *job)


async def test_unknown_upload_id_is_refused(harness: Harness, job) -> None:
    status, body = await harness.post(str(uuid.uuid4()), 0, job[1][:SMALL_CHUNK])
    assert status == 404 and "not known" in body
    await finishes_intact(harness, *job)


@pytest.mark.parametrize("index", ["-1", "1.5", "x", "", "3", "99999999999999999999"])
async def test_bad_chunk_index_is_refused(harness: Harness, job, index: str) -> None:
    status, body = await harness.post(job[0], index, job[1][:SMALL_CHUNK])
    assert status == 400 and "chunk index" in body
    await finishes_intact(harness, *job)


@pytest.mark.parametrize(
    ("index", "length"),
    [(0, SMALL_CHUNK - 1), (0, SMALL_CHUNK + 1), (2, 99), (2, 101), (2, SMALL_CHUNK)],
)
async def test_chunk_of_the_wrong_length_is_refused(
    harness: Harness, job, index: int, length: int
) -> None:
    status, body = await harness.post(job[0], index, os.urandom(length))
    expected = SMALL_CHUNK if index < 2 else 100
    assert status == 400 and f"{expected} bytes" in body
    assert harness.stored() == []
    await finishes_intact(harness, *job)


async def test_body_far_larger_than_a_chunk_is_refused_before_it_is_read(
    harness: Harness, job
) -> None:
    announced = 200 * 1024 * 1024
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(announced)}

    async def endless() -> AsyncIterator[bytes]:
        yield b"--x\r\n"
        while True:  # the service answers long before this could end
            yield b"\0" * 65536

    async with harness.http.post(harness.address, data=endless(), headers=headers) as response:
        status, error = await refused(response)
    assert status == 413 and "larger than" in error
    await finishes_intact(harness, *job)


async def test_chunk_already_in_flight_is_refused_with_409(harness: Harness, job) -> None:
    upload_id, data = job
    harness.discord.inject(Fault(hold=True))
    first = asyncio.create_task(harness.post(upload_id, 0, data[:SMALL_CHUNK]))
    await harness.discord.wait_for_posts(1)

    status, body = await harness.post(upload_id, 0, data[:SMALL_CHUNK])
    assert status == 409 and "already being received" in body

    harness.discord.release_held()
    assert (await first)[0] == 200
    assert len(harness.stored()) == 1
    await finishes_intact(harness, *job)


async def test_stored_chunk_sent_again_with_same_bytes_gets_200(harness: Harness, job) -> None:
    upload_id, data = job
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK]))[0] == 200
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK])) == (200, "0")
    assert len(harness.stored()) == 1


async def test_stored_chunk_sent_again_with_other_bytes_gets_409(harness: Harness, job) -> None:
    upload_id, data = job
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK]))[0] == 200
    status, body = await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK))
    assert status == 409 and "different bytes" in body
    await finishes_intact(harness, *job)


async def test_chunks_of_an_ended_job_are_refused(harness: Harness) -> None:
    data = os.urandom(10)
    upload_id = await harness.start(len(data))
    assert (await harness.post(upload_id, 0, data))[0] == 200
    await harness.link.next_finish()
    status, body = await harness.post(upload_id, 0, data)
    assert status == 410 and "has ended" in body


async def test_preflight_allows_cross_origin_posts(harness: Harness) -> None:
    headers = {
        "Origin": "http://client.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with harness.http.options(harness.address, headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "content-type" in response.headers["Access-Control-Allow-Headers"]


async def test_success_and_unknown_paths_carry_cors_headers(harness: Harness, job) -> None:
    async with harness.http.get(f"http://127.0.0.1:{harness.service.port}/nope") as response:
        status, _ = await refused(response)
    assert status == 404
    form = chunk_form(job[0], 0, job[1][:SMALL_CHUNK])
    async with harness.http.post(harness.address, data=form) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_that_drops_mid_chunk_loses_nothing(
    harness: Harness, job, framing: str, caplog: pytest.LogCaptureFixture
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
    await finishes_intact(harness, *job)
    assert len(harness.stored()) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no 500, no trace


async def test_client_that_stalls_mid_chunk_is_cut_off(start_service: HarnessFactory) -> None:
    harness = await start_service(client_read_timeout=0.2)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    content_type, body = raw_chunk_body(upload_id, 0, data)
    stalled = asyncio.Event()

    async def stalling_body() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        await stalled.wait()  # the rest never comes while the service waits

    headers = {"Content-Type": content_type}
    async with harness.http.post(
        harness.address, data=stalling_body(), headers=headers
    ) as response:
        status, error = await refused(response)
    stalled.set()
    assert status == 408 and "no data arrived" in error
    assert (await harness.post(upload_id, 0, data))[0] == 200
