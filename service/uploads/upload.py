"""One running upload: everything a chunk meets between its claim and its answer.

An `Upload` owns the job's chunk state (`jobs.Job`), its inactivity timer, the Discord store
and key it posts with, and its ending: the finish packet goes out exactly once. The endpoint
asks it to `open_chunk` (the claim), streams the body into the chunk's sink, and calls the
chunk's `store`: a new chunk is sealed and posted, a chunk sent again after it was stored is
only compared. With the last chunk stored, the finish packet is sent before the 200.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Protocol

from ..chunks.mime import FALLBACK, sniff_mime
from ..chunks.sealing import ChunkDigest, ChunkSealer, buffer_size
from ..discord.store import DiscordStore
from ..jobs.job import Job, StoredChunk
from ..jobs.layout import ChunkLayout
from ..manager import outgoing, packets
from ..metrics import Metrics
from ..refusals import ChunkConflict, DiscordRefused, ShuttingDown, StoreError, UploadEnded
from .cleanup import Cleanup, Orphans, content_prefix, snowflake_at
from .memory import ChunkMemory

log = logging.getLogger(__name__)

FORM_ALLOWANCE = 16 * 1024  # body bytes beyond the chunk: boundaries, headers, small fields
CLOCK_MARGIN = 300.0  # seconds: how far Discord's clock may be behind ours when searching

UNREPORTABLE = (
    "The upload service stored every chunk but could not report them; please upload the file again"
)

UNSENT = "the link to the manager was lost before the success finish could be sent"

Report = Callable[[str], Awaitable[bool]]  # sends a packet to the manager; False if it could not


JOB_OUTCOMES = (
    "succeeded",
    "timed_out",
    "discord_refused",
    "shutdown",
    "aborted",
    "voided",
    "failed",
)


@dataclass(frozen=True)
class Shared:
    """What every upload of the process uses, whichever slot runs it."""

    memory: ChunkMemory
    cleanup: Cleanup
    metrics: Metrics
    memory_wait: float  # seconds a chunk may wait for memory (CLIENT_READ_TIMEOUT)
    max_in_flight: int  # CHUNKS_IN_FLIGHT_PER_UPLOAD
    inactivity_timeout: float  # UPLOAD_INACTIVITY_TIMEOUT


@dataclass(frozen=True)
class Ending:
    """Why an upload ended: `why` for the log and later chunks, `outcome` for the metric."""

    why: str
    outcome: str  # one of JOB_OUTCOMES


class IncomingChunk(Protocol):
    """A claimed chunk: its bytes go to `sink`, then `store` makes it count. Closing it gives
    up the claim if it was not stored."""

    index: int
    sink: ChunkSealer | ChunkDigest

    async def store(self) -> None: ...

    def __enter__(self) -> IncomingChunk: ...

    def __exit__(self, *exc_info: object) -> None: ...


class Upload:
    def __init__(
        self,
        start: packets.UploadStart,
        *,
        store: DiscordStore,
        key: bytes | None,
        shared: Shared,
        report: Report,
        on_end: Callable[[Upload, Ending], None],
        slot: str,
    ) -> None:
        self.start = start
        layout = ChunkLayout(start.size, start.chunk_size)
        self.job = Job(start.upload_id, layout, shared.max_in_flight)
        self.store = store
        self.key = key
        self.shared = shared
        self._report = report
        self._on_end = on_end
        self.slot = slot
        self._log = {"slot": slot, "upload_id": start.upload_id}
        self._timer: asyncio.TimerHandle | None = None
        self._ending: Ending | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._began = snowflake_at(time.time() - CLOCK_MARGIN)  # to search the channel from
        self._unrecorded = False  # a post may have stored a message whose id we never learned

    @property
    def upload_id(self) -> str:
        return self.job.upload_id

    @property
    def body_limit(self) -> int:
        """The most bytes a chunk POST of this upload may have."""
        return self.start.chunk_size + FORM_ALLOWANCE

    def begin(self) -> None:
        self.shared.memory.begin(self.upload_id)
        log.info(
            "upload started: %d bytes in %d chunks",
            self.start.size,
            self.job.layout.count,
            extra=self._log,
        )
        if self.job.complete:  # a file of size 0 has no chunks to wait for
            self._in_background(self._finish())
        else:
            self._touch()

    # --- a chunk's path --------------------------------------------------------------------

    async def open_chunk(self, index_text: str) -> IncomingChunk:
        """Claim the chunk the client names and reserve its memory, before its bytes are
        read; raise a `Refusal` if it cannot be received."""
        index = self.job.layout.parse_index(index_text)
        stored = self.job.claim(index)
        self._touch()
        self.shared.metrics.chunks_received.inc()
        length = self.job.layout.length(index)
        if stored is not None:
            return ResentChunk(self, index, stored, ChunkDigest(length))
        try:
            buffer = await self.shared.memory.take(
                buffer_size(self.start.chunk_size),
                owner=self.upload_id,
                wait=self.shared.memory_wait,
            )
        except BaseException:
            self.job.release(index)
            raise
        return NewChunk(self, index, ChunkSealer(length, self.key, buffer=buffer))

    async def post(self, index: int, sealer: ChunkSealer) -> None:
        """Post a received chunk to Discord and record it; the upload may finish here."""
        self._refuse_if_ended()
        sealed = sealer.seal()
        content = f"{content_prefix(self.upload_id)} chunk {index}"
        try:
            message_id = await self.store.post(content, str(index), sealed.payload)
        except StoreError as error:
            if error.maybe_stored:
                self._unrecorded = True
                if self._ending is not None and self._ending.outcome != "succeeded":
                    self._clean_up((), f"a post failed after the upload ended: {self._ending.why}")
            self._refuse_if_ended()
            if isinstance(error, DiscordRefused):
                await self.fail(Ending(f"Discord refused the upload: {error}", "discord_refused"))
            raise
        if self._ending is not None:  # it ended while Discord was busy: nobody will read it
            self._clean_up((message_id,), f"stored after the upload ended: {self._ending.why}")
            self._refuse_if_ended()
        self.job.record(index, StoredChunk(message_id, sealed.digest), sealed.head)
        self.shared.metrics.chunks_stored.inc()
        self.shared.metrics.stored_bytes.inc(sealer.length)
        log.info("chunk stored as message %s", message_id, extra={**self._log, "chunk": index})
        if self.job.complete:
            await self._finish()

    def release(self, index: int) -> None:
        self.job.release(index)

    def _refuse_if_ended(self) -> None:
        if self._ending is None:
            return
        if self._ending.outcome == "shutdown":
            raise ShuttingDown(
                f"the upload service is shutting down; upload {self.upload_id} was stopped"
            )
        raise UploadEnded(f"upload {self.upload_id} has ended: {self._ending.why}")

    # --- ending ----------------------------------------------------------------------------

    async def fail(self, ending: Ending) -> None:
        """End the upload and tell the manager why, once."""
        await self._end(ending, outgoing.finish_failure(ending.why))

    def void(self, ending: Ending) -> None:
        """End the upload without a finish packet (an abort's reply or a lost link says it)."""
        if self._stop(ending):
            self._settle(ending)

    async def _finish(self) -> None:
        """Every chunk is stored: report success, or, if that report cannot be made, a
        failure the user can act on; never nothing, or the manager would wait for ever."""
        if self._ending is not None:
            return
        try:
            packet = outgoing.finish_success(
                messages=self.job.messages(),
                file_hash=self.job.file_hash(),
                is_encrypted=self.key is not None,
                mime_type=sniff_mime(self.job.head) if self.job.head is not None else FALLBACK,
                channel=self.store.channel_id,
            )
            ending = Ending("all chunks are stored", "succeeded")
        except Exception:
            log.exception("the success finish packet could not be built", extra=self._log)
            ending = Ending(UNREPORTABLE, "failed")
            packet = outgoing.finish_failure(UNREPORTABLE)
        await self._end(ending, packet)

    async def _end(self, ending: Ending, packet: str) -> None:
        """End the upload if it has not ended yet, and send its finish packet. A success
        the link could not send is void: the manager will record none of its messages."""
        if not self._stop(ending):
            return
        try:
            if not await self._report(packet) and ending.outcome == "succeeded":
                ending = Ending(UNSENT, "voided")
        finally:  # even cut off mid-send: the packet was handed to the link
            self._settle(ending)

    def _stop(self, ending: Ending) -> bool:
        """Stop the upload if it has not ended yet (its timer, its slot, its memory); True
        the first time."""
        if not self.job.end():
            return False
        self._ending = ending
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_end(self, ending)
        try:
            self.shared.memory.end(self.upload_id)
        except Exception:  # the ending must go on: a budget bug is logged, not raised
            log.exception("the chunk memory failed to take the upload's end", extra=self._log)
        return True

    def _settle(self, ending: Ending) -> None:
        """Count how the upload ended, and clean up what the manager will never record."""
        self._ending = ending
        self.shared.metrics.jobs.labels(ending.outcome).inc()
        if ending.outcome != "succeeded":  # the manager records none of its messages
            self._clean_up(tuple(c.message_id for c in self.job.stored.values()), ending.why)
        level = logging.INFO if ending.outcome == "succeeded" else logging.WARNING
        log.log(level, "upload ended: %s", ending.why, extra=self._log)

    def _clean_up(self, message_ids: tuple[str, ...], why: str) -> None:
        since = self._began if self._unrecorded else None
        orphans = Orphans(self.upload_id, message_ids, why, search_since=since)
        self.shared.cleanup.delete(self.store, orphans)

    # --- the inactivity timer --------------------------------------------------------------

    def _touch(self) -> None:
        """A chunk started arriving: restart the inactivity timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            self.shared.inactivity_timeout, self._expire
        )

    def _expire(self) -> None:
        if self.job.in_flight:  # a chunk is still arriving or being stored: not inactive
            self._touch()
            return
        ending = Ending(
            f"No chunk was received for {self.shared.inactivity_timeout:g} seconds", "timed_out"
        )
        self._in_background(self.fail(ending))

    def _in_background(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class NewChunk:
    """A chunk not stored yet: sealed as it arrives, then posted."""

    def __init__(self, upload: Upload, index: int, sealer: ChunkSealer) -> None:
        self.upload = upload
        self.index = index
        self.sink = sealer
        self._posting = False  # while True, aiohttp may still read the chunk's buffer

    async def store(self) -> None:
        self._posting = True
        await self.upload.post(self.index, self.sink)
        self._posting = False

    def __enter__(self) -> NewChunk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.upload.release(self.index)
        # a post that failed midway may leave a writer reading the buffer: not reused
        memory, owner = self.upload.shared.memory, self.upload.upload_id
        memory.give(self.sink.buffer, owner=owner, reusable=not self._posting)


class ResentChunk:
    """A chunk stored already and sent again: the same bytes are a lost 200 retried."""

    def __init__(
        self, upload: Upload, index: int, stored: StoredChunk, digest: ChunkDigest
    ) -> None:
        self.upload = upload
        self.index = index
        self.sink = digest
        self._stored = stored

    async def store(self) -> None:
        if self.sink.hexdigest() != self._stored.digest:
            raise ChunkConflict(f"chunk {self.index} was already stored with different bytes")

    def __enter__(self) -> ResentChunk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass
