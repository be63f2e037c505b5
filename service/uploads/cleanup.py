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

Requests for one upload join one `Deletion`, so its messages are deleted once and its
channel searched once (or once more, after a search already under way). The journal
follows: deleted messages leave it, an upload with nothing left is forgotten, what could
not be deleted (or was cut off by the shutdown) is kept for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from ..metrics import Metrics
from ..refusals import StoreError
from .journal import Journal

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
    # The messages a success finish named, never deleted: set for the stray copies of a
    # successful upload (the journal keeps them until the search for the copies is done).
    kept: frozenset[str] = frozenset()

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
    bulk = set(young)
    old = [[i] for i in message_ids if i not in bulk]
    return [young[n : n + BULK_LIMIT] for n in range(0, len(young), BULK_LIMIT)] + old


@dataclass(eq=False)
class Deletion:
    """One upload's clean-up. One task works through it; a request for the same upload made
    meanwhile joins it (its ids are added, a search is done once more after the one under
    way, if any), so no message is deleted twice and no search is repeated for nothing."""

    deleter: MessageDeleter
    upload_id: str
    whys: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # ids known and not deleted yet
    search_since: int | None = None  # a search asked for and not begun
    kept: frozenset[str] = frozenset()  # named by a success finish: never deleted
    deleted: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)  # ids Discord would not delete
    problems: list[str] = field(default_factory=list)  # why messages may be left
    searching: bool = False
    search_failed: bool = False

    @classmethod
    def of(cls, deleter: MessageDeleter, orphans: Orphans) -> Deletion:
        deletion = cls(deleter, orphans.upload_id)
        deletion.add(orphans)
        return deletion

    def add(self, orphans: Orphans) -> None:
        if orphans.why not in self.whys:
            self.whys.append(orphans.why)
        self.kept |= orphans.kept
        self.add_ids(orphans.message_ids)
        if orphans.search_since is not None:
            since = self.search_since
            self.search_since = (
                orphans.search_since if since is None else min(since, orphans.search_since)
            )

    def add_ids(self, message_ids: Sequence[str]) -> None:
        seen = {*self.left, *self.deleted, *self.given_up, *self.kept}
        self.left += [i for i in dict.fromkeys(message_ids) if i not in seen]

    @property
    def unfinished(self) -> bool:
        return bool(self.left) or self.search_since is not None

    @property
    def unsearched(self) -> bool:
        """A search was asked for and has not been made."""
        return self.searching or self.search_since is not None


