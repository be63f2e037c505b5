"""Running the real service on loopback, between the stand-ins: for tests, demo, benchmark."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
from pathlib import Path
from typing import Any

from ..config import Settings
from .discord_api import DiscordStandIn
from .manager import ManagerStandIn

# Where `free_ports` draws from: below the kernel's ephemeral range, from which it gives ports
# to outgoing connections and to bind(0): a port drawn from that range could be taken by any
# connection of any process between the draw and the bind (parallel test workers make many).
# From above the ports browsers refuse to reach (Chromium's highest is 10080).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports on 127.0.0.1 that were free a moment ago, drawn at random
    below the kernel's ephemeral range (the kernel's choice, where it leaves no room below)."""
    try:
        below = range(LOWEST, int(EPHEMERAL_RANGE.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        below = range(0)
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count:
            probe = stack.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", random.choice(below) if len(below) > 1000 else 0))
            except OSError:  # taken: draw again
                continue
            ports.append(probe.getsockname()[1])
    return ports


def loopback_settings(
    discord: DiscordStandIn | str, manager: ManagerStandIn, password: str, **overrides: Any
) -> Settings:
    """Settings for a service on a free 127.0.0.1 port (and another for /metrics) that uses
    the two stand-ins (the Discord one, or its base URL when it runs in another process)."""
    port, metrics_port = free_ports(2)
    settings = Settings(
        manager_address=manager.address,
        service_password=password,
        own_address=f"http://127.0.0.1:{port}/upload",
        port=port,
        host="127.0.0.1",
        discord_api_base=discord if isinstance(discord, str) else discord.base_url,
        metrics_port=metrics_port,
    )
    return dataclasses.replace(settings, **overrides)
