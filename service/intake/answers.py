"""The one catalogue of refusals: what HTTP answer each domain refusal becomes.

A reader answers "where does a 410 come from?" here: find the status, then the refusal
class, then who raises it (`refusals.py` says). Every answer is `{"error": <sentence>}`;
the sentence is the refusal's message. The reason labels `upload_chunks_refused_total`;
the log line's level is INFO for what a client did, WARNING for ours or Discord's trouble.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from aiohttp import web

from .. import refusals as r


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str  # the metric label
    by_client: bool = False  # a 5xx that is the client's doing all the same

    @property
    def log_level(self) -> int:
        """INFO for a refusal the client brought on itself, WARNING for the service's or
        Discord's trouble."""
        return logging.INFO if self.status < 500 or self.by_client else logging.WARNING


CATALOGUE: dict[type[r.Refusal], Answer] = {
    r.MalformedForm: Answer(400, "invalid_request"),
    r.WrongLength: Answer(400, "invalid_request"),
    r.BadIndex: Answer(400, "invalid_request"),
    r.ClientGone: Answer(400, "invalid_request"),
    r.UnknownUpload: Answer(404, "unknown_upload"),
    r.ClientStalled: Answer(408, "client_stalled"),
    r.ChunkInFlight: Answer(409, "conflict"),
    r.ChunkConflict: Answer(409, "conflict"),
    r.UploadEnded: Answer(410, "upload_ended"),
    r.BodyTooLarge: Answer(413, "too_large"),
    r.DiscordFailed: Answer(502, "discord_failed"),
    r.DiscordRefused: Answer(502, "discord_failed"),
    r.DiscordBusy: Answer(503, "unavailable"),
    r.DiscordClosed: Answer(503, "unavailable"),
    r.TooManyChunks: Answer(503, "too_many_chunks", by_client=True),  # a browser sends 5
    r.MemoryBusy: Answer(503, "memory_busy"),
    r.ShuttingDown: Answer(503, "unavailable"),
}
INTERNAL_ERROR = Answer(500, "internal_error")  # an exception no refusal names: a bug
REFUSAL_REASONS = sorted({answer.reason for answer in CATALOGUE.values()} | {"internal_error"})


def answer_for(refusal: r.Refusal) -> Answer:
    """The catalogue's entry for `refusal`'s class, or its nearest listed ancestor's."""
    for cls in type(refusal).__mro__:
        if cls in CATALOGUE:
            return CATALOGUE[cls]
    return INTERNAL_ERROR


def error_response(status: int, message: str, retry_after: float | None = None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
    return web.json_response({"error": message}, status=status, headers=headers)


def refusal_response(refusal: r.Refusal) -> web.Response:
    return error_response(answer_for(refusal).status, str(refusal), refusal.retry_after)


def internal_error_response() -> web.Response:
    """The answer when the service itself fails: JSON, so the browser sees a status."""
    return error_response(
        INTERNAL_ERROR.status, "the upload service failed unexpectedly; try again"
    )
