"""Deleting what an upload that did not succeed left on Discord.

The manager records messages only from a successful finish packet, so every message of an
upload that timed out, was aborted, refused, voided or stopped by a shutdown is ciphertext
nobody will ever read. `Cleanup` deletes them in the background, through the same client
and pacing as the posts, so it never delays a chunk's answer, a finish packet or the next
upload: several at once with Discord's bulk delete (2 to 100 messages younger than 14
days), one alone (or an older one) with a single delete. The store tries each request again
as its `RetryPolicy` says (`discord/retry.py`; the clean-up also waits out long rate limits);
what cannot be deleted is logged with its ids and why, so an operator can act.

At shutdown, `finish` waits for every deletion, those started while it waits included, until
its deadline; what is still pending then, and every deletion asked for afterwards (the
Discord clients close next), is logged instead: the ids left, or, for a channel search that
can no longer run, that the upload may have left messages under ids nobody learned.

A post that failed without a definite answer (the connection dropped, Discord answered 5xx
or oddly) may have stored its message all the same, and its id is unknown. For an upload
with such a post, the clean-up also searches the channel for messages whose text names the
upload (`content_prefix`), posted since the upload began, and deletes them too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..metrics import Metrics
from ..refusals import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

BULK_LIMIT = 100  # ids in one bulk delete
BULK_MAX_AGE = 14 * 24 * 3600.0  # seconds: older messages cannot be bulk-deleted
AGE_MARGIN = 3600.0  # treat messages this close to the limit as too old
DISCORD_EPOCH = 1420070400.0  # seconds; a snowflake's top bits count milliseconds since it


class MessageDeleter(Protocol):
    """Finds and deletes messages of one channel: bulk for several, single for one."""

    channel_id: str

    async def find_messages(self, content_prefix: str, since: int) -> list[str]: ...

    async def delete_messages(self, message_ids: Sequence[str]) -> None: ...


def content_prefix(upload_id: str) -> str:
    """How the text of every message of an upload begins."""
    return f"discord-cloud upload {upload_id},"


@dataclass(frozen=True)
class Orphans:
    upload_id: str
    message_ids: tuple[str, ...]
    why: str  # why they will never be read, for the log
    search_since: int | None = None  # a snowflake: search the channel for more posted since

    @property
    def empty(self) -> bool:
        return not self.message_ids and self.search_since is None


def created_at(snowflake: str) -> float:
    """The Unix time a Discord id was made."""
    return (int(snowflake) >> 22) / 1000 + DISCORD_EPOCH


def snowflake_at(when: float) -> int:
    """The smallest Discord id made at Unix time `when`."""
    return int((when - DISCORD_EPOCH) * 1000) << 22


def batches(message_ids: Sequence[str], now: float) -> list[list[str]]:
    """The requests that delete `message_ids`: bulk batches of young messages, one request
    for each message too old for a bulk delete."""
    young = [i for i in message_ids if now - created_at(i) < BULK_MAX_AGE - AGE_MARGIN]
    old = [[i] for i in message_ids if i not in set(young)]
    return [young[n : n + BULK_LIMIT] for n in range(0, len(young), BULK_LIMIT)] + old


@dataclass
class _Deletion:
    """One upload's deletion as it goes: what it has not done yet."""

    orphans: Orphans
    left: list[str]  # ids not deleted (nor reported left) yet
    unsearched: bool  # the channel search for ids nobody learned has not run yet


class Cleanup:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._pending: dict[asyncio.Task[None], _Deletion] = {}  # each deletion running
        self._finished = False  # past the shutdown's deadline: nothing more is deleted

    def delete(self, deleter: MessageDeleter, orphans: Orphans) -> None:
        """Start deleting `orphans` in the background (after `finish`, log them as left)."""
        if orphans.empty:
            return
        deletion = _Deletion(orphans, list(orphans.message_ids), orphans.search_since is not None)
        if self._finished:
            self._give_up(deletion)
            return
        task = asyncio.get_running_loop().create_task(self._delete(deleter, deletion))
        self._pending[task] = deletion
        task.add_done_callback(self._pending.pop)

    @property
    def pending(self) -> int:
        """Messages of failed uploads not deleted yet."""
        return sum(len(left) for _, left in self._pending.values())

    async def settled(self) -> None:
        """Return once no deletion is running (those started meanwhile included)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def finish(self, grace: float) -> None:
        """Shutdown: let the deletions end, those started meanwhile included, within `grace`
        seconds; log what is left, and from then on log what `delete` is asked for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._pending and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._pending), timeout=remaining)
        self._finished = True
        unfinished = list(self._pending.items())
        for task, deletion in unfinished:
            task.cancel()
            self._give_up(deletion)
        await asyncio.gather(*(task for task, _ in unfinished), return_exceptions=True)

    def _give_up(self, deletion: _Deletion) -> None:
        """Log (and count) what a deletion the shutdown cut off leaves on Discord."""
        upload_id, left = deletion.orphans.upload_id, deletion.left
        if left:
            self._metrics.messages_left.inc(len(left))
            log.warning(
                "left %d messages on Discord: the service stopped before deleting them: %s",
                len(left),
                " ".join(left),
                extra={"upload_id": upload_id},
            )
        if deletion.unsearched:
            log.warning(
                "upload %s may have left messages on Discord that it could not search for: the "
                "service stopped first (a post of the upload had no definite answer)",
                upload_id,
                extra={"upload_id": upload_id},
            )

    async def _delete(self, deleter: MessageDeleter, deletion: _Deletion) -> None:
        orphans, left = deletion.orphans, deletion.left
        context = {"upload_id": orphans.upload_id}
        problems: list[str] = []  # why messages may be left
        if orphans.search_since is not None:
            since, prefix = orphans.search_since, content_prefix(orphans.upload_id)
            found, failed = await self._tried(lambda: deleter.find_messages(prefix, since))
            deletion.unsearched = False
            if failed:  # more may be left, under ids nobody knows
                problems.append(f"the channel could not be searched for more: {failed}")
            left += [i for i in found or [] if i not in left]
        message_ids = tuple(left)
        for batch in batches(message_ids, time.time()):
            _, failed = await self._tried(lambda batch=batch: deleter.delete_messages(batch))
            if failed:
                problems.append(failed)
                continue
            for message_id in batch:
                left.remove(message_id)
            self._metrics.messages_deleted.inc(len(batch))
        deleted = len(message_ids) - len(left)
        if not problems:
            log.info(
                "deleted the %d messages the upload left on Discord (%s)",
                deleted,
                orphans.why,
                extra=context,
            )
            return
        self._metrics.messages_left.inc(len(left))
        left_now = list(left)
        left.clear()  # reported here: a shutdown must not report them again
        log.warning(
            "deleted %d messages the upload left on Discord; %d are left (%s): %s",
            deleted,
            len(left_now),
            "; ".join(problems),
            " ".join(left_now),
            extra=context,
        )

    async def _tried(self, action: Callable[[], Awaitable[T]]) -> tuple[T | None, str]:
        """`action`'s result, or (None, why) if Discord would not do it; the store has tried
        it again as its `RetryPolicy` says."""
        try:
            return await action(), ""
        except StoreError as error:
            return None, str(error)
