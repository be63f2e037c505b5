"""Several job slots in one process, and what operators see: health, readiness, metrics, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import aiohttp
import pytest
from conftest import KEY, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, reassembled

from service.local.browser import chunk_form, upload
from service.local.discord_api import DiscordStandIn, Fault
from service.local.driver import parse_metrics
from service.local.manager import ManagerStandIn, ServiceConnection
from service.logs import JsonFormatter

CHANNELS = [f"12000000000000000{i:02d}" for i in range(4)]


async def configured_slots(
    start_service: HarnessFactory, manager: ManagerStandIn, count: int
) -> list[ServiceConnection]:
    first = await start_service(slots=count)
    links = [first.link] + [await manager.next_service() for _ in range(count - 1)]
    for link, channel in zip(links, CHANNELS, strict=False):
        reply = await link.configure(token=TOKEN, channel_id=channel, crypto_key=KEY)
        assert reply == {"success": True}
    return links


async def start_jobs(links: list[ServiceConnection]) -> list[tuple[str, bytes]]:
    jobs = []
    for i, link in enumerate(links):
        data = os.urandom(3 * SMALL_CHUNK - i)
        upload_id, reply = await link.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
        assert reply == {"success": True}
        jobs.append((upload_id, data))
    return jobs


async def test_four_slots_run_four_jobs_through_one_port_each_in_its_channel(
    start_service: HarnessFactory,
    manager: ManagerStandIn,
    discord: DiscordStandIn,
    http: aiohttp.ClientSession,
) -> None:
    links = await configured_slots(start_service, manager, 4)
    assert len({link.own_address for link in links}) == 1  # one port, one address
    jobs = await start_jobs(links)

    await asyncio.gather(
        *(
            upload(http, link.own_address, upload_id, data, SMALL_CHUNK)
            for link, (upload_id, data) in zip(links, jobs, strict=True)
        )
    )
    for link, channel, (_, data) in zip(links, CHANNELS, jobs, strict=True):
        finish = await link.next_finish()
        assert finish["success"] is True and finish["channel"] == channel
        assert reassembled(discord, finish, channel) == data
        assert len(discord.messages(channel)) == 3


async def test_one_slot_losing_its_link_leaves_the_others_running(
    start_service: HarnessFactory,
    manager: ManagerStandIn,
    discord: DiscordStandIn,
    http: aiohttp.ClientSession,
) -> None:
    links = await configured_slots(start_service, manager, 4)
    jobs = await start_jobs(links)
    address = links[0].own_address
    for upload_id, data in jobs:  # every job has begun
        form = chunk_form(upload_id, 0, data[:SMALL_CHUNK])
        async with http.post(address, data=form) as response:
            assert response.status == 200

    await links[0].close()
    replacement = await manager.next_service()  # slot 0 reconnects on its own
    await asyncio.gather(
        *(upload(http, address, upload_id, data, SMALL_CHUNK) for upload_id, data in jobs[1:])
    )
    for link, channel, (_, data) in zip(links[1:], CHANNELS[1:], jobs[1:], strict=True):
        assert reassembled(discord, await link.next_finish(), channel) == data
    assert links[0].finishes == []
    _, reply = await replacement.start_upload(size=1)
    assert "not been configured" in reply["message"]


async def test_health_readiness_and_metrics(
    start_service: HarnessFactory, http: aiohttp.ClientSession
) -> None:
    harness = await start_service()
    base = f"http://127.0.0.1:{harness.service.port}"
    async with http.get(f"{base}/healthz") as response:
        assert response.status == 200
    async with http.get(f"{base}/readyz") as response:
        assert response.status == 503
        assert "configured" in (await response.json())["why"]

    await harness.configure()
    async with http.get(f"{base}/readyz") as response:
        assert response.status == 200 and (await response.json())["ready"] is True

    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=429, retry_after=0.01), Fault(status=503))
    assert (await harness.post(upload_id, 5, data[:SMALL_CHUNK]))[0] == 400
    await upload(http, harness.address, upload_id, data, SMALL_CHUNK)
    await harness.link.next_finish()

    metrics_url = f"http://127.0.0.1:{harness.service.metrics_port}/metrics"
    async with http.get(metrics_url) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        metrics = parse_metrics(await response.text())
    assert metrics["upload_chunks_stored_total"] == 2
    assert metrics["upload_stored_bytes_total"] == len(data)
    assert metrics['upload_chunks_refused_total{reason="invalid_request"}'] == 1
    route = 'route="POST /channels/{channel_id}/messages"'
    assert metrics[f'upload_discord_requests_total{{{route},status="429"}}'] == 1
    assert metrics[f'upload_discord_requests_total{{{route},status="503"}}'] == 1
    assert metrics["upload_discord_retries_total"] == 1
    assert metrics['upload_jobs_total{outcome="succeeded"}'] == 1
    assert metrics[f"upload_discord_request_duration_seconds_count{{{route}}}"] >= 4
    assert metrics["upload_slots_connected"] == 1
    assert metrics["upload_slots_busy"] == 0


async def test_log_lines_carry_slot_upload_and_chunk(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upload_id = await harness.start(SMALL_CHUNK)
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    await harness.link.next_finish()

    stored = next(r for r in caplog.records if r.getMessage().startswith("chunk stored"))
    entry = json.loads(JsonFormatter().format(stored))
    assert entry["slot"] == "slot-0"
    assert entry["upload_id"] == upload_id
    assert entry["chunk"] == 0
    assert entry["level"] == "INFO" and "message" in entry


async def test_an_upload_running_on_one_slot_is_refused_on_another(
    start_service: HarnessFactory,
    manager: ManagerStandIn,
    discord: DiscordStandIn,
    http: aiohttp.ClientSession,
) -> None:
    first, second = await configured_slots(start_service, manager, 2)
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id, reply = await first.start_upload(size=len(data), chunk_size=SMALL_CHUNK)
    assert reply == {"success": True}

    _, again = await second.start_upload(
        size=len(data), chunk_size=SMALL_CHUNK, upload_id=upload_id
    )
    assert again["success"] is False
    assert upload_id in again["message"] and "running on another slot" in again["message"]

    await upload(http, first.own_address, upload_id, data, SMALL_CHUNK)
    finish = await first.next_finish()
    assert finish["success"] is True and finish["channel"] == CHANNELS[0]
    assert reassembled(discord, finish, CHANNELS[0]) == data
    assert discord.messages(CHANNELS[1]) == []
    _, free = await second.start_upload(size=1, chunk_size=SMALL_CHUNK)
    assert free == {"success": True}  # the refusal left the second slot as it was
