"""What an operator reads at /metrics: every series from the start, the chunk path's own
view (durations by outcome, chunks in flight, bytes in and out), the slots, and the
process itself, served by prometheus_client with content negotiation on a port of their own
(METRICS_PORT), never on the chunk port unless the operator asks for it."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import CHANNEL, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, until
from discord import http as discord_http

from service.chunks.sealing import buffer_size
from service.config import Settings
from service.discord.client import DiscordClients
from service.discord.store import DiscordStore
from service.intake.answers import REFUSAL_REASONS
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.discord_api import DiscordStandIn, Fault, Route
from service.local.driver import parse_metrics, trickle
from service.metrics import Metrics
from service.uploads.cleanup import Cleanup, Orphans, content_prefix
from service.uploads.journal import Journal
from service.uploads.outcome import Outcome


async def scrape(harness: Harness, **headers: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{harness.service.metrics_port}/metrics"
    async with harness.http.get(url, headers=headers) as response:
        assert response.status == 200
        return parse_metrics(await response.text())


async def test_every_labelled_series_exists_before_its_first_event(harness: Harness) -> None:
    metrics = await scrape(harness)
    for reason in REFUSAL_REASONS:
        assert metrics[f'upload_chunks_refused_total{{reason="{reason}"}}'] == 0
        assert metrics[f'upload_chunk_duration_seconds_count{{outcome="{reason}"}}'] == 0
    for outcome in Outcome:
        assert metrics[f'upload_jobs_total{{outcome="{outcome}"}}'] == 0
    assert metrics["upload_slots"] == 1
    assert metrics["upload_slots_connected"] == 1
    assert metrics["upload_slots_configured"] == 1
    assert metrics["upload_slots_busy"] == 0
    assert metrics["upload_manager_reconnects_total"] == 0
    assert metrics["process_resident_memory_bytes"] > 0


async def test_a_chunk_shows_in_durations_bytes_and_refusals(harness: Harness) -> None:
    upload_id = await harness.start(2 * SMALL_CHUNK)
    data = os.urandom(SMALL_CHUNK)
    assert (await harness.post(upload_id, 0, data))[0] == 200
    assert (await harness.post("no-such-upload", 0, data))[0] == 404
    metrics = await scrape(harness)
    assert metrics['upload_chunk_duration_seconds_count{outcome="stored"}'] == 1
    assert metrics['upload_chunk_duration_seconds_count{outcome="unknown_upload"}'] == 1
    assert metrics['upload_chunks_refused_total{reason="unknown_upload"}'] == 1
    assert metrics["upload_received_bytes_total"] > 2 * SMALL_CHUNK
    assert metrics["upload_stored_bytes_total"] == SMALL_CHUNK
    assert metrics["upload_chunks_in_flight"] == 0
    assert metrics["upload_slots_busy"] == 1


async def test_metrics_negotiate_openmetrics_and_gzip(harness: Harness) -> None:
    url = f"http://127.0.0.1:{harness.service.metrics_port}/metrics"
    headers = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
    async with harness.http.get(url, headers=headers) as response:
        assert response.content_type == "application/openmetrics-text"
        assert response.headers["Content-Encoding"] == "gzip"
        assert (await response.text()).rstrip().endswith("# EOF")


async def status_of(harness: Harness, port: int, path: str) -> int:
    async with harness.http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status


async def test_metrics_are_served_on_their_own_port_and_not_on_the_chunk_port(
    harness: Harness,
) -> None:
    chunk_port, metrics_port = harness.service.port, harness.service.metrics_port
    assert metrics_port != chunk_port
    assert await status_of(harness, metrics_port, "/metrics") == 200
    assert await status_of(harness, chunk_port, "/metrics") == 404
    # The probes stay on the chunk port; the metrics port offers nothing else.
    assert await status_of(harness, chunk_port, "/healthz") == 200
    assert await status_of(harness, chunk_port, "/readyz") == 200
    for path in ("/healthz", "/readyz", "/upload", "/"):
        assert await status_of(harness, metrics_port, path) == 404


async def test_metrics_port_equal_to_port_serves_metrics_on_the_chunk_port(
    start_service: HarnessFactory, settings: Settings
) -> None:
    harness = await start_service(metrics_port=settings.port)
    assert harness.service.metrics_port == harness.service.port == settings.port
    assert await status_of(harness, settings.port, "/metrics") == 200


async def test_metrics_port_0_picks_a_free_port_of_its_own(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(metrics_port=0)
    assert harness.service.metrics_port not in (0, harness.service.port)
    assert await status_of(harness, harness.service.metrics_port, "/metrics") == 200
    assert await status_of(harness, harness.service.port, "/metrics") == 404


async def test_a_chunk_waiting_for_memory_leaves_the_gauge_when_its_upload_ends(
    start_service: HarnessFactory,
) -> None:
    """An upload aborted while one of its chunks waits for memory: that chunk waits for
    nothing, so it is answered 410 at once and leaves `upload_chunks_waiting_for_memory`, not
    held until memory frees (or refused `memory_busy` after CLIENT_READ_TIMEOUT)."""
    chunk = 400 * 1024  # two chunk buffers fit in CHUNK_MEMORY_MIB=1
    harness = await start_service(chunk_memory_mib=1, client_read_timeout=60, client_min_rate=1)
    await harness.configure()
    upload_id = await harness.start(3 * chunk, chunk_size=chunk)
    port, path, stop = harness.service.port, harness.service.settings.own_path, asyncio.Event()
    trickles = [  # two clients sending a byte every 0.1 s hold the whole budget
        asyncio.create_task(
            trickle(port, path, upload_id, i, os.urandom(chunk), interval=0.1, stop=stop)
        )
        for i in (0, 1)
    ]
    await until(lambda: harness.service.memory.reserved == 2 * buffer_size(chunk))
    waiting = asyncio.create_task(harness.post(upload_id, 2, os.urandom(chunk)))
    await until(lambda: harness.metric("upload_chunks_waiting_for_memory") == 1)

    assert await harness.link.abort() == {"success": True}
    try:
        await until(lambda: harness.metric("upload_chunks_waiting_for_memory") == 0)
        status, text = await waiting
    finally:
        stop.set()
        await asyncio.gather(*trickles)
    assert status == 410 and "aborted" in text
    metrics = await scrape(harness)
    assert metrics['upload_chunks_refused_total{reason="upload_ended"}'] == 1
    assert metrics['upload_chunks_refused_total{reason="memory_busy"}'] == 0


async def test_messages_discord_refused_to_delete_before_the_shutdown_are_counted_left(
    discord: DiscordStandIn, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean-up's shutdown with a real store: Discord refuses the bulk delete of two
    messages (404), and the single delete of a third, stored meanwhile, never gets an answer.
    All three are left: all three are counted and logged with their ids, not only the one
    being deleted when the shutdown cut it off."""
    monkeypatch.setattr(discord_http.Route, "BASE", discord.base_url)
    metrics = Metrics([], [])
    clients = DiscordClients(global_rate=50, request_timeout=5.0, metrics=metrics)
    store = DiscordStore(
        client=clients.client(TOKEN), channel_id=CHANNEL, max_ratelimit_wait=5.0, metrics=metrics
    )
    await store.open()
    upload_id = "6f1c0e6e-5a61-4a8e-9a39-0d3f4a7c9b21"
    refused = [discord.add_message(CHANNEL, f"{content_prefix(upload_id)} {i}").id for i in (0, 1)]
    late = discord.add_message(CHANNEL, f"{content_prefix(upload_id)} 2").id
    discord.inject(Fault(delay=0.2, status=404), route=Route.BULK_DELETE)
    discord.inject(Fault(hang=True), route=Route.DELETE_MESSAGE)  # never answers
    cleanup = Cleanup(metrics, Journal.in_memory())
    cleanup.delete(store, Orphans(upload_id, tuple(refused), "it was aborted"))
    finishing = asyncio.create_task(cleanup.finish(grace=1.0))
    await until(lambda: discord.faults_served == 1)  # the bulk delete is at Discord
    cleanup.delete(store, Orphans(upload_id, (late,), "stored after the upload ended"))
    await finishing
    await clients.close()

    assert [m.id for m in discord.messages(CHANNEL)] == [*refused, late]
    assert metrics.registry.get_sample_value("upload_discord_messages_left_total") == 3
    [left] = [r.getMessage() for r in caplog.records if "stopped before deleting" in r.getMessage()]
    assert all(message_id in left for message_id in (*refused, late))


