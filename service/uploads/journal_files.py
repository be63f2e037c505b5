"""The journals' files in STATE_DIR; what is written in them: `journal.py`.

One journal per process: `journal-<host name>-<port>.sqlite` in STATE_DIR, locked (flock on
a `.lock` file beside it) for the process's life, so that a restarted instance finds its
own again and two processes never share one. A journal no live process holds (its process
stopped and the name will not come back, say after a container was recreated) is taken
over: its rows are merged into this process's journal, and the file removed. A file SQLite
cannot read is set aside as `<name>.corrupt-<time>`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

NAME_TRIES = 8  # names tried (journal-<host>-<port>, then -2, -3, ...) when others are held
FILE_SUFFIXES = ("", "-wal", "-shm")  # the files SQLite keeps for one journal

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    began INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'running',
    search INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    upload_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (upload_id, message_id)
) WITHOUT ROWID;
"""
# Came after the others: a journal written before it lacks it, and is given it (`{db}`).
KEPT_TABLE = """
CREATE TABLE IF NOT EXISTS {db}.kept (
    upload_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (upload_id, message_id)
) WITHOUT ROWID;
"""
HAS_UPLOADS = "SELECT count(*) FROM old.sqlite_master WHERE type = 'table' AND name = 'uploads'"
MERGE = (
    "INSERT OR IGNORE INTO main.uploads SELECT * FROM old.uploads",
    "INSERT OR IGNORE INTO main.messages SELECT * FROM old.messages",
    "INSERT OR IGNORE INTO main.kept SELECT * FROM old.kept",
)


def journal_name(hostname: str, port: int) -> str:
    """The journal's name for this host and PORT: the same after a restart."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", hostname) or "host"
    return f"journal-{host}-{port}"


def claim(state_dir: Path, name: str) -> tuple[Path, int]:
    """The first journal of `name`, `name-2`, ... that no other process holds, locked."""
    for attempt in range(1, NAME_TRIES + 1):
        stem = name if attempt == 1 else f"{name}-{attempt}"
        lock = _lock(state_dir / f"{stem}.lock")
        if lock is None:
            continue
        if attempt > 1:
            log.warning(
                "another process holds the journal %s in %s (the same host name and PORT): "
                "this one keeps %s.sqlite",
                name,
                state_dir,
                stem,
            )
        return state_dir / f"{stem}.sqlite", lock
    raise BlockingIOError(f"other processes hold the journals {name} to {name}-{NAME_TRIES}")


def connect(path: Path) -> sqlite3.Connection:
    """The journal at `path`, checked; a file SQLite cannot read is set aside for a new one."""
    try:
        return ready(sqlite3.connect(path))
    except sqlite3.DatabaseError as error:
        _set_aside(path, error)
        return ready(sqlite3.connect(path))


def ready(db: sqlite3.Connection) -> sqlite3.Connection:
    """`db` checked, in WAL mode with `synchronous=NORMAL`, with the journal's tables."""
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        _check(db, "main")
        db.executescript(SCHEMA + KEPT_TABLE.format(db="main"))
    except BaseException:
        db.close()
        raise
    return db


def take_over(db: sqlite3.Connection, other: Path) -> None:
    """Merge the journal of a stopped process into `db`'s, then remove its files."""
    lock_path = other.with_suffix(".lock")
    try:
        lock = _lock(lock_path)
        if lock is None:  # a live process's
            return
        try:
            _move_rows(db, other)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(lock)
    except OSError as error:  # this process's own journal works all the same
        log.warning("could not take over the journal %s: %s", other, error)


def _move_rows(db: sqlite3.Connection, other: Path) -> None:
    try:
        count = _merge(db, other)
    except sqlite3.DatabaseError as error:
        _set_aside(other, error)
        return
    log.info("took over the journal %s of a stopped process (%d uploads)", other, count)
    for suffix in FILE_SUFFIXES:
        Path(f"{other}{suffix}").unlink(missing_ok=True)


def _merge(db: sqlite3.Connection, other: Path) -> int:
    """Copy the rows of the journal at `other` into `db`; how many uploads it held."""
    db.execute("ATTACH DATABASE ? AS old", (str(other),))
    try:
        _check(db, "old")
        if db.execute(HAS_UPLOADS).fetchone() == (0,):
            return 0  # its process stopped before it wrote anything
        count = db.execute("SELECT count(*) FROM old.uploads").fetchone()[0]
        with db:
            db.execute(KEPT_TABLE.format(db="old"))
            for statement in MERGE:
                db.execute(statement)
        return int(count)
    finally:
        db.execute("DETACH DATABASE old")


def _lock(path: Path) -> int | None:
    """An exclusive lock on `path` (created if missing), held while its descriptor is open;
    None if another process holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _check(db: sqlite3.Connection, schema: str) -> None:
    result = db.execute(f"PRAGMA {schema}.quick_check").fetchall()
    if result != [("ok",)]:
        raise sqlite3.DatabaseError(f"quick_check: {'; '.join(row[0] for row in result[:3])}")


def _set_aside(path: Path, error: Exception) -> None:
    """Rename a journal SQLite cannot read (and its WAL files), keeping it for a person."""
    suffix = ".corrupt-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for part in (Path(f"{path}{extra}") for extra in FILE_SUFFIXES):
        if part.exists():
            part.rename(f"{part}{suffix}")
    log.warning(
        "the journal %s cannot be read (%s): set aside as %s%s, and the uploads it recorded "
        "are not cleaned up",
        path,
        error,
        path.name,
        suffix,
    )
