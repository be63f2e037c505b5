"""The manager link's packets: envelope, schemas, decoding and encoding.

Every frame is one JSON object `{"id", "uuid", "reply_uuid"?, "data"}` (PROTOCOL.md section 1).
Decoding is strict in two layers:

- *Structure* (the envelope, field presence and JSON types): a frame that fails it raises
  `MalformedPacket`; the link logs and ignores it, as the manager does with ours.
- *Values* (patterns, ranges, a key's decoded length): a request that fails them decodes to a
  packet whose `problems` are non-empty; the link answers it `success: false` naming them.

Outgoing packets go through the same schema checks before they are sent, so a packet the
manager would drop is a bug caught here rather than an upload that hangs there.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import uuid as uuid_module
from dataclasses import dataclass
from typing import Any

# Used with fullmatch: in Python `$` also matches before a final newline, in JavaScript not.
ID_PATTERN = re.compile(r"(([a-z]2[a-z])|generic):[a-z\-0-9]+")
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SNOWFLAKE_PATTERN = re.compile(r"[0-9]{15,22}")
SHA256_HEX_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NAME_LENGTH = 127

CONFIGURATION = "s2u:upload-service-configuration"
UPLOAD_START = "s2u:upload-start"
UPLOAD_ABORT = "s2u:upload-abort"
UPLOAD_FINISH = "u2s:upload-finish"
BOOLEAN = "generic:boolean"


class MalformedPacket(ValueError):
    """A frame that is not a packet of the protocol; it is ignored."""


@dataclass(frozen=True)
class Envelope:
    id: str
    uuid: str
    data: dict[str, Any]
    reply_uuid: str | None = None


@dataclass(frozen=True)
class Configuration:
    """`s2u:upload-service-configuration`: credentials and channel for this service."""

    bot_token: str
    channel_id: str
    crypto_key: bytes | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class UploadStart:
    """`s2u:upload-start`: one file to receive."""

    name: str
    path: str
    size: int
    client: str
    upload_id: str
    chunk_size: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class UploadAbort:
    """`s2u:upload-abort`: drop the running job."""

    problems: tuple[str, ...] = ()


Request = Configuration | UploadStart | UploadAbort


@dataclass(frozen=True)
class Incoming:
    uuid: str
    request: Request


# --- structure checks -----------------------------------------------------------------------


def _get(data: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """Return `data[name]` if it has JSON type `kind`; `None` counts as absent."""
    value = data.get(name)
    if value is None:
        if required:
            raise MalformedPacket(f"field '{name}' is missing")
        return None
    if kind is int:
        if type(value) is not int:
            raise MalformedPacket(f"field '{name}' must be an integer, got {value!r}")
        if abs(value) > MAX_SAFE_INTEGER:
            raise MalformedPacket(f"field '{name}' is outside the safe-integer range")
    elif type(value) is not kind:
        raise MalformedPacket(f"field '{name}' must be a {kind.__name__}, got {value!r}")
    return value


def parse_envelope(text: str | bytes) -> Envelope:
    """Check a frame's envelope; raise `MalformedPacket` naming the first fault."""
    try:
        frame = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedPacket(f"frame is not JSON: {error}") from None
    if type(frame) is not dict:
        raise MalformedPacket("frame is not a JSON object")
    packet_id = _get(frame, "id", str)
    if not ID_PATTERN.fullmatch(packet_id):
        raise MalformedPacket(f"packet id {packet_id!r} does not match the id pattern")
    packet_uuid = _get(frame, "uuid", str)
    if not UUID_PATTERN.fullmatch(packet_uuid):
        raise MalformedPacket(f"uuid {packet_uuid!r} is not a lowercase UUID")
    reply_uuid = _get(frame, "reply_uuid", str, required=False)
    if reply_uuid is not None and not UUID_PATTERN.fullmatch(reply_uuid):
        raise MalformedPacket(f"reply_uuid {reply_uuid!r} is not a lowercase UUID")
    data = _get(frame, "data", dict)
    return Envelope(packet_id, packet_uuid, data, reply_uuid)


# --- incoming packets -----------------------------------------------------------------------


