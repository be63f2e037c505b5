"""An independent decryptor: Node's own crypto opens what the service stored on Discord.

The manager is a Node program; it decrypts each attachment as iv(16) | tag(16) | ciphertext
with AES-256-GCM and trusts the finish packet's hash. `tests/interop/node/decrypt.js` does the same
with nothing from this project, so a layout or hash that only our own Python agrees with
fails here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

from conftest import CHANNEL, KEY, SMALL_CHUNK, Harness, missing

from service.local.browser import upload

DECRYPT_JS = Path(__file__).parent / "node" / "decrypt.js"
NODE_TIMEOUT = 20.0


def node() -> str:
    """Node's path; a missing Node fails the test in CI and skips it elsewhere."""
    path = shutil.which("node")
    if path is None:
        missing("node", ".ci/run installs Debian's nodejs")
    return path


async def run_node(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        node(),
        str(DECRYPT_JS),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(NODE_TIMEOUT):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def upload_file(harness: Harness, data: bytes) -> dict[str, Any]:
    upload_id = await harness.start(len(data))
    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert finish["is_encrypted"] is True
    return finish


def save_attachments(harness: Harness, finish: dict[str, Any], folder: Path) -> list[str]:
    """Each message's first attachment (what the manager downloads), in the finish's order."""
    paths = []
    for index, message_id in enumerate(finish["messages"]):
        path = folder / f"attachment-{index}"
        path.write_bytes(harness.discord.message(CHANNEL, message_id).attachments[0].data)
        paths.append(str(path))
    return paths


def flip_last_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(data)


async def test_node_decrypts_every_chunk_and_computes_the_same_hash(
    harness: Harness, tmp_path: Path
) -> None:
    node()
    data = os.urandom(5 * SMALL_CHUNK + 4321)
    finish = await upload_file(harness, data)
    attachments = save_attachments(harness, finish, tmp_path)
    out = tmp_path / "plaintext"

    request = {"key": base64.b64encode(KEY).decode(), "out": str(out), "attachments": attachments}
    status, stdout, stderr = await run_node(stdin=json.dumps(request).encode())

    assert status == 0, stderr
    summary = json.loads(stdout)
    assert summary["chunks"] == 6
    assert out.read_bytes() == data
    assert summary["hash"] == finish["hash"]


async def test_node_refuses_an_attachment_that_was_tampered_with(
    harness: Harness, tmp_path: Path
) -> None:
    """Node checks the tag where we put it: a flipped ciphertext bit is an error, not data."""
    node()
    finish = await upload_file(harness, os.urandom(SMALL_CHUNK))
    [path] = save_attachments(harness, finish, tmp_path)
    flip_last_bit(Path(path))

    key = base64.b64encode(KEY).decode()
    status, stdout, stderr = await run_node(key, str(tmp_path / "plaintext"), path)

    assert status == 1
    assert stdout == ""
    assert "chunk 0" in stderr and "does not decrypt" in stderr
