"""The upload service's lifecycle: start the HTTP side and the manager link, run, stop.

`UploadService` is an async context manager, so tests and the demo run the real service
in-process on a free port exactly as `upload-service run` does in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
import discord.http
from aiohttp import web

from .config import Settings
from .intake.endpoint import ChunkEndpoint, cors, healthz, preflight
from .jobs.slot import JobDirectory, Slot

log = logging.getLogger(__name__)


class UploadService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = JobDirectory()
        self.endpoint = ChunkEndpoint(self.directory, read_timeout=settings.client_read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._link_tasks: list[asyncio.Task[None]] = []
        self.slots: list[Slot] = []

    @property
    def port(self) -> int:
        """The port actually bound (settings may ask for 0, any free port)."""
        assert self._runner is not None
        return self._runner.addresses[0][1]

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[cors])
        for path in {self.settings.own_path, "/"}:
            app.router.add_post(path, self.endpoint.post)
            app.router.add_route("OPTIONS", path, preflight)
        app.router.add_get("/healthz", healthz)
        return app

    async def startup(self) -> None:
        # discord.py reads its base URL from this class attribute; one process, one Discord.
        discord.http.Route.BASE = self.settings.discord_api_base.rstrip("/")
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await self._site.start()
        log.info("accepting chunks on port %d at %s", self.port, self.settings.own_address)

        self._session = aiohttp.ClientSession()
        self.slots = [Slot(self.settings, self.directory, self._session)]
        self._link_tasks = [asyncio.create_task(slot.link.run()) for slot in self.slots]

    async def shutdown(self) -> None:
        """Refuse new chunks, let those being stored finish within the grace period, fail
        the jobs left unfinished, then close the manager links and the HTTP side."""
        await self.endpoint.drain(self.settings.shutdown_grace)
        for slot in self.slots:
            await slot.shut_down()
        for task in self._link_tasks:
            task.cancel()
        for task in self._link_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._link_tasks = []
        for slot in self.slots:
            await slot.link.close()
            await slot.disconnected()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> UploadService:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with UploadService(settings):
        await stop.wait()
        log.info("stopping")