def decode_request(text: str | bytes) -> Incoming:
    """Decode a packet the manager sent; raise `MalformedPacket` for anything but a request."""
    envelope = parse_envelope(text)
    decoder = _DECODERS.get(envelope.id)
    if decoder is None:
        raise MalformedPacket(f"packet id {envelope.id!r} is not one the manager sends")
    return Incoming(envelope.uuid, decoder(envelope.data))


def _decode_configuration(data: dict[str, Any]) -> Configuration:
    crypto = _get(data, "crypto", dict)
    enabled = _get(crypto, "enabled", bool)
    key_text = _get(crypto, "key", str, required=enabled)
    token = _get(data, "discord_bot_token", str)
    channel_id = _get(data, "discord_channel_id", str)

    problems: list[str] = []
    key: bytes | None = None
    if enabled:
        key = _decode_key(key_text)
        if key is None:
            problems.append("crypto.key must be the base64 encoding of exactly 32 bytes")
    if not token:
        problems.append("discord_bot_token is empty")
    if not SNOWFLAKE_PATTERN.fullmatch(channel_id):
        problems.append(f"discord_channel_id {channel_id!r} is not a Discord snowflake")
    return Configuration(token, channel_id, key, tuple(problems))


def _decode_key(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


def _decode_upload_start(data: dict[str, Any]) -> UploadStart:
    start = UploadStart(
        name=_get(data, "name", str),
        path=_get(data, "path", str),
        size=_get(data, "size", int),
        client=_get(data, "client", str),
        upload_id=_get(data, "upload_id", str),
        chunk_size=_get(data, "chunk_size", int),
    )
    problems: list[str] = []
    if not 1 <= len(start.name) <= MAX_NAME_LENGTH or "/" in start.name:
        problems.append(f"name must be 1 to {MAX_NAME_LENGTH} characters without slashes")
    if not start.path.startswith("/"):
        problems.append("path must start with '/'")
    if start.size < 0:
        problems.append(f"size must be at least 0, got {start.size}")
    if start.chunk_size < 1:
        problems.append(f"chunk_size must be at least 1, got {start.chunk_size}")
    for name in ("client", "upload_id"):
        if not UUID_PATTERN.fullmatch(getattr(start, name)):
            problems.append(f"{name} must be a lowercase UUID")
    return dataclasses.replace(start, problems=tuple(problems))


def _decode_upload_abort(data: dict[str, Any]) -> UploadAbort:
    return UploadAbort()


_DECODERS = {
    CONFIGURATION: _decode_configuration,
    UPLOAD_START: _decode_upload_start,
    UPLOAD_ABORT: _decode_upload_abort,
}


# --- outgoing packets -----------------------------------------------------------------------


def encode(packet_id: str, data: dict[str, Any], *, reply_uuid: str | None = None) -> str:
    """Serialise a packet with a fresh uuid."""
    frame: dict[str, Any] = {"id": packet_id, "uuid": str(uuid_module.uuid4()), "data": data}
    if reply_uuid is not None:
        frame["reply_uuid"] = reply_uuid
    return json.dumps(frame, separators=(",", ":"))


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
        _get(envelope.data, "success", bool)
        _get(envelope.data, "message", str, required=False)
        if envelope.reply_uuid is None:
            raise MalformedPacket("generic:boolean sent without reply_uuid")
    elif envelope.id == UPLOAD_FINISH:
        _check_finish(envelope.data)
    else:
        raise MalformedPacket(f"packet id {envelope.id!r} is not one the service sends")
    return envelope


def _check_finish(data: dict[str, Any]) -> None:
    if not _get(data, "success", bool):
        if not _get(data, "reason", str):
            raise MalformedPacket("a failed upload-finish needs a non-empty reason")
        return
    messages = _get(data, "messages", list)
    if not all(type(m) is str and SNOWFLAKE_PATTERN.fullmatch(m) for m in messages):
        raise MalformedPacket("upload-finish messages must be snowflake strings")
    if not SHA256_HEX_PATTERN.fullmatch(_get(data, "hash", str)):
        raise MalformedPacket("upload-finish hash must be lowercase hex SHA-256")
    _get(data, "is_encrypted", bool)
    if not _get(data, "type", str):
        raise MalformedPacket("upload-finish type must be a non-empty MIME type")
    if not SNOWFLAKE_PATTERN.fullmatch(_get(data, "channel", str)):
        raise MalformedPacket("upload-finish channel must be a snowflake")
