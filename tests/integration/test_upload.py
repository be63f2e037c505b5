"""Whole uploads through the real service: what the manager and Discord end up with.

Whole uploads go through the browser stand-in (`service.local.browser.upload`, on aiohttp,
with the browser's concurrency and retries); the tests of single answers post with httpx,
a client independent of the aiohttp server.
"""

from __future__ import annotations

import hashlib
import os

import httpx
from conftest import (
    CHANNEL,
    SMALL_CHUNK,
    Harness,
    HarnessFactory,
    expected_hash,
    post_chunk,
    reassembled,
)

from service.chunks.sealing import HEADER_SIZE
from service.local.browser import upload

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


async def test_encrypted_upload_reassembles_and_reports_everything(harness: Harness) -> None:
    data = PNG_HEAD + os.urandom(5 * SMALL_CHUNK + 1234)
    upload_id = await harness.start(len(data), name="photo.png", path="/holiday/2026")

    report = await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()

    assert report.chunks == 6
    assert finish["success"] is True
    assert finish["is_encrypted"] is True
    assert finish["channel"] == CHANNEL
    assert finish["type"] == "image/png"
    assert finish["hash"] == expected_hash(data, SMALL_CHUNK)
    assert reassembled(harness.discord, finish) == data


async def test_each_chunk_is_one_message_named_by_index_without_the_file_name(
    harness: Harness,
) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data), name="secret-plans.pdf", path="/private")
    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()

    # one message a chunk: the channel holds the two the finish lists, and nothing else
    assert len(finish["messages"]) == 2
    assert sorted(m.id for m in harness.discord.messages(CHANNEL)) == sorted(finish["messages"])
    for index, message_id in enumerate(finish["messages"]):
        message = harness.discord.message(CHANNEL, message_id)
        assert [a.filename for a in message.attachments] == [str(index)]
        assert len(message.attachments[0].data) == SMALL_CHUNK + HEADER_SIZE
        assert "secret-plans" not in message.content and "/private" not in message.content


async def test_unencrypted_upload_stores_plaintext(start_service: HarnessFactory) -> None:
    harness = await start_service()
    assert await harness.configure(crypto_key=None) == {"success": True}
    data = b"%PDF-1.7\n" + os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))

    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()

    assert finish["is_encrypted"] is False
    assert finish["type"] == "application/pdf"
    assert b"".join(harness.stored()) == data


async def test_a_file_sniffed_as_an_untidy_type_finishes_with_a_valid_one(
    harness: Harness,
) -> None:
    data = b"ISc(" + os.urandom(SMALL_CHUNK)  # the signature database spells it " application/..."
    upload_id = await harness.start(len(data))
    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()
    assert finish["success"] is True and finish["type"] == "application/vnd.ms-cab-compressed"


async def test_size_that_is_an_exact_multiple_of_the_chunk_size_finishes(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    data = os.urandom(3 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))

    for index in range(3):
        chunk = data[index * SMALL_CHUNK : (index + 1) * SMALL_CHUNK]
        response = await post_chunk(client, harness.address, upload_id, index, chunk)
        assert response.status_code == 200

    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert len(finish["messages"]) == 3


async def test_chunks_in_any_order_are_reported_in_chunk_order(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    data = os.urandom(4 * SMALL_CHUNK - 10)
    upload_id = await harness.start(len(data))
    for index in (3, 1, 0, 2):
        chunk = data[index * SMALL_CHUNK : (index + 1) * SMALL_CHUNK]
        response = await post_chunk(client, harness.address, upload_id, index, chunk)
        assert response.status_code == 200

    finish = await harness.link.next_finish()
    assert reassembled(harness.discord, finish) == data


async def test_empty_file_finishes_at_once(harness: Harness) -> None:
    await harness.start(0)
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert finish["messages"] == []
    assert finish["hash"] == hashlib.sha256(b"").hexdigest()
    # the service is free again
    await harness.start(1)


async def test_next_job_is_taken_after_one_finishes(harness: Harness) -> None:
    for _ in range(2):
        data = os.urandom(SMALL_CHUNK + 1)
        upload_id = await harness.start(len(data))
        await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
        assert (await harness.link.next_finish())["hash"] == expected_hash(data, SMALL_CHUNK)


async def test_chunks_are_accepted_at_own_address_path_and_at_root(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    root = f"http://127.0.0.1:{harness.service.port}/"

    assert harness.address.endswith("/upload")
    at_own_address = await post_chunk(client, harness.address, upload_id, 0, data[:SMALL_CHUNK])
    assert at_own_address.status_code == 200
    at_root = await post_chunk(client, root, upload_id, 1, data[SMALL_CHUNK:])
    assert at_root.status_code == 200
    assert (await harness.link.next_finish())["success"] is True


async def test_success_answer_is_the_chunk_index(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    upload_id = await harness.start(2 * SMALL_CHUNK)
    response = await post_chunk(client, harness.address, upload_id, 1, os.urandom(SMALL_CHUNK))
    assert (response.status_code, response.text) == (200, "1")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_one_client_posts_every_chunk_and_refusal_over_one_kept_alive_connection(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    """HTTP/1.1 keep-alive: a refusal, whatever of its body was left unread, does not cost
    the client its connection."""
    data = os.urandom(4 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    chunks = [data[i : i + SMALL_CHUNK] for i in range(0, len(data), SMALL_CHUNK)]
    posts: list[tuple[int | str, bytes, int]] = [
        (0, chunks[0], 200),
        (1, b"short", 400),
        ("x", chunks[1], 400),
        (1, chunks[1], 200),
        (0, os.urandom(SMALL_CHUNK), 409),
        (0, chunks[0], 200),
        (2, chunks[2], 200),
        (3, chunks[3], 200),
    ]
    connections: set[tuple[str, int]] = set()
    for index, chunk, expected in posts:
        response = await post_chunk(client, harness.address, upload_id, index, chunk)
        assert response.status_code == expected, response.text
        connections.add(response.extensions["network_stream"].get_extra_info("client_addr"))

    assert len(connections) == 1
    finish = await harness.link.next_finish()
    assert reassembled(harness.discord, finish) == data


async def test_many_concurrent_chunks_each_stored_once(harness: Harness) -> None:
    data = os.urandom(12 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    report = await upload(
        harness.http, harness.address, upload_id, data, SMALL_CHUNK, concurrency=8
    )
    await harness.link.next_finish()
    assert report.retries == 0
    assert len(harness.stored()) == 12
