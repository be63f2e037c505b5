"""The stand-in's aiohttp server: Discord's routes, judged as Discord judges them.

Every request to a rate-limited route is read to its end first, then judged in Discord's
order: token and channel (401/403/404), the global limit, the route's bucket, then an injected
fault, then the route's own rules.
"""

import asyncio
from datetime import UTC, datetime
from typing import Self

from aiohttp import web

from .answers import drop, error, json_answer, no_content, raw_answer
from .bodies import read_json, read_message_post
from .bulk import Refusal, check_bulk_delete
from .faults import Fault, OddAnswer, odd_answer
from .gate import Gate
from .objects import bot_user, message_json
from .posts import check_message_post, store_post
from .ratelimit import Limit, RateLimits, busiest_second
from .routes import API_PREFIX, Route
from .store import Attachment, Message, Snowflakes, Store

_CLIENT_MAX_SIZE = 64 * 1024 * 1024


class DiscordStandIn:
    """Local HTTP server behaving like Discord's REST API for discord.py's HTTPClient.

    Limits: `messages_per_window` posts per `window` seconds per channel (None: unlimited),
    `delete_limit` and `bulk_delete_limit` per channel, `global_limit` per token across all
    routes (Discord's is Limit(50, 1.0)); None means unlimited. `answer_delay`: seconds every
    admitted message post takes to be stored and answered once its body has arrived and was
    counted (Discord storing the attachment; 0: at once; cut short, unanswered, by `close`).

    Counters: `posts` (every POST reaching the messages route, counted on arrival),
    `busiest_second()` (the most requests the token's global limit counted within any one
    second: a sliding window, stricter than Discord's own; counted with or without a limit),
    `posts_stored` (messages those posts created), `faults_served` (injected faults consumed),
    `rate_limited_by_scope` ({"user": n, "global": n}, 429s from the real limits, not injected
    ones) and their sum `rate_limited`, `wasted_bytes` (body bytes of requests answered with
    any 429, real or injected: the upload was received for nothing) and `deleted`.
    """

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        messages_per_window: int | None = None,
        window: float = 5.0,
        max_attachment_size: int = 10 * 1024 * 1024,
        forbidden_channels: frozenset[str] = frozenset(),
        global_limit: Limit | None = None,
        delete_limit: Limit | None = None,
        bulk_delete_limit: Limit | None = None,
        answer_delay: float = 0.0,
    ) -> None:
        self._host = host
        self._answer_delay = answer_delay
        self._port = port
        self._max_attachment_size = max_attachment_size
        messages = None if messages_per_window is None else Limit(messages_per_window, window)
        limits = RateLimits(
            global_limit,
            {
                Route.CREATE_MESSAGE: messages,
                Route.DELETE_MESSAGE: delete_limit,
                Route.BULK_DELETE: bulk_delete_limit,
                Route.LIST_MESSAGES: None,
            },
        )
        self._gate = Gate(token, forbidden_channels, limits)
        self._ids = Snowflakes()
        self._user = bot_user(self._ids.next())
        self._store = Store()
        self._post_arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._manages_messages = True
        self.posts = 0
        self.posts_stored = 0
        self.deleted = 0

    async def start(self) -> None:
        """Listen on host:port (port 0 picks a free one)."""
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
        messages = API_PREFIX + "/channels/{channel_id}/messages"
        app.add_routes(
            [
                web.get(API_PREFIX + "/users/@me", self._get_me),
                web.post(messages, self._post_message),
                web.post(messages + "/bulk-delete", self._bulk_delete),
                web.get(messages, self._list_messages),
                web.get(messages + "/{message_id}", self._get_message),
                web.delete(messages + "/{message_id}", self._delete_message),
                web.get("/attachments/{channel_id}/{attachment_id}/{filename}", self._get_file),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop serving; hanging requests are dropped."""
        if self._runner is None:
            return
        self._gate.closing.set()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def origin(self) -> str:
        """Scheme, host and port, e.g. "http://127.0.0.1:43121"."""
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What discord.http.Route.BASE should be set to."""
        return self.origin + API_PREFIX

    @property
    def faults_served(self) -> int:
        return self._gate.faults_served

    @property
    def rate_limited_by_scope(self) -> dict[str, int]:
        return self._gate.rate_limited_by_scope

    @property
    def rate_limited(self) -> int:
        """429s from the real limits, both scopes."""
        return sum(self._gate.rate_limited_by_scope.values())

    def busiest_second(self) -> int:
        """The most requests counted against the token's global limit within one second."""
        return busiest_second(self._gate.counted)

    @property
    def wasted_bytes(self) -> int:
        return self._gate.wasted_bytes

    def inject(self, *faults: Fault, route: Route = Route.CREATE_MESSAGE) -> None:
        """Queue faults for the next admitted requests to the route, in any channel."""
        self._gate.faults.extend(route, faults)

    def messages(self, channel_id: str) -> list[Message]:
        """The channel's messages, in the order they were stored."""
        return self._store.messages(channel_id)

    def message(self, channel_id: str, message_id: str) -> Message:
        """One stored message; KeyError if absent."""
        if (message := self._store.get(channel_id, message_id)) is None:
            raise KeyError((channel_id, message_id))
        return message

    def add_message(
        self,
        channel_id: str,
        content: str = "",
        files: tuple[tuple[str, bytes], ...] = (),
        *,
        at: datetime | None = None,
    ) -> Message:
        """Store a message as if posted at `at` (default now), e.g. one too old to bulk-delete;
        `files` are (filename, data) attachments. Not counted in `posts_stored`."""
        message_id = self._ids.next() if at is None else self._ids.at(at)
        attachments = [
            Attachment(self._ids.next(), name, data, "application/octet-stream")
            for name, data in files
        ]
        message = Message(message_id, channel_id, content, attachments, None)
        self._store.add(message)
        return message

    def forget(self, channel_id: str) -> None:
        """Drop a channel's messages and their attachments, freeing their memory (a long
        benchmark keeps only what it still has to check)."""
        self._store.forget(channel_id)

    async def wait_for_posts(self, count: int) -> None:
        """Wait until `count` POSTs have reached the messages route."""
        async with self._post_arrived:
            await self._post_arrived.wait_for(lambda: self.posts >= count)

    def revoke_token(self) -> None:
        """Revoke the bot token (its owner reset it): from now on every request with it is
        answered 401 {"message": "401: Unauthorized", "code": 0}, the login included."""
        self._gate.revoke()

    def restore_token(self) -> None:
        """Accept the bot token again: Discord has answered a valid token 401 for a while
        (discord/discord-api-docs#6769), and a restart was what fixed it for its users."""
        self._gate.restore()

    def deny_manage_messages(self) -> None:
        """Take the bot's Manage Messages permission: from now on a bulk delete is answered
        403 {"message": "Missing Permissions", "code": 50013}, as Discord requires it for
        bulk deletes even of the bot's own messages; deleting them one by one still works."""
        self._manages_messages = False

    def release_held(self) -> None:
        """Let requests held by `Fault(hold=True)` (and later ones) proceed."""
        self._gate.held.set()

    async def _get_me(self, request: web.Request) -> web.Response:
        if not self._gate.authorized(request):
            return error(401)
        admitted = self._gate.admit(None, "", 0)
        return admitted if isinstance(admitted, web.Response) else json_answer(self._user)

    async def _get_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        if (refusal := self._gate.refusal(request, channel_id)) is not None:
            return refusal
        if isinstance(admitted := self._gate.admit(None, channel_id, 0), web.Response):
            return admitted
        message = self._store.get(channel_id, request.match_info["message_id"])
        if message is None:
            return error(404, "Unknown Message", 10008)
        return json_answer(message_json(message, self._user, self.origin))

    async def _list_messages(self, request: web.Request) -> web.Response:
        """Get Channel Messages: newest first, `limit` (1-100, default 50) of them, older
        than `before` when given (the `after` and `around` forms are not modelled)."""
        channel_id = request.match_info["channel_id"]
        entered = await self._gate.enter(request, Route.LIST_MESSAGES, channel_id, 0)
        if isinstance(entered, web.Response):
            return entered
        fault, headers = entered
        limit, before = request.query.get("limit", "50"), request.query.get("before")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            return error(400, "Invalid Form Body", 50035, headers=headers)
        if fault is not None and fault.store_then_drop:  # listed, the answer lost
            return drop(request)
        newest_first = reversed(self._store.messages(channel_id))
        older = [m for m in newest_first if before is None or int(m.id) < int(before)]
        page = [message_json(m, self._user, self.origin) for m in older[: int(limit)]]
        return json_answer(page, headers=headers)

    async def _get_file(self, request: web.Request) -> web.Response:
        """The CDN: not the API, so neither authorised nor rate limited."""
        key = (request.match_info["channel_id"], request.match_info["attachment_id"])
        attachment = self._store.attachment(*key)
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return error(404, "404: Not Found")
        return web.Response(body=attachment.data, content_type=attachment.content_type)

    async def _post_message(self, request: web.Request) -> web.Response:
        self.posts += 1
        async with self._post_arrived:
            self._post_arrived.notify_all()
        channel_id = request.match_info["channel_id"]
        try:
            post = await read_message_post(request, self._max_attachment_size)
        except ConnectionResetError:  # the client went away mid-body: nothing is stored
            return drop(request)
        entered = await self._gate.enter(request, Route.CREATE_MESSAGE, channel_id, post.size)
        if isinstance(entered, web.Response):
            return entered
        fault, headers = entered
        if await self._closing_within(self._answer_delay):
            return drop(request)
        if post.too_large:
            return error(413, headers=headers)
        if (refused := check_message_post(post)) is not None:
            return error(400, refused.message, refused.code, errors=refused.errors, headers=headers)
        answer = None if fault is None else fault.answer
        with_files = answer is not OddAnswer.NO_ATTACHMENTS
        message, stored = store_post(
            self._store, self._ids, channel_id, post, with_files=with_files
        )
        self.posts_stored += stored
        if fault is not None and fault.store_then_drop:
            return drop(request)
        body = message_json(message, self._user, self.origin)
        if fault is not None and fault.body is not None:
            content_type, raw = fault.body
            return raw_answer(raw, content_type, headers=headers)
        if answer is None:
            return json_answer(body, headers=headers)
        return odd_answer(answer, body, headers)

    async def _closing_within(self, seconds: float) -> bool:
        """Wait `seconds` (storing an attachment); True if the stand-in closes meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._gate.closing.wait()
        except TimeoutError:
            return False
        return True

    async def _delete_message(self, request: web.Request) -> web.Response:
        """204, or 404 Unknown Message."""
        channel_id, message_id = request.match_info["channel_id"], request.match_info["message_id"]
        _, size = await read_json(request)
        entered = await self._gate.enter(request, Route.DELETE_MESSAGE, channel_id, size)
        if isinstance(entered, web.Response):
            return entered
        fault, headers = entered
        if self._store.get(channel_id, message_id) is None:
            return error(404, "Unknown Message", 10008, headers=headers)
        self.deleted += self._store.delete(channel_id, [message_id])
        if fault is not None and fault.store_then_drop:
            return drop(request)
        return no_content(headers)

    async def _bulk_delete(self, request: web.Request) -> web.Response:
        """204 having deleted those of the ids that exist, or 400 deleting nothing (bulk.py);
        403 without the Manage Messages permission."""
        channel_id = request.match_info["channel_id"]
        body, size = await read_json(request)
        entered = await self._gate.enter(request, Route.BULK_DELETE, channel_id, size)
        if isinstance(entered, web.Response):
            return entered
        fault, headers = entered
        if not self._manages_messages:
            return error(403, "Missing Permissions", 50013, headers=headers)
        checked = check_bulk_delete(body, datetime.now(UTC))
        if isinstance(checked, Refusal):
            return error(400, checked.message, checked.code, errors=checked.errors, headers=headers)
        self.deleted += self._store.delete(channel_id, checked)
        if fault is not None and fault.store_then_drop:
            return drop(request)
        return no_content(headers)
