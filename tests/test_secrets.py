"""The bot token, the encryption key and the service password never reach a log."""

from __future__ import annotations

import base64
import logging
import os

import pytest
from conftest import CHANNEL, KEY, PASSWORD, SMALL_CHUNK, TOKEN, HarnessFactory

from service.local.browser import upload
from service.local.discord_api import Fault


async def test_a_full_run_with_failures_logs_no_secret(
    start_service: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = await start_service(upload_inactivity_timeout=0.3)
    await harness.link.configure(token="wrong-" + TOKEN, channel_id=CHANNEL, crypto_key=KEY)
    await harness.configure()
    data = os.urandom(3 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=429), Fault(status=503), Fault(drop=True))
    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    await harness.link.next_finish()
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=403))
    await harness.post(upload_id, 0, data[:SMALL_CHUNK])
    await harness.link.next_finish()
    await harness.link.close()  # reconnects log the manager address
    await harness.service.shutdown()

    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "upload" in text  # the capture worked
    for secret in (TOKEN, PASSWORD, base64.b64encode(KEY).decode(), KEY.hex()):
        assert secret not in text
