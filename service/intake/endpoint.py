"""The HTTP side: the chunk endpoint, CORS, and the health check.

`ChunkEndpoint.post` is the whole per-chunk path, top to bottom: find the job, claim the
chunk, stream its bytes through the sealer (hash and encryption in one pass), post the
sealed bytes to Discord, record the message, answer 200. Every refusal is a JSON sentence
with a 4xx (the client's mistake) or 5xx (ours or Discord's) and leaves the job as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..jobs.job import MANAGER_CHUNK_SIZE, ChunkRefused, Job
from ..jobs.slot import JobDirectory, Slot
from ..metrics import Metrics
from ..storage.discord_store import DiscordBusy, StoreError
from ..storage.sealing import BufferPool, ChunkDigest, ChunkSealer, buffer_size
from .form import FILE_FIELD, FormError, StreamingForm, boundary_of

log = logging.getLogger(__name__)

FORM_ALLOWANCE = 16 * 1024  # body bytes beyond the chunk: boundaries, headers, small fields
CHUNKS_IN_FLIGHT_PER_JOB = 5  # what the browser client sends at once: buffers worth keeping


def error_response(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@dataclass
class _Claim:
    job: Job
    slot: Slot
    index: int
    sink: ChunkSealer | ChunkDigest  # only the digest of a chunk stored already


class ChunkEndpoint:
    def __init__(
        self, directory: JobDirectory, metrics: Metrics, *, read_timeout: float, slots: int
    ) -> None:
        self._directory = directory
        self._metrics = metrics
        self._buffers = BufferPool(keep=CHUNKS_IN_FLIGHT_PER_JOB * slots)
        self._read_timeout = read_timeout
        self._accepting = True
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def post(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        if response.status != 200:
            self._metrics.refused(response.status)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if not self._accepting:
            return error_response(
                503, "the upload service is shutting down", **{"Retry-After": "5"}
            )
        self._active += 1
        self._idle.clear()
        try:
            return await self._receive(request)
        except ChunkRefused as refusal:
            return error_response(refusal.status, refusal.message)
        except (FormError, OverflowError) as error:
            return error_response(400, str(error))
        except DiscordBusy as error:
            retry_after = str(math.ceil(error.retry_after))
            return error_response(503, str(error), **{"Retry-After": retry_after})
        except StoreError as error:
            return error_response(502, str(error))
        except ConnectionResetError:
            log.info("a client went away in the middle of a chunk; it was dropped")
            return error_response(400, "the connection was lost in the middle of the chunk")
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def drain(self, grace: float) -> None:
        """Refuse new chunks; wait up to `grace` seconds for the ones being received."""
        self._accepting = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()

    async def _receive(self, request: web.Request) -> web.Response:
        boundary = boundary_of(request.headers.get("Content-Type", ""))
        limit = self._body_limit(None)
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)

        claim: _Claim | None = None
        posting = False  # while True, aiohttp may still read the chunk's buffer

        def open_file(fields: dict[str, str]) -> ChunkSealer | ChunkDigest:
            nonlocal claim, limit
            claim = self._claim(fields)
            limit = self._body_limit(claim.job)
            return claim.sink

        try:
            with StreamingForm(boundary, open_file) as form:
                received = 0
                while piece := await self._read(request):
                    received += len(piece)
                    if received > limit:
                        raise _too_large(limit)
                    form.feed(piece)
                form.finish()
            if claim is None:
                raise FormError(f"the field {FILE_FIELD!r} is missing")
            if isinstance(claim.sink, ChunkDigest):  # sent again after it was stored
                return self._compare_resent(claim, claim.sink.hexdigest())
            sealed = claim.sink.seal()  # the form counted exactly the chunk's length
            posting = True
            await claim.slot.store_chunk(claim.job, claim.index, sealed)
            posting = False
        finally:
            if claim is not None:
                claim.job.release(claim.index)
                # a post that failed midway may leave a writer reading the buffer
                if isinstance(claim.sink, ChunkSealer) and not posting:
                    self._buffers.give(claim.sink.buffer)
        return web.Response(text=str(claim.index))

    async def _read(self, request: web.Request) -> bytes:
        """The next piece of the body; b"" at its end. A stalled client is cut off."""
        try:
            async with asyncio.timeout(self._read_timeout):
                return await request.content.readany()
        except TimeoutError:
            raise ChunkRefused(
                408, f"no data arrived for {self._read_timeout:g} seconds; the chunk was dropped"
            ) from None

    def _claim(self, fields: dict[str, str]) -> _Claim:
        """The `file` part begins: check the fields sent before it and claim the chunk."""
        for name in ("id", "chunk"):
            if name not in fields:
                raise FormError(f"the field {name!r} is missing (it must come before 'file')")
        job, slot = self._directory.find(fields["id"])
        index = job.layout.parse_index(fields["chunk"])
        already = job.claim(index)
        slot.touch(job)
        self._metrics.chunks_received.inc()
        length = job.layout.length(index)
        if already is not None:
            return _Claim(job, slot, index, ChunkDigest(length))
        buffer = self._buffers.take(buffer_size(job.start.chunk_size))
        return _Claim(job, slot, index, ChunkSealer(length, slot.crypto_key, buffer=buffer))

    def _compare_resent(self, claim: _Claim, digest: str) -> web.Response:
        """A stored chunk sent again: the same bytes are a lost response retried, so 200."""
        if claim.job.stored[claim.index].digest != digest:
            raise ChunkRefused(409, f"chunk {claim.index} was already stored with different bytes")
        return web.Response(text=str(claim.index))

    def _body_limit(self, job: Job | None) -> int:
        if job is not None:
            return job.start.chunk_size + FORM_ALLOWANCE
        return (self._directory.largest_chunk_size() or MANAGER_CHUNK_SIZE) + FORM_ALLOWANCE


def _too_large(limit: int) -> ChunkRefused:
    return ChunkRefused(413, f"the request body is larger than {limit} bytes")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer, refusals and router errors included, may be read cross-origin."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error_response(error.status, error.reason)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def preflight(request: web.Request) -> web.Response:
    asked = request.headers.get("Access-Control-Request-Headers", "Content-Type")
    return web.Response(status=204, headers={**CORS_HEADERS, "Access-Control-Allow-Headers": asked})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps({"status": "ok"}), content_type="application/json")
