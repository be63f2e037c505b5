"""The journal (STATE_DIR) of a real process killed with SIGKILL: what it left on Discord is
deleted by the next start once a slot has the same bot token, what a success reported is
kept, a journal of another token is left alone, and one SQLite cannot read is set aside."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    CHANNEL,
    KEY,
    SMALL_CHUNK,
    TOKEN,
    messages_of,
    reassembled,
    refuse_journal_writes,
    store_some,
    until,
)

from service.config import Settings
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn, Fault, Route
from service.local.driver import spawn_service
from service.local.manager import ManagerStandIn, ServiceConnection
from service.local.verify import chunks_of
from service.uploads.cleanup import content_prefix, snowflake_at
from service.uploads.journal import Journal, State, UploadRecord
from service.uploads.journal_files import journal_name
from service.uploads.upload import UNJOURNALED

LOG_TIMEOUT = 30.0  # seconds a log line may take to come (the machine may be loaded)


class ServiceLog:
    """A process's log lines as they arrive, to be awaited."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._arrived:
                self.lines.append(line.decode())
                self._arrived.notify_all()

    def _find(self, words: tuple[str, ...]) -> str | None:
        return next((line for line in self.lines if all(w in line for w in words)), None)

    async def line(self, *words: str) -> str:
        """The first line holding every one of `words`, once it is logged."""
        try:
            async with asyncio.timeout(LOG_TIMEOUT), self._arrived:
                await self._arrived.wait_for(lambda: self._find(words) is not None)
        except TimeoutError:
            pytest.fail(f"no log line with {words} in:\n{''.join(self.lines)}")
        return self._find(words) or ""


@dataclass
class Life:
    """One run of the service process, and its manager link."""

    process: asyncio.subprocess.Process
    link: ServiceConnection
    log: ServiceLog

    async def configure(self) -> None:
        reply = await self.link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        assert reply == {"success": True}

    async def kill(self) -> None:
        self.process.kill()
        await self.process.wait()