async def test_chunk_durations_have_buckets_up_to_the_slowest_chunk_the_service_takes(
    harness: Harness,
) -> None:
    """A browser on a slow uplink sends its 5 chunks at once, each at a fifth of it: a 10 MiB
    chunk may arrive at just over CLIENT_MIN_RATE and still be stored, after its wait for
    memory. The dashboard's p95 of stored chunks reads the buckets: with none that high, it
    stays pinned at the largest (histogram_quantile cannot see into +Inf)."""
    settings = harness.service.settings
    slowest = MANAGER_CHUNK_SIZE / settings.client_min_rate + settings.client_read_timeout
    metrics = await scrape(harness)
    prefix = 'upload_chunk_duration_seconds_bucket{le="'
    bounds = [
        float(name[len(prefix) :].split('"', 1)[0])
        for name in metrics
        if name.startswith(prefix) and name.endswith('outcome="stored"}')
    ]
    assert max(b for b in bounds if b != float("inf")) >= slowest


async def test_requests_to_discord_that_got_no_answer_are_counted_and_timed(
    start_service: HarnessFactory, discord: DiscordStandIn
) -> None:
    """A post Discord never answers (its timeout) and one whose connection drops count as
    status `none`, with their time in the duration histogram: a Discord that hangs shows on
    the dashboard and in UploadDiscordFailing, not as fewer requests. A 429 counts once, as
    429, though the service raises from it."""
    harness = await start_service(discord_request_timeout=0.3)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    discord.inject(Fault(hang=True), Fault(drop=True), Fault(status=429, retry_after=0.01))
    assert (await harness.post(upload_id, 0, data))[0] == 200

    found = await scrape(harness)
    route = 'route="POST /channels/{channel_id}/messages"'
    assert found[f'upload_discord_requests_total{{{route},status="none"}}'] == 2
    assert found[f'upload_discord_requests_total{{{route},status="429"}}'] == 1
    assert found[f'upload_discord_requests_total{{{route},status="200"}}'] == 1
    assert found[f"upload_discord_request_duration_seconds_count{{{route}}}"] == 4
