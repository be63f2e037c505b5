"""The journal's file (names, locks, taking over, setting aside) and what a start does with
the uploads it holds, on real SQLite files; Discord is not needed for any of it."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.intake.answers import REFUSAL_REASONS
from service.metrics import Metrics
from service.uploads.cleanup import Cleanup, snowflake_at
from service.uploads.journal import Journal, State, UploadRecord, open_journal
from service.uploads.journal_files import journal_name
from service.uploads.leftovers import Leftovers, orphans
from service.uploads.outcome import Outcome

NAME = "journal-pod-0-8080"
TOKEN_HASH = "ab" * 32


def record(upload_id: str = "upload-1", *, days_ago: float = 0.0) -> UploadRecord:
    began = snowflake_at(time.time() - days_ago * 86400 - 300)
    return UploadRecord(upload_id, "1100000000000000001", TOKEN_HASH, began)


def files(state_dir: Path) -> list[str]:
    return sorted(path.name for path in state_dir.iterdir())


KILLED_WRITER = """
import os, signal, sys, time
from pathlib import Path
from service.uploads.journal import Journal, State, UploadRecord
journal = Journal.open(Path(sys.argv[1]), sys.argv[2])
running = UploadRecord("running", "1100000000000000001", "ab" * 32, 1)
ended = UploadRecord("ended", "1100000000000000001", "ab" * 32, 2)
for upload in (running, ended):
    journal.began(upload)
journal.stored(running, "1200000000000000001")
journal.stored(ended, "1200000000000000002")
journal.unsure(ended)
journal.ended("ended", State.FAILED)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_is_journaled_survives_sigkill(tmp_path: Path) -> None:
    writer = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), NAME])
    assert writer.returncode == -signal.SIGKILL
    journal = Journal.open(tmp_path, NAME)  # its lock went with the process
    left = {upload.record.upload_id: upload for upload in journal.uploads()}
    assert left["running"].state is State.RUNNING and not left["running"].search
    assert left["running"].message_ids == ("1200000000000000001",)
    assert left["running"].record.channel_id == "1100000000000000001"
    assert left["ended"].state is State.FAILED and left["ended"].search
    assert left["ended"].message_ids == ("1200000000000000002",)
    journal.close()


def test_the_journal_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    Journal.open(tmp_path, NAME).close()
    with sqlite3.connect(tmp_path / f"{NAME}.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_post_stored_after_the_clean_up_forgot_the_upload_brings_it_back(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path, NAME)
    upload = record()
    journal.began(upload)
    journal.ended(upload.upload_id, State.FAILED)
    journal.forget(upload.upload_id)
    journal.stored(upload, "1200000000000000003")
    [left] = journal.uploads()
    assert left.record == upload and left.message_ids == ("1200000000000000003",)
    journal.close()


def test_deleted_messages_leave_the_journal_and_those_left_stay(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, NAME)
    upload = record()
    journal.began(upload)
    for message_id in ("1200000000000000001", "1200000000000000002"):
        journal.stored(upload, message_id)
    journal.deleted(upload.upload_id, ["1200000000000000001"])
    journal.left(upload.upload_id, ["1200000000000000009"], search=True)
    [left] = journal.uploads()
    assert left.message_ids == ("1200000000000000002", "1200000000000000009") and left.search
    journal.forget(upload.upload_id)
    assert journal.uploads() == []
    journal.close()


def test_a_second_process_with_the_same_name_takes_another_and_leaves_the_first_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = Journal.open(tmp_path, NAME)
    first.began(record())
    second = Journal.open(tmp_path, NAME)
    assert second.path == tmp_path / f"{NAME}-2.sqlite"
    assert second.uploads() == [] and len(first.uploads()) == 1
    assert "another process holds the journal" in caplog.text
    first.close()
    second.close()


def test_a_journal_no_process_holds_is_taken_over_and_removed(tmp_path: Path) -> None:
    old = Journal.open(tmp_path, "journal-old-host-8080")
    old.began(record("from the old host"))
    old.close()
    journal = Journal.open(tmp_path, NAME)
    assert [upload.record.upload_id for upload in journal.uploads()] == ["from the old host"]
    journal.close()
    assert not [name for name in files(tmp_path) if "old-host" in name]


def test_a_journal_sqlite_cannot_read_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / f"{NAME}.sqlite").write_bytes(b"garbage" * 1000)
    journal = Journal.open(tmp_path, NAME)
    assert journal.uploads() == []
    journal.close()
    assert [name for name in files(tmp_path) if ".corrupt-" in name]
    [line] = [r for r in caplog.records if r.name == "service.uploads.journal_files"]
    assert line.levelno == logging.WARNING and "set aside" in line.getMessage()


