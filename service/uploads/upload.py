"""One running upload: everything a chunk meets between its claim and its answer.

An `Upload` owns the job's chunk state (`jobs.Job`), its inactivity timer, the Discord store
and key it posts with, and its ending: `end(outcome, why)`, whoever calls it first, is the
only way an upload ends, and the finish packet goes out exactly once. The endpoint
asks it to `open_chunk` (the claim), streams the body into the chunk's sink, and calls the
chunk's `store` (`chunk.py`): a new chunk is sealed and posted, a chunk sent again after it
was stored is only compared. With the last chunk stored, the finish packet is sent before
the 200.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from ..chunks.mime import FALLBACK, sniff_mime
from ..chunks.sealing import SNIFF_SIZE, ChunkDigest, ChunkSealer, buffer_size
from ..discord.store import DiscordStore
from ..jobs.job import Job, StoredChunk
from ..jobs.layout import ChunkLayout
from ..manager import outgoing, packets
from ..metrics import Metrics
from ..refusals import ChunkInFlight, DiscordRefused, ShuttingDown, StoreError, UploadEnded
from .chunk import IncomingChunk, NewChunk, ResentChunk
from .cleanup import Cleanup, Orphans, content_prefix, snowflake_at
from .inactivity import InactivityTimer
from .journal import Journal, State, UploadRecord
from .leftovers import Leftovers
from .memory import ChunkMemory
from .memory_waits import MemoryWaits
from .outcome import Outcome
from .resend_waits import ResendWaits

log = logging.getLogger(__name__)

FORM_ALLOWANCE = 16 * 1024  # body bytes beyond the chunk: boundaries, headers, small fields
CLOCK_MARGIN = 300.0  # seconds: how far Discord's clock may be behind ours when searching

UNREPORTABLE = (
    "The upload service stored every chunk but could not report them; please upload the file again"
)

UNJOURNALED = (
    "The upload service could not record the upload's success in its journal (STATE_DIR refused "
    "the write); please upload the file again"
)
UNSENT = "the link to the manager was lost before the success finish could be sent"
ALL_STORED = "all chunks are stored"
STRAYS = "a chunk sent again after a post without a definite answer may have left a copy"

Report = Callable[[str], Awaitable[bool]]  # sends a packet to the manager; False if it could not


@dataclass(frozen=True)
class Shared:
    """What every upload of the process uses, whichever slot runs it."""

    memory: ChunkMemory
    cleanup: Cleanup
    journal: Journal
    leftovers: Leftovers  # what a stopped process left, for the slots to hand to the clean-up
    metrics: Metrics
    chunk_wait: float  # seconds a chunk may wait for its turn (CLIENT_READ_TIMEOUT)
    max_in_flight: int  # CHUNKS_IN_FLIGHT_PER_UPLOAD
    inactivity_timeout: float  # UPLOAD_INACTIVITY_TIMEOUT


class Upload:
    def __init__(
        self,
        start: packets.UploadStart,
        *,
        store: DiscordStore,
        key: bytes | None,
        shared: Shared,
        report: Report,
        on_end: Callable[[Upload], None],
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
        self.resending = 0  # chunks stored already arriving again: not inactive either
        self._inactivity = InactivityTimer(
            shared.inactivity_timeout,
            busy=lambda: bool(self.job.in_flight or self.resending),
            expired=self._expire,
        )
        self.outcome: Outcome | None = None  # None while it runs
        self.why = ""  # why it ended: for the log and the chunks that come later
        self._background: set[asyncio.Task[None]] = set()
        self._unrecorded = False  # a post may have stored a message whose id we never learned
        self._buffer_size = buffer_size(start.chunk_size)  # each new chunk's memory
        # Done once it ends: every wait of its requests (for memory, an earlier request, the
        # pacer) ends with it, and each request is refused as the ending says.
        self._ending: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waits = MemoryWaits(
            shared.memory,
            start.upload_id,
            size=self._buffer_size,
            longest=shared.chunk_wait,
            ending=self._ending,
        )
        self._resends = ResendWaits(longest=shared.chunk_wait, ending=self._ending)
        began = snowflake_at(time.time() - CLOCK_MARGIN)  # to search the channel from
        self._record = UploadRecord(
            start.upload_id, store.channel_id, store.client.token_sha256, began
        )

    @property
    def upload_id(self) -> str:
        return self.job.upload_id

    @property
    def body_limit(self) -> int:
        """The most bytes a chunk POST of this upload may have."""
        return self.start.chunk_size + FORM_ALLOWANCE

    def begin(self) -> None:
        self.shared.memory.begin(self.upload_id, self._buffer_size)
        self.shared.journal.began(self._record)
        log.info(
            "upload started: %d bytes in %d chunks",
            self.start.size,
            self.job.layout.count,
            extra=self._log,
        )
        if self.job.complete:  # a file of size 0 has no chunks to wait for
            self._in_background(self.end(Outcome.SUCCEEDED, ALL_STORED))
        else:
            self._inactivity.restart()

    # --- a chunk's path --------------------------------------------------------------------

    async def open_chunk(self, index_text: str) -> IncomingChunk:
        """Claim the chunk the client names and reserve its memory, before its bytes are
        read; raise a `Refusal` if it cannot be received."""
        index = self.job.layout.parse_index(index_text)
        stored = await self._claim(index)
        self._inactivity.restart()
        self.shared.metrics.chunks_received.inc()
        length = self.job.layout.length(index)
        if stored is not None:
            return ResentChunk(self, index, stored, ChunkDigest(length))
        try:
            memory = await self._waits.buffer(index)
        except BaseException:
            self.release(index)
            raise
        if self.outcome is not None:  # it ended while the chunk waited: the memory goes on
            if memory is not None:
                memory.give_back()
            self.release(index)
            self._refuse_if_ended()
        if memory is None:
            raise ChunkInFlight(
                f"chunk {index} was sent again while this request waited for memory; the new "
                "request takes its place"
            )
        head_size = SNIFF_SIZE if index == 0 else 0  # only the file's start is sniffed
        sealer = ChunkSealer(length, self.key, buffer=memory.buffer, head_size=head_size)
        return NewChunk(self, index, memory, sealer)

    async def _claim(self, index: int) -> StoredChunk | None:
        """`Job.claim`, once no earlier request holds the chunk: one waiting for memory gives
        its place up (`memory_waits.py`), one storing it is waited for (`resend_waits.py`)."""
        if not self.job.ended:
            if self._waits.take_over(index):
                return None
            if index in self.job.in_flight:
                await self._resends.wait(index)
                if (stored := self.job.stored.get(index)) is not None:
                    return stored  # compared, and a 200 only if the upload is kept
                self._refuse_if_ended()
        return self.job.claim(index)

    async def post(self, index: int, sealer: ChunkSealer) -> None:
        """Post a received chunk to Discord and record it; the upload may finish here."""
        self._refuse_if_ended()
        sealed = sealer.seal()
        content = f"{content_prefix(self.upload_id)} chunk {index}"
        try:
            # Not sent if the upload ends while it waits for the pacer (or after a 429): refused.
            with self.shared.journal.posting(self.upload_id):
                message_id = await self.store.post(
                    content,
                    str(index),
                    sealed.payload,
                    wanted=self._refuse_if_ended,
                    unwanted=self._ending,
                )
        except StoreError as error:
            if error.maybe_stored:
                self._unrecorded = True
                self.shared.journal.unsure(self._record)
                if self.outcome not in (None, Outcome.SUCCEEDED):
                    why = f"a post failed after the upload ended: {self.why}"
                    self._clean_up((), why, search=True)
            self._refuse_if_ended()
            if isinstance(error, DiscordRefused):
                await self.end(Outcome.DISCORD_REFUSED, f"Discord refused the upload: {error}")
            raise
        except (UploadEnded, ShuttingDown):  # not sent: the journal kept the upload for nothing
            self._clean_up((), self.why, search=False)
            raise
        self.shared.journal.stored(self._record, message_id)  # before the 200
        if self.outcome is not None:  # it ended while Discord was busy: nobody will read it
            why = f"stored after the upload ended: {self.why}"
            self._clean_up((message_id,), why, search=False)
            self._refuse_if_ended()
        self.job.record(index, StoredChunk(message_id, sealed.digest), sealed.head)
        self.shared.metrics.chunks_stored.inc()
        self.shared.metrics.stored_bytes.inc(sealer.length)
        log.info("chunk stored as message %s", message_id, extra={**self._log, "chunk": index})
        if self.job.complete:
            await self.end(Outcome.SUCCEEDED, ALL_STORED)

    def release(self, index: int) -> None:
        """The request for chunk `index` has ended: its claim goes, unless it was stored."""
        self.job.release(index)
        self._resends.done(index)
        self.chunk_ended()

    def chunk_ended(self) -> None:
        """A chunk's request has ended, stored or not: the client has the whole inactivity
        timeout from now for its next chunk, however long this one took to arrive."""
        self._inactivity.restart()

    def refuse_unless_kept(self) -> None:
        """Refuse a chunk stored already once the upload has ended, unless it succeeded: the
        messages of any other ending are deleted, and a 200 says the chunk is stored."""
        if self.outcome is not Outcome.SUCCEEDED:
            self._refuse_if_ended()

    def _refuse_if_ended(self) -> None:
        if self.outcome is None:
            return
        if self.outcome is Outcome.SHUTDOWN:
            raise ShuttingDown(
                f"the upload service is shutting down; upload {self.upload_id} was stopped"
            )
        raise UploadEnded(f"upload {self.upload_id} has ended: {self.why}")

    # --- ending ----------------------------------------------------------------------------

    async def end(self, outcome: Outcome, why: str) -> None:
        """End the upload, once (later calls do nothing): it stops at once (its timer, its
        slot, its memory), the manager gets the finish packet `outcome` calls for, then the
        outcome is counted and what the manager will never record is deleted. A success
        whose packet cannot be built, or that the journal cannot mark, ends FAILED, one the
        link could not send VOIDED."""
        if not self.job.end():
            return
        outcome, why, packet = self._finish_packet(outcome, why)
        self._stop(outcome, why)
        try:
            sent = packet is None or await self._report(packet)
            if not sent and outcome is Outcome.SUCCEEDED:
                outcome, why = Outcome.VOIDED, UNSENT
        finally:  # even cut off mid-send: the packet was handed to the link
            self._settle(outcome, why)

    def _finish_packet(self, outcome: Outcome, why: str) -> tuple[Outcome, str, str | None]:
        """The finish packet `outcome` calls for (None: none), with the outcome it reports:
        a success that cannot be reported is a failure the user can act on, never nothing,
        or the manager would wait for ever."""
        if not outcome.reported:
            return outcome, why, None
        if outcome is Outcome.SUCCEEDED:
            try:
                packet = self._success_packet()
            except Exception:
                log.exception("the success finish packet could not be built", extra=self._log)
                outcome, why = Outcome.FAILED, UNREPORTABLE
            else:  # marked before its packet is sent: kept if the process dies as it is sent
                if self.shared.journal.succeeded(self.upload_id):
                    return outcome, why, packet
                outcome, why = Outcome.FAILED, UNJOURNALED
        return outcome, why, outgoing.finish_failure(why)

    def _success_packet(self) -> str:
        return outgoing.finish_success(
            messages=self.job.messages(),
            file_hash=self.job.file_hash(),
            is_encrypted=self.key is not None,
            mime_type=sniff_mime(self.job.head) if self.job.head is not None else FALLBACK,
            channel=self.store.channel_id,
        )

    def _stop(self, outcome: Outcome, why: str) -> None:
        """Take no more chunks: the timer stops, the slot and the memory kept are freed, and
        the chunks waiting for memory, an earlier request or the pacer stop waiting (each is
        refused as the ending says)."""
        self.outcome, self.why = outcome, why
        self._inactivity.stop()
        self._ending.set_result(None)
        self._on_end(self)
        try:
            self.shared.memory.end(self.upload_id)
        except Exception:  # the ending must go on: a budget bug is logged, not raised
            log.exception("the chunk memory failed to take the upload's end", extra=self._log)

    def _settle(self, outcome: Outcome, why: str) -> None:
        """Count how the upload ended, and clean up what the manager will never record."""
        self.outcome, self.why = outcome, why
        self.shared.metrics.jobs.labels(outcome).inc()
        if outcome is Outcome.SUCCEEDED:
            if self._unrecorded:  # a chunk sent again may have left a copy the post stored
                kept = frozenset(c.message_id for c in self.job.stored.values())
                self.shared.journal.strays(self.upload_id, kept)  # until it is searched for
                self._clean_up((), STRAYS, search=True, kept=kept)
            else:
                self.shared.journal.forget(self.upload_id)  # the manager has their ids
        else:  # the manager records none of its messages (a success it was not sent included)
            self.shared.journal.ended(self.upload_id, State.FAILED)
            stored = tuple(c.message_id for c in self.job.stored.values())
            self._clean_up(stored, why, search=self._unrecorded)
        log.log(outcome.log_level, "upload ended: %s", why, extra=self._log)

    def _clean_up(
        self,
        message_ids: tuple[str, ...],
        why: str,
        *,
        search: bool,
        kept: frozenset[str] = frozenset(),
    ) -> None:
        since = self._record.began if search else None
        orphans = Orphans(self.upload_id, message_ids, why, search_since=since, kept=kept)
        self.shared.cleanup.delete(self.store, orphans)

    def _expire(self) -> None:
        why = f"No chunk was received for {self.shared.inactivity_timeout:g} seconds"
        self._in_background(self.end(Outcome.TIMED_OUT, why))

    def _in_background(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
