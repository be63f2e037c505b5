"""Injected faults: the odd answers a post can get, and faults on the delete routes."""

import json

import aiohttp
import pytest
from test_discord_standin import CHANNEL, OTHER_CHANNEL, SNOWFLAKE, message_body, running

from service.local.discord_api import DiscordStandIn, Fault, OddAnswer, Route

DATA = b"attachment bytes"


@pytest.mark.parametrize("answer", [OddAnswer.HTML, OddAnswer.INVALID_JSON])
async def test_a_200_that_is_not_json_after_storing(answer: OddAnswer) -> None:
    async with running() as api:
        api.standin.inject(Fault(answer=answer))
        reply = await api.post(message_body(DATA))

        assert reply.status == 200
        expected = "text/html" if answer is OddAnswer.HTML else "application/json"
        assert reply.headers["Content-Type"] == expected
        with pytest.raises(json.JSONDecodeError):
            reply.json()
        [stored] = api.standin.messages(CHANNEL)  # stored: only the answer was mangled
        assert stored.attachments[0].data == DATA


@pytest.mark.parametrize(
    ("answer", "id_field"),
    [(OddAnswer.NO_ID, "absent"), (OddAnswer.NULL_ID, None), (OddAnswer.NUMERIC_ID, 12345)],
)
async def test_an_answer_without_a_snowflake_id(answer: OddAnswer, id_field: object) -> None:
    async with running() as api:
        api.standin.inject(Fault(answer=answer))
        reply = await api.post(message_body(DATA))

        sent = reply.json()
        assert sent.get("id", "absent") == id_field
        assert sent["attachments"][0]["size"] == len(DATA)
        [stored] = api.standin.messages(CHANNEL)
        assert SNOWFLAKE.fullmatch(stored.id)
        assert api.standin.posts_stored == 1


async def test_an_answer_with_the_wrong_size() -> None:
    async with running() as api:
        api.standin.inject(Fault(answer=OddAnswer.WRONG_SIZE))
        sent = (await api.post(message_body(DATA))).json()

        assert sent["attachments"][0]["size"] == len(DATA) + 1
        assert api.standin.message(CHANNEL, sent["id"]).attachments[0].data == DATA


async def test_a_message_stored_without_its_attachment() -> None:
    async with running() as api:
        api.standin.inject(Fault(answer=OddAnswer.NO_ATTACHMENTS))
        sent = (await api.post(message_body(DATA))).json()

        assert sent["attachments"] == []
        assert api.standin.message(CHANNEL, sent["id"]).attachments == []


async def test_faults_are_served_in_order_then_answers_are_faithful() -> None:
    async with running() as api:
        api.standin.inject(Fault(drop=True), Fault(store_then_drop=True), Fault(status=502))

        for _ in range(2):
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await api.post(message_body(DATA))
        failed = await api.post()
        faithful = await api.post()

        assert failed.status == 502 and failed.json()["message"] == "502: Bad Gateway"
        assert faithful.status == 200
        assert len(api.standin.messages(CHANNEL)) == 2  # the lost answer's and the faithful
        assert (api.standin.posts, api.standin.posts_stored, api.standin.faults_served) == (
            4,
            2,
            3,
        )


async def test_a_fault_waits_for_a_request_the_limits_admit() -> None:
    async with running(messages_per_window=1) as api:
        assert (await api.post()).status == 200
        api.standin.inject(Fault(status=503))

        assert (await api.post()).status == 429  # refused by the channel's limit
        assert (await api.post(channel=OTHER_CHANNEL)).status == 503
        assert api.standin.faults_served == 1


async def test_faults_on_the_delete_routes() -> None:
    async with running() as api:
        ids = [(await api.post()).json()["id"] for _ in range(4)]
        api.standin.inject(
            Fault(status=503), Fault(store_then_drop=True), route=Route.DELETE_MESSAGE
        )
        api.standin.inject(Fault(drop=True), route=Route.BULK_DELETE)

        assert (await api.delete(ids[0])).status == 503
        # Deleted, then the connection dropped: aiohttp (3.14) silently resends a DELETE (an
        # idempotent method) once, and the resend finds the message gone.
        assert (await api.delete(ids[0])).json()["code"] == 10008
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.bulk_delete(ids[1:3])  # dropped before deleting; a POST is not resent
        assert (await api.bulk_delete(ids[1:3])).status == 204

        assert [m.id for m in api.standin.messages(CHANNEL)] == ids[3:]
        assert (api.standin.deleted, api.standin.faults_served) == (3, 3)


def test_odd_answers_are_for_message_posts_only() -> None:
    standin = DiscordStandIn(token="t")
    with pytest.raises(ValueError, match="odd answers"):
        standin.inject(Fault(answer=OddAnswer.NO_ID), route=Route.BULK_DELETE)
