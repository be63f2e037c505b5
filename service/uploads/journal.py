"""A durable journal of the uploads in progress, so that what a killed process left on
Discord can be deleted by the next one (STATE_DIR).

For each upload the journal holds its channel, the SHA-256 of its bot token (never the
token), the snowflake it began at and the ids of the messages it stored, each written before
the chunk is answered 200; whether a post went out without a definite answer (its message
may exist under an id nobody learned); and how it ended: `succeeded` is written before the
success finish packet is sent, `failed` when it ended otherwise. A succeeded upload's rows
are dropped once its finish packet went out, unless a post may have left a stray copy: then
the ids its finish named are `kept` (a table of their own, which a version before it
ignores) until its clean-up has searched for the others. A failed upload's rows are dropped
once the clean-up deleted its messages and no post of it is at Discord (until then it is
kept, to be searched for). What is left when the process starts is what its previous life
did not finish.

The file is SQLite in WAL mode with `synchronous=NORMAL`: a commit is written to the
operating system, not flushed to the disk (20 to 30 microseconds here, against 1.4 ms for
FULL's flush on every chunk, which would stall the event loop). It survives the process
being killed (SIGKILL, the OOM killer, a crash) but may lose the last commits if the
machine loses power; it is never left inconsistent. All calls run inline, from the event
loop: one connection, one writer. Which file, its lock, taking over a stopped process's
journal and setting aside one SQLite cannot read: `journal_files.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .journal_files import claim, connect, journal_name, ready, take_over

log = logging.getLogger(__name__)

ADD_UPLOAD = (
    "INSERT OR IGNORE INTO uploads (upload_id, channel_id, token_sha256, began) "
    "VALUES (:upload_id, :channel_id, :token_sha256, :began)"
)
ADD_MESSAGE = "INSERT OR IGNORE INTO messages (upload_id, message_id) VALUES (?, ?)"
# Only for an upload the journal still holds (not a successful one's stray copies).
KEEP_MESSAGE = (
    "INSERT OR IGNORE INTO messages (upload_id, message_id) "
    "SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM uploads WHERE upload_id = ?1)"
)
SET_STATE = "UPDATE uploads SET state = ? WHERE upload_id = ?"
SET_SEARCH = "UPDATE uploads SET search = ? WHERE upload_id = ?"
DROP_MESSAGE = "DELETE FROM messages WHERE upload_id = ? AND message_id = ?"
DROP_MESSAGES = "DELETE FROM messages WHERE upload_id = ?"
# The ids a succeeded upload's finish named, for the search for its stray copies.
KEEP_NAMED = (
    "INSERT OR IGNORE INTO kept (upload_id, message_id) SELECT ?1, ?2 WHERE EXISTS "
    "(SELECT 1 FROM uploads WHERE upload_id = ?1 AND state = 'succeeded')"
)
DROP_KEPT = "DELETE FROM kept WHERE upload_id = ?"
ALL_KEPT = "SELECT upload_id, message_id FROM kept"
DROP_UPLOAD = "DELETE FROM uploads WHERE upload_id = ?"
ALL_UPLOADS = (
    "SELECT upload_id, channel_id, token_sha256, began, state, search FROM uploads ORDER BY began"
)
ALL_MESSAGES = "SELECT upload_id, message_id FROM messages ORDER BY length(message_id), message_id"
STATE_OF = "SELECT state FROM uploads WHERE upload_id = ?"


class State(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # written before the success finish packet is sent
    FAILED = "failed"  # ended otherwise: its messages are to be deleted


@dataclass(frozen=True)
class UploadRecord:
    """What identifies an upload's messages on Discord."""

    upload_id: str
    channel_id: str
    token_sha256: str
    began: int  # a snowflake: the channel is searched for its messages from here


@dataclass(frozen=True)
class JournaledUpload:
    """An upload as the journal holds it."""

    record: UploadRecord
    state: State
    search: bool  # a post went out without a definite answer
    message_ids: tuple[str, ...]
    # Succeeded, with the ids its finish named: a post may have left stray copies.
    kept: tuple[str, ...] = ()


def open_journal(state_dir: Path | None, port: int) -> Journal:
    """This process's journal in `state_dir`, or one in memory when it is unset or unusable
    (logged as an error: the service runs, without the protection)."""
    if state_dir is None:
        return Journal.in_memory()
    try:
        return Journal.open(state_dir, journal_name(socket.gethostname(), port))
    except (OSError, sqlite3.Error) as error:
        log.error(
            "STATE_DIR %s cannot hold a journal (%s): running without one, so what a killed "
            "process leaves on Discord is not deleted by the next start",
            state_dir,
            error,
        )
        return Journal.in_memory()


