"""Nothing a client sends can write a log line of its own or steer the terminal showing the
log: control characters in what it sent are logged escaped, in both formats."""

from __future__ import annotations

import json
from asyncio.subprocess import PIPE

import httpx
import pytest
from conftest import CHANNEL, KEY, SMALL_CHUNK, TOKEN, post_chunk, stopped_stderr

from service.config import Settings
from service.local.driver import spawn_service
from service.local.manager import ManagerStandIn

FORGED_TIME = "2030-01-01T00:00:00.000Z"
NEWLINE_ID = f"x]\n{FORGED_TIME} ERROR service.manager.link: FORGED ["
ESCAPE_ID = f"x\x1b[2K\r{FORGED_TIME} ERROR FORGED"


def shown(stderr: str, log_format: str) -> str:
    """What a person reading the log sees: the text as it is, or each JSON line's values."""
    if log_format == "text":
        return stderr
    entries = [json.loads(line) for line in stderr.splitlines()]
    return "\n".join(str(value) for entry in entries for value in entry.values())


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_forged_id_or_chunk_field_stays_on_its_own_line_escaped(
    settings: Settings, manager: ManagerStandIn, client: httpx.AsyncClient, log_format: str
) -> None:
    process = await spawn_service(settings, stderr=PIPE, LOG_FORMAT=log_format)
    try:
        link = await manager.next_service()
        await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY)
        upload_id, _ = await link.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        url, data = link.own_address, bytes(SMALL_CHUNK)
        for forged in (NEWLINE_ID, ESCAPE_ID):
            assert (await post_chunk(client, url, forged, 0, data)).status_code == 404
            assert (await post_chunk(client, url, upload_id, forged, data)).status_code == 400
    finally:
        stderr = await stopped_stderr(process)

    seen = shown(stderr, log_format)
    assert "chunk refused: 404" in seen and "chunk refused: 400" in seen
    assert not [line for line in seen.split("\n") if line.startswith(FORGED_TIME)]
    assert "\r" not in seen and "\x1b" not in seen
    assert f"\\n{FORGED_TIME}" in seen and f"\\x1b[2K\\r{FORGED_TIME}" in seen
