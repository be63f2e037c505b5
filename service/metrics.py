"""Prometheus metrics of one service process, served at `GET /metrics`.

Each `UploadService` has its own registry (with the process and platform collectors), so
several can run in one process, as the tests do, without their counters mixing. Names
follow Prometheus' conventions: units in the name, `_total` on counters. Every label value
known in advance is initialised, so each series exists from the start.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Up to the slowest chunk taken: 10 MiB at just over CLIENT_MIN_RATE (16 KiB/s, 640 s), a
# browser on a slow uplink sending 5 at once, after its wait for memory and Discord's time.
CHUNK_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
DISCORD_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MESSAGES_ROUTE = "POST /channels/{channel_id}/messages"
NO_ANSWER = "none"  # the status label of a request to Discord that got no answer
_SNOWFLAKE_IN_PATH = re.compile(r"/(channels|messages)/[0-9]+")


def discord_route(method: str, path: str) -> str:
    """A Discord request's route with its ids replaced, e.g. `POST /channels/{channel_id}/...`."""
    path = path.split("/api/v10", 1)[-1]
    named = _SNOWFLAKE_IN_PATH.sub(
        lambda m: f"/{m[1]}/{{{'channel_id' if m[1] == 'channels' else 'message_id'}}}", path
    )
    return f"{method} {named}"


class _Reconnects(Collector):
    """`upload_manager_reconnects_total`, read from the links' own counts."""

    def __init__(self) -> None:
        self.count: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "upload_manager_reconnects", "Times a manager link went back to reconnecting"
        )
        family.add_metric([], self.count())
        yield family


