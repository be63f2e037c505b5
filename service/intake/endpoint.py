"""The HTTP side: the chunk endpoint, request ids and CORS.

A chunk's whole path, in order (`ChunkEndpoint._receive`, then `uploads/upload.py` and
`uploads/chunk.py`):

1. read the form's small fields as the body streams in (`StreamingForm.read_fields`);
2. find the upload the `id` names (`UploadDirectory.find`);
3. open the chunk the `chunk` field names: the claim (once an earlier request for it is
   done), and its memory reserved, waiting for it if the budget is spent
   (`Upload.open_chunk`); the client's minimum rate, held since the request began, is
   measured afresh from here (`ChunkBody.chunk_claimed`);
4. stream the file part into the chunk, hashed and encrypted as it arrives (`read_file`);
5. store it: post it to Discord and record the message; with the last chunk, send the
   finish packet (`NewChunk.store` -> `Upload.post`);
6. answer 200 with the chunk index.

Any step may raise a `Refusal`; `intake/answers.py` turns each into its status and
sentence. A refusal gives the claim back and leaves the upload as it was, but for
`DiscordRefused`, which ends it (`Upload.post`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from ..logs import bind
from ..metrics import Metrics
from ..refusals import Refusal, ShuttingDown
from ..uploads.directory import UploadDirectory
from .answers import (
    INTERNAL_ERROR,
    answer_for,
    error_response,
    internal_error_response,
    refusal_response,
)
from .body import ChunkBody
from .form import StreamingForm, boundary_of

log = logging.getLogger(__name__)


class ChunkEndpoint:
    def __init__(
        self,
        directory: UploadDirectory,
        metrics: Metrics,
        *,
        read_timeout: float,
        min_rate: int,
    ) -> None:
        self._directory = directory
        self._metrics = metrics
        self._read_timeout = read_timeout
        self._min_rate = min_rate
        self._accepting = True
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def post(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            if not self._accepting:
                raise ShuttingDown()
            with self._counted():
                index = await self._receive(request)
        except Refusal as refusal:
            answer = answer_for(refusal)
            self._metrics.chunk_answered(answer.reason, started)
            log.log(
                answer.log_level,
                "chunk refused: %d %s in %.3f s: %s",
                answer.status,
                answer.reason,
                time.perf_counter() - started,
                refusal,
            )
            return refusal_response(refusal)
        except Exception:
            log.exception("the chunk path failed unexpectedly")
            self._metrics.chunk_answered(INTERNAL_ERROR.reason, started)
            return internal_error_response()
        self._metrics.chunk_answered("stored", started)
        return web.Response(text=str(index))

    async def _receive(self, request: web.Request) -> int:
        """The per-chunk path (see the module's docstring); the stored chunk's index."""
        body = ChunkBody(
            request,
            limit=self._directory.body_limit(),
            read_timeout=self._read_timeout,
            min_rate=self._min_rate,
            received=self._metrics.received_bytes,
        )
        with StreamingForm(boundary_of(request.headers.get("Content-Type", ""))) as form:
            fields = await form.read_fields(body.read)
            upload = self._directory.find(fields.upload_id)
            # Bound only now: until it names a running upload, the id is whatever was sent.
            bind(upload_id=upload.upload_id, slot=upload.slot)
            body.limit_to(upload.body_limit)
            with await upload.open_chunk(fields.chunk) as chunk:
                bind(chunk=chunk.index)
                body.chunk_claimed()
                await form.read_file(body.read, chunk.sink)
                await chunk.store()
        return chunk.index

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """Count a chunk in flight, for `idle`, `drain` and the metrics."""
        self._active += 1
        self._idle.clear()
        self._metrics.chunks_in_flight.inc()
        try:
            yield
        finally:
            self._metrics.chunks_in_flight.dec()
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        """Chunks being received or stored now."""
        return self._active

    async def idle(self) -> None:
        """Return once no chunk is being received or stored."""
        await self._idle.wait()

    async def drain(self, grace: float) -> None:
        """Refuse new chunks; wait up to `grace` seconds for the ones being received."""
        self._accepting = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}


REQUEST_ID = "X-Request-ID"
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag every log line of a request, and its answer, with the request id: the proxy's
    `X-Request-ID` when it sends a sane one, else a new one."""
    given = request.headers.get(REQUEST_ID, "")
    request_id = given if _REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
    bind(request_id=request_id)
    response = await handler(request)
    response.headers[REQUEST_ID] = request_id
    return response


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer, refusals, router errors and bugs included, may be read cross-origin."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error_response(error.status, error.reason)
        if "Allow" in error.headers:  # a 405 names the methods the path takes (RFC 9110)
            response.headers["Allow"] = error.headers["Allow"]
    except Exception:
        log.exception("an unexpected error answering %s %s", request.method, request.path)
        response = internal_error_response()
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = f"{REQUEST_ID}, Retry-After"
    return response


async def preflight(request: web.Request) -> web.Response:
    asked = request.headers.get("Access-Control-Request-Headers", "Content-Type")
    return web.Response(status=204, headers={**CORS_HEADERS, "Access-Control-Allow-Headers": asked})
