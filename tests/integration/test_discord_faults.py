"""Discord misbehaving: a 200 still means stored, and nothing is stored twice."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from conftest import CHANNEL, KEY, SMALL_CHUNK, TOKEN, Harness, HarnessFactory, until

from service.local.browser import chunk_form, upload
from service.local.discord_api import DiscordStandIn, Fault
from service.local.manager import ManagerStandIn


async def test_rate_limit_is_waited_out_and_the_client_gets_200(harness: Harness) -> None:
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(status=429, retry_after=0.05))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert harness.discord.faults_served == 1
    assert len(harness.stored()) == 1


async def test_global_rate_limit_is_waited_out_too(harness: Harness) -> None:
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(status=429, retry_after=0.05, is_global=True))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert len(harness.stored()) == 1


async def test_server_errors_get_a_502_after_bounded_retries_and_the_job_lives(
    harness: Harness,
) -> None:
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    retries = harness.service.settings.discord_retries
    harness.discord.inject(*[Fault(status=503)] * retries)

    status, body = await harness.post(upload_id, 0, data)
    assert status == 502 and "503" in body and f"{retries} attempts" in body
    assert harness.discord.posts == retries

    assert (await harness.post(upload_id, 0, data))[0] == 200
    assert (await harness.link.next_finish())["success"] is True


async def test_one_server_error_is_retried_transparently(harness: Harness) -> None:
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(status=503))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert len(harness.stored()) == 1


async def test_lost_response_is_retried_without_a_second_message(harness: Harness) -> None:
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(store_then_drop=True))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert harness.discord.posts == 2
    assert len(harness.stored()) == 1


async def test_dropped_connection_is_retried(harness: Harness) -> None:
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(drop=True))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert len(harness.stored()) == 1


async def test_hanging_request_times_out_and_is_retried(start_service: HarnessFactory) -> None:
    harness = await start_service(discord_request_timeout=0.3)
    await harness.configure()
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(hang=True))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert len(harness.stored()) == 1


@pytest.mark.parametrize(
    ("status", "told_client", "told_manager"),
    [
        (403, ["403"], [CHANNEL, "bot"]),  # the channel is wrong or the bot may not post
        (401, ["401", "token"], ["token"]),  # the token was revoked
        (413, ["too large"], ["too large"]),  # never a silent loss
    ],
)
async def test_a_refusal_ends_the_job_with_an_actionable_reason_and_no_retry(
    harness: Harness, status: int, told_client: list[str], told_manager: list[str]
) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=status))

    answer, body = await harness.post(upload_id, 0, data[:SMALL_CHUNK])
    assert answer == 502 and all(word in body for word in told_client)

    finish = await harness.link.next_finish()
    assert finish["success"] is False
    assert all(word in finish["reason"] for word in told_manager)
    assert harness.discord.posts == 1  # no retrying a refusal
    assert (await harness.post(upload_id, 1, data[SMALL_CHUNK:]))[0] == 410


async def test_500_retried_by_discord_py_still_stores_once(harness: Harness) -> None:
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(status=500))
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    assert len(harness.stored()) == 1


async def test_a_rate_limit_longer_than_the_ceiling_is_outlasted_by_the_browsers_tries(
    start_service: HarnessFactory,
) -> None:
    """The browser tries a chunk again at once, 10 times, without reading Retry-After. A
    chunk Discord holds for longer than DISCORD_MAX_RATELIMIT_WAIT is held that long at each
    try, then answered 503 with Retry-After: the tries outlast the hold, and the chunk is
    stored with no request to Discord in between."""
    harness = await start_service(discord_max_ratelimit_wait=0.2)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=429, retry_after=1.0))

    async with harness.http.post(harness.address, data=chunk_form(upload_id, 0, data)) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        error = (await response.json())["error"]
        assert "rate-limits" in error and error.endswith("for 1 more second")  # as Retry-After says
    sent = await upload(harness.http, harness.address, upload_id, data, SMALL_CHUNK, tries=9)

    assert set(sent.statuses) == {503, 200} and sent.statuses[200] == 1
    assert harness.discord.posts == 2  # the one refused 429, and the one stored
    assert (await harness.link.next_finish())["success"] is True


async def test_rate_limits_in_a_row_hold_a_chunk_no_longer_than_the_ceiling_in_all(
    start_service: HarnessFactory,
) -> None:
    """Each 429's own wait is under the ceiling, their sum is not: the chunk is answered 503
    once the next wait would take it past the ceiling, not held for five of them (a proxy in
    front gives up on a chunk after proxy_read_timeout, deploy/README.md)."""
    harness = await start_service(discord_max_ratelimit_wait=1.0)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(status=429, retry_after=0.6), Fault(status=429, retry_after=0.6))

    status, body = await harness.post(upload_id, 0, data)
    assert status == 503 and "rate-limits" in body
    assert harness.discord.posts == 2
    assert (await harness.post(upload_id, 0, data))[0] == 200  # the job goes on


async def test_the_ceiling_on_rate_limit_waits_spans_a_chunks_tries_after_a_failure(
    start_service: HarnessFactory,
) -> None:
    harness = await start_service(discord_max_ratelimit_wait=1.0)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    wait = Fault(status=429, retry_after=0.6)
    harness.discord.inject(wait, Fault(status=500), wait)

    status, body = await harness.post(upload_id, 0, data)
    assert status == 503 and "rate-limits" in body
    assert harness.discord.posts == 3
    assert (await harness.post(upload_id, 0, data))[0] == 200


async def test_a_try_that_took_long_at_discord_leaves_the_next_its_whole_wait(
    start_service: HarnessFactory,
) -> None:
    """Only waits spend the ceiling, not the time a try takes at Discord: after a try that
    failed slowly (a 5xx after longer than the ceiling), the next still waits out a 429."""
    harness = await start_service(discord_max_ratelimit_wait=1.0)
    await harness.configure()
    data = os.urandom(SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(delay=1.2, status=500), Fault(status=429, retry_after=0.6))

    assert (await harness.post(upload_id, 0, data))[0] == 200
    assert harness.discord.posts == 3


async def test_abort_while_a_chunk_is_at_discord_discards_its_result(harness: Harness) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.inject(Fault(hold=True))
    at_discord = asyncio.create_task(harness.post(upload_id, 0, data[:SMALL_CHUNK]))
    await harness.discord.wait_for_posts(1)

    assert await harness.link.abort() == {"success": True}
    harness.discord.release_held()
    status, body = await at_discord
    assert status == 410 and "ended" in body
    assert (await harness.post(upload_id, 1, data[SMALL_CHUNK:]))[0] == 410

    await harness.start(3)  # the service is free; and no finish came for the aborted job
    assert harness.link.finishes == []


async def test_a_chunk_whose_upload_ended_while_it_waited_to_be_sent_again_is_not_sent(
    harness: Harness,
) -> None:
    """A 429 stores nothing: once the upload has ended, its resend would only store a message
    to delete (taking the next job's room in the channel), or draw one more refusal."""
    upload_id = await harness.start(SMALL_CHUNK)
    harness.discord.inject(Fault(status=429, retry_after=0.5))
    waiting = asyncio.create_task(harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))
    await harness.discord.wait_for_posts(1)

    assert await harness.link.abort() == {"success": True}
    status, body = await waiting
    assert status == 410 and "ended" in body
    assert harness.discord.posts == 1
    assert harness.stored() == []


