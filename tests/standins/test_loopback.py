"""`free_ports`: the ports parallel tests, the demo and the benchmark start their servers on."""

from __future__ import annotations

import socket

import pytest

from service.local.loopback import EPHEMERAL_RANGE, LOWEST, free_ports


def test_a_drawn_port_is_held_from_every_other_draw_but_bound_by_its_server() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    assert all(LOWEST <= port < ephemeral for port in ports)  # no connection is given one
    for port in ports:
        with socket.socket() as draw, pytest.raises(OSError):  # as another draw binds
            draw.bind(("127.0.0.1", port))
        with socket.socket() as server:  # as aiohttp, redis-server and nginx bind
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()
