"""A slot: what the manager sees as one upload service, with one job at a time.

The slot answers the manager's requests (configuration, start, abort), stores the chunks
the intake hands it, watches the job's inactivity timeout and ends the job exactly once,
sending the finish packet when the protocol calls for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine

import aiohttp

from ..config import Settings
from ..manager import packets
from ..manager.link import Answer, ManagerLink
from ..metrics import Metrics
from ..storage.discord_store import DiscordRefused, DiscordStore, StoreError
from ..storage.mime import FALLBACK
from ..storage.sealing import HEADER_SIZE, SealedChunk
from .job import ChunkRefused, Job, StoredChunk

log = logging.getLogger(__name__)

LOGIN_TIMEOUT = 8.0  # the manager waits 10 s for the configuration's reply
ENDED_MEMORY = 1024  # how many ended upload ids are remembered for a clear refusal


class JobDirectory:
    """Routes an `upload_id` to its job and slot, and remembers recently ended ones."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[Job, Slot]] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()

    def add(self, job: Job, slot: Slot) -> None:
        self._running[job.upload_id] = (job, slot)

    def remove(self, job: Job, why: str) -> None:
        self._running.pop(job.upload_id, None)
        self._ended[job.upload_id] = why
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def find(self, upload_id: str) -> tuple[Job, Slot]:
        """The running job for `upload_id`; raise `ChunkRefused` naming why there is none."""
        found = self._running.get(upload_id)
        if found is not None:
            return found
        why = self._ended.get(upload_id)
        if why is not None:
            raise ChunkRefused(410, f"upload {upload_id} has ended: {why}")
        raise ChunkRefused(404, f"upload {upload_id[:64]!r} is not known to this service")

    def largest_chunk_size(self) -> int | None:
        return max((job.start.chunk_size for job, _ in self._running.values()), default=None)


