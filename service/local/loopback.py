"""Running the real service on loopback, between the stand-ins: for tests, demo, benchmark."""

from __future__ import annotations

import dataclasses
import random
import socket
from pathlib import Path
from typing import Any

from ..config import Settings
from .discord_api import DiscordStandIn
from .manager import ManagerStandIn

# Where `free_ports` draws from: below the kernel's ephemeral range, from which it gives ports
# to outgoing connections and to bind(0), and above the ports browsers refuse to reach
# (Chromium's highest is 10080).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20_000


def free_port() -> int:
    """A free TCP port on 127.0.0.1, held for the caller's server: see `free_ports`."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free TCP ports on 127.0.0.1, drawn at random below the kernel's
    ephemeral range (from it, where that range leaves no room below), each held for a minute.

    Between the draw and the bind of the server it is for (a process to start), another draw
    could give the same port to another server: parallel test workers draw hundreds. So each
    port is left as a closed connection leaves it, in TIME_WAIT for a minute: a draw, here or
    in any process, finds it taken, while a server binds it all the same (SO_REUSEADDR, which
    aiohttp, redis-server and nginx set)."""
    try:
        below = range(LOWEST, int(EPHEMERAL_RANGE.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        below = range(0)
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as server:
            try:
                server.bind(("127.0.0.1", random.choice(below) if len(below) > 1000 else 0))
            except OSError:  # taken, or held by another draw: draw again
                continue
            # Set once bound: the end left in TIME_WAIT inherits it, so that a server with
            # it binds the port (and a draw, binding without it, does not).
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.listen(1)
            port = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port)) as client:
                accepted, _ = server.accept()
                accepted.close()  # closing first, our end is the one left in TIME_WAIT
                client.recv(1)  # the close reached the client before it closes in turn
        ports.append(port)
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
