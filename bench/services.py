"""The upload service under test, in its own process(es), and its manager connections.

In slots mode one process with UPLOAD_SLOTS=N; in processes mode N processes of one slot.
Each is `python -m service run` configured by the environment alone, built from the settings
table (`environment_of`) like any deployment's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from children import Child
from console import BenchFailure
from plan import Mode

from service.config import Settings, environment_of
from service.local.discord_api import DiscordStandIn
from service.local.loopback import loopback_settings
from service.local.manager import ManagerStandIn, ServiceConnection

READY_LINE = "accepting chunks on port"  # what the service logs once it listens (INFO)
CONNECT_TIMEOUT = 60.0
CONNECT_POLL = 0.5


@dataclass
class ServiceProcess:
    child: Child
    settings: Settings

    @property
    def address(self) -> str:
        return self.settings.own_address

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def metrics_port(self) -> int:
        return self.settings.metrics_port

    @property
    def slots(self) -> int:
        """Manager links it opens, each a service with one job to the manager."""
        return self.settings.slots

    @property
    def pid(self) -> int:
        return self.child.pid


UNLIMITED_RATE = 1_000_000  # requests per second: no global limit to pace against


async def spawn_service(
    manager: ManagerStandIn, password: str, discord: DiscordStandIn, slots: int, **settings: object
) -> ServiceProcess:
    """One service process of `slots` slots between the stand-ins, once it listens;
    `settings` overrides any other setting."""
    chosen = loopback_settings(
        discord, manager, password, slots=slots, log_level="INFO", **settings
    )
    child, _ = await Child.start(
        f"the service on port {chosen.port} ({slots} slot(s))",
        ["-m", "service", "run"],
        ready=READY_LINE,
        env=environment_of(chosen),
    )
    return ServiceProcess(child, chosen)


async def spawn_services(
    mode: Mode, jobs: int, manager: ManagerStandIn, password: str, discord: DiscordStandIn
) -> list[ServiceProcess]:
    """One process of `jobs` slots (slots mode) or `jobs` processes of one slot each.

    Capacity is measured against a Discord that never limits, so the service's own pacing
    against Discord's global limit is lifted too (the pacing mode measures it)."""
    unlimited = {"discord_global_rate": UNLIMITED_RATE}
    if mode == "slots":
        return [await spawn_service(manager, password, discord, slots=jobs, **unlimited)]
    return [
        await spawn_service(manager, password, discord, slots=1, **unlimited) for _ in range(jobs)
    ]


async def stop_services(services: Sequence[ServiceProcess]) -> None:
    await asyncio.gather(*(service.child.terminate() for service in services))


def log_tails(services: Sequence[ServiceProcess]) -> str:
    return "\n".join(f"--- {service.child.summary()}" for service in services)


async def connect_all(
    mode: Mode, manager: ManagerStandIn, services: Sequence[ServiceProcess]
) -> list[ServiceConnection]:
    """Every slot's manager connection, one per job. In slots mode, in the order they arrived:
    the one process's slots all announce its one address. In processes mode, in the order of
    `services`, matched by the address each announces."""
    arrived = await await_connections(manager, services)
    if mode == "slots":
        return arrived
    announced = sorted(connection.own_address for connection in arrived)
    if announced != sorted(service.address for service in services):
        raise BenchFailure(f"the services announced {announced}, not one address each")
    by_address = {connection.own_address: connection for connection in arrived}
    return [by_address[service.address] for service in services]


async def await_connections(
    manager: ManagerStandIn, services: Sequence[ServiceProcess]
) -> list[ServiceConnection]:
    """As many manager connections as `services` have slots, in the order they arrived; fail
    fast if a service process exits or one does not connect in time."""
    expected = sum(service.slots for service in services)
    arrived: list[ServiceConnection] = []
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while len(arrived) < expected:
        exited = any(s.child.returncode is not None for s in services)
        if exited or time.monotonic() > deadline:
            raise not_connected(services, arrived)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_POLL):
                arrived.append(await manager.next_service())
    return arrived


def not_connected(
    services: Sequence[ServiceProcess], arrived: Sequence[ServiceConnection]
) -> BenchFailure:
    """The failure naming the services short of connections, with their output's tails."""
    missing = [s for s in services if sum(c.own_address == s.address for c in arrived) < s.slots]
    expected = sum(s.slots for s in services)
    return BenchFailure(
        f"{expected - len(arrived)} of {expected} manager connection(s) did not arrive\n"
        + log_tails(missing)
    )