class Slot:
    def __init__(
        self,
        settings: Settings,
        directory: JobDirectory,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        name: str = "slot-0",
    ) -> None:
        self.name = name
        self._settings = settings
        self._directory = directory
        self._metrics = metrics
        self._log = {"slot": name}
        self.link = ManagerLink(
            address=settings.manager_address,
            password=settings.service_password,
            own_address=settings.own_address,
            handler=self,
            session=session,
            name=name,
        )
        self.store: DiscordStore | None = None
        self.crypto_key: bytes | None = None
        self.job: Job | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Connected to the manager and configured: the manager can give it jobs."""
        return self.link.connected and self.store is not None

    # --- the manager's requests ----------------------------------------------------------

    async def handle(self, request: packets.Request) -> Answer:
        if request.problems:
            return Answer(False, "; ".join(request.problems))
        if isinstance(request, packets.Configuration):
            return await self._configure(request)
        if isinstance(request, packets.UploadStart):
            return await self._start(request)
        return await self._abort()

    async def _configure(self, configuration: packets.Configuration) -> Answer:
        if self.job is not None:
            return Answer(False, "a job is running; configuration can only change between jobs")
        store = DiscordStore(
            token=configuration.bot_token,
            channel_id=configuration.channel_id,
            request_timeout=self._settings.discord_request_timeout,
            retries=self._settings.discord_retries,
            max_ratelimit_wait=self._settings.discord_max_ratelimit_wait,
            metrics=self._metrics,
        )
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT):
                await store.open()
        except (StoreError, TimeoutError) as error:
            await store.close()
            reason = str(error) or f"Discord did not answer the login within {LOGIN_TIMEOUT:g} s"
            log.warning("configuration refused: %s", reason, extra=self._log)
            return Answer(False, reason)
        await self._drop_store()
        self.store, self.crypto_key = store, configuration.crypto_key
        log.info(
            "configured for channel %s, encryption %s",
            configuration.channel_id,
            "on" if self.crypto_key else "off",
            extra=self._log,
        )
        return Answer(True)

    async def _start(self, start: packets.UploadStart) -> Answer:
        if self.store is None:
            return Answer(False, "this upload service has not been configured yet")
        if self.job is not None:
            return Answer(False, f"this upload service is busy with upload {self.job.upload_id}")
        attachment = start.chunk_size + (HEADER_SIZE if self.crypto_key else 0)
        if attachment > self._settings.discord_attachment_limit and start.size > 0:
            return Answer(
                False,
                f"chunk_size {start.chunk_size} makes attachments of {attachment} bytes, over "
                f"Discord's limit of {self._settings.discord_attachment_limit} bytes",
            )
        job = Job(start)
        log.info(
            "upload started: %d bytes in %d chunks",
            start.size,
            job.layout.count,
            extra={**self._log, "upload_id": job.upload_id},
        )
        self.job = job
        self._directory.add(job, self)
        if job.complete:  # a file of size 0 has no chunks to wait for
            self._in_background(self._finish(job))
        else:
            self.touch(job)
        return Answer(True)

    async def _abort(self) -> Answer:
        job = self.job
        if job is None:
            return Answer(False, "there is no upload to abort")
        self._end(job, "it was aborted by the manager", "aborted")
        return Answer(True)

    async def shut_down(self) -> None:
        """The process is stopping: fail the job, which the manager can then reschedule."""
        if self.job is not None:
            await self._fail(self.job, "the upload service is shutting down", "shutdown")

    async def disconnected(self) -> None:
        """The manager has forgotten this service: its job is void, its configuration too."""
        if self.job is not None:
            self._end(self.job, "the link to the manager was lost", "voided")
        await self._drop_store()

    # --- the intake's side ---------------------------------------------------------------

    def touch(self, job: Job) -> None:
        """A chunk of `job` started arriving: restart the inactivity timer."""
        if self._timer is not None:
            self._timer.cancel()
        timeout = self._settings.upload_inactivity_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, self._expire, job)

    async def store_chunk(self, job: Job, index: int, sealed: SealedChunk) -> None:
        """Post a claimed chunk to Discord and record it; the job may finish here.

        The caller releases the claim whatever happens; after `record` that is a no-op.
        """
        if job.ended or self.store is None:
            raise ChunkRefused(410, f"upload {job.upload_id} has ended")
        content = f"discord-cloud upload {job.upload_id}, chunk {index}"
        try:
            message_id = await self.store.post(content, str(index), sealed.payload)
        except StoreError as error:
            if job.ended:
                raise ChunkRefused(410, f"upload {job.upload_id} ended meanwhile") from None
            if isinstance(error, DiscordRefused):
                await self._fail(job, f"Discord refused the upload: {error}", "discord_refused")
            raise
        if job.ended:  # aborted or voided while Discord was busy: the result is discarded
            raise ChunkRefused(410, f"upload {job.upload_id} ended while the chunk was stored")
        job.record(index, StoredChunk(message_id, sealed.digest), sealed.head)
        self._metrics.chunks_stored.inc()
        self._metrics.bytes_stored.inc(job.layout.length(index))
        log.info(
            "chunk stored as message %s",
            message_id,
            extra={**self._log, "upload_id": job.upload_id, "chunk": index},
        )
        if job.complete:
            await self._finish(job)

    # --- ending a job --------------------------------------------------------------------

    def _expire(self, job: Job) -> None:
        if job.in_flight:  # a chunk is still arriving or being stored: not inactive
            self.touch(job)
            return
        seconds = self._settings.upload_inactivity_timeout
        self._in_background(
            self._fail(job, f"No chunk was received for {seconds:g} seconds", "timed_out")
        )

    def _in_background(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(self, job: Job) -> None:
        if not self._end(job, "all chunks are stored", "succeeded"):
            return
        assert self.store is not None
        packet = packets.finish_success(
            messages=job.messages(),
            file_hash=job.file_hash(),
            is_encrypted=self.crypto_key is not None,
            mime_type=job.mime_type or FALLBACK,
            channel=self.store.channel_id,
        )
        await self.link.send(packet)

    async def _fail(self, job: Job, reason: str, outcome: str) -> None:
        if not self._end(job, reason, outcome):
            return
        await self.link.send(packets.finish_failure(reason))

    def _end(self, job: Job, why: str, outcome: str) -> bool:
        """End `job` if it has not ended yet; True the first time."""
        if not job.end():
            return False
        self._metrics.jobs.labels(outcome).inc()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._directory.remove(job, why)
        if self.job is job:
            self.job = None
        log.log(
            logging.INFO if outcome == "succeeded" else logging.WARNING,
            "upload ended: %s",
            why,
            extra={**self._log, "upload_id": job.upload_id},
        )
        return True

    async def _drop_store(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None
        self.crypto_key = None
