"""The one place the benchmark starts services: a `Stage` is a Discord and a manager stand-in
in this process, and the upload service in a process of its own (`python -m service run`,
configured by the environment alone, so that its RSS and CPU are its own), with one slot per
channel, each configured with encryption on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import Source
from report import BenchFailure, log

from service.config import Settings
from service.local.discord_api import DiscordStandIn
from service.local.driver import spawn_service
from service.local.loopback import loopback_settings
from service.local.manager import ManagerStandIn, ServiceConnection
from service.local.verify import attachments_in, finish_problems

UNLIMITED_RATE = 1_000_000  # requests per second: no global limit to pace against
CONNECT_TIMEOUT = 60.0  # seconds for every slot to connect to the manager
STOP_TIMEOUT = 15.0  # seconds the service may take to exit on SIGTERM before it is killed


@dataclass(frozen=True)
class Credentials:
    token: str
    password: str
    key: bytes

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(16), os.urandom(32))


@dataclass
class ServiceProcess:
    process: asyncio.subprocess.Process
    settings: Settings
    output: Path  # its stdout and stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def metrics_port(self) -> int:
        return self.settings.metrics_port

    def summary(self) -> str:
        """Whether it runs or how it exited, and its last lines of output."""
        code = self.process.returncode
        state = "running" if code is None else f"exit status {code}"
        tail = self.output.read_text(errors="replace").splitlines()[-20:]
        return f"the service on port {self.port} ({state}), its last output:\n" + "\n".join(tail)

    async def stop(self) -> None:
        """SIGTERM (its cue to shut down), then SIGKILL after STOP_TIMEOUT seconds."""
        if self.process.returncode is None:
            self.process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass(frozen=True)
class Slot:
    connection: ServiceConnection
    channel: str

    @property
    def address(self) -> str:
        return self.connection.own_address


@dataclass
class Stage:
    credentials: Credentials
    discord: DiscordStandIn
    manager: ManagerStandIn
    service: ServiceProcess
    slots: list[Slot]  # in the order they connected, each with its channel
    files: Path  # the browsers' files, one per source

    def file_of(self, source: Source) -> Path:
        """`source` as a file for the browsers, written the first time it is sent: writing
        80 MiB while a job is timed would take the machine from it."""
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
        compared: Collection[int] | None = None,
    ) -> list[str]:
        """What is wrong with a job's finish packet, as the manager checks it
        (`service.local.verify`); with `compared`, only those chunks are decrypted."""
        stored = attachments_in(self.discord, slot.channel)
        key = self.credentials.key
        return finish_problems(finish, source.chunks, slot.channel, key, stored, compared=compared)

    def dropped(self) -> list[str]:
        return [f"the manager dropped a packet: {packet.why}" for packet in self.manager.dropped]


@contextlib.asynccontextmanager
async def stage(
    channels: Sequence[str], *, discord: Mapping[str, Any] | None = None, **settings: Any
) -> AsyncIterator[Stage]:
    """The stand-ins and one service process with a slot per entry of `channels`. `discord`:
    the Discord stand-in's options (rate limits, answer delay); `settings`: the service's
    (Settings fields), the global rate lifted unless given (the stand-in does not limit
    unless told). The service's output goes to a file, shown when something fails."""
    credentials = Credentials.fresh()
    chosen = {"discord_global_rate": UNLIMITED_RATE, **settings}
    async with (
        DiscordStandIn(token=credentials.token, **(discord or {})) as standin,
        ManagerStandIn(password=credentials.password) as manager,
    ):
        config = loopback_settings(
            standin, manager, credentials.password, slots=len(channels), **chosen
        )
        with tempfile.TemporaryDirectory(prefix="bench-service-") as directory:
            output = Path(directory) / "output.log"
            with output.open("wb") as file:
                process = await spawn_service(config, stdout=file, stderr=asyncio.subprocess.STDOUT)
            service = ServiceProcess(process, config, output)
            try:
                connections = await connected(manager, service)
                slots = [Slot(c, channel) for c, channel in zip(connections, channels, strict=True)]
                for slot in slots:
                    reply = await slot.connection.configure(
                        token=credentials.token, channel_id=slot.channel, crypto_key=credentials.key
                    )
                    if not reply.get("success"):
                        raise BenchFailure(f"the configuration was refused: {reply.get('message')}")
                yield Stage(credentials, standin, manager, service, slots, Path(directory))
            except BaseException as error:
                if not isinstance(error, BenchFailure):  # those name their cause already
                    log(service.summary())
                raise
            finally:
                await service.stop()


async def connected(manager: ManagerStandIn, service: ServiceProcess) -> list[ServiceConnection]:
    """Every slot's manager connection, in the order they arrived; fail fast if the service
    exits or a slot does not connect in time."""
    arrived: list[ServiceConnection] = []
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while len(arrived) < service.settings.slots:
        if service.process.returncode is not None or time.monotonic() > deadline:
            missing = service.settings.slots - len(arrived)
            raise BenchFailure(
                f"{missing} of {service.settings.slots} manager connection(s) did not arrive\n"
                + service.summary()
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                arrived.append(await manager.next_service())
    return arrived
