"""One Discord client per bot token, shared by every slot configured with that token.

A `DiscordClient` holds the token's discord.py client (`adapter.PacedHTTPClient`: one login,
one connection pool) and its `PaceGate`, so that every slot sees the same global limit and
the same bucket for a channel. discord.py builds and sends the requests and decodes the
answers; it no longer decides when a request goes out or what a 429 means (`adapter.py`).
Every send is paced by the gate before discord.py is called; `exchange.py` then follows it
(its last byte written, its answer) and tells the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.http import MultipartParameters, Route

from ..metrics import Metrics
from ..refusals import DiscordBusy, DiscordFailed, DiscordRefused, StoreError
from .adapter import PacedHTTPClient, RateLimited
from .exchange import ExchangeTrace
from .gate import GivenUp, PaceGate
from .pacing import GlobalBudget, GlobalLimit, Pacer
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .shared_limit import SharedLimits

log = logging.getLogger(__name__)

# Connection errors discord.py lets through; TimeoutError is an OSError too.
TRANSIENT = (OSError, aiohttp.ClientError)
BAD_TOKEN = "Discord rejected the bot token (401 Unauthorized)"
CLOUDFLARE_HOLD = 60.0  # seconds nothing goes out after a Cloudflare 429 that says no more
CAREFUL_SECONDS = 60.0  # after a global 429: requests hold their place until their answer


@dataclass
class Patience:
    """Seconds a request may still wait for the pacer and out 429s, over all its tries. Only
    the waits spend it: a try that took long at Discord (and failed) leaves the next its
    wait."""

    seconds: float

    def spend(self, seconds: float) -> None:
        self.seconds = max(0.0, self.seconds - seconds)


class DiscordClient:
    """The requests of one bot token: its login, its connection pool, its pacing."""

    def __init__(
        self,
        token: str,
        *,
        global_limit: GlobalBudget,
        request_timeout: float,
        retry: RetryPolicy,
        metrics: Metrics,
        forget: Callable[[DiscordClient], None],
    ) -> None:
        self.retry = retry  # how every request of the token is tried again
        self._token = token
        self.token_sha256 = hashlib.sha256(token.encode()).hexdigest()  # names it in the journal
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._forget = forget
        self._metrics = metrics
        self.gate = PaceGate(Pacer(global_limit))
        self._trace = metrics.discord_trace()
        self._exchanges = ExchangeTrace(self.gate, self._trace)
        self._http = PacedHTTPClient(asyncio.get_running_loop(), http_trace=self._trace)
        self._login: asyncio.Task[None] | None = None
        self.closed = False
        self.token_refused = False  # Discord answered 401: only a new configuration helps
        # Channels where Discord refused a bulk delete (no Manage Messages): one by one there,
        # not a doomed request each time (403s count towards Cloudflare's ban of the IP).
        self._no_bulk_delete: set[str] = set()

    async def login(self, max_wait: float) -> None:
        """Log in once (GET /users/@me); every caller waits for the same login. Raise
        `DiscordRefused` for a bad token; after a failure the next call tries again."""
        if self._login is None:
            self._login = asyncio.create_task(self._log_in(max_wait))
            self._login.add_done_callback(self._login_done)
        await asyncio.shield(self._login)

    async def post_message(
        self,
        channel_id: str,
        params: MultipartParameters,
        *,
        patience: Patience,
        wanted: Callable[[], None] = lambda: None,
        unwanted: asyncio.Future[None] | None = None,
    ) -> Any:
        """Post one message, paced, waiting for the pacer and out 429s while `patience`
        lasts (the waits spend it); return discord.py's decoding of the answer (not checked).
        Raise `DiscordBusy` for a longer wait, `discord.HTTPException` for an error status, or a
        transport error. `wanted` is called each time the pacer lets the post go, just before
        it goes out: what it raises keeps the post in. Once `unwanted` is done, a wait for
        the pacer ends at once, and `wanted` is called (it then raises)."""
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
        return await self._send(
            channel_id,
            lambda: self._http.request(
                route, files=params.files, form=params.multipart, timeout=self._timeout
            ),
            patience,
            wanted,
            unwanted,
        )

    async def delete_messages(
        self, channel_id: str, message_ids: Sequence[str], *, max_wait: float
    ) -> None:
        """Delete messages of one channel, paced like posts (each route has its own bucket):
        one with a single delete, 2 to 100 with a bulk delete, or one by one if Discord
        refuses the bulk delete (403: it needs the Manage Messages permission, deleting the
        bot's own messages does not; from then on in that channel). Raise as `post_message`
        does; a single message already gone (404) counts as deleted."""
        if len(message_ids) > 1 and channel_id not in self._no_bulk_delete:
            bulk = partial(self._http.delete_messages, channel_id, list(message_ids))
            try:
                await self._send(f"bulk-delete {channel_id}", bulk, Patience(max_wait))
                return
            except discord.Forbidden:
                self._no_bulk_delete.add(channel_id)
        for message_id in message_ids:
            single = partial(self._http.delete_message, channel_id, message_id)
            with contextlib.suppress(discord.NotFound):  # gone already: deleted
                await self._send(f"DELETE {channel_id}", single, Patience(max_wait))

    async def list_messages(
        self, channel_id: str, *, before: str | None, limit: int, max_wait: float
    ) -> Any:
        """A page of the channel's messages, newest first, older than `before` (discord.py's
        decoding, not checked). Raise as `post_message` does."""
        page = partial(self._http.logs_from, channel_id, limit, before=before)
        return await self._send(f"GET messages {channel_id}", page, Patience(max_wait))

    async def close(self) -> None:
        self.closed = True
        if self._login is not None:
            self._login.cancel()
        self.gate.close()
        await self._http.close()

    def _login_done(self, login: asyncio.Task[None]) -> None:
        if (login.cancelled() or login.exception() is not None) and self._login is login:
            self._login = None

    async def _log_in(self, max_wait: float) -> None:
        try:
            login = partial(self._http.static_login, self._token)
            await self._send(None, login, Patience(max_wait))
        except discord.LoginFailure:
            self._token_refused()
            await self._start_over()
            raise DiscordRefused(BAD_TOKEN) from None
        except (*TRANSIENT, discord.HTTPException, ValueError) as error:
            await self._start_over()
            raise DiscordFailed(f"could not log in to Discord: {discord_failure(error)}") from None
        except StoreError:
            await self._start_over()
            raise

    async def _start_over(self) -> None:
        """Close the discord.py client of a failed login and make a new one for the next:
        closing its session closes the connector, which its next login would reuse."""
        await self._http.close()
        self._http = PacedHTTPClient(asyncio.get_running_loop(), http_trace=self._trace)

    async def _send(
        self,
        channel: str | None,
        request: Callable[[], Awaitable[Any]],
        patience: Patience,
        wanted: Callable[[], None] = lambda: None,
        unwanted: asyncio.Future[None] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        for _ in range(self.retry.rate_limited_tries):
            began = loop.time()
            try:
                await self.gate.enter(channel, patience.seconds, unless=unwanted)
            except GivenUp:
                wanted()  # it raises: the caller says why it gave the post up
                raise
            finally:
                patience.spend(loop.time() - began)
            try:
                with self._exchanges.exchange(channel):
                    wanted()  # raising, it gives its place back unsent
                    return await request()
            except RateLimited as answer:
                limited = answer
                self._hold(channel, answer)
            except discord.HTTPException as error:
                if error.status == 401:
                    self._token_refused()
                raise
        raise DiscordBusy(
            limited.retry_after or 1.0,
            f"Discord rate-limited this chunk {self.retry.rate_limited_tries} times in a row",
        )

    def _token_refused(self) -> None:
        """Discord answered 401: the token was revoked or reset. Its login no longer holds,
        and the registry forgets this client, so the next configuration logs in again: refused
        while Discord refuses the token, served once it accepts it again."""
        self._login = None
        self.token_refused = True
        self._forget(self)

    def _hold(self, channel: str | None, answer: RateLimited) -> None:
        """Hold what the 429 names (the channel, or everything); raise `DiscordBusy` for a
        Cloudflare 429, which more requests would only make worse."""
        if answer.cloudflare:
            wait = answer.retry_after or CLOUDFLARE_HOLD
            log.error(
                "Discord answered 429 without its Via header: Cloudflare refuses this IP, most "
                "likely banned for too many invalid requests (401, 403, 429 answers); nothing "
                "is sent to Discord for %.0f s",
                wait,
            )
            self.gate.hold(None, wait)
            raise DiscordBusy(wait, "Discord's network refuses this service for now (Cloudflare)")
        wait = answer.retry_after if answer.retry_after is not None else 1.0
        if answer.is_global:
            self._metrics.discord_global_429s.inc()
            log.warning(
                "Discord answered a global 429 that the pacing did not expect: every request "
                "of this bot token now holds its place in the global limit until its answer "
                "for %.0f s",
                CAREFUL_SECONDS,
            )
            self.gate.be_careful(CAREFUL_SECONDS)
        scope = None if answer.is_global else channel
        log.warning(
            "Discord rate-limited a request %s for %.3f s",
            "of this bot token (global limit)" if scope is None else f"to channel {channel}",
            wait,
        )
        self.gate.hold(scope, wait)


def discord_failure(error: BaseException) -> str:
    if isinstance(error, discord.HTTPException):
        return f"HTTP {error.status} {error.text or error.response.reason}".strip()
    if isinstance(error, TimeoutError):
        return "the request timed out"
    return str(error) or type(error).__name__


class DiscordClients:
    """The process's Discord clients, one per bot token, created on first use.

    A client lives until the registry closes (at shutdown): its bucket knowledge outlives a
    slot's reconfiguration. A client whose token Discord refused (401, on any request) is
    forgotten at once: the next configuration with the token gets a new client, which logs
    in. The stores and clean-ups still holding the old one keep it until the registry closes
    it with the rest. Each token's global limit is this process's own (`GlobalLimit`), or
    with `shared` the one every process using the same Redis shares."""

    def __init__(
        self,
        *,
        global_rate: int,
        request_timeout: float,
        metrics: Metrics,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen
        shared: SharedLimits | None = None,
    ) -> None:
        self._retry = retry
        self._global_rate = global_rate
        self._request_timeout = request_timeout
        self._metrics = metrics
        self._shared = shared
        self._clients: dict[str, DiscordClient] = {}
        self._forgotten: list[DiscordClient] = []

    def client(self, token: str) -> DiscordClient:
        if (client := self._clients.get(token)) is None:
            global_limit: GlobalBudget = (
                GlobalLimit(self._global_rate)
                if self._shared is None
                else self._shared.limit(token)
            )
            client = self._clients[token] = DiscordClient(
                token,
                global_limit=global_limit,
                request_timeout=self._request_timeout,
                retry=self._retry,
                metrics=self._metrics,
                forget=partial(self._forget, token),
            )
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def close(self) -> None:
        clients, self._clients = [*self._clients.values(), *self._forgotten], {}
        self._forgotten = []
        for client in clients:
            await client.close()
        if self._shared is not None:
            await self._shared.close()

    def _forget(self, token: str, client: DiscordClient) -> None:
        if self._clients.get(token) is client:
            del self._clients[token]
            self._forgotten.append(client)
