"""A stand-in for discord-cloud's manager: the server side of the WebSocket link.

Like the real manager it refuses a connection with a wrong key, a missing parameter or an
`address` that is not an http(s) URL before the upgrade, drops every packet that fails its
schema (keeping it in `dropped` so tests can assert there are none), and waits at most 10
seconds for a reply. The schemas are the JSON Schema files in `schemas/`, checked with
`jsonschema`, on top of the service's own `outgoing.check_outgoing`. It also drops a finish
packet when no upload runs on the service as it sees it, as the manager does: an upload runs
from the `success: true` reply to its `upload-start` (one that came within the 10 seconds)
until its finish packet or the `success: true` reply to an `upload-abort`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from yarl import URL

from ..jobs.layout import MANAGER_CHUNK_SIZE
from ..manager import outgoing, packets
from . import schemas

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0
WAIT_LIMIT = 60.0  # how long a test waits for a service or a finish before it fails


@dataclass(frozen=True)
class Dropped:
    text: str
    why: str


class ServiceConnection:
    """One upload service as the manager sees it: requests out, replies and finishes in."""

    def __init__(self, socket: web.WebSocketResponse, own_address: str, dropped: list[Dropped]):
        self.socket = socket
        self.own_address = own_address
        self.finishes: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._dropped = dropped
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # The starts and aborts sent, by uuid, whose reply would start or end an upload.
        self._asked: dict[str, tuple[str, str | None]] = {}
        self.running: str | None = None  # the upload_id the manager sees running here
        self._finish_arrived = asyncio.Condition()
        self._taken = 0  # finishes already returned by next_finish

    async def request(self, packet_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send a packet and return its reply's data; raise TimeoutError after 10 s."""
        text = outgoing.encode(packet_id, data)
        return await self.send_raw(text, packets.parse_envelope(text).uuid)

    async def send_raw(self, text: str, reply_to: str | None = None) -> dict[str, Any]:
        """Send any frame, even a malformed one; await the reply to `reply_to` if given."""
        self._ask(text)
        if reply_to is None:
            await self.socket.send_str(text)
            return {}
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[reply_to] = waiter
        try:
            await self.socket.send_str(text)
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await waiter
        finally:
            self._replies.pop(reply_to, None)
            self._asked.pop(reply_to, None)  # a reply after the 10 seconds starts nothing

    def _ask(self, text: str) -> None:
        """Note a start or an abort being sent, whose `success: true` reply starts or ends
        the upload the manager sees running."""
        with contextlib.suppress(packets.MalformedPacket):
            envelope = packets.parse_envelope(text)
            if envelope.id in (packets.UPLOAD_START, packets.UPLOAD_ABORT):
                upload_id = envelope.data.get("upload_id")
                self._asked[envelope.uuid] = (envelope.id, upload_id)

    def _answered(self, reply: packets.Envelope) -> None:
        """A reply to a start or an abort: the upload the manager sees running changes."""
        packet_id, upload_id = self._asked.pop(reply.reply_uuid or "", ("", None))
        if reply.data["success"] is True and packet_id == packets.UPLOAD_START:
            self.running = upload_id
        elif reply.data["success"] is True and packet_id == packets.UPLOAD_ABORT:
            self.running = None

    async def send_nested(self, depth: int, opener: str = "[") -> None:
        """Send `opener` repeated `depth` times: JSON nested deeper than any parser recurses."""
        await self.send_raw(opener * depth)

    async def send_oversized(self, size: int) -> None:
        """Send a text frame of `size` bytes (a JSON string), however far over a limit. The
        service may refuse it from its header and drop the link while the rest is in flight:
        that is the outcome a test waits for, so a lost connection is no error here."""
        with contextlib.suppress(ConnectionError):
            await self.send_raw('"' + "x" * max(0, size - 2) + '"')

    async def send_binary(self, data: bytes) -> None:
        """Send a binary frame; the protocol has none, so the service must ignore it."""
        await self.socket.send_bytes(data)

    async def configure(
        self, *, token: str, channel_id: str, crypto_key: bytes | None
    ) -> dict[str, Any]:
        crypto: dict[str, Any] = {"enabled": crypto_key is not None}
        if crypto_key is not None:
            crypto["key"] = base64.b64encode(crypto_key).decode()
        return await self.request(
            packets.CONFIGURATION,
            {"crypto": crypto, "discord_bot_token": token, "discord_channel_id": channel_id},
        )

    async def start_upload(
        self,
        *,
        size: int,
        name: str = "file.bin",
        path: str = "/",
        chunk_size: int = MANAGER_CHUNK_SIZE,
        upload_id: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Start a job; return its upload_id and the service's reply."""
        upload_id = upload_id or str(uuid.uuid4())
        data = {
            "name": name,
            "path": path,
            "size": size,
            "client": str(uuid.uuid4()),
            "upload_id": upload_id,
            "chunk_size": chunk_size,
        }
        return upload_id, await self.request(packets.UPLOAD_START, data)

    async def abort(self) -> dict[str, Any]:
        return await self.request(packets.UPLOAD_ABORT, {})

    async def next_finish(self) -> dict[str, Any]:
        """Wait for the next `u2s:upload-finish` not yet taken; return its data."""
        async with self._finish_arrived, asyncio.timeout(WAIT_LIMIT):
            await self._finish_arrived.wait_for(lambda: len(self.finishes) > self._taken)
            self._taken += 1
            return self.finishes[self._taken - 1]

    async def close(self) -> None:
        """Drop the connection, as a manager restart does."""
        await self.socket.close()

    def _drop(self, text: str, why: str) -> None:
        log.error("manager stand-in dropped a packet: %s", why)
        self._dropped.append(Dropped(text, why))

    async def _receive(self, text: str) -> None:
        # Two independent checks: the JSON Schema files (the contract as data) and the
        # service's own `check_outgoing`. A frame either one refuses is dropped.
        why = schemas.problems_in_sent(text)
        envelope: packets.Envelope | None = None
        try:
            envelope = outgoing.check_outgoing(text)
        except packets.MalformedPacket as error:
            why.append(str(error))
        if why or envelope is None:
            self._drop(text, "; ".join(why))
            return
        if envelope.id == packets.BOOLEAN:
            self._answered(envelope)
            waiter = self._replies.get(envelope.reply_uuid or "")
            if waiter is not None and not waiter.done():
                waiter.set_result(envelope.data)
            return
        if self.running is None:
            self._drop(text, "an upload-finish while no upload runs on this service")
            return
        self.running = None
        async with self._finish_arrived:
            self.finishes.append(envelope.data)
            self._finish_arrived.notify_all()


class ManagerStandIn:
    """A real aiohttp WebSocket server on 127.0.0.1 that upload services connect to."""

    def __init__(
        self,
        *,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.password = password
        self._ssl_context = ssl_context
        self.services: list[ServiceConnection] = []
        self.dropped: list[Dropped] = []
        self.refused_handshakes = 0
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self._handed_out = 0  # services already returned by next_service

    @property
    def address(self) -> str:
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        scheme = "ws" if self._ssl_context is None else "wss"
        return f"{scheme}://{host}:{port}/upload-service"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/upload-service", self._accept)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl_context)
        await site.start()

    async def close(self) -> None:
        for service in self.services:
            await service.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ManagerStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def next_service(self) -> ServiceConnection:
        """Wait for the next service to connect (one that has not been returned yet)."""
        async with self._arrived, asyncio.timeout(WAIT_LIMIT):
            await self._arrived.wait_for(lambda: len(self.services) > self._handed_out)
            self._handed_out += 1
            return self.services[self._handed_out - 1]

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("type") != "upload" or query.get("key") != self.password:
            self.refused_handshakes += 1
            raise web.HTTPUnauthorized(text="wrong key or type")
        if not _is_http_url(query.get("address", "")):
            self.refused_handshakes += 1
            raise web.HTTPBadRequest(text="address must be an http(s) URL")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        service = ServiceConnection(socket, query["address"], self.dropped)
        async with self._arrived:
            self.services.append(service)
            self._arrived.notify_all()
        try:
            async for frame in socket:
                if frame.type is WSMsgType.TEXT:
                    await service._receive(frame.data)
                elif frame.type is WSMsgType.BINARY:  # the protocol has none: dropped
                    service._drop(repr(frame.data), "a binary frame, not a JSON text frame")
        finally:
            service.closed.set()
            with contextlib.suppress(Exception):
                await socket.close()
        return socket


def _is_http_url(address: str) -> bool:
    """Whether the manager takes `address` as the one it hands clients: it parses it as a URL
    (WHATWG) and takes http: and https: alone."""
    try:
        url = URL(address)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)
