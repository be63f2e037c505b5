"""What a stopped process left on Discord, read from the journal when the service starts.

Every upload the journal holds when the process starts was left by its previous life:

- one marked `succeeded` may be named by a finish packet the manager read: its messages
  are kept, never deleted (an orphan is better than a file the manager cannot read), unless
  the journal holds the ids its finish named (`kept`: a post may have left stray copies);
  then it is searched for like a failed one, and all but those ids are deleted;
- one begun more than `KEEP_FOR` ago is given up: logged with its ids and dropped;
- any other (still running when the process died, or ended and not cleaned yet) waits for a
  slot configured with the same bot token (the hashes are compared), and is then handed to
  the `Cleanup` like any failed upload, with a search of its channel when a post may have
  stored a message under an id nobody learned (always, for one that was still running: a
  post may have been at Discord when the process died). What the clean-up cannot delete
  stays in the journal for the next start. One of another token is left alone.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from ..discord.store import DiscordStore
from ..metrics import Metrics
from .cleanup import Cleanup, Orphans, created_at
from .journal import Journal, JournaledUpload, State

log = logging.getLogger(__name__)

KEEP_FOR = 14 * 24 * 3600.0  # seconds an upload's messages are tried for, from its start


def expires(left: JournaledUpload) -> float:
    """When the journal gives up on `left` (Unix time)."""
    return created_at(str(left.record.began)) + KEEP_FOR


def orphans(left: JournaledUpload) -> Orphans:
    """What the clean-up is to delete of `left`."""
    if left.kept:  # a succeeded upload's stray copies: every id its finish named stays
        why = "stray copies of a successful upload, whose process stopped before deleting them"
        since, kept = left.record.began, frozenset(left.kept)
        return Orphans(left.record.upload_id, left.message_ids, why, since, kept)
    search = left.search or left.state is State.RUNNING
    why = (
        "its process stopped while it was running"
        if left.state is State.RUNNING
        else "its process stopped before deleting them"
    )
    return Orphans(
        left.record.upload_id,
        left.message_ids,
        why,
        search_since=left.record.began if search else None,
    )


class Leftovers:
    """The uploads a stopped process left, each waiting for a slot with its bot token."""

    def __init__(self, journal: Journal, cleanup: Cleanup, metrics: Metrics) -> None:
        """Sort what `journal` holds: keep the succeeded, give up the expired, wait with the
        others."""
        self._cleanup = cleanup
        self._metrics = metrics
        self._waiting: dict[str, list[JournaledUpload]] = {}  # by the token's SHA-256
        self._told: set[str] = set()  # upload ids logged as of another token
        now = time.time()
        for left in journal.uploads():
            expired = now > expires(left)
            if left.state is State.SUCCEEDED and (not left.kept or expired):
                self._keep(left)
                journal.forget(left.record.upload_id)
            elif expired:
                self._give_up(left)
                journal.forget(left.record.upload_id)
            else:
                self._wait(left)
        self._count()

    def _keep(self, left: JournaledUpload) -> None:
        log.info(
            "kept the %d messages of an upload whose process stopped as it reported its "
            "success: the manager may list them (channel %s)",
            len(left.message_ids),
            left.record.channel_id,
            extra={"upload_id": left.record.upload_id},
        )

    def _give_up(self, left: JournaledUpload) -> None:
        self._metrics.journal_abandoned.inc(len(left.message_ids))
        log.warning(
            "gave up deleting the %d messages a stopped process left in channel %s: no slot "
            "was given their bot token, or Discord refused, for %d days: %s",
            len(left.message_ids),
            left.record.channel_id,
            KEEP_FOR // 86400,
            " ".join(left.message_ids),
            extra={"upload_id": left.record.upload_id},
        )

    def _wait(self, left: JournaledUpload) -> None:
        self._waiting.setdefault(left.record.token_sha256, []).append(left)
        if left.kept:
            log.info(
                "a stopped process left a successful upload's stray copies in channel %s: "
                "searched for and deleted once a slot is configured with its bot token",
                left.record.channel_id,
                extra={"upload_id": left.record.upload_id},
            )
            return
        log.info(
            "a stopped process left this upload unfinished: %d messages in channel %s%s; "
            "deleted once a slot is configured with its bot token",
            len(left.message_ids),
            left.record.channel_id,
            ", and maybe more (the channel will be searched)"
            if orphans(left).search_since is not None
            else "",
            extra={"upload_id": left.record.upload_id},
        )

    def configured(self, store: DiscordStore) -> None:
        """A slot was configured: delete what was left with its bot token."""
        for left in self._waiting.pop(store.client.token_sha256, []):
            self._cleanup.delete(store.in_channel(left.record.channel_id), orphans(left))
        for lefts in self._waiting.values():
            for left in lefts:
                self._leave_alone(left)
        self._count()

    def _leave_alone(self, left: JournaledUpload) -> None:
        """Say once that `left` is of another bot token than the slots' so far."""
        if left.record.upload_id in self._told:
            return
        self._told.add(left.record.upload_id)
        log.warning(
            "left alone: a stopped process left this upload's messages with another bot token "
            "than this slot's (channel %s); kept for a slot with that token, now or at a later "
            "start (one after %s UTC gives it up): %s",
            left.record.channel_id,
            datetime.fromtimestamp(expires(left), UTC).strftime("%Y-%m-%d %H:%M"),
            " ".join(left.message_ids),
            extra={"upload_id": left.record.upload_id},
        )

    def _count(self) -> None:
        self._metrics.journal_waiting.set(sum(len(lefts) for lefts in self._waiting.values()))
