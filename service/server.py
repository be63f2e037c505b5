"""The upload service's lifecycle: start the HTTP side and the manager link, run, stop.

`UploadService` is an async context manager, so tests and the demo run the real service
in-process on a free port exactly as `upload-service run` does in production.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable

import aiohttp
import discord.http
from aiohttp import web

from .config import Settings
from .discord.client import DiscordClients
from .discord.shared_limit import SharedLimits
from .intake.answers import REFUSAL_REASONS
from .intake.endpoint import ChunkEndpoint, cors, preflight, request_ids
from .manager.supervisor import LinkSupervisor
from .metrics import Metrics
from .uploads.cleanup import Cleanup
from .uploads.directory import UploadDirectory
from .uploads.memory import ChunkMemory, cgroup_memory_limit, default_budget
from .uploads.slot import Slot
from .uploads.upload import JOB_OUTCOMES, Shared

log = logging.getLogger(__name__)

CLEANUP_FLOOR = 2.0  # seconds the clean-up gets at shutdown even when the grace is spent
# What aiohttp buffers of a request body before it stops reading the socket (its default is
# 64 KiB): a chunk waiting for memory holds 0.4 MiB of its body unread instead of 1.1 MiB.
READ_BUFFER = 16 * 1024


class UploadService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = UploadDirectory()
        self.metrics = Metrics(REFUSAL_REASONS, JOB_OUTCOMES)
        self.memory = ChunkMemory(chunk_memory_budget(settings), self.metrics)
        self.cleanup = Cleanup(self.metrics)
        self.shared = Shared(
            memory=self.memory,
            cleanup=self.cleanup,
            metrics=self.metrics,
            memory_wait=settings.client_read_timeout,
            max_in_flight=settings.chunks_in_flight_per_upload,
            inactivity_timeout=settings.upload_inactivity_timeout,
        )
        self.endpoint = ChunkEndpoint(
            self.directory,
            self.metrics,
            read_timeout=settings.client_read_timeout,
            min_rate=settings.client_min_rate,
        )
        self._session: aiohttp.ClientSession | None = None
        self.discord_clients: DiscordClients | None = None
        self._runner: web.AppRunner | None = None
        self.links = LinkSupervisor()
        self.slots: list[Slot] = []

    @property
    def port(self) -> int:
        """The port actually bound (settings may ask for 0, any free port)."""
        assert self._runner is not None
        return self._runner.addresses[0][1]

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[request_ids, cors])
        for path in {self.settings.own_path, "/"}:
            app.router.add_post(path, self.endpoint.post)
            app.router.add_route("OPTIONS", path, preflight)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics.handler())
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive unless a manager link keeps dying: then only a restart can help."""
        if self.links.healthy:
            return web.json_response({"status": "ok"})
        why = f"the manager link of {', '.join(self.links.unhealthy_links())} keeps failing"
        return web.json_response({"status": "failing", "why": why}, status=503)

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when at least one slot is connected to the manager and configured."""
        ready = sum(slot.ready for slot in self.slots)
        connected = sum(slot.link.connected for slot in self.slots)
        body = {
            "ready": ready > 0,
            "slots": len(self.slots),
            "connected": connected,
            "configured": ready,
        }
        if not ready:
            body["why"] = (
                f"no slot is both connected to the manager and configured "
                f"({connected} of {len(self.slots)} connected)"
            )
            body["links_down"] = {
                slot.name: slot.link.last_error or "connecting"
                for slot in self.slots
                if not slot.link.connected
            }
        return web.json_response(body, status=200 if ready else 503)

    async def startup(self) -> None:
        # discord.py reads its base URL from this class attribute; one process, one Discord.
        discord.http.Route.BASE = self.settings.discord_api_base.rstrip("/")
        # By the time the runner cleans up, `shutdown` has already waited the grace period
        # for chunks in flight: what is left (a stalled client) is cut off promptly.
        # keepalive_timeout also closes a connection that sends no complete request head:
        # aiohttp arms it when the connection opens (web_protocol.connection_made).
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=self.settings.client_read_timeout,
            read_bufsize=READ_BUFFER,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        log.info("accepting chunks on port %d at %s", self.port, self.settings.own_address)

        self._session = aiohttp.ClientSession()
        # One Discord client per bot token, shared by the slots configured with it.
        self.discord_clients = DiscordClients(
            global_rate=self.settings.discord_global_rate,
            request_timeout=self.settings.discord_request_timeout,
            metrics=self.metrics,
            shared=self._shared_limits(),
        )
        self.slots = [
            Slot(
                self.settings,
                self.directory,
                self.shared,
                self._session,
                self.discord_clients,
                name=f"slot-{i}",
            )
            for i in range(self.settings.slots)
        ]
        self.metrics.watch_slots(
            total=len(self.slots),
            connected=lambda: sum(slot.link.connected for slot in self.slots),
            configured=lambda: sum(slot.ready for slot in self.slots),
            busy=lambda: sum(slot.upload is not None for slot in self.slots),
            reconnects=lambda: sum(slot.link.reconnects for slot in self.slots),
        )
        for slot in self.slots:
            self.links.start(slot.name, slot.link.run)

    def _shared_limits(self) -> SharedLimits | None:
        """The global limits shared through Redis, with REDIS_URL (only its host is logged)."""
        if self.settings.redis_url is None:
            return None
        limits = SharedLimits(
            self.settings.redis_url, rate=self.settings.discord_global_rate, metrics=self.metrics
        )
        log.info("sharing each bot token's global limit through Redis at %s", limits.where)
        return limits

    async def shutdown(self) -> None:
        """Refuse new chunks, let those being stored finish within the grace period, fail
        the jobs left unfinished and delete what they left on Discord (in what is left of
        the grace period), then close the manager links and the HTTP side."""
        deadline = time.monotonic() + self.settings.shutdown_grace
        await self.endpoint.drain(self.settings.shutdown_grace)
        for slot in self.slots:
            await _logging_failure(slot.shut_down(), "failing the upload of " + slot.name)
        await self.links.stop()
        for slot in self.slots:
            await _logging_failure(slot.disconnected(), "closing " + slot.name)
        cleanup_time = max(deadline - time.monotonic(), CLEANUP_FLOOR)
        await _logging_failure(self.cleanup.finish(cleanup_time), "deleting failed uploads")
        if self.discord_clients is not None:
            await _logging_failure(self.discord_clients.close(), "closing the Discord clients")
            self.discord_clients = None
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


def chunk_memory_budget(settings: Settings) -> int:
    """CHUNK_MEMORY_MIB in bytes, or the default for this process's slots and cgroup."""
    if settings.chunk_memory_mib is not None:
        return settings.chunk_memory_mib * 1024 * 1024
    return default_budget(settings.slots, cgroup_memory_limit())


async def _logging_failure(step: Awaitable[None], what: str) -> None:
    """Run one step of the shutdown; a failure is logged, and the shutdown goes on."""
    try:
        await step
    except Exception:
        log.exception("shutdown: %s failed", what)


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with UploadService(settings):
        await stop.wait()
        log.info("stopping")
