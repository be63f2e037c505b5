"""The manager link's packets (PROTOCOL.md section 1): what decodes, is dropped, is sent."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from typing import Any

import pytest
from conftest import VECTORS

from service.manager.outgoing import check_outgoing, encode, finish_failure, finish_success, reply
from service.manager.packets import (
    BOOLEAN,
    CRYPTO_SHAPE,
    REQUEST_SHAPES,
    Configuration,
    MalformedPacket,
    UploadAbort,
    UploadStart,
    decode_request,
    parse_envelope,
)

KEY_BASE64: str = VECTORS["aes_256_gcm"]["key_base64"]
# PROTOCOL.md's patterns, matched whole (as the manager's JavaScript regexes do).
LOWERCASE_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CHANNEL = "123456789012345678"
CLIENT = str(uuid.uuid4())
UPLOAD_ID = str(uuid.uuid4())
HASH = hashlib.sha256(b"a chunk digest list").hexdigest()

CONFIG = "s2u:upload-service-configuration"
START = "s2u:upload-start"
ABORT = "s2u:upload-abort"

CONFIG_DATA: dict[str, Any] = {
    "crypto": {"enabled": False},
    "discord_bot_token": "bot-token",
    "discord_channel_id": CHANNEL,
}
START_DATA: dict[str, Any] = {
    "name": "holiday.png",
    "path": "/photos/2024",
    "size": 25,
    "client": CLIENT,
    "upload_id": UPLOAD_ID,
    "chunk_size": 10,
}


def frame(packet_id: str, data: Any, **envelope: Any) -> str:
    return json.dumps({"id": packet_id, "uuid": str(uuid.uuid4()), "data": data, **envelope})


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def without(base: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in base.items() if key != name}


def success_packet(**changes: Any) -> str:
    arguments: dict[str, Any] = {
        "messages": ["111111111111111111", "222222222222222222"],
        "file_hash": HASH,
        "is_encrypted": True,
        "mime_type": "image/png",
        "channel": CHANNEL,
    }
    return finish_success(**{**arguments, **changes})


# --- incoming packets that decode ------------------------------------------------------------


def test_configuration_without_crypto_has_no_key() -> None:
    text = frame(CONFIG, CONFIG_DATA)
    incoming = decode_request(text)
    assert incoming.uuid == json.loads(text)["uuid"]
    assert incoming.request == Configuration("bot-token", CHANNEL, None)


def test_configuration_with_crypto_yields_the_32_byte_key() -> None:
    data = with_(CONFIG_DATA, crypto={"enabled": True, "key": KEY_BASE64})
    request = decode_request(frame(CONFIG, data)).request
    assert isinstance(request, Configuration)
    assert request.crypto_key == base64.b64decode(KEY_BASE64)
    assert request.problems == ()


def test_null_key_with_crypto_disabled_counts_as_absent() -> None:
    data = with_(CONFIG_DATA, crypto={"enabled": False, "key": None})
    request = decode_request(frame(CONFIG, data)).request
    assert request == Configuration("bot-token", CHANNEL, None)


def test_upload_start_decodes_every_field() -> None:
    request = decode_request(frame(START, START_DATA)).request
    assert request == UploadStart("holiday.png", "/photos/2024", 25, CLIENT, UPLOAD_ID, 10)


def test_upload_abort_decodes_from_empty_data() -> None:
    assert decode_request(frame(ABORT, {})).request == UploadAbort()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"name": "n" * 127}, id="name-of-127-chars"),
        pytest.param({"path": "/"}, id="root-path"),
        pytest.param({"size": 0}, id="empty-file"),
        pytest.param({"size": 2**53 - 1}, id="largest-safe-size"),
        pytest.param({"chunk_size": 1}, id="chunk-size-1"),
    ],
)
def test_upload_start_values_at_the_limits_have_no_problems(changes: dict[str, Any]) -> None:
    assert decode_request(frame(START, with_(START_DATA, **changes))).request.problems == ()


# --- malformed frames are dropped ------------------------------------------------------------


def _frame_dict(**changes: Any) -> str:
    base = {"id": START, "uuid": str(uuid.uuid4()), "data": START_DATA}
    return json.dumps(
        {key: value for key, value in {**base, **changes}.items() if value is not ...}
    )


MALFORMED = [
    pytest.param("{not json", id="not-json"),
    pytest.param(json.dumps([json.loads(frame(START, START_DATA))]), id="json-array"),
    pytest.param(frame("u2s:upload-start", START_DATA), id="wrong-namespace"),
    pytest.param(frame("s2u:upload-pause", {}), id="unknown-id"),
    pytest.param(frame("generic:boolean", {"success": True}), id="reply-sent-as-request"),
    pytest.param(_frame_dict(uuid=str(uuid.uuid4()).upper()), id="uppercase-uuid"),
    pytest.param(_frame_dict(uuid=...), id="missing-uuid"),
    pytest.param(_frame_dict(reply_uuid="not-a-uuid"), id="bad-reply-uuid"),
    pytest.param(_frame_dict(data=...), id="missing-data"),
    pytest.param(_frame_dict(data=[START_DATA]), id="data-array"),
    pytest.param(_frame_dict(data="{}"), id="data-string"),
    pytest.param(frame(START, with_(START_DATA, size=10.0)), id="float-size"),
    pytest.param(frame(START, with_(START_DATA, chunk_size=1.5)), id="fractional-chunk-size"),
    pytest.param(frame(START, with_(START_DATA, size=True)), id="bool-size"),
    pytest.param(frame(START, with_(START_DATA, size="25")), id="string-size"),
    pytest.param(frame(START, with_(START_DATA, size=2**53)), id="size-beyond-safe-integers"),
    pytest.param(frame(START, with_(START_DATA, size=-(2**53))), id="size-below-safe-integers"),
    pytest.param(frame(START, without(START_DATA, "client")), id="missing-client"),
    pytest.param(frame(START, with_(START_DATA, name=None)), id="null-name"),
    pytest.param(frame(START, with_(START_DATA, path=["photos"])), id="path-array"),
    pytest.param(frame(CONFIG, without(CONFIG_DATA, "crypto")), id="missing-crypto"),
    pytest.param(frame(CONFIG, with_(CONFIG_DATA, crypto={"enabled": True})), id="enabled-no-key"),
    pytest.param(
        frame(CONFIG, with_(CONFIG_DATA, crypto={"enabled": True, "key": None})),
        id="enabled-null-key",
    ),
    pytest.param(frame(CONFIG, with_(CONFIG_DATA, crypto={"enabled": 0})), id="enabled-not-bool"),
    pytest.param(frame(CONFIG, with_(CONFIG_DATA, discord_bot_token=None)), id="null-token"),
    pytest.param(
        frame(CONFIG, with_(CONFIG_DATA, discord_channel_id=int(CHANNEL))), id="channel-number"
    ),
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_frame_is_refused(text: str) -> None:
    with pytest.raises(MalformedPacket):
        decode_request(text)


def test_frame_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(MalformedPacket):
        decode_request(b'{"id": "\xff"}')


# --- values that decode but are refused with a reason ----------------------------------------

PROBLEMS = [
    pytest.param(
        CONFIG,
        CONFIG_DATA,
        {"crypto": {"enabled": True, "key": "!!!"}},
        "crypto.key",
        id="key-not-base64",
    ),
    pytest.param(
        CONFIG,
        CONFIG_DATA,
        {"crypto": {"enabled": True, "key": base64.b64encode(bytes(31)).decode()}},
        "crypto.key",
        id="key-of-31-bytes",
    ),
    pytest.param(
        CONFIG,
        CONFIG_DATA,
        {"crypto": {"enabled": True, "key": base64.b64encode(bytes(33)).decode()}},
        "crypto.key",
        id="key-of-33-bytes",
    ),
    pytest.param(
        CONFIG,
        CONFIG_DATA,
        {"discord_channel_id": "general"},
        "discord_channel_id",
        id="channel-not-snowflake",
    ),
    pytest.param(
        CONFIG,
        CONFIG_DATA,
        {"discord_channel_id": "12345678901234"},
        "discord_channel_id",
        id="channel-14-digits",
    ),
    pytest.param(
        CONFIG, CONFIG_DATA, {"discord_bot_token": ""}, "discord_bot_token", id="empty-token"
    ),
    pytest.param(START, START_DATA, {"name": "a/b.png"}, "name", id="name-with-slash"),
    pytest.param(START, START_DATA, {"name": "n" * 128}, "name", id="name-of-128-chars"),
    pytest.param(START, START_DATA, {"name": ""}, "name", id="empty-name"),
    pytest.param(START, START_DATA, {"path": "photos"}, "path", id="relative-path"),
    pytest.param(START, START_DATA, {"size": -1}, "size", id="negative-size"),
    pytest.param(START, START_DATA, {"chunk_size": 0}, "chunk_size", id="chunk-size-0"),
    pytest.param(
        START, START_DATA, {"upload_id": "upload-7"}, "upload_id", id="upload-id-not-uuid"
    ),
    pytest.param(
        START, START_DATA, {"upload_id": UPLOAD_ID.upper()}, "upload_id", id="upload-id-uppercase"
    ),
    pytest.param(START, START_DATA, {"client": ""}, "client", id="client-empty"),
]


@pytest.mark.parametrize(("packet_id", "base", "changes", "field"), PROBLEMS)
def test_invalid_value_is_a_problem_naming_its_field(
    packet_id: str, base: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    problems = decode_request(frame(packet_id, with_(base, **changes))).request.problems
    assert len(problems) == 1
    assert field in problems[0]


def test_every_problem_is_reported_together() -> None:
    data = with_(START_DATA, name="a/b", path="b", size=-1, chunk_size=0)
    assert len(decode_request(frame(START, data)).request.problems) == 4


@pytest.mark.parametrize(
    ("packet_id", "base", "changes"),
    [
        pytest.param(CONFIG, CONFIG_DATA, {"discord_channel_id": CHANNEL + "\n"}, id="channel"),
        pytest.param(START, START_DATA, {"upload_id": UPLOAD_ID + "\n"}, id="upload-id"),
    ],
)
def test_value_with_trailing_newline_is_a_problem(
    packet_id: str, base: dict[str, Any], changes: dict[str, Any]
) -> None:
    assert decode_request(frame(packet_id, with_(base, **changes))).request.problems != ()


# --- outgoing packets ------------------------------------------------------------------------


def test_reply_is_a_boolean_answering_the_request() -> None:
    request_uuid = str(uuid.uuid4())
    envelope = check_outgoing(reply(request_uuid, True))
    assert (envelope.id, envelope.reply_uuid) == ("generic:boolean", request_uuid)
    assert envelope.data == {"success": True}


def test_failed_reply_carries_its_message() -> None:
    envelope = check_outgoing(reply(str(uuid.uuid4()), False, "already busy with another job"))
    assert envelope.data == {"success": False, "message": "already busy with another job"}


def test_finish_success_carries_every_field_the_manager_checks() -> None:
    envelope = check_outgoing(success_packet())
    assert envelope.id == "u2s:upload-finish"
    assert envelope.reply_uuid is None
    assert envelope.data == {
        "success": True,
        "messages": ["111111111111111111", "222222222222222222"],
        "hash": HASH,
        "is_encrypted": True,
        "type": "image/png",
        "channel": CHANNEL,
    }


def test_finish_failure_carries_the_reason() -> None:
    envelope = check_outgoing(finish_failure("No chunk was received for 120 seconds"))
    assert envelope.data == {"success": False, "reason": "No chunk was received for 120 seconds"}


def test_finish_failure_without_a_reason_is_refused() -> None:
    with pytest.raises(MalformedPacket):
        finish_failure("")


def test_every_outgoing_packet_has_a_fresh_lowercase_uuid() -> None:
    texts = [reply(str(uuid.uuid4()), True) for _ in range(3)]
    texts += [success_packet() for _ in range(3)]
    texts += [finish_failure("Discord refused the chunk") for _ in range(3)]
    uuids = [json.loads(text)["uuid"] for text in texts]
    assert all(LOWERCASE_UUID.fullmatch(u) for u in uuids)
    assert len(set(uuids)) == len(uuids)


def test_reply_to_an_uppercase_uuid_is_refused() -> None:
    with pytest.raises(MalformedPacket):
        reply(str(uuid.uuid4()).upper(), True)


def _no_numbers(text: str) -> Any:
    raise AssertionError(f"unexpected JSON number {text}")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(reply(str(uuid.uuid4()), False, "no job is running"), id="reply"),
        pytest.param(success_packet(), id="finish-success"),
        pytest.param(finish_failure("Discord refused the chunk"), id="finish-failure"),
    ],
)
def test_outgoing_json_has_no_numbers_since_no_field_is_numeric(text: str) -> None:
    json.loads(text, parse_int=_no_numbers, parse_float=_no_numbers, parse_constant=_no_numbers)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"messages": ["12345"]}, id="message-id-too-short"),
        pytest.param({"messages": ["message-1"]}, id="message-id-not-digits"),
        pytest.param({"messages": [111111111111111111]}, id="message-id-number"),
        pytest.param({"file_hash": HASH.upper()}, id="uppercase-hash"),
        pytest.param({"file_hash": HASH[:-1]}, id="short-hash"),
        pytest.param({"mime_type": ""}, id="empty-type"),
        pytest.param({"mime_type": " application/vnd.ms-cab-compressed"}, id="type-spaced"),
        pytest.param({"mime_type": "text/plain; charset=utf-8"}, id="type-parameters"),
        pytest.param({"mime_type": "application"}, id="type-no-subtype"),
        pytest.param({"mime_type": "image/png\n"}, id="type-newline"),
        pytest.param({"channel": "general"}, id="channel-not-snowflake"),
    ],
)
def test_finish_success_the_manager_would_drop_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedPacket):
        success_packet(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"messages": ["111111111111111111\n"]}, id="message-id"),
        pytest.param({"file_hash": HASH + "\n"}, id="hash"),
        pytest.param({"channel": CHANNEL + "\n"}, id="channel"),
    ],
)
def test_finish_success_with_trailing_newline_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedPacket):
        success_packet(**changes)


# --- hostile frames: only ever MalformedPacket, never a value in its message -----------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 200_000, id="nested-arrays"),
        pytest.param('{"a":' * 100_000, id="nested-objects"),
        pytest.param(frame(START, with_(START_DATA, name=[[[["x"]]]] * 1000)), id="nested-field"),
        pytest.param(
            frame(START, START_DATA)[:-1] + ', "extra": ' + "1" * 5000 + "}", id="5000-digits"
        ),
        pytest.param(
            frame(START, START_DATA)[:-1] + ', "extra": ' + "9" * 21 + "}", id="21-digits"
        ),
        pytest.param(frame(START, START_DATA).replace('"size": 25', '"size": NaN'), id="nan"),
        pytest.param(frame(START, START_DATA).replace('"size": 25', '"size": -Infinity'), id="inf"),
        pytest.param(frame(START, START_DATA).replace('"size": 25', '"size": 1e999'), id="1e999"),
        pytest.param(frame(START, START_DATA).replace(START, "\\ud800"), id="lone-surrogate-id"),
        pytest.param(b"\xed\xa0\x80", id="surrogate-in-utf8"),
    ],
)
def test_hostile_frame_is_refused(text: str | bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode_request(text)


SHAPED = [
    pytest.param(packet_id, name, kind, id=f"{packet_id.split(':')[1]}-{name}")
    for packet_id, shape in REQUEST_SHAPES.items()
    for name, kind in shape.items()
]
BASES = {CONFIG: CONFIG_DATA, START: START_DATA}
JSON_VALUES = [{"secret": "sk-1"}, ["secret-2"], "secret-3", 12345, 1.5, True]


@pytest.mark.parametrize(("packet_id", "name", "kind"), SHAPED)
def test_every_wrong_type_in_every_field_is_refused_without_its_value(
    packet_id: str, name: str, kind: type
) -> None:
    for value in (v for v in JSON_VALUES if type(v) is not kind):
        with pytest.raises(MalformedPacket, match=f"'{name}' must be") as refused:
            decode_request(frame(packet_id, with_(BASES[packet_id], **{name: value})))
        assert "secret" not in str(refused.value) and "1.5" not in str(refused.value)


@pytest.mark.parametrize("name", list(CRYPTO_SHAPE))
def test_every_wrong_type_in_crypto_is_refused(name: str) -> None:
    for value in (v for v in JSON_VALUES if type(v) is not CRYPTO_SHAPE[name]):
        crypto = with_({"enabled": True, "key": KEY_BASE64}, **{name: value})
        with pytest.raises(MalformedPacket, match=f"'{name}' must be"):
            decode_request(frame(CONFIG, with_(CONFIG_DATA, crypto=crypto)))


@pytest.mark.parametrize("token", ["bot token", "tökén", "\ud800", "token\n", "\x00"])
def test_token_that_cannot_be_a_header_is_a_problem(token: str) -> None:
    problems = decode_request(frame(CONFIG, with_(CONFIG_DATA, discord_bot_token=token))).request
    assert problems.problems == ("discord_bot_token must be visible ASCII characters only",)


def test_odd_unicode_values_decode_and_their_reply_is_sendable() -> None:
    data = with_(START_DATA, name="\ud800\U0010ffff\u202e", path="\udfff", client="\x00" * 10_000)
    incoming = decode_request(frame(START, data))
    message = "; ".join(incoming.request.problems)
    assert "path" in message and "client" in message and len(message) < 200
    text = reply(incoming.uuid, False, message)
    assert text.isascii() and check_outgoing(text).data["message"] == message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"success": float("nan")}, id="nan"),
        pytest.param({"success": object()}, id="not-serialisable"),
        pytest.param({"x": {1j: 1}}, id="complex-key"),
    ],
)
def test_encoding_what_is_not_json_raises_malformed_packet(data: dict[str, Any]) -> None:
    with pytest.raises(MalformedPacket):
        encode(BOOLEAN, data)


def test_encoding_a_cycle_raises_malformed_packet() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(MalformedPacket):
        encode(BOOLEAN, cycle)


def test_reply_message_with_a_lone_surrogate_is_sent_escaped() -> None:
    text = reply(str(uuid.uuid4()), False, "bad name '\ud800'")
    assert text.isascii() and check_outgoing(text).data["message"] == "bad name '\ud800'"


def test_a_configuration_shows_neither_its_token_nor_its_key() -> None:
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gh1jKl.secret-part-of-the-token"
    data = with_(CONFIG_DATA, discord_bot_token=token, crypto={"enabled": True, "key": KEY_BASE64})
    text = frame(CONFIG, data)
    incoming = decode_request(text)
    key = base64.b64decode(KEY_BASE64)
    assert isinstance(incoming.request, Configuration)
    assert incoming.request.bot_token == token and incoming.request.crypto_key == key
    shown = " ".join(
        [repr(incoming), str(incoming), repr(incoming.request), repr(parse_envelope(text))]
    )
    assert CHANNEL in shown  # what is not secret still shows
    for secret in (token, KEY_BASE64, repr(key), key.hex()):
        assert secret not in shown
