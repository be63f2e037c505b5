"""Discord's answers: JSON bodies, error bodies, rate-limit headers and 429s.

Every JSON answer carries `Via`, as Discord's (Google front end) do: discord.py takes a 429
without it for a Cloudflare ban. discord.py parses a body as JSON only when Content-Type is
exactly "application/json".
"""

import json
import math
import time
from http.client import responses
from typing import Any

from aiohttp import web

from .ratelimit import BucketState, Scope

VIA = "1.1 google"
_ERRORS: dict[int, tuple[str, int]] = {
    401: ("401: Unauthorized", 0),
    403: ("Missing Access", 50001),
    404: ("Unknown Channel", 10003),
    413: ("Request entity too large", 40005),
}
# Cloudflare's own page for a rate-limited or banned IP: HTML, no Via, not Discord's JSON.
_CLOUDFLARE_PAGE = (
    "<!DOCTYPE html><html><head><title>Access denied | discord.com used Cloudflare to restrict"
    " access</title></head><body><h1>Error 1015</h1><p>You are being rate limited.</p>"
    "</body></html>"
)


def seconds(value: float) -> float:
    """Round up to whole milliseconds, so a client never retries a moment too early."""
    return math.ceil(max(value, 0.0) * 1000) / 1000


def json_answer(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return raw_answer(json.dumps(body).encode(), "application/json", status=status, headers=headers)


def raw_answer(
    body: bytes, content_type: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Any body, with Via, for answers that pass Discord's front end but are not its JSON."""
    return web.Response(
        status=status,
        body=body,
        headers={"Content-Type": content_type, "Via": VIA, **(headers or {})},
    )


def no_content(headers: dict[str, str]) -> web.Response:
    """204, what Discord answers a successful delete with."""
    return web.Response(status=204, headers={"Via": VIA, **headers})


def error(
    status: int,
    message: str | None = None,
    code: int = 0,
    *,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error; message and code default to what Discord sends for the status."""
    if message is None:
        message, code = _ERRORS.get(status, (f"{status}: {responses.get(status, 'Error')}", 0))
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_answer(body, status=status, headers=headers)


def bucket_headers(bucket: BucketState, bucket_hash: str) -> dict[str, str]:
    """X-RateLimit-* of a route's answer; Reset is epoch seconds, Reset-After seconds."""
    reset_after = seconds(bucket.reset_after)
    return {
        "X-RateLimit-Limit": str(bucket.limit),
        "X-RateLimit-Remaining": str(max(bucket.remaining, 0)),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": bucket_hash,
    }


def rate_limited(
    retry_after: float, scope: Scope, *, headers: dict[str, str] | None = None
) -> web.Response:
    """Discord's 429: the precise wait in the body, whole seconds in Retry-After."""
    is_global = scope is Scope.GLOBAL
    body = {
        "message": "You are being rate limited.",
        "retry_after": seconds(retry_after),
        "global": is_global,
    }
    extra = {
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Scope": scope.value,
        **(headers or {}),
    }
    if is_global:
        extra["X-RateLimit-Global"] = "true"
    return json_answer(body, status=429, headers=extra)


def cloudflare_page(status: int) -> web.Response:
    """Cloudflare refusing an IP: an HTML page and no Via, which discord.py raises on."""
    return web.Response(status=status, text=_CLOUDFLARE_PAGE, content_type="text/html")


def drop(request: web.Request) -> web.Response:
    """Close the connection without answering."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp quietly gives up writing a response to a closed transport.
    return web.Response()
