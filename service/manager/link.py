"""The WebSocket link to the manager: connect, answer requests, reconnect for ever.

A `ManagerLink` owns the connection and nothing else. It decodes each frame, drops (and
logs) what is not a valid request, hands valid requests to its `RequestHandler` one at a
time and sends the handler's answer as the `generic:boolean` reply. When the connection
cannot be opened or drops, it tells the handler and tries again with exponential backoff and
jitter: the manager forgets a disconnected service, so each connection starts afresh.

Nothing a frame holds, and no bug in the loop, ends `run()`: only cancellation does. What
others may read of a link (`state`, `reconnects`, `failures`, `last_error`): `ManagerLink`.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import random
import re
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from . import outgoing, packets

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
HEARTBEAT = 20.0
CONNECT_TIMEOUT = 15.0  # the session's own timeout is minutes long: a black hole would stall us
CLOSE_TIMEOUT = 2.0  # how long closing waits for the manager's close frame
MAX_FRAME = 4 * 1024 * 1024  # aiohttp's default, stated so the log can name it
HANDLER_FAILED = "the upload service failed to handle this request and is reconnecting"


@dataclass(frozen=True)
class Answer:
    success: bool
    message: str | None = None
    # Close the link once answered: the manager configures the next connection afresh.
    reconnect: bool = False


class RequestHandler(Protocol):
    async def handle(self, request: packets.Request) -> Answer: ...

    async def disconnected(self) -> None: ...


class LinkState(enum.Enum):
    STOPPED = "stopped"  # run() is not running
    CONNECTING = "connecting"  # opening the WebSocket (bounded by CONNECT_TIMEOUT)
    CONNECTED = "connected"  # open, waiting for the manager's next frame
    HANDLING = "handling"  # open, a request is with the handler
    WAITING = "waiting"  # backing off before the next attempt


class LinkBroken(Exception):
    """The connection failed or broke for a reason worth a warning, not a traceback; its
    message is safe to log (no URL, no frame contents)."""


def backoff_delay(failures: int) -> float:
    """Seconds to wait after `failures` failed attempts in a row: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)


