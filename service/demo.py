"""`upload-service demo`: one upload through the real service, checked byte for byte.

Starts the Discord and manager stand-ins and the service on free loopback ports, plays the
manager (configuration with encryption on, then `upload-start`) and the browser (5 chunks at
once, with retries), then fetches every attachment back from the Discord stand-in over HTTP,
as the manager would, and checks them and the finish packet against the original
(`local/verify.py`: decrypted bytes, sizes, hash, count, channel, encryption).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import aiohttp
from tqdm import tqdm

from .jobs.layout import MANAGER_CHUNK_SIZE
from .local.browser import source_size, upload
from .local.discord_api import DiscordStandIn
from .local.loopback import loopback_settings
from .local.manager import ManagerStandIn
from .local.verify import chunks_of, finish_problems
from .server import UploadService

DEMO_SIZE = 64 * 1024 * 1024
CHANNEL_ID = "1100000000000000001"
PROGRESS_FORMAT = (
    "{l_bar}{bar}| {n_fmt}{unit}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}]"
)


@dataclass(frozen=True)
class Verdict:
    chunks: int
    size: int
    seconds: float
    problems: list[str]

    @property
    def verified(self) -> bool:
        return not self.problems


def progress_bar(size: int, file: IO[str] | None = None) -> tqdm[NoReturn]:
    """A progress bar counting bytes in binary units: a 64 MiB file shows 64.0MiB."""
    return tqdm(
        total=size,
        unit="iB",
        unit_scale=True,
        unit_divisor=1024,
        desc="uploading",
        bar_format=PROGRESS_FORMAT,
        file=file,
    )


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
            with progress_bar(size) as bar:
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
            fetched = await fetch_attachments(session, discord, token, finish)
            data = (
                await asyncio.to_thread(source.read_bytes) if isinstance(source, Path) else source
            )
            problems = finish_problems(
                finish, chunks_of(data, MANAGER_CHUNK_SIZE), CHANNEL_ID, key, fetched.get
            )
            problems += [f"the manager dropped a packet: {d.why}" for d in manager.dropped]
            return Verdict(report.chunks, size, seconds, problems)


async def fetch_attachments(
    session: aiohttp.ClientSession, discord: DiscordStandIn, token: str, finish: dict[str, Any]
) -> dict[str, bytes]:
    """Each listed message's attachment, fetched over HTTP from the channel the finish packet
    names, as the manager would; a message that cannot be fetched is left out."""
    fetched: dict[str, bytes] = {}
    if not finish.get("success"):
        return fetched
    headers = {"Authorization": f"Bot {token}"}
    for message_id in finish["messages"]:
        url = f"{discord.base_url}/channels/{finish['channel']}/messages/{message_id}"
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                continue
            message = await response.json()
        if not message["attachments"]:
            continue
        async with session.get(message["attachments"][0]["url"]) as response:
            if response.status == 200:
                fetched[message_id] = await response.read()
    return fetched
