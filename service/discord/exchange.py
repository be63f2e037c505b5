"""One request to Discord as aiohttp's trace sees it, reported to the token's `PaceGate`.

discord.py sends the request; the trace tells when it went out, when its last byte was
written (counted against its Content-Length: by then Discord can have counted it, so its
place in the global limit frees a window later) and what was answered, before discord.py
sees the answer. A 429 or a 5xx is raised from here (`adapter.py` says why), and a second
send of one request is refused (`UnpacedResend`): only the service's own retries are paced.
Besides discord.py's resends, aiohttp writes a GET or DELETE whose connection closed
unanswered again at once, within the same request: its second head is refused too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp import hdrs

from .adapter import RateLimited, UnpacedResend, server_error
from .gate import PaceGate
from .pacing import RateHeaders


@dataclass
class Exchange:
    """One send through the gate, as the trace sees it (the task's current exchange)."""

    channel: str | None
    sent: bool = False
    headed: bool = False  # its head was written: a second head is aiohttp sending it again
    unwritten: int | None = None  # body bytes still to write; None: not known
    released: float | None = None  # its last byte was written: when its global place frees
    answered: bool = False


_EXCHANGE: ContextVar[Exchange | None] = ContextVar("discord_exchange", default=None)


def _unanswered() -> Exchange | None:
    """The task's exchange while it waits for its answer; None outside one, or once answered."""
    exchange = _EXCHANGE.get()
    return None if exchange is None or exchange.answered else exchange


class ExchangeTrace:
    """Follows each request let through `gate` and tells the gate what became of it."""

    def __init__(self, gate: PaceGate, trace: aiohttp.TraceConfig) -> None:
        self.gate = gate
        trace.on_request_start.append(self._on_request_start)
        trace.on_request_headers_sent.append(self._on_request_headers_sent)
        trace.on_request_chunk_sent.append(self._on_request_chunk_sent)
        trace.on_request_end.append(self._on_request_end)

    @contextlib.contextmanager
    def exchange(self, channel: str | None) -> Iterator[Exchange]:
        """The request the block sends (once) to `channel`; at its end the gate learns
        whether it never went out, or went out and got no answer (it may have counted)."""
        exchange = Exchange(channel)
        context = _EXCHANGE.set(exchange)
        try:
            yield exchange
        finally:
            _EXCHANGE.reset(context)
            if not exchange.sent:
                self.gate.untake(channel)
            elif not exchange.answered:
                self.gate.answered(channel, None, released=exchange.released)

    async def _on_request_start(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        exchange = _EXCHANGE.get()
        if exchange is None:
            return
        if exchange.sent:
            raise UnpacedResend("discord.py tried to send a request again on its own")
        exchange.sent = True

    async def _on_request_headers_sent(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        if (exchange := _unanswered()) is None:
            return
        if exchange.headed:
            raise UnpacedResend("aiohttp tried to send a request again on its own")
        exchange.headed = True
        length = params.headers.get(hdrs.CONTENT_LENGTH)
        if length is not None:
            exchange.unwritten = int(length)
        elif hdrs.TRANSFER_ENCODING not in params.headers:  # no body: the head is all of it
            exchange.unwritten = 0
        self._check_written(exchange)

    async def _on_request_chunk_sent(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestChunkSentParams,
    ) -> None:
        if (exchange := _unanswered()) is None or not exchange.unwritten:
            return
        # aiohttp calls this just before it hands the piece to the transport.
        exchange.unwritten -= memoryview(params.chunk).nbytes
        self._check_written(exchange)

    def _check_written(self, exchange: Exchange) -> None:
        if exchange.unwritten is not None and exchange.unwritten <= 0:
            exchange.unwritten = None  # once
            exchange.released = self.gate.written()

    async def _on_request_end(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if (exchange := _unanswered()) is None:
            return
        exchange.answered = True
        response = params.response
        headers = RateHeaders.parse(response.headers)
        released = exchange.released
        if response.status == 429:
            self.gate.answered(exchange.channel, headers, counted=False, released=released)
            raise await RateLimited.read(response)
        self.gate.answered(exchange.channel, headers, released=released)
        if response.status >= 500:
            raise await server_error(response)
