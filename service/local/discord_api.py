"""A stand-in for Discord's REST API (https://discord.com/api/v10) on a local aiohttp server.

It answers the routes discord.py's ``HTTPClient`` uses to upload attachments, with Discord's
status codes, JSON bodies and rate-limit headers, and can inject faults (429s, 5xx, latency,
dropped or hanging connections) for tests, the demo and the benchmark.
"""

import asyncio
import json
import math
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import responses
from typing import Any, Self
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
MESSAGES_BUCKET = "80c17d2f203122d936070c88c8d10f33"
# Bucket size advertised when no rate limit is configured; remaining never drops, so discord.py
# never throttles itself.
_UNLIMITED = 10_000
_CLIENT_MAX_SIZE = 64 * 1024 * 1024
_CHUNK = 64 * 1024
_CHANNEL_ID = re.compile(r"[0-9]{15,22}")
_FILE_FIELD = re.compile(r"files\[([0-9]+)\]")
_ERRORS: dict[int, tuple[str, int]] = {
    401: ("401: Unauthorized", 0),
    403: ("Missing Access", 50001),
    404: ("Unknown Channel", 10003),
    413: ("Request entity too large", 40005),
}


@dataclass
class Attachment:
    """A file stored with a message."""

    id: str
    filename: str
    data: bytes
    content_type: str


@dataclass
class Message:
    """A message stored in a channel."""

    id: str
    channel_id: str
    content: str
    attachments: list[Attachment]
    nonce: str | None


@dataclass
class Fault:
    """One injected misbehaviour, consumed by the next POST to a channel's messages route (FIFO)."""

    status: int | None = None
    retry_after: float = 0.05
    is_global: bool = False
    delay: float = 0.0
    drop: bool = False
    hang: bool = False
    store_then_drop: bool = False
    hold: bool = False  # wait for release_held(), then go on as if nothing happened


@dataclass
class _Window:
    """A channel's current rate-limit window."""

    ends: float  # time.monotonic() at which the window resets
    used: int = 0


class _Snowflakes:
    """Discord-style snowflake ids, unique and increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        now = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._last = max(now << 22, self._last + 1)
        return str(self._last)


def _timestamp(snowflake: str) -> str:
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")


def _seconds(value: float) -> float:
    """Round up to whole milliseconds, so a client never retries a moment too early."""
    return math.ceil(max(value, 0.0) * 1000) / 1000


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py only parses a body whose Content-Type is exactly "application/json".
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Via": "1.1 google", **(headers or {})},
    )


def _error(status: int, message: str | None = None, code: int = 0) -> web.Response:
    """A JSON error; message and code default to what Discord sends for the status."""
    if message is None:
        message, code = _ERRORS.get(status, (f"{status}: {responses.get(status, 'Error')}", 0))
    return _json({"message": message, "code": code}, status=status)


def _rate_limited(
    retry_after: float, *, is_global: bool, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "message": "You are being rate limited.",
        "retry_after": _seconds(retry_after),
        "global": is_global,
    }
    extra = {
        # Discord's header is whole seconds, rounded up; the body has the precise value.
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Scope": "global" if is_global else "user",
        **(headers or {}),
    }
    if is_global:
        extra["X-RateLimit-Global"] = "true"
    return _json(body, status=429, headers=extra)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without answering."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp quietly gives up writing a response to a closed transport.
    return web.Response()


async def _read_part(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or None once it exceeds limit."""
    pieces: list[bytes] = []
    size = 0
    while piece := await part.read_chunk(_CHUNK):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            return None
    return b"".join(pieces)


