"""Running the real service on loopback, between the stand-ins: for tests, demo, benchmark."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from typing import Any

from ..config import Settings
from .discord_api import DiscordStandIn
from .manager import ManagerStandIn


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports on 127.0.0.1 that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def loopback_settings(
    discord: DiscordStandIn, manager: ManagerStandIn, password: str, **overrides: Any
) -> Settings:
    """Settings for a service on a free 127.0.0.1 port (and another for /metrics) that uses
    the two stand-ins."""
    port, metrics_port = free_ports(2)
    settings = Settings(
        manager_address=manager.address,
        service_password=password,
        own_address=f"http://127.0.0.1:{port}/upload",
        port=port,
        host="127.0.0.1",
        discord_api_base=discord.base_url,
        metrics_port=metrics_port,
    )
    return dataclasses.replace(settings, **overrides)
