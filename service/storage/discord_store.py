"""Storing chunks as Discord messages through discord.py's REST client (no gateway).

discord.py waits out rate limits (429) and retries 500, 502, 504 and 524 itself. What it
does not retry (other 5xx, connection resets, timeouts) is retried here a bounded number of
times. Every post carries a nonce that Discord de-duplicates, so a retry after a lost
response never leaves two messages for one chunk.

Failures are raised as the `StoreError`s of `refusals.py`: `DiscordFailed` (the client
may retry), `DiscordBusy` (a longer wait than a client is held for) and `DiscordRefused`
(the job's token, channel or size: the job ends).
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from typing import Any

import aiohttp
import aiohttp.abc
import aiohttp.payload
import discord
from discord.http import HTTPClient, Route, handle_message_parameters

from ..metrics import Metrics
from ..refusals import DiscordBusy, DiscordFailed, DiscordRefused

log = logging.getLogger(__name__)

# Connection errors discord.py lets through; TimeoutError is an OSError too.
_TRANSIENT = (OSError, aiohttp.ClientError)
_BAD_TOKEN = "Discord rejected the bot token (401 Unauthorized)"
# Statuses discord.py has already retried five times before it raises.
_RETRIED_BY_DISCORD_PY = frozenset({500, 502, 504, 524})


class MemoryReader(io.BufferedIOBase):
    """A seekable, read-only file over a memoryview: what discord.py takes as an attachment.

    aiohttp does not read it like a file (in a thread, a copy per piece): `_MemoryPayload`
    sends the memoryview itself.
    """

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self.view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else self._position + size
        data = self.view[self._position : end].tobytes()
        self._position += len(data)
        return data


class _MemoryPayload(aiohttp.payload.Payload):
    """Sends a `MemoryReader` from its memoryview, in slices, with its length known up front.

    Slices keep asyncio's transport buffer small: what the socket does not take at once is
    copied there, so one 10 MiB write would mean another 10 MiB in memory.
    """

    SLICE = 256 * 1024

    def __init__(self, value: MemoryReader, *args: Any, **kwargs: Any) -> None:
        super().__init__(value, *args, **kwargs)
        self._size = len(value.view)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.view.tobytes().decode(encoding, errors)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        view = self._value.view
        for start in range(0, len(view), self.SLICE):
            await writer.write(view[start : start + self.SLICE])


aiohttp.payload.PAYLOAD_REGISTRY.register(
    _MemoryPayload, MemoryReader, order=aiohttp.payload.Order.try_first
)


class DiscordStore:
    """One bot login, posting attachments to one channel."""

    def __init__(
        self,
        *,
        token: str,
        channel_id: str,
        request_timeout: float,
        retries: int,
        max_ratelimit_wait: float,
        metrics: Metrics,
    ) -> None:
        self.channel_id = channel_id
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retries = retries
        self._metrics = metrics
        self._closed = False
        self._http = HTTPClient(
            asyncio.get_running_loop(),
            max_ratelimit_timeout=max_ratelimit_wait,
            http_trace=metrics.discord_trace(),
        )

    async def open(self) -> None:
        """Log in (GET /users/@me); raise `DiscordRefused` for a bad token."""
        try:
            await self._http.static_login(self._token)
        except discord.LoginFailure:
            await self.close()
            raise DiscordRefused(_BAD_TOKEN) from None
        except (*_TRANSIENT, discord.HTTPException) as error:
            await self.close()
            raise DiscordFailed(f"could not log in to Discord: {_describe(error)}") from None

    async def close(self) -> None:
        self._closed = True
        await self._http.close()

    async def post(self, content: str, filename: str, payload: memoryview) -> str:
        """Post one message with `payload` as its only attachment; return the message id."""
        nonce = secrets.token_hex(12)
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=self.channel_id)
        for attempt in range(1, self._retries + 1):
            if self._closed:  # the slot lost its configuration while this chunk waited
                raise DiscordFailed("the Discord session was closed")
            params = handle_message_parameters(
                content=content,
                file=discord.File(MemoryReader(payload), filename=filename),
                nonce=nonce,
            )
            try:
                message = await self._http.request(
                    route, files=params.files, form=params.multipart, timeout=self._timeout
                )
                return str(message["id"])
            except discord.RateLimited as error:
                raise DiscordBusy(error.retry_after) from None
            except RuntimeError:  # aiohttp's "Session is closed", when close() came mid-request
                if self._closed:
                    raise DiscordFailed("the Discord session was closed") from None
                raise
            except discord.HTTPException as error:
                if error.status < 500:
                    raise self._refusal(error, len(payload)) from None
                if error.status in _RETRIED_BY_DISCORD_PY:
                    raise DiscordFailed(
                        f"Discord kept failing to store the chunk: {_describe(error)}"
                    ) from None
                failure: BaseException = error
            except _TRANSIENT as error:
                failure = error
            log.warning(
                "posting chunk %s to Discord failed (attempt %d of %d): %s",
                filename,
                attempt,
                self._retries,
                _describe(failure),
            )
            if attempt < self._retries:
                self._metrics.discord_retries.inc()
                await asyncio.sleep(0.25 * 2**attempt)
        raise DiscordFailed(
            f"Discord could not store the chunk after {self._retries} attempts: "
            f"{_describe(failure)}"
        )

    def _refusal(self, error: discord.HTTPException, size: int) -> DiscordRefused:
        """What a 4xx means for this job, said so that a person can act on it."""
        if error.status == 401:
            return DiscordRefused(_BAD_TOKEN)
        if error.status in (403, 404):
            return DiscordRefused(
                f"Discord refused to post in channel {self.channel_id} ({_describe(error)}); "
                "check that the bot can see the channel and may attach files"
            )
        if error.status == 413:
            return DiscordRefused(
                f"Discord refused a {size}-byte attachment as too large (413); "
                "chunks must be smaller for this bot"
            )
        return DiscordRefused(f"Discord refused the message: {_describe(error)}")


def _describe(error: BaseException) -> str:
    if isinstance(error, discord.HTTPException):
        return f"HTTP {error.status} {error.text or error.response.reason}".strip()
    if isinstance(error, TimeoutError):
        return "the request timed out"
    return str(error) or type(error).__name__