async def test_a_token_revoked_mid_job_is_refused_at_the_next_configuration(
    harness: Harness,
) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK]))[0] == 200
    harness.discord.revoke_token()  # its owner reset it: Discord answers 401 from now on

    status, body = await harness.post(upload_id, 1, data[SMALL_CHUNK:])
    assert status == 502 and "token" in body
    finish = await harness.link.next_finish()
    assert finish["success"] is False and "token" in finish["reason"]
    _, reply = await harness.link.start_upload(size=1, chunk_size=SMALL_CHUNK)
    assert reply["success"] is False and "token" in reply["message"]  # not a job that must fail
    reply = await harness.configure()  # the manager tries the slot again, same token
    assert reply["success"] is False and "token" in reply["message"]


async def test_a_token_discord_refused_for_a_while_serves_again_once_configured_again(
    harness: Harness,
) -> None:
    """A 401 ends the job and the slot wants a new configuration; once Discord accepts the
    token again, the manager's next configuration (the same token) logs in anew and the slot
    takes jobs, without a restart."""
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    harness.discord.revoke_token()
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK]))[0] == 502
    assert (await harness.link.next_finish())["success"] is False
    harness.discord.restore_token()

    assert await harness.configure() == {"success": True}
    upload_id = await harness.start(len(data))
    for index in (0, 1):
        chunk = data[index * SMALL_CHUNK : (index + 1) * SMALL_CHUNK]
        assert (await harness.post(upload_id, index, chunk))[0] == 200
    assert (await harness.link.next_finish())["success"] is True