class Metrics:
    def __init__(self, refusal_reasons: Iterable[str], job_outcomes: Iterable[str]) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(GC_COLLECTOR)
        self.chunks_received = Counter(
            "upload_chunks_received",
            "Chunk POSTs that claimed a chunk of a running upload (before any wait for memory)",
            registry=r,
        )
        self.chunks_stored = Counter(
            "upload_chunks_stored", "Chunks stored on Discord (answered 200)", registry=r
        )
        self.chunks_refused = Counter(
            "upload_chunks_refused", "Chunk POSTs refused, by reason", ["reason"], registry=r
        )
        self.chunk_seconds = Histogram(
            "upload_chunk_duration_seconds",
            "Chunk POSTs from request received to answer sent, by outcome",
            ["outcome"],
            buckets=CHUNK_SECONDS,
            registry=r,
        )
        self.chunks_in_flight = Gauge(
            "upload_chunks_in_flight", "Chunk POSTs being received or stored", registry=r
        )
        self.received_bytes = Counter(
            "upload_received_bytes", "Body bytes of chunk POSTs received", registry=r
        )
        self.stored_bytes = Counter(
            "upload_stored_bytes", "Plaintext bytes of the chunks stored", registry=r
        )
        self.chunk_memory = Gauge(
            "upload_chunk_memory_bytes", "Bytes of chunk buffers held or reserved", registry=r
        )
        self.chunk_memory_budget = Gauge(
            "upload_chunk_memory_budget_bytes", "CHUNK_MEMORY_MIB in bytes", registry=r
        )
        self.chunks_waiting_for_memory = Gauge(
            "upload_chunks_waiting_for_memory",
            "Chunk POSTs whose body waits for chunk memory to free",
            registry=r,
        )
        self.discord_seconds = Histogram(
            "upload_discord_request_duration_seconds",
            "Duration of each HTTP request to Discord, by route",
            ["route"],
            buckets=DISCORD_SECONDS,
            registry=r,
        )
        self.discord_requests = Counter(
            "upload_discord_requests",
            "Requests to Discord by route and status (429: rate limited; none: no answer)",
            ["route", "status"],
            registry=r,
        )
        self.discord_retries = Counter(
            "upload_discord_retries",
            "Posts retried by the service after a failure (429 waits are not retries)",
            registry=r,
        )
        self.messages_deleted = Counter(
            "upload_discord_messages_deleted",
            "Messages of uploads that did not succeed, deleted from Discord",
            registry=r,
        )
        self.messages_left = Counter(
            "upload_discord_messages_left",
            "Messages of uploads that did not succeed that could not be deleted (logged with ids)",
            registry=r,
        )
        self.journal_waiting = Gauge(
            "upload_journal_uploads_waiting",
            "Uploads a stopped process left unfinished whose bot token no slot has been given yet",
            registry=r,
        )
        self.journal_abandoned = Counter(
            "upload_journal_messages_abandoned",
            "Messages a stopped process left that were given up after 14 days (logged with ids)",
            registry=r,
        )
        self.jobs = Counter("upload_jobs", "Jobs ended, by outcome", ["outcome"], registry=r)
        self.slots = Gauge("upload_slots", "Slots this process runs (UPLOAD_SLOTS)", registry=r)
        self.slots_connected = Gauge(
            "upload_slots_connected", "Slots whose manager link is up", registry=r
        )
        self.slots_configured = Gauge(
            "upload_slots_configured", "Slots connected and configured: ready for jobs", registry=r
        )
        self.slots_busy = Gauge("upload_slots_busy", "Slots running a job", registry=r)
        self._reconnects = _Reconnects()
        r.register(self._reconnects)
        self.discord_global_429s = Counter(
            "upload_discord_global_rate_limited",
            "Global 429s from Discord: each holds the token's places until answers for 60 s",
            registry=r,
        )
        self.global_limit_shared = Gauge(
            "upload_discord_global_limit_shared",
            "1 while the global limit is shared through Redis (REDIS_URL), 0 while this "
            "process keeps to its own share because Redis does not answer",
            ["redis"],
            registry=r,
        )

        self.chunk_seconds.labels("stored")
        for reason in refusal_reasons:
            self.chunks_refused.labels(reason)
            self.chunk_seconds.labels(reason)
        for outcome in job_outcomes:
            self.jobs.labels(outcome)
        for status in ("200", "429", NO_ANSWER):
            self.discord_requests.labels(MESSAGES_ROUTE, status)
        self.discord_seconds.labels(MESSAGES_ROUTE)

    def watch_slots(
        self,
        total: int,
        connected: Callable[[], int],
        configured: Callable[[], int],
        busy: Callable[[], int],
        reconnects: Callable[[], int],
    ) -> None:
        self.slots.set(total)
        self.slots_connected.set_function(connected)
        self.slots_configured.set_function(configured)
        self.slots_busy.set_function(busy)
        self._reconnects.count = reconnects

    def chunk_answered(self, outcome: str, started: float) -> None:
        """A chunk POST was answered: `outcome` is "stored" or the refusal's reason."""
        self.chunk_seconds.labels(outcome).observe(time.perf_counter() - started)
        if outcome != "stored":
            self.chunks_refused.labels(outcome).inc()

    def handler(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`GET /metrics`: prometheus_client's own handler (OpenMetrics, compression)."""
        return make_aiohttp_handler(self.registry)

    def discord_trace(self) -> aiohttp.TraceConfig:
        """An aiohttp trace that times every request discord.py makes and counts it by its
        status, or as NO_ANSWER when it got none (a timeout, a dropped connection)."""
        trace = aiohttp.TraceConfig()

        async def on_start(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: object
        ) -> None:
            context.started, context.counted = time.perf_counter(), False

        def count(context: SimpleNamespace, method: str, path: str, status: str) -> None:
            if context.counted:  # answered: what the trace raises after is not another
                return
            context.counted = True
            route = discord_route(method, path)
            self.discord_seconds.labels(route).observe(time.perf_counter() - context.started)
            self.discord_requests.labels(route, status).inc()

        async def on_end(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            count(context, params.method, params.url.path, str(params.response.status))

        async def on_exception(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            count(context, params.method, params.url.path, NO_ANSWER)

        trace.on_request_start.append(on_start)
        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_exception)
        return trace
