"""The upload service's lifecycle: start the HTTP side and the manager link, run, stop.

`UploadService` is an async context manager, so tests and the demo run the real service
in-process on a free port exactly as `upload-service run` does in production.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, NoReturn

import aiohttp
import discord.http
from aiohttp import web

from .config import Settings
from .discord.client import DiscordClients
from .discord.retry import RetryPolicy
from .exit_status import EXIT_CUT_SHORT
from .intake.answers import REFUSAL_REASONS
from .intake.endpoint import ChunkEndpoint, cors, preflight, request_ids
from .logs import MALFORMED_REQUESTS
from .manager.link import warn_if_in_clear
from .manager.supervisor import LinkSupervisor
from .metrics import Metrics
from .uploads.cleanup import Cleanup
from .uploads.directory import UploadDirectory
from .uploads.journal import open_journal
from .uploads.leftovers import Leftovers
from .uploads.memory import ChunkMemory, cgroup_memory_limit, default_budget
from .uploads.outcome import Outcome
from .uploads.slot import Slot
from .uploads.upload import Shared

if TYPE_CHECKING:
    from .discord.shared_limit import SharedLimits

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CLEANUP_FLOOR = 2.0  # seconds the clean-up gets at shutdown even when the grace is spent
# What aiohttp buffers of a request body before it stops reading the socket (its default is
# 64 KiB): a chunk waiting for memory holds 0.4 MiB of its body unread instead of 1.1 MiB.
READ_BUFFER = 16 * 1024


class UploadService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = UploadDirectory()
        self.metrics = Metrics(REFUSAL_REASONS, Outcome)
        self.memory = ChunkMemory(chunk_memory_budget(settings), self.metrics)
        self.journal = open_journal(settings.state_dir, settings.port)
        self.cleanup = Cleanup(self.metrics, self.journal)
        self.shared = Shared(
            memory=self.memory,
            cleanup=self.cleanup,
            journal=self.journal,
            leftovers=Leftovers(self.journal, self.cleanup, self.metrics),
            metrics=self.metrics,
            chunk_wait=settings.client_read_timeout,
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
        self._metrics_runner: web.AppRunner | None = None
        self.links = LinkSupervisor()
        self.slots: list[Slot] = []

    @property
    def port(self) -> int:
        """The port actually bound (settings may ask for 0, any free port)."""
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on: its own, or the chunk port when asked for."""
        if self._metrics_runner is None:
            return self.port
        return int(self._metrics_runner.addresses[0][1])

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[request_ids, cors])
        for path in {self.settings.own_path, "/"}:
            # A plain resource: the path as written, even one with braces (`add_post` would
            # take `{...}` for a variable).
            chunks = web.PlainResource(path)
            app.router.register_resource(chunks)
            chunks.add_route("POST", self.endpoint.post)
            chunks.add_route("OPTIONS", preflight)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self.settings.metrics_on_chunk_port:
            app.router.add_get("/metrics", self.metrics.handler())
        return app

    def build_metrics_app(self) -> web.Application:
        """/metrics alone, for the port Prometheus scrapes (never the public one)."""
        app = web.Application()
        app.router.add_get("/metrics", self.metrics.handler())
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive unless a manager link keeps dying: then only a restart can help."""
        if self.links.healthy:
            return web.json_response({"status": "ok"})
        why = f"the manager link of {', '.join(self.links.unhealthy_links())} keeps failing"
        return web.json_response({"status": "failing", "why": why}, status=503)

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when at least one slot is connected to the manager and configured; if none
        is, `why` says what keeps each from taking a job."""
        ready = sum(slot.ready for slot in self.slots)
        connected = sum(slot.link.connected for slot in self.slots)
        body: dict[str, object] = {
            "ready": ready > 0,
            "slots": len(self.slots),
            "connected": connected,
            "configured": ready,
        }
        if not ready:
            reasons = [f"{slot.name}: {slot.not_ready}" for slot in self.slots]
            body["why"] = "; ".join(reasons) or "the service is starting"
            body["links_down"] = {
                slot.name: slot.link.last_error or "connecting"
                for slot in self.slots
                if not slot.link.connected
            }
        return web.json_response(body, status=200 if ready else 503)

    def unfinished(self) -> str:
        """What exiting now would cut short, in words."""
        uploads = sum(slot.upload is not None for slot in self.slots)
        return (
            f"uploads running: {uploads}, chunks in flight: {self.endpoint.in_flight}, "
            f"messages still to delete on Discord: {self.cleanup.pending}"
        )

    async def startup(self) -> None:
        warn_if_in_clear(self.settings.manager_address)
        # discord.py reads its base URL from this class attribute; one process, one Discord.
        discord.http.Route.BASE = self.settings.discord_api_base.rstrip("/")
        # By the time the runner cleans up, `shutdown` has already waited the grace period
        # for chunks in flight: what is left (a stalled client) is cut off promptly.
        # keepalive_timeout also closes a connection that sends no complete request head:
        # aiohttp arms it when the connection opens (web_protocol.connection_made).
        logging.getLogger("aiohttp.server").addFilter(MALFORMED_REQUESTS)  # once per process
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=self.settings.client_read_timeout,
            read_bufsize=READ_BUFFER,
        )
        await self._runner.setup()
        await _listen(self._runner, self.settings.host, self.settings.port, "PORT")
        if not self.settings.metrics_on_chunk_port:
            self._metrics_runner = web.AppRunner(self.build_metrics_app(), access_log=None)
            await self._metrics_runner.setup()
            await _listen(
                self._metrics_runner, self.settings.host, self.settings.metrics_port, "METRICS_PORT"
            )
        log.info(
            "accepting chunks on port %d at %s, metrics on port %d",
            self.port,
            self.settings.own_address,
            self.metrics_port,
        )

        self._session = aiohttp.ClientSession()
        # One Discord client per bot token, shared by the slots configured with it.
        self.discord_clients = DiscordClients(
            global_rate=self.settings.discord_global_rate,
            request_timeout=self.settings.discord_request_timeout,
            metrics=self.metrics,
            retry=RetryPolicy(self.settings.discord_retries, self.settings.discord_retry_backoff),
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
        from .discord.shared_limit import SharedLimits  # redis-py: loaded only with REDIS_URL

        limits = SharedLimits(
            self.settings.redis_url, rate=self.settings.discord_global_rate, metrics=self.metrics
        )
        log.info("sharing each bot token's global limit through Redis at %s", limits.where)
        return limits

    async def shutdown(self) -> None:
        """Refuse new jobs and chunks, let the chunks being stored finish within the grace
        period, fail the jobs left unfinished and delete what they left on Discord (in what is
        left of the grace period), then close the manager links and the HTTP side."""
        deadline = time.monotonic() + self.settings.shutdown_grace
        for slot in self.slots:
            slot.refuse_jobs()
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
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.journal.close()  # last: a chunk cut off above may still have written to it

    async def __aenter__(self) -> UploadService:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


class ListenError(Exception):
    """The service cannot listen on one of its ports; `setting` names which."""

    def __init__(self, setting: str, host: str, port: int, error: OSError) -> None:
        super().__init__(f"cannot listen on {host}:{port} ({setting}): {error}")
        self.setting = setting
        self.host = host
        self.port = port
        self.error = error


async def _listen(runner: web.AppRunner, host: str, port: int, setting: str) -> None:
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        raise ListenError(setting, host, port, error) from error


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
    """Run until SIGINT or SIGTERM, then stop cleanly; another one while stopping exits at
    once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    async with UploadService(settings) as service:
        await stop.wait()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, exit_at_once, service)
        log.info("stopping (a second SIGTERM or SIGINT exits at once)")  # true from here on


def exit_at_once(service: UploadService) -> NoReturn:
    """The operator does not want to wait for the grace period: say what it would have
    finished, and exit without waiting for anything (Discord, clients, the event loop)."""
    log.error("second signal: exiting at once, cutting short %s", service.unfinished())
    logging.shutdown()
    os._exit(EXIT_CUT_SHORT)
