"""Storing chunks as Discord messages in one channel, through the bot's shared client.

The `DiscordClient` paces each request and waits out rate limits (429). A request that fails
(a 5xx, a reset connection, a timeout, or a 2xx that does not show the message stored) is
tried again as the client's `RetryPolicy` says. Every post carries a nonce that Discord
de-duplicates, so a retry after a lost response never leaves two messages for one chunk.

Failures are raised as the `StoreError`s of `refusals.py`: `DiscordFailed` (the client
may retry), `DiscordBusy` (a longer wait than a client is held for) and `DiscordRefused`
(the job's token, channel or size: the job ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeGuard

import discord
from discord.http import handle_message_parameters

from ..chunks.memory_file import MemoryReader
from ..metrics import Metrics
from ..refusals import DiscordClosed, DiscordFailed, DiscordRefused, StoreError
from .client import BAD_TOKEN, TRANSIENT, DiscordClient, Patience, discord_failure
from .retry import RetryPolicy

log = logging.getLogger(__name__)

_SNOWFLAKE = re.compile(r"[0-9]{15,22}")
PAGE = 100  # messages per page when searching a channel (Discord's most)


class BadAnswer(Exception):
    """A 2xx that does not show the chunk stored: a failed post, never a recorded one."""


@contextlib.contextmanager
def _as_store_errors(doing: str) -> Iterator[None]:
    """discord.py's and the transport's errors as `StoreError`s that name what was done."""
    try:
        yield
    except discord.HTTPException as error:
        if error.status < 500:
            raise DiscordRefused(f"Discord refused to {doing}: {discord_failure(error)}") from None
        raise DiscordFailed(f"Discord failed to {doing}: {discord_failure(error)}") from None
    # RuntimeError: the session closed; ValueError: an answer discord.py could not decode
    except (*TRANSIENT, RuntimeError, ValueError) as error:
        raise DiscordFailed(f"Discord could not be reached: {discord_failure(error)}") from None


def _is_snowflake(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _SNOWFLAKE.fullmatch(value) is not None


def stored_message_id(answer: object, size: int) -> str:
    """The id of the message `answer` shows stored with a `size`-byte first attachment."""
    if not isinstance(answer, dict):
        raise BadAnswer("Discord answered a post with something other than JSON")
    message_id = answer.get("id")
    if not _is_snowflake(message_id):
        raise BadAnswer(f"Discord's answer has no message id (id: {message_id!r:.40})")
    attachments = answer.get("attachments")
    first = attachments[0] if isinstance(attachments, list) and attachments else None
    stored = first.get("size") if isinstance(first, dict) else None
    if type(stored) is not int or stored != size:
        raise BadAnswer(
            f"Discord's answer shows an attachment of {stored!r:.40} bytes, not the {size} sent"
        )
    return message_id


class DiscordStore:
    """One slot's channel, posted to through the shared client of the slot's bot token."""

    def __init__(
        self,
        *,
        client: DiscordClient,
        channel_id: str,
        max_ratelimit_wait: float,
        metrics: Metrics,
    ) -> None:
        self.client = client
        self.channel_id = channel_id
        self._max_wait = max_ratelimit_wait
        self._metrics = metrics

    @property
    def retry(self) -> RetryPolicy:
        """How the store's requests are tried again: its bot token's client's policy."""
        return self.client.retry

    def in_channel(self, channel_id: str) -> DiscordStore:
        """A store of the same client and settings for another channel (a clean-up's)."""
        return DiscordStore(
            client=self.client,
            channel_id=channel_id,
            max_ratelimit_wait=self._max_wait,
            metrics=self._metrics,
        )

    async def open(self) -> None:
        """Make sure the token logs in (GET /users/@me, once per client); raise
        `DiscordRefused` for a bad token."""
        await self.client.login(self._max_wait)

    async def post(
        self,
        content: str,
        filename: str,
        payload: memoryview,
        *,
        wanted: Callable[[], None] = lambda: None,
        unwanted: asyncio.Future[None] | None = None,
    ) -> str:
        """Post one message with `payload` as its only attachment; return the message id.
        Its tries wait for the pacer and out 429s for `max_ratelimit_wait` seconds in all
        (the time they take at Discord is not counted).
        While no try may have stored it, `wanted` is called just before each goes out (after
        its wait for the pacer), and at once when `unwanted` is done during that wait: what it
        raises is raised, and the post is not sent."""
        nonce = secrets.token_hex(12)
        patience = Patience(self._max_wait)  # for the waits of every try, in all
        unsure = False  # a try went out without a definite answer: it may have stored

        def failed(attempt: int, failure: DiscordFailed) -> None:
            nonlocal unsure
            unsure = True
            log.warning(
                "posting chunk %s to Discord failed (attempt %d of %d): %s",
                filename,
                attempt,
                self.retry.tries,
                failure,
            )
            if attempt < self.retry.tries:
                self._metrics.discord_retries.inc()

        try:
            # Once a try may have stored the message, tried again even when it is no longer
            # wanted: only the same nonce tells the message's id, for the clean-up.
            return await self.retry.run(
                lambda: self._post_once(
                    content,
                    filename,
                    payload,
                    nonce,
                    patience=patience,
                    wanted=(lambda: None) if unsure else wanted,
                    unwanted=None if unsure else unwanted,
                ),
                failed=failed,
            )
        except DiscordFailed as failure:
            given_up = DiscordFailed(
                f"Discord could not store the chunk after {self.retry.tries} attempts: {failure}"
            )
            given_up.maybe_stored = unsure
            raise given_up from None
        except StoreError as error:
            error.maybe_stored = unsure
            raise

    async def _post_once(
        self,
        content: str,
        filename: str,
        payload: memoryview,
        nonce: str,
        *,
        patience: Patience,
        wanted: Callable[[], None],
        unwanted: asyncio.Future[None] | None,
    ) -> str:
        self._refuse_if_closed()  # shut down meanwhile
        params = handle_message_parameters(
            content=content,
            file=discord.File(MemoryReader(payload), filename=filename),
            nonce=nonce,
        )
        try:
            answer = await self.client.post_message(
                self.channel_id, params, patience=patience, wanted=wanted, unwanted=unwanted
            )
            return stored_message_id(answer, len(payload))
        except discord.HTTPException as error:
            if error.status < 500:
                raise self._refusal(error, len(payload)) from None
            raise DiscordFailed(discord_failure(error)) from None
        # ValueError: discord.py could not decode the answer (not UTF-8, not JSON)
        except (*TRANSIENT, BadAnswer, ValueError) as error:
            raise DiscordFailed(discord_failure(error)) from None
        except RuntimeError:  # aiohttp's "Session is closed", when shut down mid-request
            self._refuse_if_closed()
            raise

    async def find_messages(self, content_prefix: str, since: int) -> list[str]:
        """The ids of this channel's messages whose text begins with `content_prefix`, among
        those posted after the snowflake `since`. Raise as `delete_messages` does."""
        found: list[str] = []
        before: str | None = None
        while True:
            page = await self.retry.run(partial(self._page, before), patient=True)
            messages = [m for m in page if isinstance(m, dict) and _is_snowflake(m.get("id"))]
            found += [m["id"] for m in messages if str(m.get("content")).startswith(content_prefix)]
            if len(page) < PAGE or not messages or int(messages[-1]["id"]) <= since:
                return found
            before = messages[-1]["id"]

    async def delete_messages(self, message_ids: Sequence[str]) -> None:
        """Delete messages this store posted (a failed upload's clean-up may outlive its
        slot's configuration: the client lives until shutdown). Raise `DiscordFailed` when
        retrying may help, `DiscordRefused` when not, `DiscordBusy` for a long rate limit."""
        await self.retry.run(lambda: self._delete(message_ids), patient=True)

    async def _page(self, before: str | None) -> Any:
        self._refuse_if_closed()
        with _as_store_errors("list messages"):
            return await self.client.list_messages(
                self.channel_id, before=before, limit=PAGE, max_wait=self._max_wait
            )

    async def _delete(self, message_ids: Sequence[str]) -> None:
        self._refuse_if_closed()
        with _as_store_errors("delete"):
            await self.client.delete_messages(self.channel_id, message_ids, max_wait=self._max_wait)

    def _refuse_if_closed(self) -> None:
        if self.client.closed:
            raise DiscordClosed() from None

    def _refusal(self, error: discord.HTTPException, size: int) -> DiscordRefused:
        """What a 4xx means for this job, said so that a person can act on it."""
        if error.status == 401:
            return DiscordRefused(BAD_TOKEN)
        if error.status in (403, 404):
            return DiscordRefused(
                f"Discord refused to post in channel {self.channel_id} ({discord_failure(error)}); "
                "check that the bot can see the channel and may attach files"
            )
        if error.status == 413:
            return DiscordRefused(
                f"Discord refused a {size}-byte attachment as too large (413); "
                "chunks must be smaller for this bot"
            )
        return DiscordRefused(f"Discord refused the message: {discord_failure(error)}")
