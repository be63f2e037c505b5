"""The stand-in's rate limits, as Discord's: headers, 429s of both scopes, windows, buckets."""

import asyncio
import math
import time
from collections.abc import AsyncIterator

import discord
import pytest
from test_discord_standin import (
    CHANNEL,
    OTHER_CHANNEL,
    Reply,
    logged_in,
    message_body,
    running,
    upload,
)

from service.local.discord_api import BUCKETS, MESSAGES_BUCKET, Fault, Limit, Route
from service.local.discord_api.ratelimit import FixedWindows, RateLimits, Scope

RATE_LIMITED = "You are being rate limited."


def assert_bucket(
    reply: Reply, *, limit: int, remaining: int, bucket: str = MESSAGES_BUCKET
) -> None:
    headers = reply.headers
    assert headers["X-RateLimit-Bucket"] == bucket
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (
        str(limit),
        str(remaining),
    )
    reset_after = float(headers["X-RateLimit-Reset-After"])
    assert abs(float(headers["X-RateLimit-Reset"]) - (time.time() + reset_after)) < 0.5


def assert_429(reply: Reply, *, scope: str) -> float:
    """The 429 is Discord's (JSON, Via, Retry-After, scope); its retry_after."""
    assert reply.status == 429
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Via"]  # without it, discord.py assumes a Cloudflare ban
    assert reply.headers["X-RateLimit-Scope"] == scope
    body = reply.json()
    assert body == {"message": RATE_LIMITED, "retry_after": body["retry_after"], "global": False}
    retry_after = body["retry_after"]
    assert isinstance(retry_after, float) and retry_after > 0
    assert reply.headers["Retry-After"] == str(math.ceil(retry_after))
    return retry_after


async def test_headers_count_down_then_a_user_429() -> None:
    async with running(messages_per_window=3) as api:
        replies = [await api.post() for _ in range(3)]
        refused = await api.post(body := message_body(b"refused"))

        for remaining, reply in zip([2, 1, 0], replies, strict=True):
            assert reply.status == 200
            assert_bucket(reply, limit=3, remaining=remaining)
            assert 0 < float(reply.headers["X-RateLimit-Reset-After"]) <= 5.0  # default window
        retry_after = assert_429(refused, scope="user")
        assert retry_after <= 5.0
        assert_bucket(refused, limit=3, remaining=0)
        assert "X-RateLimit-Global" not in refused.headers
        assert (api.standin.posts, api.standin.posts_stored) == (4, 3)
        assert api.standin.rate_limited_by_scope == {"user": 1, "global": 0}
        assert api.standin.wasted_bytes == len(body)


async def test_every_channel_has_its_window_under_one_bucket_hash() -> None:
    async with running(messages_per_window=1) as api:
        first, other = await api.post(), await api.post(channel=OTHER_CHANNEL)
        again = await api.post()

        assert_bucket(first, limit=1, remaining=0)
        assert_bucket(other, limit=1, remaining=0)
        assert_429(again, scope="user")
        assert len(api.standin.messages(CHANNEL)) == len(api.standin.messages(OTHER_CHANNEL)) == 1


async def test_the_window_resets() -> None:
    async with running(messages_per_window=1, window=0.2) as api:
        assert (await api.post()).status == 200
        retry_after = assert_429(await api.post(), scope="user")
        assert retry_after <= 0.2

        await asyncio.sleep(retry_after)  # time itself is what is tested
        reply = await api.post()

        assert reply.status == 200
        assert_bucket(reply, limit=1, remaining=0)
        assert len(api.standin.messages(CHANNEL)) == 2


async def test_global_limit_spans_channels_and_routes() -> None:
    async with running(messages_per_window=1, global_limit=Limit(4, 5.0)) as api:
        first = await api.post()
        assert_429(await api.post(), scope="user")  # counts against the global limit too
        assert (await api.post(channel=OTHER_CHANNEL)).status == 200
        message_id = first.json()["id"]
        assert (
            await api.request("GET", f"/channels/{CHANNEL}/messages/{message_id}")
        ).status == 200

        refused = await api.delete(message_id)

        assert refused.status == 429
        assert refused.headers["X-RateLimit-Global"] == "true"
        assert refused.headers["X-RateLimit-Scope"] == "global"
        assert refused.headers["Via"]
        assert "X-RateLimit-Bucket" not in refused.headers  # no route's bucket counted it
        body = refused.json()
        assert body == {"message": RATE_LIMITED, "retry_after": body["retry_after"], "global": True}
        assert refused.headers["Retry-After"] == str(math.ceil(body["retry_after"]))
        assert api.standin.rate_limited_by_scope == {"user": 1, "global": 1}
        assert api.standin.rate_limited == 2
        assert api.standin.deleted == 0


async def test_global_window_resets() -> None:
    async with running(global_limit=Limit(1, 0.3)) as api:
        assert (await api.post()).status == 200
        refused = await api.post(channel=OTHER_CHANNEL)
        assert refused.json()["global"] is True

        await asyncio.sleep(refused.json()["retry_after"])

        assert (await api.post(channel=OTHER_CHANNEL)).status == 200


