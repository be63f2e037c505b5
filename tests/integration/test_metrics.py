"""What an operator reads at /metrics: every series from the start, the chunk path's own
view (durations by outcome, chunks in flight, bytes in and out), the slots, and the
process itself, served by prometheus_client with content negotiation."""

from __future__ import annotations

import os

from conftest import SMALL_CHUNK, Harness

from service.intake.answers import REFUSAL_REASONS
from service.local.driver import parse_metrics
from service.uploads.upload import JOB_OUTCOMES


async def scrape(harness: Harness, **headers: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{harness.service.port}/metrics"
    async with harness.http.get(url, headers=headers) as response:
        assert response.status == 200
        return parse_metrics(await response.text())


async def test_every_labelled_series_exists_before_its_first_event(harness: Harness) -> None:
    metrics = await scrape(harness)
    for reason in REFUSAL_REASONS:
        assert metrics[f'upload_chunks_refused_total{{reason="{reason}"}}'] == 0
        assert metrics[f'upload_chunk_duration_seconds_count{{outcome="{reason}"}}'] == 0
    for outcome in JOB_OUTCOMES:
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
    url = f"http://127.0.0.1:{harness.service.port}/metrics"
    headers = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
    async with harness.http.get(url, headers=headers) as response:
        assert response.content_type == "application/openmetrics-text"
        assert response.headers["Content-Encoding"] == "gzip"
        assert (await response.text()).rstrip().endswith("# EOF")
