"""`upload-service demo`: it verifies what it uploaded, and says so when anything differs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import CHANNEL, KEY, TOKEN, Harness

from service.demo import run_demo, verify
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.browser import upload
from service.storage.sealing import ChunkSealer

SIZE = MANAGER_CHUNK_SIZE + 4321  # two chunks


async def test_demo_uploads_a_file_and_verifies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "photo.bin"
    file.write_bytes(os.urandom(SIZE))
    assert await run_demo(file) == 0
    assert "chunks: 2" in capsys.readouterr().out


@pytest.fixture
async def uploaded(harness: Harness) -> tuple[dict, bytes]:
    data = os.urandom(SIZE)
    upload_id = await harness.start(len(data), chunk_size=MANAGER_CHUNK_SIZE)
    await upload(harness.http, harness.address, upload_id, data, MANAGER_CHUNK_SIZE)
    return await harness.link.next_finish(), data


async def test_verification_passes_an_intact_upload(harness: Harness, uploaded) -> None:
    finish, data = uploaded
    assert await verify(harness.http, harness.discord, TOKEN, KEY, finish, data) == []


async def test_verification_names_every_mismatch(harness: Harness, uploaded) -> None:
    finish, data = uploaded
    first, second = (harness.discord.message(CHANNEL, m) for m in finish["messages"])
    other = ChunkSealer(len(data) - MANAGER_CHUNK_SIZE, KEY)
    other.write(memoryview(os.urandom(other.length)))
    second.attachments[0].data = bytes(other.seal().payload)  # decrypts, but to other bytes
    first.attachments[0].data = b"\0" * 64  # does not decrypt at all

    problems = await verify(harness.http, harness.discord, TOKEN, KEY, finish, data)
    assert problems == [
        "chunk 0 does not decrypt",
        "chunk 1 does not match the original bytes",
        "the finish packet's hash does not match the stored chunks",
    ]
    short = {**finish, "messages": finish["messages"][:1]}
    assert "lists 1 of 2 chunks" in " ".join(
        await verify(harness.http, harness.discord, TOKEN, KEY, short, data)
    )
