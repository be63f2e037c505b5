"""`upload-service demo`: one upload through the real service, checked byte for byte.

Starts the Discord and manager stand-ins and the service on free loopback ports, plays the
manager (configuration with encryption on, then `upload-start`) and the browser (5 chunks at
once, with retries), then fetches every attachment back from the Discord stand-in over HTTP,
decrypts and reassembles it, and compares bytes and hash with the original.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.exceptions import InvalidTag
from tqdm import tqdm

from .jobs.job import file_hash
from .jobs.layout import MANAGER_CHUNK_SIZE
from .local.browser import read_chunk, source_size, upload
from .local.discord_api import DiscordStandIn
from .local.loopback import loopback_settings
from .local.manager import ManagerStandIn
from .server import UploadService
from .storage.sealing import open_attachment

DEMO_SIZE = 64 * 1024 * 1024
CHANNEL_ID = "1100000000000000001"


@dataclass(frozen=True)
class Verdict:
    chunks: int
    size: int
    seconds: float
    problems: list[str]

    @property
    def verified(self) -> bool:
        return not self.problems


async def run_demo(file: Path | None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    source: bytes | Path = file if file is not None else os.urandom(DEMO_SIZE)
    size = source_size(source)
    print(f"demo: uploading {file or 'a generated file'} ({size / 2**20:.1f} MiB)")
    verdict = await demonstrate(source, size)
    mb_per_s = size / 1e6 / verdict.seconds if verdict.seconds else float("inf")
    print(
        f"chunks: {verdict.chunks}   throughput: {mb_per_s:.1f} MB/s   "
        f"verified: {'yes' if verdict.verified else 'NO'}"
    )
    for problem in verdict.problems:
        print(f"  mismatch: {problem}")
    return 0 if verdict.verified else 1


async def demonstrate(source: bytes | Path, size: int) -> Verdict:
    token, password, key = secrets.token_urlsafe(24), secrets.token_urlsafe(16), os.urandom(32)
    async with DiscordStandIn(token=token) as discord, ManagerStandIn(password=password) as manager:
        settings = loopback_settings(discord, manager, password)
        async with UploadService(settings), aiohttp.ClientSession() as session:
            service = await manager.next_service()
            await service.configure(token=token, channel_id=CHANNEL_ID, crypto_key=key)
            upload_id, reply = await service.start_upload(size=size, name="demo.bin")
            if not reply["success"]:
                return Verdict(0, size, 0.0, [f"upload-start refused: {reply.get('message')}"])
            started = time.perf_counter()
            with tqdm(total=size, unit="B", unit_scale=True, desc="uploading") as bar:
                report = await upload(
                    session,
                    service.own_address,
                    upload_id,
                    source,
                    MANAGER_CHUNK_SIZE,
                    on_chunk_done=lambda _, chunk: bar.update(len(chunk)),
                )
            finish = await service.next_finish()
            seconds = time.perf_counter() - started
            problems = await verify(session, discord, token, key, finish, source)
            problems += [f"the manager dropped a packet: {d.why}" for d in manager.dropped]
            return Verdict(report.chunks, size, seconds, problems)


async def verify(
    session: aiohttp.ClientSession,
    discord: DiscordStandIn,
    token: str,
    key: bytes,
    finish: dict,
    source: bytes | Path,
) -> list[str]:
    """Fetch, decrypt and compare every chunk the finish packet lists, as the manager would."""
    if not finish.get("success"):
        return [f"the upload failed: {finish.get('reason')}"]
    problems: list[str] = []
    digests: list[str] = []
    headers = {"Authorization": f"Bot {token}"}
    for index, message_id in enumerate(finish["messages"]):
        url = f"{discord.base_url}/channels/{finish['channel']}/messages/{message_id}"
        async with session.get(url, headers=headers) as response:
            message = await response.json()
        async with session.get(message["attachments"][0]["url"]) as response:
            attachment = await response.read()
        try:
            plain = open_attachment(key, attachment)
        except InvalidTag:
            problems.append(f"chunk {index} does not decrypt")
            continue
        expected = read_chunk(source, index * MANAGER_CHUNK_SIZE, MANAGER_CHUNK_SIZE)
        if plain != expected:
            problems.append(f"chunk {index} does not match the original bytes")
        digests.append(hashlib.sha256(plain).hexdigest())
    chunks = math.ceil(source_size(source) / MANAGER_CHUNK_SIZE)
    if len(finish["messages"]) != chunks:
        problems.append(f"the finish packet lists {len(finish['messages'])} of {chunks} chunks")
    if finish["hash"] != file_hash(digests):
        problems.append("the finish packet's hash does not match the stored chunks")
    if not finish["is_encrypted"]:
        problems.append("the finish packet says the chunks are not encrypted")
    return problems
