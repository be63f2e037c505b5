"""Logs an operator can follow: a line for every refused chunk, a request id on every line
of a request and on its answer, the slot, upload and chunk on every line that concerns them
(discord.py's own included), ISO 8601 UTC times, control characters escaped (a traceback
keeps its lines), and with LOG_FORMAT=json one JSON object a line from the running process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    CHANNEL,
    KEY,
    SMALL_CHUNK,
    TOKEN,
    Harness,
    HarnessFactory,
    refuse_journal_writes,
    stopped_stderr,
)

from service.config import Settings
from service.local.browser import chunk_form
from service.local.discord_api import Fault
from service.local.driver import spawn_service
from service.local.manager import ManagerStandIn
from service.logs import ContextFilter, JsonFormatter, TextFormatter


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captured records with the context `bind()` gives them, as the service's handler does."""
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(ContextFilter())
    return caplog


async def test_a_refused_chunk_leaves_one_line_with_its_request_id(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    upload_id = await harness.start(2 * SMALL_CHUNK)
    form = chunk_form(upload_id, 7, os.urandom(SMALL_CHUNK))
    headers = {"X-Request-ID": "req-from-the-proxy-1"}
    async with harness.http.post(harness.address, data=form, headers=headers) as answer:
        assert answer.status == 400
        assert answer.headers["X-Request-ID"] == "req-from-the-proxy-1"
    [line] = [r for r in logs.records if r.getMessage().startswith("chunk refused")]
    assert re.match(
        r"chunk refused: 400 invalid_request in [0-9.]+ s: chunk index 7", line.msg % line.args
    )
    assert line.request_id == "req-from-the-proxy-1"  # type: ignore[attr-defined]
    assert line.upload_id == upload_id  # type: ignore[attr-defined]
    assert line.slot == "slot-0"  # type: ignore[attr-defined]


async def test_an_unknown_upload_is_logged_and_a_request_id_generated(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    form = chunk_form("no-such-upload", 0, b"x")
    async with harness.http.post(harness.address, data=form) as answer:
        assert answer.status == 404
        request_id = answer.headers["X-Request-ID"]
        assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]
    [line] = [r for r in logs.records if r.getMessage().startswith("chunk refused")]
    assert "404 unknown_upload" in line.getMessage()
    assert line.request_id == request_id  # type: ignore[attr-defined]


async def test_discord_py_lines_carry_the_upload_and_chunk(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    logs.set_level(logging.DEBUG, logger="discord")
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(status=429, retry_after=0.01))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    ours = [r for r in logs.records if r.name.startswith("discord")]
    assert ours, "discord.py logged nothing about the post"
    for record in ours:
        assert record.upload_id == upload_id  # type: ignore[attr-defined]
        assert record.chunk == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_times_are_iso_8601_utc(formatter: logging.Formatter) -> None:
    record = logging.LogRecord("service", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1796000000.123
    line = formatter.format(record)
    if isinstance(formatter, JsonFormatter):
        line = json.loads(line)["time"]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.123Z", line)


async def test_an_id_that_names_no_running_upload_is_not_bound(
    harness: Harness, logs: pytest.LogCaptureFixture
) -> None:
    await harness.start(SMALL_CHUNK)
    form = chunk_form("x]\n2030-01-01T00:00:00.000Z ERROR forged [", 0, b"x")
    async with harness.http.post(harness.address, data=form) as answer:
        assert answer.status == 404
    [line] = [r for r in logs.records if r.getMessage().startswith("chunk refused")]
    assert not hasattr(line, "upload_id") and not hasattr(line, "slot")


CONTROLS = "a\nb\rc\x1b[31md\x7fe\x85f\u2028g\x00h\ti"
ESCAPED = "a\\nb\\rc\\x1b[31md\\x7fe\\x85f\\u2028g\\x00h\\ti"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_control_characters_in_message_and_context_are_escaped(
    formatter: logging.Formatter,
) -> None:
    record = logging.LogRecord("service", logging.INFO, __file__, 1, "got %s", (CONTROLS,), None)
    record.upload_id = CONTROLS
    record.chunk = 3
    line = formatter.format(record)
    if isinstance(formatter, JsonFormatter):
        entry = json.loads(line)
        assert entry["message"] == f"got {ESCAPED}"
        assert entry["upload_id"] == ESCAPED and entry["chunk"] == 3
    else:
        assert line.endswith(f": got {ESCAPED} [upload_id={ESCAPED} chunk=3]")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line


def test_a_traceback_keeps_its_lines_after_the_record_and_its_context() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord(
            "service", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    record.slot = "slot-0"
    first, *trace = TextFormatter().format(record).split("\n")
    assert first.endswith("ERROR service: failed [slot=slot-0]")
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-2:] == ["ValueError: bad", "value"]


async def test_log_format_json_gives_one_json_object_a_line(
    settings: Settings, manager: ManagerStandIn
) -> None:
    process = await spawn_service(settings, stderr=PIPE, LOG_FORMAT="json")
    assert process.stderr is not None
    try:
        await manager.next_service()
        while True:
            entry = json.loads(await process.stderr.readline())
            if "connected to the manager" in entry["message"]:
                break
        assert entry["slot"] == "slot-0" and entry["level"] == "INFO"
    finally:
        process.terminate()
        assert await process.wait() == 0


@pytest.mark.parametrize(
    ("head", "body", "named"),
    [
        ("Bad Header", b"", "Invalid header token"),
        ("X-Long: " + "a" * 9000, b"", "Got more than 8190 bytes"),
        ("Transfer-Encoding: chunked", b"zz\r\n", "Invalid character in chunk size"),
    ],
    ids=["bad header", "header too long", "bad chunk size"],
)
async def test_a_request_aiohttp_cannot_parse_is_one_info_line_naming_the_problem(
    harness: Harness, logs: pytest.LogCaptureFixture, head: str, body: bytes, named: str
) -> None:
    """A client's malformed request (a scanner's, say) gets aiohttp's 400, and the log one
    INFO line saying what was wrong: no ERROR, no traceback to page anyone."""
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.service.port)
    request = f"POST {harness.service.settings.own_path} HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n"
    writer.write(request.encode() + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()

    assert answer.startswith(b"HTTP/1.0 400 ")
    assert not [r for r in logs.records if r.levelno >= logging.WARNING or r.exc_info]
    (line,) = [r.getMessage() for r in logs.records if "malformed" in r.getMessage()]
    assert line.startswith("a malformed request from 127.0.0.1, answered 400: " + named)


async def test_an_upload_the_browser_or_the_manager_ended_is_an_info_line(
    start_service: HarnessFactory, logs: pytest.LogCaptureFixture
) -> None:
    """A job the user abandoned (no chunk for UPLOAD_INACTIVITY_TIMEOUT) or cancelled (the
    manager's abort) is nobody's fault here: INFO, as a client's refused chunk is."""
    harness = await start_service(upload_inactivity_timeout=0.2)
    await harness.configure()
    await harness.start(2 * SMALL_CHUNK)
    assert "No chunk was received" in (await harness.link.next_finish())["reason"]
    await harness.start(2 * SMALL_CHUNK)
    assert await harness.link.abort() == {"success": True}
    ended = [r for r in logs.records if r.getMessage().startswith("upload ended")]
    assert [(r.levelname, r.getMessage()) for r in ended] == [
        ("INFO", "upload ended: No chunk was received for 0.2 seconds"),
        ("INFO", "upload ended: it was aborted by the manager"),
    ]


async def test_an_upload_that_failed_on_our_side_is_an_error_line_naming_it(
    settings: Settings, manager: ManagerStandIn, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """docs/operations.md's runbook for `upload_jobs_total{outcome="failed"}` says the error
    lines name the job: the journal's own error line is said once, when the disk first
    refuses, so the upload's end must be one. Here the journal cannot mark the success."""
    process = await spawn_service(settings, stderr=PIPE, STATE_DIR=str(tmp_path))
    try:
        link = await manager.next_service()
        await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        upload_id, _ = await link.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        refuse_journal_writes(process.pid, tmp_path)
        form = chunk_form(upload_id, 0, os.urandom(SMALL_CHUNK))
        async with http.post(link.own_address, data=form) as answer:
            assert answer.status == 200
        assert "could not record" in (await link.next_finish())["reason"]
    finally:
        lines = (await stopped_stderr(process)).splitlines()
    [ended] = [line for line in lines if "upload ended" in line]
    assert " ERROR service.uploads.upload: upload ended: " in ended
    assert f"upload_id={upload_id}" in ended


async def test_a_client_over_the_chunks_in_flight_cap_is_an_info_line(
    start_service: HarnessFactory, logs: pytest.LogCaptureFixture
) -> None:
    """More chunks of one upload at once than CHUNKS_IN_FLIGHT_PER_UPLOAD (a browser sends 5)
    is the client's doing, answered 503 so that it retries: INFO, as its 4xx are, not a
    WARNING for every chunk a misbehaving client sends."""
    harness = await start_service(chunks_in_flight_per_upload=1)
    await harness.configure()
    upload_id = await harness.start(2 * SMALL_CHUNK)
    harness.discord.inject(Fault(hold=True))
    held = asyncio.create_task(harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))
    try:
        await harness.discord.wait_for_posts(1)
        assert (await harness.post(upload_id, 1, os.urandom(SMALL_CHUNK)))[0] == 503
    finally:
        harness.discord.release_held()
        assert (await held)[0] == 200
    [line] = [r for r in logs.records if r.getMessage().startswith("chunk refused")]
    assert "503 too_many_chunks" in line.getMessage() and line.levelname == "INFO"
