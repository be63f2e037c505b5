"""`upload-service demo` and the shared verifier (`service/local/verify.py`): an intact
upload verifies, and every mismatch is named."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import CHANNEL, KEY, TOKEN, Harness, HarnessFactory

from service.chunks.sealing import HEADER_SIZE, ChunkSealer
from service.demo import fetch_attachments, progress_bar, run_demo
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.browser import upload
from service.local.verify import attachments_in, chunks_of, finish_problems

SIZE = MANAGER_CHUNK_SIZE + 4321  # two chunks
Uploaded = tuple[dict[str, Any], list[memoryview]]  # a job's finish packet, its chunks


async def test_demo_uploads_a_file_and_verifies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "photo.bin"
    file.write_bytes(os.urandom(SIZE))
    assert await run_demo(file) == 0
    out = capsys.readouterr().out
    assert "chunks: 2" in out and "verified: yes" in out


def test_the_progress_bar_counts_binary_units() -> None:
    output = io.StringIO()
    with progress_bar(64 * 2**20, file=output) as bar:
        bar.update(64 * 2**20)
    assert "64.0MiB/64.0MiB" in output.getvalue()


async def upload_to(harness: Harness, data: bytes) -> dict[str, Any]:
    upload_id = await harness.start(len(data), chunk_size=MANAGER_CHUNK_SIZE)
    await upload(harness.http, harness.address, upload_id, data, MANAGER_CHUNK_SIZE)
    return await harness.link.next_finish()


@pytest.fixture
async def uploaded(harness: Harness) -> Uploaded:
    data = os.urandom(SIZE)
    return await upload_to(harness, data), chunks_of(data, MANAGER_CHUNK_SIZE)


async def test_an_intact_upload_verifies_fetched_over_http_or_read_from_the_standin(
    harness: Harness, uploaded: Uploaded
) -> None:
    finish, chunks = uploaded
    fetched = await fetch_attachments(harness.http, harness.discord, TOKEN, finish)
    assert sorted(fetched) == sorted(finish["messages"])
    assert finish_problems(finish, chunks, CHANNEL, KEY, fetched.get) == []
    stored = attachments_in(harness.discord, CHANNEL)
    assert finish_problems(finish, chunks, CHANNEL, KEY, stored) == []


def sealed(data: bytes) -> bytes:
    sealer = ChunkSealer(len(data), KEY)
    sealer.write(memoryview(data))
    return bytes(sealer.seal().payload)


async def test_every_chunk_that_does_not_verify_is_named(
    harness: Harness, uploaded: Uploaded
) -> None:
    finish, chunks = uploaded
    first, second = (harness.discord.message(CHANNEL, m) for m in finish["messages"])
    first.attachments[0].data = b"\0" * (len(chunks[0]) + HEADER_SIZE)  # does not decrypt
    second.attachments[0].data = sealed(os.urandom(len(chunks[1])))  # decrypts to other bytes

    fetched = await fetch_attachments(harness.http, harness.discord, TOKEN, finish)
    assert finish_problems(finish, chunks, CHANNEL, KEY, fetched.get) == [
        "chunk 0 does not decrypt",
        "chunk 1 does not match the source's bytes",
    ]
    stored = attachments_in(harness.discord, CHANNEL)
    assert finish_problems(finish, chunks, CHANNEL, KEY, stored, compared={0}) == [
        "chunk 0 does not decrypt"
    ]
    assert finish_problems(finish, chunks, CHANNEL, KEY, stored, compared=()) == []

    first.attachments[0].data = b"\0" * 64  # sizes are checked whatever is compared
    assert finish_problems(finish, chunks, CHANNEL, KEY, stored, compared=()) == [
        f"chunk 0's attachment has 64 bytes, not {len(chunks[0]) + HEADER_SIZE}"
    ]


async def test_every_mismatch_in_the_finish_packet_is_named(
    harness: Harness, uploaded: Uploaded
) -> None:
    finish, chunks = uploaded
    stored = attachments_in(harness.discord, CHANNEL)
    wrong = {
        **finish,
        "hash": "0" * 64,
        "channel": "1100000000000000999",
        "is_encrypted": False,
        "messages": ["123", *finish["messages"]],
    }
    assert finish_problems(wrong, chunks, CHANNEL, KEY, stored) == [
        "the finish packet's hash does not match the source's",
        f"the finish packet names channel 1100000000000000999, not {CHANNEL}",
        "the finish packet says is_encrypted is False, but encryption was on",
        "the finish packet lists 3 of 2 chunks",
        "chunk 0's message 123 has no attachment",
        f"chunk 1's attachment has {len(chunks[0]) + HEADER_SIZE} bytes, "
        f"not {len(chunks[1]) + HEADER_SIZE}",
    ]
    failed = {"success": False, "reason": "the bot lost access"}
    assert finish_problems(failed, chunks, CHANNEL, KEY, stored) == [
        "the upload failed: the bot lost access"
    ]


async def test_an_unencrypted_upload_is_checked_as_stored(start_service: HarnessFactory) -> None:
    harness = await start_service()
    assert await harness.configure(crypto_key=None) == {"success": True}
    data = os.urandom(SIZE)
    finish = await upload_to(harness, data)
    chunks = chunks_of(data, MANAGER_CHUNK_SIZE)
    stored = attachments_in(harness.discord, CHANNEL)
    assert finish_problems(finish, chunks, CHANNEL, None, stored) == []
    assert finish_problems(finish, chunks, CHANNEL, KEY, stored) == [
        "the finish packet says is_encrypted is False, but encryption was on",
        f"chunk 0's attachment has {len(chunks[0])} bytes, not {len(chunks[0]) + HEADER_SIZE}",
        f"chunk 1's attachment has {len(chunks[1])} bytes, not {len(chunks[1]) + HEADER_SIZE}",
    ]