class DiscordStandIn:
    """Local HTTP server behaving like Discord's REST API for discord.py's HTTPClient.

    Counters: ``posts`` (every POST to a messages route), ``faults_served`` (injected faults
    consumed) and ``rate_limited`` (429s from the real per-channel limit, not injected ones).
    """

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        messages_per_window: int | None = None,
        window: float = 5.0,
        max_attachment_size: int = 10 * 1024 * 1024,
        forbidden_channels: frozenset[str] = frozenset(),
    ) -> None:
        self._token = token
        self._host = host
        self._port = port
        self._messages_per_window = messages_per_window
        self._window = window
        self._max_attachment_size = max_attachment_size
        self._forbidden_channels = forbidden_channels
        self._ids = _Snowflakes()
        self._user = {
            "id": self._ids.next(),
            "username": "upload-bot",
            "discriminator": "0000",
            "global_name": None,
            "avatar": None,
            "banner": None,
            "accent_color": None,
            "bot": True,
            "system": False,
            "mfa_enabled": False,
            "verified": True,
            "email": None,
            "locale": "en-US",
            "flags": 0,
            "public_flags": 0,
            "premium_type": 0,
        }
        self._faults: deque[Fault] = deque()
        self._channels: dict[str, list[Message]] = {}
        self._by_id: dict[tuple[str, str], Message] = {}
        self._by_nonce: dict[tuple[str, str], Message] = {}
        self._attachments: dict[tuple[str, str], Attachment] = {}
        self._windows: dict[str, _Window] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.posts = 0
        self.faults_served = 0
        self.rate_limited = 0
        self._post_arrived = asyncio.Condition()
        self._held = asyncio.Event()

    async def start(self) -> None:
        """Listen on host:port (port 0 picks a free one)."""
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
        app.add_routes(
            [
                web.get(API_PREFIX + "/users/@me", self._get_me),
                web.post(API_PREFIX + "/channels/{channel_id}/messages", self._post_message),
                web.get(
                    API_PREFIX + "/channels/{channel_id}/messages/{message_id}", self._get_message
                ),
                web.get("/attachments/{channel_id}/{attachment_id}/{filename}", self._get_file),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop serving; hanging requests are dropped."""
        if self._runner is None:
            return
        self._closing.set()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def origin(self) -> str:
        """Scheme, host and port, e.g. "http://127.0.0.1:43121"."""
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What discord.http.Route.BASE should be set to."""
        return self.origin + API_PREFIX

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next POSTs to any channel's messages route."""
        self._faults.extend(faults)

    def messages(self, channel_id: str) -> list[Message]:
        """The channel's messages, in creation order."""
        return list(self._channels.get(channel_id, []))

    def forget(self, channel_id: str) -> None:
        """Drop a channel's messages and their attachments, freeing their memory (a long
        benchmark keeps only what it still has to check)."""
        for message in self._channels.pop(channel_id, []):
            self._by_id.pop((channel_id, message.id), None)
            if message.nonce is not None:
                self._by_nonce.pop((channel_id, message.nonce), None)
            for attachment in message.attachments:
                self._attachments.pop((channel_id, attachment.id), None)

    def message(self, channel_id: str, message_id: str) -> Message:
        """One stored message; KeyError if absent."""
        return self._by_id[channel_id, message_id]

    async def _get_me(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401)
        return _json(self._user)

    async def _get_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        if (refusal := self._refusal(request, channel_id)) is not None:
            return refusal
        message = self._by_id.get((channel_id, request.match_info["message_id"]))
        if message is None:
            return _error(404, "Unknown Message", 10008)
        return _json(self._message_json(message))

    async def _get_file(self, request: web.Request) -> web.Response:
        key = (request.match_info["channel_id"], request.match_info["attachment_id"])
        attachment = self._attachments.get(key)
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return _error(404, "404: Not Found")
        return web.Response(body=attachment.data, content_type=attachment.content_type)

    async def wait_for_posts(self, count: int) -> None:
        """Wait until `count` POSTs have reached the messages route."""
        async with self._post_arrived:
            await self._post_arrived.wait_for(lambda: self.posts >= count)

    def release_held(self) -> None:
        """Let requests held by `Fault(hold=True)` (and later ones) proceed."""
        self._held.set()

    async def _post_message(self, request: web.Request) -> web.Response:
        self.posts += 1
        async with self._post_arrived:
            self._post_arrived.notify_all()
        channel_id = request.match_info["channel_id"]
        if (refusal := self._refusal(request, channel_id)) is not None:
            await request.release()
            return refusal

        fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            self.faults_served += 1
            await asyncio.sleep(fault.delay)
            if fault.hold:
                await self._held.wait()
            if fault.drop or fault.hang:
                await request.release()
                if fault.hang:
                    await self._closing.wait()
                return _drop(request)
            if fault.status == 429:
                await request.release()
                return _rate_limited(fault.retry_after, is_global=fault.is_global)
            if fault.status is not None:
                await request.release()
                return _error(fault.status)

        window = self._current_window(channel_id)
        limit = self._messages_per_window
        if limit is not None and window.used >= limit:
            self.rate_limited += 1
            await request.release()
            return _rate_limited(
                window.ends - time.monotonic(),
                is_global=False,
                headers=self._bucket_headers(window),
            )
        window.used += 1

        try:
            parsed = await self._read_message(request)
        except ConnectionResetError:  # the client went away mid-body: nothing is stored
            return _drop(request)
        if parsed is None:
            await request.release()
            return _error(413)
        payload, attachments = parsed

        nonce = None if payload.get("nonce") is None else str(payload["nonce"])
        existing = self._by_nonce.get((channel_id, nonce)) if nonce is not None else None
        if existing is not None and payload.get("enforce_nonce"):
            message = existing
        else:
            message = self._store(channel_id, payload.get("content") or "", attachments, nonce)
        if fault is not None and fault.store_then_drop:
            return _drop(request)
        return _json(self._message_json(message), headers=self._bucket_headers(window))

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get(hdrs.AUTHORIZATION) == f"Bot {self._token}"

    def _refusal(self, request: web.Request, channel_id: str) -> web.Response | None:
        """The error for a bad token or an inaccessible channel, if any."""
        if not self._authorized(request):
            return _error(401)
        if channel_id in self._forbidden_channels:
            return _error(403)
        if not _CHANNEL_ID.fullmatch(channel_id):
            return _error(404)
        return None

    def _current_window(self, channel_id: str) -> _Window:
        now = time.monotonic()
        window = self._windows.get(channel_id)
        if window is None or now >= window.ends:
            window = self._windows[channel_id] = _Window(ends=now + self._window)
        return window

    def _bucket_headers(self, window: _Window) -> dict[str, str]:
        if self._messages_per_window is None:
            limit, remaining = _UNLIMITED, _UNLIMITED - 1
        else:
            limit = self._messages_per_window
            remaining = max(limit - window.used, 0)
        reset_after = _seconds(window.ends - time.monotonic())
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": MESSAGES_BUCKET,
        }

    async def _read_message(
        self, request: web.Request
    ) -> tuple[dict[str, Any], list[Attachment]] | None:
        """The payload and attachments of a message POST; None if an attachment is too large."""
        if request.content_type == "application/json":
            return await request.json(), []
        payload: dict[str, Any] = {}
        files: dict[int, tuple[BodyPartReader, bytes]] = {}
        if request.content_type == "multipart/form-data":
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif match := _FILE_FIELD.fullmatch(part.name or ""):
                    data = await _read_part(part, self._max_attachment_size)
                    if data is None:
                        return None
                    files[int(match[1])] = (part, data)
        names = {int(a["id"]): a.get("filename") for a in payload.get("attachments", [])}
        attachments = [
            Attachment(
                id=self._ids.next(),
                filename=names.get(index) or part.filename or f"file{index}",
                data=data,
                content_type=part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream"),
            )
            for index, (part, data) in sorted(files.items())
        ]
        return payload, attachments

    def _store(
        self, channel_id: str, content: str, attachments: list[Attachment], nonce: str | None
    ) -> Message:
        message = Message(self._ids.next(), channel_id, content, attachments, nonce)
        self._channels.setdefault(channel_id, []).append(message)
        self._by_id[channel_id, message.id] = message
        if nonce is not None:
            self._by_nonce.setdefault((channel_id, nonce), message)
        for attachment in attachments:
            self._attachments[channel_id, attachment.id] = attachment
        return message

    def _message_json(self, message: Message) -> dict[str, Any]:
        return {
            "id": message.id,
            "type": 0,
            "channel_id": message.channel_id,
            "content": message.content,
            "author": self._user,
            "attachments": [
                self._attachment_json(message.channel_id, a) for a in message.attachments
            ],
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": _timestamp(message.id),
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
            "nonce": message.nonce,
        }

    def _attachment_json(self, channel_id: str, attachment: Attachment) -> dict[str, Any]:
        name = quote(attachment.filename, safe="")
        url = f"{self.origin}/attachments/{channel_id}/{attachment.id}/{name}"
        return {
            "id": attachment.id,
            "filename": attachment.filename,
            "size": len(attachment.data),
            "url": url,
            "proxy_url": url,
            "content_type": attachment.content_type,
        }
