"""The one place the benchmark starts services: `python -m service run` in a process of its own
(so that its RSS and CPU are its own), every slot configured with encryption on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
from measure import Source
from report import BenchFailure, log

from service.config import Settings
from service.local.discord_api import DiscordStandIn
from service.local.driver import scrape_metrics, spawn_service, stop_service
from service.local.loopback import loopback_settings
from service.local.manager import ManagerStandIn, ServiceConnection
from service.local.redis_server import RedisServer
from service.local.verify import AttachmentOf, attachments_in, finish_problems

UNLIMITED_RATE = 1_000_000  # requests per second: no global limit to pace against
CONNECT_TIMEOUT = 60.0  # seconds for every slot to connect to the manager
STOP_TIMEOUT = 15.0  # seconds the service may take to exit on SIGTERM before it is killed
_CHANNEL_IDS = itertools.count(1100000000000000000)


def fresh_channels(count: int) -> list[str]:
    """`count` channel ids no job of this benchmark has used."""
    return [str(next(_CHANNEL_IDS)) for _ in range(count)]


@dataclass(frozen=True)
class Slot:
    connection: ServiceConnection
    channel: str

    @property
    def address(self) -> str:
        return self.connection.own_address


@dataclass
class Service:
    """A service process (once `running`) whose slots use `manager` and the bot `token`;
    `discord`: the Discord stand-in, when it runs in this process."""

    manager: ManagerStandIn
    session: aiohttp.ClientSession  # for /metrics
    settings: Settings
    files: Path  # the service's output, and the browsers' files (one per source)
    token: str
    key: bytes  # every slot's AES key
    discord: DiscordStandIn = field(init=False)
    slots: list[Slot] = field(default_factory=list)  # in the order they connected
    process: asyncio.subprocess.Process = field(init=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def file_of(self, source: Source) -> Path:
        """`source` as a file for the browsers, written once: not while a job is timed."""
        path = self.files / f"{id(source)}.bin"
        if not path.exists():
            path.write_bytes(source.data)
        return path

    async def start_job(self, slot: Slot, source: Source) -> str:
        """`upload-start` of `source` on `slot`; its upload id."""
        upload_id, reply = await slot.connection.start_upload(
            size=source.size, name="bench.bin", chunk_size=source.chunk_size
        )
        if not reply.get("success"):
            raise BenchFailure(f"upload-start was refused: {reply.get('message')}")
        return upload_id

    def problems(
        self,
        slot: Slot,
        finish: dict[str, Any],
        source: Source,
        stored: AttachmentOf | None = None,
        compared: Collection[int] | None = None,
    ) -> list[str]:
        """What the manager would find wrong with a job's finish packet, reading the attachments
        `stored` (by default in the stand-in) and decrypting those `compared` (default all)."""
        stored = stored or attachments_in(self.discord, slot.channel)
        return finish_problems(
            finish, source.chunks, slot.channel, self.key, stored, compared=compared
        )

    def check(self, problems: Sequence[list[str]], each: str) -> None:
        """BenchFailure naming the `problems` of each job (`each` 0, 1 ...) and the packets
        the manager dropped, if any."""
        found = [f"{each} {i}: {problem}" for i, ps in enumerate(problems) for problem in ps]
        found += [f"the manager dropped a packet: {p.why}" for p in self.manager.dropped]
        if found:
            raise BenchFailure("\n".join(found))

    async def metrics(self) -> dict[str, float]:
        return await scrape_metrics(self.session, self.settings.metrics_port)

    def summary(self) -> str:
        """Whether the service runs or how it exited, and its last lines of output."""
        code = self.process.returncode
        state = "running" if code is None else f"exit status {code}"
        tail = (self.files / "output.log").read_text(errors="replace").splitlines()[-20:]
        port = self.settings.port
        return f"the service on port {port} ({state}), its last output:\n" + "\n".join(tail)

    async def connect(self, channels: Sequence[str]) -> None:
        """A slot per channel, in the order they connect, each configured; fail fast if the
        service exits or a slot does not connect in time."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while len(self.slots) < len(channels):
            if self.process.returncode is not None or time.monotonic() > deadline:
                missing = f"{len(channels) - len(self.slots)} of {len(channels)}"
                raise BenchFailure(f"{missing} slot(s) did not connect\n" + self.summary())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    connection = await self.manager.next_service()
                    self.slots.append(Slot(connection, channels[len(self.slots)]))
        for slot in self.slots:
            reply = await slot.connection.configure(
                token=self.token, channel_id=slot.channel, crypto_key=self.key
            )
            if not reply.get("success"):
                raise BenchFailure(f"the configuration was refused: {reply.get('message')}")

    @contextlib.asynccontextmanager
    async def running(self, channels: Sequence[str]) -> AsyncIterator[Self]:
        """The process started, its slots connected and configured, while inside; its output
        goes to a file, shown when something fails."""
        with (self.files / "output.log").open("wb") as output:
            self.process = await spawn_service(
                self.settings, stdout=output, stderr=asyncio.subprocess.STDOUT
            )
        try:
            await self.connect(channels)
            yield self
        except BaseException as error:
            if not isinstance(error, BenchFailure):  # those name their cause already
                log(self.summary())
            raise
        finally:
            await stop_service(self.process, STOP_TIMEOUT)


@contextlib.asynccontextmanager
async def fleet(
    discord: DiscordStandIn | str, token: str, processes: Sequence[Sequence[str]], **settings: Any
) -> AsyncIterator[tuple[list[Service], RedisServer | None]]:
    """A service process per entry of `processes` (its slots' channels), started one after the
    other, sharing a manager stand-in, the Discord stand-in (or its base URL), a bot `token`, a
    key and, if several, the token's global limit through one redis-server; `settings`: each
    process's (Settings fields)."""
    password, key = secrets.token_urlsafe(16), os.urandom(32)
    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(RedisServer()) if len(processes) > 1 else None
        settings["redis_url"] = None if redis is None else redis.url
        manager = await stack.enter_async_context(ManagerStandIn(password=password))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        services = []
        for number, channels in enumerate(processes):
            config = loopback_settings(discord, manager, password, slots=len(channels), **settings)
            (files := directory / str(number)).mkdir()
            service = Service(manager, session, config, files, token, key)
            services.append(await stack.enter_async_context(service.running(channels)))
        yield services, redis


@contextlib.asynccontextmanager
async def stage(
    channels: Sequence[str], *, discord: Mapping[str, Any] | None = None, **settings: Any
) -> AsyncIterator[Service]:
    """A fleet of one process with a slot per channel, beside a Discord stand-in in this process
    with the options `discord`; the global rate lifted unless given (as in the stand-in)."""
    token = secrets.token_urlsafe(24)
    settings.setdefault("discord_global_rate", UNLIMITED_RATE)
    async with (
        DiscordStandIn(token=token, **(discord or {})) as standin,
        fleet(standin, token, [channels], **settings) as (services, _),
    ):
        services[0].discord = standin
        yield services[0]
