"""The bot token, the encryption key and the service password never reach a log or an answer."""

from __future__ import annotations

import base64
import logging
import os

import pytest
from conftest import CHANNEL, KEY, PASSWORD, SMALL_CHUNK, TOKEN, HarnessFactory

from service.local.browser import upload
from service.local.discord_api import Fault
from service.local.loopback import free_port


async def test_a_full_run_with_failures_shows_no_secret(
    start_service: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = await start_service(upload_inactivity_timeout=0.3)
    answers: list[object] = []  # what the manager and the clients were told
    bad = await harness.link.configure(token="wrong-" + TOKEN, channel_id=CHANNEL, crypto_key=KEY)
    answers.append(bad)
    await harness.configure()
    data = os.urandom(3 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=429), Fault(status=503), Fault(drop=True))
    await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK)
    answers.append(await harness.link.next_finish())
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=403))
    answers.append(await harness.post(upload_id, 0, data[:SMALL_CHUNK]))
    answers.append(await harness.link.next_finish())
    answers.append(await harness.post(upload_id, 1, data[SMALL_CHUNK:]))
    await harness.link.close()  # reconnects log the manager address
    await harness.service.shutdown()

    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "upload" in text  # the capture worked
    assert bad["success"] is False and "token" in bad["message"]
    text += "\n".join(map(str, answers))
    for secret in (TOKEN, PASSWORD, base64.b64encode(KEY).decode(), KEY.hex()):
        assert secret not in text


async def test_the_redis_password_never_reaches_a_log(
    start_service: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """REDIS_URL may hold a user and password: the logs name its host only, also when Redis
    refuses or does not answer (here nothing listens there: the service does without)."""
    caplog.set_level(logging.DEBUG)
    secret = "redis-pass-" + os.urandom(6).hex()
    port = free_port()
    harness = await start_service(redis_url=f"rediss://uploader:{secret}@127.0.0.1:{port}/0")
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    assert (await harness.post(upload_id, 0, data))[0] == 200
    await harness.service.shutdown()

    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert f"127.0.0.1:{port}" in text
    assert secret not in text and "uploader" not in text