def test_a_state_dir_that_cannot_be_used_runs_without_a_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    journal = open_journal(not_a_directory, 8080)
    assert not journal.durable
    assert "cannot hold a journal" in caplog.text
    journal.close()


def test_the_name_is_the_host_and_port_in_safe_characters() -> None:
    assert journal_name("upload-3", 8080) == "journal-upload-3-8080"
    assert journal_name("a/b c", 1) == "journal-a_b_c-1"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(REFUSAL_REASONS, Outcome)


def test_a_start_keeps_a_success_gives_up_the_expired_and_waits_with_the_rest(
    tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    journal = Journal.open(tmp_path, NAME)
    succeeded, expired, waiting = record("s"), record("e", days_ago=15), record("w")
    for number, upload in enumerate((succeeded, expired, waiting)):
        journal.began(upload)
        journal.stored(upload, f"120000000000000000{number}")
    journal.ended("s", State.SUCCEEDED)

    Leftovers(journal, Cleanup(metrics, journal), metrics)
    assert [upload.record.upload_id for upload in journal.uploads()] == ["w"]
    assert metrics.registry.get_sample_value("upload_journal_uploads_waiting") == 1
    assert metrics.registry.get_sample_value("upload_journal_messages_abandoned_total") == 1
    by_upload = {getattr(r, "upload_id", None): r for r in caplog.records}
    assert "kept the 1 messages" in by_upload["s"].getMessage()
    assert by_upload["e"].levelno == logging.WARNING and "gave up" in by_upload["e"].getMessage()
    journal.close()


def test_the_channel_is_searched_for_an_upload_that_was_running_or_had_an_unsure_post(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path, NAME)
    for upload_id, state, unsure in (
        ("running", State.RUNNING, False),
        ("unsure", State.FAILED, True),
        ("known", State.FAILED, False),
    ):
        journal.began(record(upload_id))
        if unsure:
            journal.unsure(record(upload_id))
        journal.ended(upload_id, state)
    searched = {u.record.upload_id: orphans(u).search_since is not None for u in journal.uploads()}
    assert searched == {"running": True, "unsure": True, "known": False}
    journal.close()


def test_a_successful_upload_with_strays_keeps_the_ids_its_finish_named_until_forgotten(
    tmp_path: Path,
) -> None:
    """A start deletes every message of such an upload but those its finish named: they are
    written at once, all of them (the journal may have missed one as it was stored), and
    stay while a post of the upload is at Discord as its clean-up ends."""
    journal = Journal.open(tmp_path, NAME)
    upload, named = record(), ("1200000000000000001", "1200000000000000002")
    journal.began(upload)
    journal.stored(upload, named[0])  # the other one's write the journal missed
    journal.succeeded(upload.upload_id)
    journal.strays(upload.upload_id, named)
    journal.left(upload.upload_id, ["1200000000000000009"], search=True)  # a stray not deleted
    with journal.posting(upload.upload_id):
        journal.forget(upload.upload_id)
    [left] = journal.uploads()
    assert (left.state, left.kept, left.search) == (State.SUCCEEDED, named, True)
    stray = orphans(left)
    assert stray.kept == frozenset(named) and stray.search_since == upload.began
    journal.forget(upload.upload_id)
    assert journal.uploads() == []
    journal.close()


def test_the_ids_a_success_named_are_taken_over_with_a_stopped_processs_journal(
    tmp_path: Path,
) -> None:
    """From a journal with them, and from one written before they were kept at all."""
    named = ("1200000000000000001",)
    others = [Journal.open(tmp_path, f"journal-other-{n}") for n in (0, 1)]  # both held
    for other, upload_id in zip(others, ("with", "before"), strict=True):
        other.began(record(upload_id))
        other.succeeded(upload_id)
        other.strays(upload_id, named)
    others[1]._db.execute("DROP TABLE kept")
    for other in others:
        other.close()
    journal = Journal.open(tmp_path, NAME)
    assert {u.record.upload_id: u.kept for u in journal.uploads()} == {
        "with": named,
        "before": (),
    }
    journal.close()