class Cleanup:
    def __init__(self, metrics: Metrics, journal: Journal) -> None:
        self._metrics = metrics
        self._journal = journal
        # each upload's deletion under way, with its task
        self._pending: dict[str, tuple[Deletion, asyncio.Task[None]]] = {}
        self._finished = False  # past the shutdown's deadline: nothing more is deleted

    def delete(self, deleter: MessageDeleter, orphans: Orphans) -> None:
        """Delete `orphans` in the background, with what is being deleted of its upload
        (after `finish`, log them as left)."""
        if (pending := self._pending.get(orphans.upload_id)) is not None:
            pending[0].add(orphans)
            return
        if orphans.empty:
            self._journal.forget(orphans.upload_id)
            return
        deletion = Deletion.of(deleter, orphans)
        if self._finished:
            self._give_up(deletion)
            return
        task = asyncio.get_running_loop().create_task(self._delete(deletion))
        self._pending[orphans.upload_id] = (deletion, task)

    @property
    def pending(self) -> int:
        """Messages of failed uploads not deleted yet."""
        return sum(len(deletion.left) for deletion, _ in self._pending.values())

    async def settled(self) -> None:
        """Return once no deletion is running (those started meanwhile included)."""
        while self._pending:
            tasks = [task for _, task in self._pending.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    async def finish(self, grace: float) -> None:
        """Shutdown: let the deletions end, those started meanwhile included, within `grace`
        seconds; log what is left, and from then on log what `delete` is asked for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._pending and (remaining := deadline - loop.time()) > 0:
            tasks = [task for _, task in self._pending.values()]
            await asyncio.wait(tasks, timeout=remaining)
        self._finished = True
        unfinished = list(self._pending.values())
        for deletion, task in unfinished:
            task.cancel()
            self._give_up(deletion)
        self._pending.clear()  # what is asked for from now on is given up at once
        await asyncio.gather(*(task for _, task in unfinished), return_exceptions=True)

    def _give_up(self, deletion: Deletion) -> None:
        """Log (and count) what a deletion the shutdown cut off leaves on Discord, those
        Discord refused to delete before included; the journal keeps it for the next start."""
        search = deletion.unsearched or deletion.search_failed
        left = deletion.left + deletion.given_up
        self._journal.left(deletion.upload_id, left, search=search)
        kept = " (kept in the journal for the next start)" if self._journal.durable else ""
        if left:
            self._metrics.messages_left.inc(len(left))
            log.warning(
                "left %d messages on Discord: %s%s: %s",
                len(left),
                "; ".join(["the service stopped before deleting them", *deletion.problems]),
                kept,
                " ".join(left),
                extra={"upload_id": deletion.upload_id},
            )
        if deletion.unsearched:
            log.warning(
                "upload %s may have left messages on Discord that it could not search for: the "
                "service stopped first (a post of the upload had no definite answer)%s",
                deletion.upload_id,
                kept,
                extra={"upload_id": deletion.upload_id},
            )

    async def _delete(self, deletion: Deletion) -> None:
        try:
            while deletion.unfinished:
                await self._search(deletion)
                await self._delete_known(deletion)
        finally:  # no await since the last check: a request from now on starts anew
            self._pending.pop(deletion.upload_id, None)
        self._report(deletion)

    async def _search(self, deletion: Deletion) -> None:
        if deletion.search_since is None:
            return
        since, deletion.search_since = deletion.search_since, None
        prefix, deleter = content_prefix(deletion.upload_id), deletion.deleter
        deletion.searching = True
        found, failed = await self._tried(lambda: deleter.find_messages(prefix, since))
        deletion.searching = False
        if failed:  # more may be left, under ids nobody knows
            deletion.problems.append(f"the channel could not be searched for more: {failed}")
            deletion.search_failed = True
        deletion.add_ids(found or [])

    async def _delete_known(self, deletion: Deletion) -> None:
        deleter = deletion.deleter
        for batch in batches(list(deletion.left), time.time()):
            _, failed = await self._tried(partial(deleter.delete_messages, batch))
            done = set(batch)
            deletion.left = [i for i in deletion.left if i not in done]
            if failed:
                deletion.problems.append(failed)
                deletion.given_up += batch
                continue
            deletion.deleted += batch
            self._journal.deleted(deletion.upload_id, batch)
            self._metrics.messages_deleted.inc(len(batch))

    def _report(self, deletion: Deletion) -> None:
        context = {"upload_id": deletion.upload_id}
        if not deletion.problems:
            self._journal.forget(deletion.upload_id)
            log.info(
                "deleted the %d messages the upload left on Discord (%s)",
                len(deletion.deleted),
                "; ".join(deletion.whys),
                extra=context,
            )
            return
        self._journal.left(deletion.upload_id, deletion.given_up, search=deletion.search_failed)
        self._metrics.messages_left.inc(len(deletion.given_up))
        log.warning(
            "deleted %d messages the upload left on Discord; %d are left (%s): %s",
            len(deletion.deleted),
            len(deletion.given_up),
            "; ".join(deletion.problems),
            " ".join(deletion.given_up),
            extra=context,
        )

    async def _tried(self, action: Callable[[], Awaitable[T]]) -> tuple[T | None, str]:
        """`action`'s result, or (None, why) if Discord would not do it; the store has tried
        it again as its `RetryPolicy` says."""
        try:
            return await action(), ""
        except StoreError as error:
            return None, str(error)