class Journal:
    def __init__(
        self, db: sqlite3.Connection, path: Path | None = None, lock: int | None = None
    ) -> None:
        self._db = db
        self.path = path  # None: in memory, nothing survives the process
        self._lock = lock
        self._failing = False  # the last write failed: said once, until one succeeds again
        self._posting: Counter[str] = Counter()  # posts at Discord, by upload id

    @classmethod
    def in_memory(cls) -> Journal:
        return cls(ready(sqlite3.connect(":memory:")))

    @classmethod
    def open(cls, state_dir: Path, name: str) -> Journal:
        """Claim a journal in `state_dir` and take over those no live process holds; raise
        `OSError` if the directory cannot be used."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path, lock = claim(state_dir, name)
        try:
            journal = cls(connect(path), path, lock)
        except BaseException:
            os.close(lock)
            raise
        for other in sorted(state_dir.glob("journal-*.sqlite")):
            if other != path:
                take_over(journal._db, other)
        return journal

    @property
    def durable(self) -> bool:
        return self.path is not None

    # --- an upload's life ------------------------------------------------------------------

    def began(self, record: UploadRecord) -> None:
        with self._writing() as db:
            db.execute(ADD_UPLOAD, vars(record))

    def stored(self, record: UploadRecord, message_id: str) -> None:
        """A post stored `message_id` (the upload's row comes back if it was dropped: a
        post can outlive its upload's clean-up)."""
        with self._writing() as db:
            db.execute(ADD_UPLOAD, vars(record))
            db.execute(ADD_MESSAGE, (record.upload_id, message_id))

    def unsure(self, record: UploadRecord) -> None:
        """A post went out without a definite answer: the channel is to be searched."""
        with self._writing() as db:
            db.execute(ADD_UPLOAD, vars(record))
            db.execute(SET_SEARCH, (1, record.upload_id))

    @contextlib.contextmanager
    def posting(self, upload_id: str) -> Iterator[None]:
        """A post of the upload is at Discord: until it is answered, an upload that ended is
        kept to be searched for, as a killed process would never learn its message's id."""
        self._posting[upload_id] += 1
        try:
            yield
        finally:
            self._posting -= Counter({upload_id: 1})

    def ended(self, upload_id: str, state: State) -> None:
        with self._writing() as db:
            db.execute(SET_STATE, (state, upload_id))
            if self._posting[upload_id]:
                db.execute(SET_SEARCH, (1, upload_id))

    def succeeded(self, upload_id: str) -> bool:
        """Mark the upload succeeded, before its success finish packet is sent. False if the
        journal holds it in another state all the same (the disk refused the mark, or cannot
        be read): a start after the process is killed would delete what the manager records."""
        self.ended(upload_id, State.SUCCEEDED)
        try:
            row = self._db.execute(STATE_OF, (upload_id,)).fetchone()
        except sqlite3.Error:
            return False
        return row is None or row[0] == State.SUCCEEDED

    def strays(self, upload_id: str, kept: Iterable[str]) -> None:
        """The succeeded upload may have left stray copies: it stays, with the ids its finish
        named (`kept`), until its clean-up has searched for the others. One transaction: a
        start never sees it with some of them."""
        with self._writing() as db:
            db.executemany(KEEP_NAMED, [(upload_id, i) for i in kept])
            db.execute(SET_SEARCH, (1, upload_id))

    # --- the clean-up ----------------------------------------------------------------------

    def deleted(self, upload_id: str, message_ids: Iterable[str]) -> None:
        with self._writing() as db:
            db.executemany(DROP_MESSAGE, [(upload_id, i) for i in message_ids])

    def left(self, upload_id: str, message_ids: Iterable[str], *, search: bool) -> None:
        """The clean-up could not delete `message_ids` (or search the channel): kept for the
        next start."""
        search = search or self._posting[upload_id] > 0
        with self._writing() as db:
            db.executemany(KEEP_MESSAGE, [(upload_id, i) for i in message_ids])
            db.execute(SET_SEARCH, (int(search), upload_id))

    def forget(self, upload_id: str) -> None:
        """Drop the upload, unless a post of it is at Discord: then it stays, to be searched
        for. That post's clean-up forgets it again if it stores a message; one that fails
        leaves it to the next start's search (a post cut off by the shutdown may be stored)."""
        with self._writing() as db:
            db.execute(DROP_MESSAGES, (upload_id,))
            if self._posting[upload_id]:
                db.execute(SET_SEARCH, (1, upload_id))
            else:
                db.execute(DROP_KEPT, (upload_id,))
                db.execute(DROP_UPLOAD, (upload_id,))

    def uploads(self) -> list[JournaledUpload]:
        """Every upload the journal holds, oldest first."""
        messages: dict[str, list[str]] = {}
        for upload_id, message_id in self._db.execute(ALL_MESSAGES):
            messages.setdefault(upload_id, []).append(message_id)
        kept: dict[str, list[str]] = {}
        for upload_id, message_id in self._db.execute(ALL_KEPT):
            kept.setdefault(upload_id, []).append(message_id)
        return [
            JournaledUpload(
                UploadRecord(upload_id, channel_id, token_sha256, began),
                State(state),
                bool(search),
                tuple(messages.get(upload_id, ())),
                tuple(sorted(kept.get(upload_id, ()))),
            )
            for upload_id, channel_id, token_sha256, began, state, search in self._db.execute(
                ALL_UPLOADS
            )
        ]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction. One the disk does not take (full, failing, read-only) is logged
        and dropped, not raised: the chunk it records is stored on Discord all the same, so
        the upload goes on without this protection rather than failing every chunk."""
        try:
            with self._db:
                yield self._db
        except sqlite3.OperationalError as error:
            if not self._failing:
                log.error(
                    "the journal %s cannot be written (%s): uploads go on, but what a killed "
                    "process leaves on Discord until it can be may not be deleted by the next "
                    "start",
                    self.path,
                    error,
                )
            self._failing = True
            return
        if self._failing:
            log.warning("the journal %s is written again", self.path)
            self._failing = False

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