@asynccontextmanager
async def life(settings: Settings, manager: ManagerStandIn, state_dir: Path) -> AsyncIterator[Life]:
    """The service as its own process with STATE_DIR, connected to the manager stand-in."""
    process = await spawn_service(settings, stderr=PIPE, STATE_DIR=str(state_dir))
    assert process.stderr is not None
    log = ServiceLog(process.stderr)
    try:
        yield Life(process, await manager.next_service(), log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def post(
    life: Life, http: aiohttp.ClientSession, upload_id: str, index: int, data: bytes | None = None
) -> int:
    form = chunk_form(upload_id, index, os.urandom(SMALL_CHUNK) if data is None else data)
    async with http.post(life.link.own_address, data=form) as response:
        return response.status


async def post_all(
    life: Life, http: aiohttp.ClientSession, upload_id: str, data: bytes
) -> list[int]:
    """Each chunk of `data` posted once, in order; their statuses."""
    chunks = enumerate(chunks_of(data, SMALL_CHUNK))
    return [await post(life, http, upload_id, index, bytes(chunk)) for index, chunk in chunks]


async def lose_an_answer(life: Life, discord: DiscordStandIn, http: aiohttp.ClientSession) -> str:
    """Configure, store chunk 0 of 3, then post chunk 1, which Discord stores and whose answer
    is lost (one try only); the upload's id."""
    await life.configure()
    upload_id = await store_some(life.link, http, stored=1, chunks=3)
    discord.inject(Fault(store_then_drop=True))
    assert await post(life, http, upload_id, 1) != 200
    return upload_id


async def next_start_deletes(
    settings: Settings,
    manager: ManagerStandIn,
    discord: DiscordStandIn,
    state_dir: Path,
    upload_id: str,
    count: int,
) -> None:
    """The next start on `state_dir`, once a slot has the token, deletes the `count` messages
    the upload left, and none of them is left on Discord."""
    async with life(settings, manager, state_dir) as second:
        await second.configure()
        await second.log.line(f"deleted the {count} messages", upload_id)
        assert messages_of(discord, upload_id) == []


def set_aside(state_dir: Path, name: str) -> list[bytes]:
    """What the journal files set aside as unreadable hold."""
    return [path.read_bytes() for path in state_dir.glob(f"{name}.sqlite.corrupt-*")]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_what_a_killed_process_stored_is_deleted_once_a_slot_has_its_token(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    async with life(settings, manager, tmp_path) as first:
        await first.configure()
        upload_id = await store_some(first.link, http, stored=2, chunks=3)
        await first.kill()
    assert len(messages_of(discord, upload_id)) == 2

    async with life(settings, manager, tmp_path) as second:
        await second.log.line("left this upload unfinished", upload_id)
        await second.configure()
        await second.log.line("deleted the 2 messages", upload_id)
        assert messages_of(discord, upload_id) == []


async def test_a_message_whose_answer_was_lost_is_found_and_deleted_by_the_next_start(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(settings, discord_retries=1)
    async with life(settings, manager, tmp_path) as first:
        upload_id = await lose_an_answer(first, discord, http)
        await first.kill()
    assert len(messages_of(discord, upload_id)) == 2  # one under an id the service never learned
    await next_start_deletes(settings, manager, discord, tmp_path, upload_id, 2)


async def test_a_search_discord_refused_is_made_again_by_the_next_start(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(settings, discord_retries=1)
    async with life(settings, manager, tmp_path) as first:
        upload_id = await lose_an_answer(first, discord, http)
        discord.inject(Fault(status=403), route=Route.LIST_MESSAGES)
        assert await first.link.abort() == {"success": True}
        await first.log.line("could not be searched", upload_id)
        assert len(messages_of(discord, upload_id)) == 1  # the one whose id it never learned
        await first.kill()
    await next_start_deletes(settings, manager, discord, tmp_path, upload_id, 1)


@pytest.mark.parametrize(
    ("cleaned_first", "deleted"), [(True, 1), (False, 3)], ids=["cleaned", "not cleaned yet"]
)
async def test_a_post_at_discord_when_its_aborted_upload_was_killed_is_found_by_the_next_start(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    cleaned_first: bool,
    deleted: int,
) -> None:
    """The manager aborts an upload while one of its posts is at Discord, and the process is
    killed before the answer comes back (its 2 known messages deleted already, or their bulk
    delete still at Discord): Discord stores that message all the same, under an id nobody
    learned. The next start searches the channel for it (and deletes the known ones again,
    if their deletion was not answered: Discord ignores ids already gone)."""
    async with life(settings, manager, tmp_path) as first:
        await first.configure()
        upload_id = await store_some(first.link, http, stored=2, chunks=3)
        if not cleaned_first:
            discord.inject(Fault(hold=True), route=Route.BULK_DELETE)
        discord.inject(Fault(hold=True))
        late = asyncio.create_task(post(first, http, upload_id, 2))
        await until(lambda: discord.faults_served == 1)  # its body is at Discord, held
        assert await first.link.abort() == {"success": True}
        if cleaned_first:
            await first.log.line("deleted the 2 messages", upload_id)
        else:
            await until(lambda: discord.faults_served == 2)  # the bulk delete is held
        await first.kill()
        with pytest.raises(aiohttp.ClientError):
            await late
    discord.release_held()
    await until(lambda: discord.posts_stored == 3 and discord.deleted == 2)
    assert len(messages_of(discord, upload_id)) == 1
    await next_start_deletes(settings, manager, discord, tmp_path, upload_id, deleted)


async def test_a_chunk_its_aborted_upload_never_sent_leaves_nothing_in_the_journal(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A chunk waiting out a 429 when its upload is aborted is never sent: nothing of the
    upload is left for a later start to search the channel for."""
    async with life(settings, manager, tmp_path) as service:
        await service.configure()
        upload_id, _ = await service.link.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        discord.inject(Fault(status=429, retry_after=0.5))
        waiting = asyncio.create_task(post(service, http, upload_id, 0))
        await discord.wait_for_posts(1)
        assert await service.link.abort() == {"success": True}
        assert await waiting == 410
        service.process.terminate()
        assert await service.process.wait() == 0
    assert discord.posts == 1
    journal = Journal.open(tmp_path, journal_name(socket.gethostname(), settings.port))
    assert journal.uploads() == []
    journal.close()


async def test_a_success_reported_before_the_kill_keeps_every_message(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    async with life(settings, manager, tmp_path) as first:
        await first.configure()
        data = os.urandom(2 * SMALL_CHUNK)
        done, _ = await first.link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        assert await post_all(first, http, done, data) == [200, 200]
        finish = await first.link.next_finish()
        assert finish["success"] is True
        running = await store_some(first.link, http, stored=1, chunks=2)
        await first.kill()
    await next_start_deletes(settings, manager, discord, tmp_path, running, 1)
    assert reassembled(discord, finish) == data


async def test_a_successful_uploads_stray_copy_left_by_a_stopped_process_is_deleted_next_start(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A chunk whose post was stored but lost its answer is sent again: its first copy is a
    stray under an id nobody learned. The upload succeeds, and the process stops before its
    clean-up has found the stray (here the search is refused). The next start searches the
    channel and deletes the stray, and only it: every message the finish named stays."""
    settings = dataclasses.replace(settings, discord_retries=1)
    async with life(settings, manager, tmp_path) as first:
        await first.configure()
        data = os.urandom(2 * SMALL_CHUNK)
        upload_id, _ = await first.link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        discord.inject(Fault(store_then_drop=True))
        assert await post(first, http, upload_id, 0, data[:SMALL_CHUNK]) != 200
        discord.inject(Fault(status=403), route=Route.LIST_MESSAGES)
        assert await post_all(first, http, upload_id, data) == [200, 200]
        finish = await first.link.next_finish()
        assert finish["success"] is True
        await first.log.line("could not be searched", upload_id)
        await first.kill()
    assert len(messages_of(discord, upload_id)) == 3  # the two named, and the stray

    async with life(settings, manager, tmp_path) as second:
        await second.log.line("stray copies", upload_id)
        await second.configure()
        await second.log.line("deleted the 1 messages", upload_id)
    assert sorted(messages_of(discord, upload_id)) == sorted(finish["messages"])
    assert reassembled(discord, finish) == data


async def test_a_journal_of_another_bot_token_is_left_alone(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    tmp_path: Path,
) -> None:
    """A journal another process left (under another name: it is taken over) holds an upload
    of another bot token and one of this token: only the second is deleted."""
    theirs, ours = "0f1e2d3c-4b5a-4678-9abc-def012345678", "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d"
    journal = Journal.open(tmp_path, "journal-elsewhere-8080")
    began = snowflake_at(time.time() - 300)
    for upload_id, token in ((theirs, "another-bot-token"), (ours, TOKEN)):
        record = UploadRecord(upload_id, CHANNEL, sha256(token), began)
        journal.began(record)
        message = discord.add_message(CHANNEL, f"{content_prefix(upload_id)} chunk 0")
        journal.stored(record, message.id)
        journal.ended(upload_id, State.FAILED)
    journal.close()

    async with life(settings, manager, tmp_path) as service:
        await service.log.line("took over the journal", "journal-elsewhere-8080")
        await service.configure()
        await service.log.line("left alone", "another bot token", theirs)
        await service.log.line("deleted the 1 messages", ours)
        service.process.terminate()
        assert await service.process.wait() == 0
    assert len(messages_of(discord, theirs)) == 1
    assert messages_of(discord, ours) == []
    kept = Journal.open(tmp_path, journal_name(socket.gethostname(), settings.port))
    assert [left.record.upload_id for left in kept.uploads()] == [theirs]  # for the next start
    kept.close()


async def test_a_journal_sqlite_cannot_read_is_set_aside_and_the_service_starts(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    name = journal_name(socket.gethostname(), settings.port)
    garbage = b"not a database, whatever wrote it\n" * 200
    (tmp_path / f"{name}.sqlite").write_bytes(garbage)
    async with life(settings, manager, tmp_path) as service:
        await service.configure()
        upload_id = await store_some(service.link, http, stored=1, chunks=2)
        line = await service.log.line("cannot be read", "set aside")
        assert [line for line in service.log.lines if "journal" in line] == [line]
        assert "Traceback" not in "".join(service.log.lines)
        await service.kill()
    assert set_aside(tmp_path, name) == [garbage]
    fresh = Journal.open(tmp_path, name)  # the new journal recorded the upload
    assert [left.record.upload_id for left in fresh.uploads()] == [upload_id]
    fresh.close()


async def test_a_journal_the_disk_stops_taking_fails_no_chunk_and_says_so(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """STATE_DIR's disk full before an upload begins (`refuse_journal_writes`): every chunk
    is still stored, answered 200 and reported; the journal's failure is one error line, not
    a 500 for each chunk."""
    async with life(settings, manager, tmp_path) as service:
        await service.configure()
        refuse_journal_writes(service.process.pid, tmp_path)
        data = os.urandom(2 * SMALL_CHUNK)
        upload_id, _ = await service.link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        statuses = await post_all(service, http, upload_id, data)
        assert statuses == [200, 200], "".join(service.log.lines)
        finish = await service.link.next_finish()
        assert finish["success"] is True and reassembled(discord, finish) == data
        await service.log.line("ERROR", "the journal", "cannot be written")
        assert sum("cannot be written" in line for line in service.log.lines) == 1
        assert "Traceback" not in "".join(service.log.lines)


async def test_a_success_the_journal_could_not_mark_is_never_deleted_by_the_next_start(
    settings: Settings,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The disk stops taking the journal's writes after an upload began (its row says it is
    running): a success finish reported then would leave that row behind, and the next start
    would delete every message the manager recorded. What the manager was told is kept."""
    async with life(settings, manager, tmp_path) as first:
        await first.configure()
        data = os.urandom(2 * SMALL_CHUNK)
        upload_id, _ = await first.link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        refuse_journal_writes(first.process.pid, tmp_path)
        await post_all(first, http, upload_id, data)
        finish = await first.link.next_finish()
        await first.kill()

    async with life(settings, manager, tmp_path) as second:
        await second.configure()
        await second.log.line("deleted the", upload_id)
    recorded = set(finish.get("messages", []))
    assert recorded <= set(messages_of(discord, upload_id)), "a reported message was deleted"
    assert finish == {"success": False, "reason": UNJOURNALED}
    assert messages_of(discord, upload_id) == []
