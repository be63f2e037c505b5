"""Deleting messages by Discord's rules: one by id, or 2 to 100 under two weeks old in bulk."""

from datetime import UTC, datetime, timedelta

import aiohttp
import discord
import pytest
from test_discord_standin import CHANNEL, TOKEN, logged_in, running

from service.local.discord_api import DiscordStandIn, created_at


async def test_a_deleted_message_and_its_attachment_are_gone() -> None:
    async with running() as api:
        sent = (await api.post()).json()

        deleted = await api.delete(sent["id"])
        again = await api.delete(sent["id"])

        assert (deleted.status, deleted.body) == (204, b"")
        assert api.standin.messages(CHANNEL) == []
        assert (again.status, again.json()) == (404, {"message": "Unknown Message", "code": 10008})
        async with aiohttp.ClientSession() as cdn, cdn.get(sent["attachments"][0]["url"]) as got:
            assert got.status == 404
        assert api.standin.deleted == 1


async def test_bulk_delete_ignores_unknown_ids() -> None:
    async with running() as api:
        ids = [(await api.post()).json()["id"] for _ in range(3)]
        unknown = str(int(ids[-1]) + 1000)

        reply = await api.bulk_delete([ids[0], int(ids[1]), unknown])  # numbers are snowflakes too

        assert reply.status == 204
        assert [m.id for m in api.standin.messages(CHANNEL)] == [ids[2]]
        assert api.standin.deleted == 2


@pytest.mark.parametrize(
    ("count", "code", "wording"),
    [
        (1, "BASE_TYPE_MIN_LENGTH", "Must be 2 or more in length."),
        (101, "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."),
    ],
)
async def test_bulk_delete_takes_2_to_100_ids(count: int, code: str, wording: str) -> None:
    async with running() as api:
        kept = api.standin.add_message(CHANNEL)
        ids = [kept.id] + [str(int(kept.id) + i) for i in range(1, count)]

        reply = await api.bulk_delete(ids)

        assert reply.status == 400
        assert reply.json() == {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {"messages": {"_errors": [{"code": code, "message": wording}]}},
        }
        assert api.standin.messages(CHANNEL) == [kept]


async def test_bulk_delete_refuses_duplicates() -> None:
    async with running() as api:
        ids = [api.standin.add_message(CHANNEL).id for _ in range(2)]

        reply = await api.bulk_delete([*ids, ids[0]])

        assert (reply.status, reply.json()["code"]) == (400, 50035)
        assert len(api.standin.messages(CHANNEL)) == 2


async def test_bulk_delete_refuses_a_message_over_two_weeks_old() -> None:
    now = datetime.now(UTC)
    async with running() as api:
        old = api.standin.add_message(CHANNEL, "old", (("0", b"x"),), at=now - timedelta(days=15))
        recent = api.standin.add_message(CHANNEL, at=now - timedelta(days=13))
        new = api.standin.add_message(CHANNEL)

        refused = await api.bulk_delete([old.id, new.id])
        accepted = await api.bulk_delete([recent.id, new.id])
        single = await api.delete(old.id)  # one at a time, any age

        assert abs(created_at(old.id) - (now - timedelta(days=15))) < timedelta(milliseconds=1)
        assert refused.status == 400
        assert refused.json() == {
            "message": "You can only bulk delete messages that are under 14 days old.",
            "code": 50034,
        }
        assert (accepted.status, single.status) == (204, 204)
        assert api.standin.messages(CHANNEL) == []
        assert api.standin.deleted == 3


async def test_a_bot_without_manage_messages_deletes_its_messages_only_one_by_one() -> None:
    async with running() as api:
        ids = [(await api.post()).json()["id"] for _ in range(3)]
        api.standin.deny_manage_messages()
        refused = await api.bulk_delete(ids[:2])
        singles = [await api.delete(message_id) for message_id in ids]

        assert refused.status == 403
        assert refused.json() == {"message": "Missing Permissions", "code": 50013}
        assert [single.status for single in singles] == [204] * 3
        assert api.standin.messages(CHANNEL) == []


async def test_bulk_delete_refuses_what_is_not_a_list_of_snowflakes() -> None:
    async with running() as api:
        not_ids = await api.bulk_delete(["1", "one"])
        no_list = await api.request("POST", f"/channels/{CHANNEL}/messages/bulk-delete", json={})

        assert (not_ids.status, not_ids.json()["code"]) == (400, 50035)
        assert (no_list.status, no_list.json()["code"]) == (400, 50035)


def test_a_message_cannot_be_backdated_into_the_future() -> None:
    standin = DiscordStandIn(token=TOKEN)
    with pytest.raises(ValueError, match="not between"):
        standin.add_message(CHANNEL, at=datetime.now(UTC) + timedelta(days=1))


async def test_discord_py_deletes_through_the_stand_in() -> None:
    async with running() as api:
        ids = [(await api.post()).json()["id"] for _ in range(3)]
        async with logged_in(api) as http:
            await http.delete_message(CHANNEL, ids[0])
            await http.delete_messages(CHANNEL, ids[1:])
            with pytest.raises(discord.NotFound) as missing:
                await http.delete_message(CHANNEL, ids[0])
        assert missing.value.code == 10008
        assert api.standin.messages(CHANNEL) == []
