"""The manager's schemas as data (`service/local/schemas/*.json`), checked with `jsonschema`.

The manager stand-in validates every frame the service sends against these files, and the
`manager` fixture fails any test after which a frame was dropped; so every packet emitted
in every test run is checked. These tests pin the schemas themselves: they accept what
`service.manager.packets` builds and refuse what the manager would drop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
from conftest import CHANNEL

from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local import schemas
from service.local.manager import ServiceConnection
from service.manager import outgoing, packets

HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
MESSAGES = ["1200000000000000001", "1200000000000000002"]
MAX_SAFE = 2**53 - 1

Frame = dict[str, Any]


def frame(text: str) -> Frame:
    return cast(Frame, json.loads(text))


def reply_frame() -> Frame:
    return frame(outgoing.reply(str(uuid.uuid4()), False, "already busy with another job"))


def success_frame() -> Frame:
    return frame(
        outgoing.finish_success(
            messages=MESSAGES,
            file_hash=HASH,
            is_encrypted=True,
            mime_type="image/png",
            channel=CHANNEL,
        )
    )


def failure_frame() -> Frame:
    return frame(outgoing.finish_failure("No chunk was received for 120 seconds"))


def start_frame(**data: Any) -> Frame:
    fields = {
        "name": "photo.png",
        "path": "/holiday",
        "size": 3 * MANAGER_CHUNK_SIZE,
        "client": str(uuid.uuid4()),
        "upload_id": str(uuid.uuid4()),
        "chunk_size": MANAGER_CHUNK_SIZE,
        **data,
    }
    return frame(outgoing.encode(packets.UPLOAD_START, fields))


def configuration_frame(**data: Any) -> Frame:
    fields = {
        "crypto": {"enabled": True, "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
        "discord_bot_token": "token",
        "discord_channel_id": CHANNEL,
        **data,
    }
    return frame(outgoing.encode(packets.CONFIGURATION, fields))


def sent_problems(value: Frame | str) -> list[str]:
    return schemas.problems_in_sent(value if isinstance(value, str) else json.dumps(value))


# --- what the service builds passes ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(outgoing.reply(str(uuid.uuid4()), True), id="reply success"),
        pytest.param(
            outgoing.reply(str(uuid.uuid4()), False, "not configured"), id="reply failure"
        ),
        pytest.param(json.dumps(success_frame()), id="finish success"),
        pytest.param(
            outgoing.finish_success(
                messages=[],
                file_hash=HASH,
                is_encrypted=False,
                mime_type="application/octet-stream",
                channel=CHANNEL,
            ),
            id="finish success, empty file",
        ),
        pytest.param(json.dumps(failure_frame()), id="finish failure"),
    ],
)
def test_packets_the_service_builds_pass_the_manager_schemas(text: str) -> None:
    assert schemas.problems_in_sent(text) == []


def test_null_counts_as_absent_for_optional_fields() -> None:
    packet = reply_frame()
    packet["data"]["message"] = None
    assert sent_problems(packet) == []


# --- what the manager would drop is refused -------------------------------------------------

Mutation = Callable[[], Frame]


def _with(base: Mutation, change: Callable[[Frame], None]) -> Mutation:
    def build() -> Frame:
        packet = base()
        change(packet)
        return packet

    return build


DROPPED: dict[str, Mutation] = {
    "reply without reply_uuid": _with(reply_frame, lambda f: f.pop("reply_uuid")),
    "reply with null reply_uuid": _with(reply_frame, lambda f: f.update(reply_uuid=None)),
    "reply_uuid uppercase": _with(
        reply_frame, lambda f: f.update(reply_uuid=f["reply_uuid"].upper())
    ),
    "uuid uppercase": _with(success_frame, lambda f: f.update(uuid=f["uuid"].upper())),
    "uuid without dashes": _with(success_frame, lambda f: f.update(uuid=uuid.uuid4().hex)),
    "uuid with a trailing newline": _with(success_frame, lambda f: f.update(uuid=f["uuid"] + "\n")),
    "uuid missing": _with(success_frame, lambda f: f.pop("uuid")),
    "id unknown": _with(success_frame, lambda f: f.update(id="u2s:upload-done")),
    "id of the manager's namespace": _with(
        success_frame, lambda f: f.update(id="s2u:upload-start")
    ),
    "id with a trailing newline": _with(reply_frame, lambda f: f.update(id="generic:boolean\n")),
    "data not an object": _with(failure_frame, lambda f: f.update(data=[False, "reason"])),
    "data missing": _with(failure_frame, lambda f: f.pop("data")),
    "success as a string": _with(reply_frame, lambda f: f["data"].update(success="true")),
    "success as a number": _with(reply_frame, lambda f: f["data"].update(success=1)),
    "reply message not a string": _with(reply_frame, lambda f: f["data"].update(message=404)),
    "finish with a reply_uuid": _with(
        success_frame, lambda f: f.update(reply_uuid=str(uuid.uuid4()))
    ),
    "finish without hash": _with(success_frame, lambda f: f["data"].pop("hash")),
    "finish without type": _with(success_frame, lambda f: f["data"].pop("type")),
    "finish with null type": _with(success_frame, lambda f: f["data"].update(type=None)),
    "finish with empty type": _with(success_frame, lambda f: f["data"].update(type="")),
    "finish without channel": _with(success_frame, lambda f: f["data"].pop("channel")),
    "finish without messages": _with(success_frame, lambda f: f["data"].pop("messages")),
    "finish without is_encrypted": _with(success_frame, lambda f: f["data"].pop("is_encrypted")),
    "hash uppercase": _with(success_frame, lambda f: f["data"].update(hash=HASH.upper())),
    "hash too short": _with(success_frame, lambda f: f["data"].update(hash=HASH[:-1])),
    "hash with a trailing newline": _with(
        success_frame, lambda f: f["data"].update(hash=HASH + "\n")
    ),
    "channel snowflake with a trailing newline": _with(
        success_frame, lambda f: f["data"].update(channel=CHANNEL + "\n")
    ),
    "channel too short for a snowflake": _with(
        success_frame, lambda f: f["data"].update(channel="12345678901234")
    ),
    "channel as a number": _with(success_frame, lambda f: f["data"].update(channel=int(CHANNEL))),
    "message id as a number": _with(
        success_frame, lambda f: f["data"].update(messages=[int(m) for m in MESSAGES])
    ),
    "message id with a trailing newline": _with(
        success_frame, lambda f: f["data"].update(messages=[MESSAGES[0] + "\n"])
    ),
    "failure without reason": _with(failure_frame, lambda f: f["data"].pop("reason")),
    "failure with empty reason": _with(failure_frame, lambda f: f["data"].update(reason="")),
    "a float in a field no schema types": _with(reply_frame, lambda f: f.update(n=1.5)),
    "an integral float at the top level": _with(reply_frame, lambda f: f.update(n=10.0)),
    "an integer past 2**53 in a field no schema types": _with(
        failure_frame, lambda f: f.update(retry=[MAX_SAFE + 1])
    ),
    "reply with a field the manager's schema lacks": _with(
        reply_frame, lambda f: f["data"].update(retry_after=5)
    ),
    "finish with a field the manager's schema lacks": _with(
        success_frame, lambda f: f["data"].update(size=1)
    ),
    "failed finish with a field the manager's schema lacks": _with(
        failure_frame, lambda f: f["data"].update(code="timeout")
    ),
}


@pytest.mark.parametrize("build", DROPPED.values(), ids=DROPPED.keys())
def test_malformed_packets_from_the_service_are_refused(build: Mutation) -> None:
    assert sent_problems(build()) != []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not JSON"),
        pytest.param("[]", id="a JSON array"),
        pytest.param(
            json.dumps({**reply_frame(), "data": {"success": float("nan")}}),
            id="NaN, which JSON.parse refuses",
        ),
    ],
)
def test_frames_that_are_not_packets_are_refused(text: str) -> None:
    assert schemas.problems_in_sent(text) != []


def test_a_refusal_names_the_field_at_fault() -> None:
    packet = success_frame()
    packet["data"]["hash"] = HASH.upper()
    [problem] = sent_problems(packet)
    assert problem.startswith("data/hash:")


# --- integers, in the packets the manager sends ---------------------------------------------


def test_packets_the_manager_stand_in_sends_pass_the_schemas() -> None:
    for packet in (
        start_frame(),
        start_frame(size=0),
        start_frame(size=MAX_SAFE),
        configuration_frame(),
        configuration_frame(crypto={"enabled": False}),
        frame(outgoing.encode(packets.UPLOAD_ABORT, {})),
    ):
        assert schemas.problems_in_received(json.dumps(packet)) == [], packet


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(start_frame(size=1.5), id="float size"),
        pytest.param(start_frame(size=10.0), id="integral float size"),
        pytest.param(start_frame(size=MAX_SAFE + 1), id="size 2**53"),
        pytest.param(start_frame(size=-1), id="negative size"),
        pytest.param(start_frame(size="10"), id="size as a string"),
        pytest.param(start_frame(size=True), id="size as a boolean"),
        pytest.param(start_frame(size=None), id="null size"),
        pytest.param(start_frame(chunk_size=0), id="chunk_size 0"),
        pytest.param(start_frame(chunk_size=float(MANAGER_CHUNK_SIZE)), id="float chunk_size"),
        pytest.param(start_frame(upload_id=str(uuid.uuid4()).upper()), id="uppercase upload_id"),
        pytest.param(start_frame(name="a/b"), id="name with a slash"),
        pytest.param(start_frame(name="x" * 128), id="name of 128 characters"),
        pytest.param(start_frame(path="holiday"), id="relative path"),
        pytest.param(configuration_frame(crypto={"enabled": True}), id="crypto without key"),
        pytest.param(
            configuration_frame(crypto={"enabled": True, "key": "AAEC"}), id="short crypto key"
        ),
        pytest.param(configuration_frame(discord_channel_id=CHANNEL + "\n"), id="channel + \\n"),
        pytest.param(configuration_frame(discord_bot_token=""), id="empty bot token"),
    ],
)
def test_malformed_packets_from_the_manager_are_refused(packet: Frame) -> None:
    assert schemas.problems_in_received(json.dumps(packet)) != []


# --- the schema dialect ---------------------------------------------------------------------


def test_patterns_use_ecma_end_of_input_not_pythons() -> None:
    assert schemas.ecma_to_python("^[0-9]{2}$").search("12")
    assert not schemas.ecma_to_python("^[0-9]{2}$").search("12\n")
    assert schemas.ecma_to_python(r"^a\$[$]$").search("a$$")


# --- the manager stand-in drops what the schemas refuse -------------------------------------


async def test_manager_stand_in_drops_a_frame_only_the_schemas_refuse() -> None:
    """A finish that claims to be a reply passes `outgoing.check_outgoing` but not the schema."""
    packet = success_frame()
    packet["reply_uuid"] = str(uuid.uuid4())
    text = json.dumps(packet)
    outgoing.check_outgoing(text)  # the service's own check lets it through
    dropped: list[Any] = []
    connection = ServiceConnection(cast(Any, None), "http://127.0.0.1:1/upload", dropped)
    connection.running = str(uuid.uuid4())  # a finish is due

    await connection._receive(text)
    await connection._receive(json.dumps(success_frame()))

    assert [d.text for d in dropped] == [text]
    assert "reply_uuid" in dropped[0].why
    assert connection.finishes == [success_frame()["data"]]
