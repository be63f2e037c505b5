"""The bot token, the encryption key and the service password never reach a log or an answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from asyncio.subprocess import PIPE
from dataclasses import replace

import aiohttp
import httpx
import pytest
from conftest import (
    CHANNEL,
    KEY,
    PASSWORD,
    SMALL_CHUNK,
    TOKEN,
    HarnessFactory,
    stopped_stderr,
)

from service.config import Settings
from service.local.browser import upload
from service.local.discord_api import DiscordStandIn, Fault
from service.local.driver import spawn_service
from service.local.loopback import free_port
from service.local.manager import ManagerStandIn
from service.manager.link import travels_in_clear


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


PROXY_USER, PROXY_PASSWORD, QUERY_TOKEN = "proxy-user-3c1e", "proxy-pass-4f9a", "query-token-77c2"


def with_credentials(address: str) -> str:
    """`address` with what an operator may put in MANAGER_ADDRESS for a proxy: a user and
    password, and a token in the query string."""
    scheme, rest = address.split("://", 1)
    return f"{scheme}://{PROXY_USER}:{PROXY_PASSWORD}@{rest}?token={QUERY_TOKEN}"


async def read_until(stream: asyncio.StreamReader, text: str, lines: list[str]) -> None:
    """Read log lines into `lines` until one holds `text`."""
    while text not in (line := (await stream.readline()).decode()):
        assert line, f"the service ended before logging {text!r}"
        lines.append(line)
    lines.append(line)


@pytest.mark.parametrize("manager_is", ["absent", "refusing", "there"])
async def test_the_manager_address_is_shown_without_its_credentials_or_query(
    settings: Settings,
    manager: ManagerStandIn,
    client: httpx.AsyncClient,
    manager_is: str,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if manager_is == "absent":
            address = f"ws://127.0.0.1:{free_port()}/upload-service"
        elif (
            manager_is == "refusing"
        ):  # the handshake fails with 401: aiohttp's error quotes the URL
            refusing = ManagerStandIn(password="another-" + PASSWORD)
            address = (await stack.enter_async_context(refusing)).address
        else:
            address = manager.address
        shown = replace(settings, manager_address=with_credentials(address))
        process = await spawn_service(shown, stderr=PIPE)
        lines: list[str] = []
        try:
            assert process.stderr is not None
            if manager_is == "there":
                link = await manager.next_service()
                await read_until(process.stderr, "connected to the manager at", lines)
                await link.close()
                await read_until(process.stderr, "connected to the manager at", lines)
                readiness = ""
            else:
                await read_until(process.stderr, "cannot reach the manager at", lines)
                answer = await client.get(f"http://127.0.0.1:{settings.port}/readyz")
                readiness = answer.text
                assert "cannot reach the manager at " + address in readiness
        finally:
            lines.append(await stopped_stderr(process))

    text = "".join(lines) + readiness
    assert address in text
    for secret in (PROXY_USER, PROXY_PASSWORD, QUERY_TOKEN, PASSWORD):
        assert secret not in text


async def test_debug_logs_show_no_attachment_url_nor_message_text(
    settings: Settings,
    manager: ManagerStandIn,
    discord: DiscordStandIn,
    http: aiohttp.ClientSession,
) -> None:
    process = await spawn_service(settings, stderr=PIPE, LOG_LEVEL="DEBUG")
    try:
        link = await manager.next_service()
        await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=None)
        data = os.urandom(2 * SMALL_CHUNK)
        upload_id, _ = await link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        await upload(http, link.own_address, upload_id, data, SMALL_CHUNK)
        assert (await link.next_finish())["success"] is True
    finally:
        stderr = await stopped_stderr(process)

    assert "Using selector" in stderr  # asyncio's DEBUG line: the level took effect
    assert "chunk stored as message" in stderr
    assert f"{discord.origin}/attachments/" not in stderr
    assert all(message.content not in stderr for message in discord.messages(CHANNEL))


@pytest.mark.parametrize(
    ("address", "in_clear"),
    [
        ("ws://manager.example.com/upload-service", True),
        ("ws://manager:8080/", True),  # a Kubernetes Service: still a network
        ("ws://10.0.0.7:8080/", True),
        ("ws://[2001:db8::1]/", True),
        ("wss://manager.example.com/upload-service", False),
        ("ws://127.0.0.1:8080/", False),
        ("ws://127.3.2.1/", False),
        ("ws://[::1]:8080/", False),
        ("ws://localhost:8080/", False),
        ("ws://manager.localhost/", False),
    ],
)
def test_which_manager_addresses_carry_the_secrets_in_clear(address: str, in_clear: bool) -> None:
    assert travels_in_clear(address) is in_clear


async def test_a_ws_address_to_another_machine_is_warned_about_once_at_start(
    settings: Settings,
) -> None:
    elsewhere = "ws://192.0.2.1:9/upload-service"  # TEST-NET-1: never a real host
    process = await spawn_service(
        replace(settings, manager_address=elsewhere, slots=2), stderr=PIPE
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        await read_until(process.stderr, "accepting chunks", lines)
    finally:
        stderr = await stopped_stderr(process)
    warning = "WARNING service.manager.link: MANAGER_ADDRESS ws://192.0.2.1:9/upload-service"
    assert any(warning in line and "unencrypted" in line for line in lines)
    assert ("".join(lines) + stderr).count("unencrypted") == 1


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
