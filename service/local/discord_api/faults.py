"""Injected misbehaviour: faults queued per route, and the odd answers a post can get.

A fault is consumed by the next request to its route that the rate limits admit (a request
refused by a real limit leaves the queue alone), so tests can combine limits and faults.
"""

import json
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

from .answers import json_answer, raw_answer
from .routes import Route


class OddAnswer(StrEnum):
    """A 200 to a message post that is not a faithful answer (PROTOCOL.md section 3).

    In every case the message IS stored: Discord stored it and a proxy on the way back (or
    Discord itself) mangled what the client reads. NO_ATTACHMENTS stores the message without
    its attachment and answers truthfully; the others store the message as sent.
    """

    HTML = "html"  # 200, Content-Type text/html, an HTML page instead of the message
    INVALID_JSON = "invalid json"  # 200, application/json, the message's JSON cut in half
    NO_ID = "no id"  # the message's JSON without "id"
    NULL_ID = "null id"  # "id": null
    NUMERIC_ID = "numeric id"  # "id": 12345, a number and not the message's id
    WRONG_SIZE = "wrong size"  # attachments[0].size one more than the bytes sent
    NO_ATTACHMENTS = "no attachments"  # stored without its attachment: "attachments": []


@dataclass
class Fault:
    """One injected misbehaviour, consumed by the next admitted request to a route (FIFO).

    Applied in this order: `delay`, then `hold`, then one of: `drop` (close without
    answering, nothing stored or deleted), `hang` (never answer until the stand-in closes,
    nothing stored), `cloudflare` (Cloudflare's HTML page with `status`, default 429, and no
    Via), `status` (a Discord error, or a 429 with `retry_after`/`is_global`), or, for a
    request that then succeeds, `store_then_drop` (stored, or deleted, then the connection
    closes unanswered), `answer` (message posts only: see OddAnswer) or `body` (message posts
    only: the message is stored and the 200 carries exactly these bytes, with this
    Content-Type, instead of its JSON).
    """

    status: int | None = None
    retry_after: float = 0.05
    is_global: bool = False
    delay: float = 0.0
    drop: bool = False
    hang: bool = False
    store_then_drop: bool = False
    hold: bool = False  # wait for release_held(), then go on as if nothing happened
    cloudflare: bool = False
    answer: OddAnswer | None = None
    body: tuple[str, bytes] | None = None  # (Content-Type, body) of the 200


class FaultQueues:
    """One FIFO of faults per route."""

    def __init__(self) -> None:
        self._queues: dict[Route, deque[Fault]] = {route: deque() for route in Route}

    def extend(self, route: Route, faults: tuple[Fault, ...]) -> None:
        odd = any(f.answer is not None or f.body is not None for f in faults)
        if route is not Route.CREATE_MESSAGE and odd:
            raise ValueError(f"odd answers are for message posts; {route} answers 204")
        self._queues[route].extend(faults)

    def pop(self, route: Route) -> Fault | None:
        queue = self._queues[route]
        return queue.popleft() if queue else None


def odd_answer(answer: OddAnswer, message: dict[str, Any], headers: dict[str, str]) -> web.Response:
    """The 200 a client gets for a stored message under `answer` (NO_ATTACHMENTS is stored so
    and needs no mangling)."""
    if answer is OddAnswer.HTML:
        page = b"<!DOCTYPE html><html><body><h1>Welcome to the hotel network</h1></body></html>"
        return raw_answer(page, "text/html", headers=headers)
    if answer is OddAnswer.INVALID_JSON:
        body = json.dumps(message).encode()
        return raw_answer(body[: len(body) // 2], "application/json", headers=headers)
    mangled = dict(message)
    if answer is OddAnswer.NO_ID:
        del mangled["id"]
    elif answer is OddAnswer.NULL_ID:
        mangled["id"] = None
    elif answer is OddAnswer.NUMERIC_ID:
        mangled["id"] = 12345
    elif answer is OddAnswer.WRONG_SIZE and mangled["attachments"]:
        first = dict(mangled["attachments"][0])
        first["size"] += 1
        mangled["attachments"] = [first, *mangled["attachments"][1:]]
    return json_answer(mangled, headers=headers)
