"""The packets the service sends the manager: replies and finish packets, each checked as
the manager would check it before it leaves (a packet the manager drops is an upload that
hangs there for ever)."""

from __future__ import annotations

import json
import uuid as uuid_module
from typing import Any

from .packets import (
    BOOLEAN,
    MIME_TYPE_PATTERN,
    SHA256_HEX_PATTERN,
    SNOWFLAKE_PATTERN,
    UPLOAD_FINISH,
    Envelope,
    MalformedPacket,
    get_field,
    parse_envelope,
    shown,
)


def encode(packet_id: str, data: dict[str, Any], *, reply_uuid: str | None = None) -> str:
    """Serialise a packet with a fresh uuid; raise `MalformedPacket` if it is not JSON.

    ASCII output escapes even lone surrogates, so the text always encodes to UTF-8 for the
    text frame; NaN and infinities are refused, as JSON has no such numbers.
    """
    frame: dict[str, Any] = {"id": packet_id, "uuid": str(uuid_module.uuid4()), "data": data}
    if reply_uuid is not None:
        frame["reply_uuid"] = reply_uuid
    try:
        return json.dumps(frame, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise MalformedPacket(
            f"packet {shown(packet_id)} cannot be encoded ({type(error).__name__})"
        ) from None


def _checked(text: str) -> str:
    check_outgoing(text)
    return text


def reply(reply_uuid: str, success: bool, message: str | None = None) -> str:
    data: dict[str, Any] = {"success": success}
    if message is not None:
        data["message"] = message
    return _checked(encode(BOOLEAN, data, reply_uuid=reply_uuid))


def finish_success(
    *, messages: list[str], file_hash: str, is_encrypted: bool, mime_type: str, channel: str
) -> str:
    data = {
        "success": True,
        "messages": messages,
        "hash": file_hash,
        "is_encrypted": is_encrypted,
        "type": mime_type,
        "channel": channel,
    }
    return _checked(encode(UPLOAD_FINISH, data))


def finish_failure(reason: str) -> str:
    return _checked(encode(UPLOAD_FINISH, {"success": False, "reason": reason}))


def check_outgoing(text: str | bytes) -> Envelope:
    """Validate a packet the service sends, as the manager would; raise `MalformedPacket`."""
    envelope = parse_envelope(text)
    if envelope.id == BOOLEAN:
        get_field(envelope.data, "success", bool)
        get_field(envelope.data, "message", str, required=False)
        if envelope.reply_uuid is None:
            raise MalformedPacket("generic:boolean sent without reply_uuid")
    elif envelope.id == UPLOAD_FINISH:
        _check_finish(envelope.data)
    else:
        raise MalformedPacket(f"packet id {shown(envelope.id)} is not one the service sends")
    return envelope


def _check_finish(data: dict[str, Any]) -> None:
    if not get_field(data, "success", bool):
        if not get_field(data, "reason", str):
            raise MalformedPacket("a failed upload-finish needs a non-empty reason")
        return
    messages = get_field(data, "messages", list)
    if not all(type(m) is str and SNOWFLAKE_PATTERN.fullmatch(m) for m in messages):
        raise MalformedPacket("upload-finish messages must be snowflake strings")
    if not SHA256_HEX_PATTERN.fullmatch(get_field(data, "hash", str)):
        raise MalformedPacket("upload-finish hash must be lowercase hex SHA-256")
    get_field(data, "is_encrypted", bool)
    if not MIME_TYPE_PATTERN.fullmatch(get_field(data, "type", str)):
        raise MalformedPacket("upload-finish type must be a lower-case RFC 6838 type/subtype")
    if not SNOWFLAKE_PATTERN.fullmatch(get_field(data, "channel", str)):
        raise MalformedPacket("upload-finish channel must be a snowflake")
