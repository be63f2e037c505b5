"""A slot: what the manager sees as one upload service, with one upload at a time.

The slot is the manager session: it answers the manager's requests (configuration, start,
abort), holds the Discord store and key the configuration gave, and starts each `Upload`
with them. The upload itself does the rest, ending included.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..chunks.sealing import HEADER_SIZE, buffer_size
from ..config import Settings
from ..discord.client import BAD_TOKEN, DiscordClients
from ..discord.store import DiscordStore
from ..manager import packets
from ..manager.link import Answer, ManagerLink
from ..refusals import DiscordRefused, StoreError
from .directory import UploadDirectory
from .outcome import Outcome
from .upload import Shared, Upload

log = logging.getLogger(__name__)

LOGIN_TIMEOUT = 8.0  # the manager waits 10 s for the configuration's reply
SHUTTING_DOWN = "the upload service is shutting down"


class Slot:
    def __init__(
        self,
        settings: Settings,
        directory: UploadDirectory,
        shared: Shared,
        session: aiohttp.ClientSession,
        clients: DiscordClients,
        name: str = "slot-0",
    ) -> None:
        self.name = name
        self._settings = settings
        self._clients = clients
        self._directory = directory
        self._shared = shared
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
        self.upload: Upload | None = None
        self._stopping = False  # the process is stopping: it takes no new job
        self._refused: str | None = None  # why the link's configuration was refused

    @property
    def ready(self) -> bool:
        """Connected to the manager and configured: the manager can give it jobs."""
        return self.not_ready is None

    @property
    def not_ready(self) -> str | None:
        """Why the manager cannot give this slot a job now, for `/readyz`; None if it can."""
        if self._stopping:
            return SHUTTING_DOWN
        if not self.link.connected:
            return f"its manager link is down: {self.link.last_error or 'connecting'}"
        if self.store is None:
            return self._refused or "the manager has not configured it yet"
        if self.store.client.token_refused:
            return f"{BAD_TOKEN}; it needs a new configuration from the manager"
        return None

    async def handle(self, request: packets.Request) -> Answer:
        if request.problems:
            return Answer(False, "; ".join(request.problems))
        if isinstance(request, packets.Configuration):
            return await self._configure(request)
        if isinstance(request, packets.UploadStart):
            return self._start(request)
        return await self._abort()

    async def _configure(self, configuration: packets.Configuration) -> Answer:
        if self.upload is not None:
            return Answer(False, "a job is running; configuration can only change between jobs")
        store = DiscordStore(
            client=self._clients.client(configuration.bot_token),
            channel_id=configuration.channel_id,
            max_ratelimit_wait=self._settings.discord_max_ratelimit_wait,
            metrics=self._shared.metrics,
        )
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT):
                await store.open()
        except (StoreError, TimeoutError) as error:
            reason = str(error) or (
                f"the login took longer than {LOGIN_TIMEOUT:g} s (Discord did not answer, or "
                "its rate limits held the request)"
            )
            log.warning("configuration refused: %s", reason, extra=self._log)
            self._refused = f"its configuration was refused: {reason}"
            # The manager configures a connection once: unless the token is bad, the slot
            # reconnects to be configured again, once Discord answers.
            return Answer(False, reason, reconnect=not isinstance(error, DiscordRefused))
        self.store, self.crypto_key, self._refused = store, configuration.crypto_key, None
        log.info(
            "configured for channel %s, encryption %s",
            configuration.channel_id,
            "on" if self.crypto_key else "off",
            extra=self._log,
        )
        self._shared.leftovers.configured(store)
        return Answer(True)

    def _start(self, start: packets.UploadStart) -> Answer:
        if self._stopping:
            return Answer(False, SHUTTING_DOWN)
        if self.store is None:
            return Answer(False, "this upload service has not been configured yet")
        if self.store.client.token_refused:
            return Answer(False, f"{BAD_TOKEN}; this upload service needs a new configuration")
        if self.upload is not None:
            return Answer(False, f"this upload service is busy with upload {self.upload.upload_id}")
        if self._directory.is_running(start.upload_id):
            running = f"upload {start.upload_id} is already running on another slot of this service"
            return Answer(False, running)
        if (too_large := self._too_large(start)) is not None:
            return Answer(False, too_large)
        self.upload = Upload(
            start,
            store=self.store,
            key=self.crypto_key,
            shared=self._shared,
            report=self.link.send,
            on_end=self._upload_ended,
            slot=self.name,
        )
        self._directory.add(self.upload)
        self.upload.begin()
        return Answer(True)

    def _too_large(self, start: packets.UploadStart) -> str | None:
        """Why the chunks of `start` could never be stored, if they could not: over Discord's
        attachment limit, or over the chunk memory (each would be answered 503 for ever)."""
        if start.size == 0:  # no chunk to store
            return None
        attachment = start.chunk_size + (HEADER_SIZE if self.crypto_key else 0)
        if attachment > self._settings.discord_attachment_limit:
            return (
                f"chunk_size {start.chunk_size} makes attachments of {attachment} bytes, over "
                f"Discord's limit of {self._settings.discord_attachment_limit} bytes"
            )
        if buffer_size(start.chunk_size) > self._shared.memory.budget:
            return (
                f"chunk_size {start.chunk_size} needs buffers of {buffer_size(start.chunk_size)} "
                f"bytes, over the service's chunk memory of {self._shared.memory.budget} bytes "
                "(CHUNK_MEMORY_MIB)"
            )
        return None

    async def _abort(self) -> Answer:
        if self.upload is None:
            return Answer(False, "there is no upload to abort")
        await self.upload.end(Outcome.ABORTED, "it was aborted by the manager")
        return Answer(True)

    def refuse_jobs(self) -> None:
        """The process is stopping: a job started now could not receive a single chunk."""
        self._stopping = True

    async def shut_down(self) -> None:
        """The process is stopping: fail the upload, which the manager can then reschedule."""
        if self.upload is not None:
            await self.upload.end(Outcome.SHUTDOWN, SHUTTING_DOWN)

    async def disconnected(self) -> None:
        """The manager has forgotten this service: its upload is void, its configuration too."""
        if self.upload is not None:
            await self.upload.end(Outcome.VOIDED, "the link to the manager was lost")
        self._forget_configuration()

    def _upload_ended(self, upload: Upload) -> None:
        self._directory.remove(upload, upload.why)
        if self.upload is upload:
            self.upload = None

    def _forget_configuration(self) -> None:
        """The store's client stays: other slots may share it, and a clean-up may use it."""
        self.store, self.crypto_key, self._refused = None, None, None