class ManagerLink:
    """One slot's link. Read-only for others: `state`, `reconnects` (connections lost or
    attempts failed since `run()` began, for the metrics), `failures` (attempts in a row that
    ended before answering a request), and `last_error` (why the link last went down, safe
    to show: `/readyz` does)."""

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
        self._address = shown_address(address)  # logged; the URL with the password never is
        self._url = URL(address).update_query(type="upload", key=password, address=own_address)
        self._handler = handler
        self._session = session
        self._log = {"slot": name}
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._answered = False  # whether the current connection answered a request
        self.state = LinkState.STOPPED
        self.reconnects = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def run(self) -> None:
        """Keep the link up until cancelled, the only way this returns; cancelling closes
        the WebSocket whatever the link was doing."""
        try:
            while True:
                await self._attempt()
                await self._back_off()
        finally:
            self._enter(LinkState.STOPPED)

    async def _attempt(self) -> None:
        """Open one connection and serve it until it ends; log why. Only cancellation
        escapes: an unexpected exception is a bug, logged with its traceback, and the
        reconnection that follows resets both peers to a known state."""
        self._answered = False
        try:
            await self._connect_and_serve()
            self.last_error = "the manager closed the link"
            log.warning("%s", self.last_error, extra=self._log)
        except LinkBroken as error:
            self.last_error = str(error)
            log.warning("%s", error, extra=self._log)
        except Exception as error:
            self.last_error = f"unexpected {type(error).__name__} in the link"
            log.exception("%s; reconnecting", self.last_error, extra=self._log)
        # A connection that never answered a request counts as failed, so a manager that
        # accepts and then drops us (or sends only what breaks the link) is backed off from.
        self.failures = 0 if self._answered else self.failures + 1

    async def _back_off(self) -> None:
        self.reconnects += 1
        self._enter(LinkState.WAITING)
        try:
            await self._handler.disconnected()
        except Exception:
            log.exception("the handler failed to take the disconnection", extra=self._log)
        delay = backoff_delay(self.failures + 1)
        log.info("reconnecting to the manager in %.1f s", delay, extra=self._log)
        await asyncio.sleep(delay)

    async def _connect_and_serve(self) -> None:
        self._enter(LinkState.CONNECTING)
        socket = await self._open()
        try:
            await self._serve(socket)
        finally:
            self._socket = None
            await socket.close()

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await self._session.ws_connect(
                    self._url,
                    heartbeat=HEARTBEAT,
                    max_msg_size=MAX_FRAME,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            # `from None`: the chained error's text may hold the URL, and with it the key.
            message = f"cannot reach the manager at {self._address}: {_connection_failure(error)}"
            raise LinkBroken(message) from None

    async def _serve(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._enter(LinkState.CONNECTED)
        log.info("connected to the manager at %s", self._address, extra=self._log)
        async for frame in socket:
            text = self._text_of(frame)
            if text is not None:
                await self._take(text)

    def _text_of(self, frame: aiohttp.WSMessage) -> str | None:
        """A text frame's text; None for another frame, which is ignored. An ERROR frame
        means aiohttp has given up on the connection: raise `LinkBroken` naming why."""
        if frame.type is aiohttp.WSMsgType.TEXT:
            return str(frame.data)
        if frame.type is aiohttp.WSMsgType.ERROR:
            raise LinkBroken(f"the link to the manager broke: {_frame_error(frame.data)}")
        log.warning("ignored a non-text frame (%s)", frame.type.name, extra=self._log)
        return None

    async def _take(self, text: str) -> None:
        try:
            incoming = packets.decode_request(text)
        except packets.MalformedPacket as error:
            log.warning(
                "ignored a malformed frame of %d characters (%s: %s)",
                len(text),
                type(error).__name__,
                error,
                extra=self._log,
            )
            return
        self._enter(LinkState.HANDLING)
        answer = await self._handle(incoming)
        self._enter(LinkState.CONNECTED)
        await self.send(outgoing.reply(incoming.uuid, answer.success, answer.message))
        if answer.reconnect:  # counted as a failed attempt: the reconnections back off
            raise LinkBroken(f"reconnecting, to be configured again: {answer.message}")
        self._answered = True

    async def _handle(self, incoming: packets.Incoming) -> Answer:
        """The handler's answer. If it raises, its state is unknown, so the manager is
        answered `success: false` at once (rather than waiting out its 10 s for a reply that
        never comes) with a neutral message (the exception's text may hold a secret), and the
        exception goes on to `_attempt`: reconnecting voids the state on both sides."""
        try:
            return await self._handler.handle(incoming.request)
        except Exception:
            await self.send(outgoing.reply(incoming.uuid, False, HANDLER_FAILED))
            raise

    def _enter(self, state: LinkState) -> None:
        self.state = state

    async def send(self, text: str) -> bool:
        """Send one packet; False when the link is down (the manager has then forgotten us)."""
        if not self.connected:
            return False
        try:
            await self._socket.send_str(text)  # type: ignore[union-attr]
        except (aiohttp.ClientError, ConnectionError) as error:
            failure = _connection_failure(error)
            log.warning("sending to the manager failed: %s", failure, extra=self._log)
            return False
        return True


def travels_in_clear(address: str) -> bool:
    """Whether a link to `address` carries the service password, the bot token and the key
    unencrypted across a network: ws:// to a host that is not this machine's loopback."""
    url = URL(address)
    host = url.host or ""
    if url.scheme != "ws" or host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return True


def warn_if_in_clear(address: str) -> None:
    if travels_in_clear(address):
        log.warning(
            "MANAGER_ADDRESS %s is ws:// to another machine: the service password, the bot "
            "token and the encryption key cross the network unencrypted; use wss://",
            shown_address(address),
        )


def shown_address(address: str) -> str:
    """The manager's address as logs and `/readyz` show it: scheme, host, port and path. The
    user and password a proxy may need and the query string (which may hold a token) are
    secrets (deploy/k8s/secret.yaml keeps MANAGER_ADDRESS with them)."""
    return str(URL(address).with_user(None).with_query(None).with_fragment(None))


def _frame_error(error: object) -> str:
    """Why aiohttp gave up on the connection. A protocol error is named by its close code
    only: some of aiohttp's messages quote the offending frame."""
    if isinstance(error, aiohttp.WebSocketError):
        if error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            return _too_large(str(error))
        return f"WebSocket protocol error (close code {error.code})"
    if isinstance(error, aiohttp.ServerTimeoutError):
        return f"the manager did not answer a heartbeat ping within {HEARTBEAT / 2:g} s"
    if isinstance(error, BaseException):
        return _connection_failure(error)
    return "WebSocket error"


def _too_large(message: str) -> str:
    """Name an oversized frame from aiohttp's "Message size N exceeds limit M"."""
    size = re.search(r"size (\d+)", message)
    limit = re.search(r"limit (\d+)", message)
    shown_size = f"{size[1]} bytes" if size else "size not reported"
    return f"frame too large ({shown_size}, limit {limit[1] if limit else MAX_FRAME} bytes)"


def _connection_failure(error: BaseException) -> str:
    """Describe a connection failure; never through str(), which may show the URL and its key."""
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return f"handshake refused with HTTP {error.status} (is SERVICE_PASSWORD right?)"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"the manager's TLS certificate was not accepted ({error.certificate_error})"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"HTTP {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect ({error.os_error.strerror or error.os_error})"
    if isinstance(error, TimeoutError):
        return f"timed out (opening the link may take at most {CONNECT_TIMEOUT:g} s)"
    return type(error).__name__