async def test_a_login_that_could_not_reach_discord_is_made_anew_at_the_next_configuration(
    start_service: HarnessFactory, discord: DiscordStandIn, manager: ManagerStandIn
) -> None:
    """Discord unreachable when a configuration comes (a network blip, a pod started before
    its network) is refused with the reason. The manager configures a connection once, so
    the slot reconnects; once Discord answers again, the configuration of the new connection,
    with the same token, logs in and the slot takes jobs, without a restart."""
    harness = await start_service()
    port = int(discord.origin.rsplit(":", 1)[1])
    await discord.close()
    reply = await harness.configure()
    assert reply["success"] is False and "could not log in" in reply["message"]

    async with DiscordStandIn(token=TOKEN, port=port) as back:
        async with asyncio.timeout(10):  # it waits for no configuration on the old link
            link = await manager.next_service()  # the slot, connected again
        # ... counted as a failed attempt, so that reconnections back off while Discord is away
        assert harness.service.slots[0].link.failures == 1
        assert await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
            "success": True
        }
        upload_id, started = await link.start_upload(size=SMALL_CHUNK, chunk_size=SMALL_CHUNK)
        assert started == {"success": True}
        data = os.urandom(SMALL_CHUNK)
        assert (await harness.post(upload_id, 0, data, url=link.own_address))[0] == 200
        assert (await link.next_finish())["success"] is True
        assert len(back.messages(CHANNEL)) == 1


async def test_a_token_revoked_before_a_clean_up_is_refused_at_the_next_configuration(
    harness: Harness,
) -> None:
    upload_id = await harness.start(2 * SMALL_CHUNK)
    assert (await harness.post(upload_id, 0, os.urandom(SMALL_CHUNK)))[0] == 200
    harness.discord.revoke_token()
    assert await harness.link.abort() == {"success": True}
    await harness.service.cleanup.settled()  # its delete was answered 401

    reply = await harness.configure()
    assert reply["success"] is False and "token" in reply["message"]


def held_by_a_long_rate_limit(
    harness: Harness, upload_id: str
) -> asyncio.Task[aiohttp.ClientResponse]:
    """Chunk 0 posted, and answered by Discord with a 429 of far longer than the test lasts:
    the service holds the channel, and the chunk waits for the pacer."""
    harness.discord.inject(Fault(status=429, retry_after=500.0))
    form = chunk_form(upload_id, 0, os.urandom(SMALL_CHUNK))
    return asyncio.create_task(harness.http.post(harness.address, data=form))


async def test_a_chunk_waiting_out_a_rate_limit_is_answered_410_at_once_when_its_upload_is_aborted(
    start_service: HarnessFactory,
) -> None:
    """It waits for nothing once its upload is aborted: not for the pacer, nor for its
    DISCORD_MAX_RATELIMIT_WAIT to run out (a 429 longer than that keeps it waiting now)."""
    harness = await start_service(discord_max_ratelimit_wait=600.0)
    await harness.configure()
    answer = held_by_a_long_rate_limit(harness, await harness.start(2 * SMALL_CHUNK))
    await until(lambda: answer.done() or harness.discord.faults_served == 1)
    assert await harness.link.abort() == {"success": True}

    await until(answer.done)
    async with answer.result() as response:
        assert response.status == 410 and "aborted" in (await response.json())["error"]
    assert harness.discord.posts == 1


async def test_a_chunk_waiting_out_a_rate_limit_is_answered_503_by_a_shutdown(
    start_service: HarnessFactory,
) -> None:
    """The shutdown ends the upload after its grace period: the chunk, still waiting for the
    pacer, is answered 503 with Retry-After, not cut off unanswered with the connection."""
    harness = await start_service(discord_max_ratelimit_wait=600.0, shutdown_grace=0.2)
    await harness.configure()
    answer = held_by_a_long_rate_limit(harness, await harness.start(SMALL_CHUNK))
    await until(lambda: answer.done() or harness.discord.faults_served == 1)

    await harness.service.shutdown()
    async with await answer as response:
        assert response.status == 503 and int(response.headers["Retry-After"]) > 0
        assert "shutting down" in (await response.json())["error"]
    assert harness.discord.posts == 1
