"""Prometheus metrics of one service process, served at `GET /metrics`.

Each `UploadService` has its own registry, so several can run in one process (as the
tests do) without their counters mixing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.chunks_received = Counter(
            "upload_chunks_received", "Chunk POSTs whose file part began arriving", registry=r
        )
        self.chunks_stored = Counter(
            "upload_chunks_stored", "Chunks stored on Discord (answered 200)", registry=r
        )
        self.chunks_refused = Counter(
            "upload_chunks_refused", "Chunk POSTs refused, by reason", ["reason"], registry=r
        )
        self.bytes_stored = Counter(
            "upload_bytes_stored", "Plaintext bytes of the chunks stored", registry=r
        )
        self.discord_seconds = Histogram(
            "upload_discord_request_seconds",
            "Duration of each HTTP request to Discord",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.discord_responses = Counter(
            "upload_discord_responses",
            "Discord's answers by status (429: rate limited)",
            ["status"],
            registry=r,
        )
        self.discord_retries = Counter(
            "upload_discord_retries",
            "Posts retried by the service (discord.py's own 429/5xx retries show in responses)",
            registry=r,
        )
        self.jobs = Counter("upload_jobs", "Jobs ended, by outcome", ["outcome"], registry=r)
        self.slots_connected = Gauge(
            "upload_slots_connected", "Slots whose manager link is up", registry=r
        )
        self.slots_busy = Gauge("upload_slots_busy", "Slots running a job", registry=r)

    def watch_slots(self, connected: Callable[[], int], busy: Callable[[], int]) -> None:
        self.slots_connected.set_function(connected)
        self.slots_busy.set_function(busy)

    def refused(self, reason: str) -> None:
        self.chunks_refused.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def discord_trace(self) -> aiohttp.TraceConfig:
        """An aiohttp trace that times every request discord.py makes and counts statuses."""
        trace = aiohttp.TraceConfig()

        async def on_start(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: object
        ) -> None:
            context.started = time.perf_counter()

        async def on_end(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            self.discord_seconds.observe(time.perf_counter() - context.started)
            self.discord_responses.labels(str(params.response.status)).inc()

        trace.on_request_start.append(on_start)
        trace.on_request_end.append(on_end)
        return trace
