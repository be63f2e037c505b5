"""The WebSocket link to the manager: connect, answer requests, reconnect for ever.

A `ManagerLink` owns the connection and nothing else. It decodes each frame, drops (and
logs) what is not a valid request, hands valid requests to its `RequestHandler` one at a
time and sends the handler's answer as the `generic:boolean` reply. When the connection
cannot be opened or drops, it tells the handler and tries again with exponential backoff and
jitter: the manager forgets a disconnected service, so each connection starts afresh.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from . import packets

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
HEARTBEAT = 20.0


@dataclass(frozen=True)
class Answer:
    success: bool
    message: str | None = None


class RequestHandler(Protocol):
    async def handle(self, request: packets.Request) -> Answer: ...

    async def disconnected(self) -> None: ...


def backoff_delay(failures: int) -> float:
    """Seconds to wait after `failures` failed attempts in a row: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)


class ManagerLink:
    def __init__(
        self,
        *,
        address: str,
        password: str,
        own_address: str,
        handler: RequestHandler,
        session: aiohttp.ClientSession,
        name: str,
    ) -> None:
        self._address = address  # logged; the URL with the password never is
        self._url = URL(address).update_query(type="upload", key=password, address=own_address)
        self._handler = handler
        self._session = session
        self._log = {"slot": name}
        self._socket: aiohttp.ClientWebSocketResponse | None = None

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def run(self) -> None:
        """Keep the link up until cancelled; cancelling closes the WebSocket cleanly."""
        failures = 0
        while True:
            try:
                async with self._session.ws_connect(self._url, heartbeat=HEARTBEAT) as socket:
                    failures = 0
                    await self._serve(socket)
                log.warning("the manager closed the link", extra=self._log)
            except (aiohttp.ClientError, OSError) as error:
                failures += 1
                log.warning(
                    "cannot reach the manager at %s: %s",
                    self._address,
                    _describe(error),
                    extra=self._log,
                )
            finally:
                self._socket = None
            await self._handler.disconnected()
            delay = backoff_delay(failures + 1)
            log.info("reconnecting to the manager in %.1f s", delay, extra=self._log)
            await asyncio.sleep(delay)

    async def _serve(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        log.info("connected to the manager at %s", self._address, extra=self._log)
        async for frame in socket:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                if frame.type is aiohttp.WSMsgType.ERROR:
                    raise socket.exception() or aiohttp.ClientError("WebSocket error")
                log.warning("ignored a non-text frame (%s)", frame.type.name, extra=self._log)
                continue
            try:
                incoming = packets.decode_request(frame.data)
            except packets.MalformedPacket as error:
                log.warning("ignored a malformed packet: %s", error, extra=self._log)
                continue
            answer = await self._handler.handle(incoming.request)
            await self.send(packets.reply(incoming.uuid, answer.success, answer.message))

    async def send(self, text: str) -> bool:
        """Send one packet; False when the link is down (the manager has then forgotten us)."""
        if not self.connected:
            return False
        try:
            await self._socket.send_str(text)  # type: ignore[union-attr]
        except (aiohttp.ClientError, ConnectionError) as error:
            log.warning("sending to the manager failed: %s", error, extra=self._log)
            return False
        return True


def _describe(error: BaseException) -> str:
    """Describe a connection failure; never through str(), which may show the URL and its key."""
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return f"handshake refused with HTTP {error.status} (is SERVICE_PASSWORD right?)"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"the manager's TLS certificate was not accepted ({error.certificate_error})"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"HTTP {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect ({error.os_error.strerror or error.os_error})"
    return type(error).__name__