async def test_a_post_is_judged_once_its_whole_body_has_arrived() -> None:
    body = message_body(bytes(1024 * 1024))
    rest_may_come = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        await rest_may_come.wait()
        yield body[len(body) // 2 :]

    async with running(messages_per_window=1) as api:
        assert (await api.post()).status == 200
        post = asyncio.create_task(api.post(slowly()))
        await api.standin.wait_for_posts(2)
        await api.request("GET", "/users/@me")  # a whole round trip while half the body is in

        assert not post.done()
        assert api.standin.rate_limited == 0
        rest_may_come.set()
        assert_429(await post, scope="user")
        assert api.standin.wasted_bytes == len(body)


async def test_a_slow_discord_counts_a_post_first_and_answers_it_later() -> None:
    """With `answer_delay` (Discord storing the attachment), a post counts against the global
    limit when its body has arrived, long before its answer."""
    async with running(global_limit=Limit(1, 60.0), answer_delay=60.0) as api:
        first = asyncio.create_task(api.post())
        await api.standin.wait_for_posts(1)
        refused = await api.post(channel=OTHER_CHANNEL)

        assert refused.json()["global"] is True
        assert not first.done()
        assert api.standin.busiest_second() == 1
        first.cancel()


async def test_the_busiest_second_is_counted_over_any_second() -> None:
    async with running() as api:
        for _ in range(3):
            assert (await api.post()).status == 200
        await api.request("GET", "/users/@me")  # the login counts as well
        assert api.standin.busiest_second() == 4


async def test_every_route_has_its_own_bucket() -> None:
    limit = Limit(1, 5.0)
    async with running(delete_limit=limit, bulk_delete_limit=limit) as api:
        ids = [(await api.post()).json()["id"] for _ in range(4)]

        deleted = await api.delete(ids[0])
        refused = await api.delete(ids[1])
        bulk = await api.bulk_delete(ids[1:3])
        bulk_refused = await api.bulk_delete(ids[2:4])
        posted = await api.post()

        assert deleted.status == 204
        assert_bucket(deleted, limit=1, remaining=0, bucket=BUCKETS[Route.DELETE_MESSAGE])
        assert_429(refused, scope="user")
        assert refused.headers["X-RateLimit-Bucket"] == BUCKETS[Route.DELETE_MESSAGE]
        assert bulk.status == 204
        assert_bucket(bulk, limit=1, remaining=0, bucket=BUCKETS[Route.BULK_DELETE])
        assert_429(bulk_refused, scope="user")
        assert posted.status == 200  # unlimited: a bucket that never runs out
        assert_bucket(posted, limit=10_000, remaining=9_999)
        assert len(set(BUCKETS.values())) == len(Route)
        assert api.standin.deleted == 3
        assert [m.id for m in api.standin.messages(CHANNEL)] == [ids[3], posted.json()["id"]]


async def test_discord_py_takes_both_429s_for_rate_limits() -> None:
    # discord.py raises RateLimited for a wait over max_ratelimit_timeout (at least 30 s).
    limits = {"messages_per_window": 1, "window": 60.0, "global_limit": Limit(3, 60.0)}
    async with running(**limits) as api, logged_in(api, max_ratelimit_timeout=30.0) as http:
        # the login counted 1 against the global limit
        await api.post()  # global: 2, and the channel's bucket is empty
        with pytest.raises(discord.RateLimited) as user:
            await http.send_message(CHANNEL, params=upload())  # global: 3, a user 429
        with pytest.raises(discord.RateLimited) as global_:
            await http.send_message(OTHER_CHANNEL, params=upload())  # a global 429
    assert 30 < user.value.retry_after <= 60
    assert 30 < global_.value.retry_after <= 60
    assert api.standin.rate_limited_by_scope == {"user": 1, "global": 1}


async def test_discord_py_takes_a_cloudflare_429_for_a_ban() -> None:
    async with running() as api:
        api.standin.inject(Fault(status=429, cloudflare=True))
        refused = await api.post(body := message_body(b"banned"))
        assert api.standin.wasted_bytes == len(body)
        api.standin.inject(Fault(status=429, cloudflare=True))
        async with logged_in(api) as http:
            with pytest.raises(discord.HTTPException) as banned:
                await http.send_message(CHANNEL, params=upload())
    assert refused.status == 429
    assert "Via" not in refused.headers
    assert refused.headers["Content-Type"].startswith("text/html")
    assert b"1015" in refused.body
    assert not isinstance(banned.value, discord.RateLimited)
    assert banned.value.status == 429 and "1015" in banned.value.text
    assert api.standin.rate_limited == 0  # injected, not the real limits


def test_fixed_windows_open_on_first_use_and_end_on_time() -> None:
    windows = FixedWindows(Limit(2, 1.0))

    assert windows.take("a", 10.0)[0] and windows.take("a", 10.5)[0]
    admitted, state = windows.take("a", 10.9)
    assert not admitted and state.remaining == 0
    assert state.reset_after == pytest.approx(0.1)
    assert windows.take("b", 10.9)[0]  # another key, another window
    admitted, state = windows.take("a", 11.0)  # the window ended: a new one opens now
    assert admitted and (state.remaining, state.reset_after) == (1, 1.0)


def test_global_refusals_spare_the_route_and_route_refusals_count_globally() -> None:
    limits = RateLimits(Limit(2, 1.0), {"post": Limit(1, 5.0)})

    assert limits.judge("t", "post", "c", 0.0).refused_by is None
    assert limits.judge("t", "post", "c", 0.1).refused_by is Scope.USER
    refused = limits.judge("t", None, "", 0.2)
    assert refused.refused_by is Scope.GLOBAL and refused.retry_after == pytest.approx(0.8)
    assert limits.judge("t", "post", "d", 1.0).refused_by is None
