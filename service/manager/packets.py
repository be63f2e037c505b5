"""The manager link's packets: envelope, schemas, decoding and encoding.

Every frame is one JSON object `{"id", "uuid", "reply_uuid"?, "data"}` (PROTOCOL.md section 1).
Decoding is strict in two layers:

- *Structure* (the envelope, field presence and JSON types): a frame that fails it raises
  `MalformedPacket`; the link logs and ignores it, as the manager does with ours.
- *Values* (patterns, ranges, a key's decoded length): a request that fails them decodes to a
  packet whose `problems` are non-empty; the link answers it `success: false` naming them.

Outgoing packets (`outgoing.py`) go through the same checks before they are sent, so a packet
the manager would drop is a bug caught there rather than an upload that hangs at the manager.

Decoding and encoding raise nothing but `MalformedPacket`, whatever a frame holds (deep
nesting, huge numbers, lone surrogates, any JSON type in any field): the link relies on it to
drop one bad frame and keep going. Error messages name fields and JSON types, never values,
since they are logged and a frame may carry the bot token or the encryption key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Used with fullmatch: in Python `$` also matches before a final newline, in JavaScript not.
ID_PATTERN = re.compile(r"(([a-z]2[a-z])|generic):[a-z\-0-9]+")
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SNOWFLAKE_PATTERN = re.compile(r"[0-9]{15,22}")
# Discord tokens are visible ASCII; anything else could not even be sent as a header.
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")
SHA256_HEX_PATTERN = re.compile(r"[0-9a-f]{64}")
# A MIME type as RFC 6838 section 4.2 names one, `type/subtype` of restricted names (in
# lower case; the finish packet's `type` carries no parameters).
MIME_TYPE_PATTERN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NAME_LENGTH = 127
# More digits than any safe integer has: refused before Python converts it (which is
# quadratic in the digit count when the interpreter's int_max_str_digits limit is off).
MAX_INTEGER_DIGITS = 20
SHOWN_LENGTH = 40  # how much of a refused value a reply message quotes

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
    data: dict[str, Any] = field(repr=False)  # a configuration's holds the token and key
    reply_uuid: str | None = None


@dataclass(frozen=True)
class Configuration:
    """`s2u:upload-service-configuration`: credentials and channel for this service. Its
    repr shows neither the token nor the key, so no log line or traceback ever can."""

    bot_token: str = field(repr=False)
    channel_id: str
    crypto_key: bytes | None = field(repr=False)
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

# The JSON type of every field of each request's data (PROTOCOL.md section 1): the decoders
# check the structure against these, and tests generate hostile frames from them.
REQUEST_SHAPES: dict[str, dict[str, type]] = {
    CONFIGURATION: {"crypto": dict, "discord_bot_token": str, "discord_channel_id": str},
    UPLOAD_START: {
        "name": str,
        "path": str,
        "size": int,
        "client": str,
        "upload_id": str,
        "chunk_size": int,
    },
    UPLOAD_ABORT: {},
}
# `crypto` in the configuration; `key` is required only when `enabled` is true.
CRYPTO_SHAPE: dict[str, type] = {"enabled": bool, "key": str}


@dataclass(frozen=True)
class Incoming:
    uuid: str
    request: Request


# --- structure checks -----------------------------------------------------------------------


_JSON_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
}


def _json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def get_field(data: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """Return `data[name]` if it has JSON type `kind`; `None` counts as absent."""
    value = data.get(name)
    if value is None:
        if required:
            raise MalformedPacket(f"field '{name}' is missing")
        return None
    if type(value) is not kind:
        raise MalformedPacket(
            f"field '{name}' must be {_JSON_NAMES[kind]}, got {_json_type(value)}"
        )
    if type(value) is int and abs(value) > MAX_SAFE_INTEGER:
        raise MalformedPacket(f"field '{name}' is outside the safe-integer range")
    return value


def _fields(
    data: dict[str, Any], shape: dict[str, type], *, optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Every field of `shape` from `data`, type-checked; those in `optional` may be `None`."""
    return {
        name: get_field(data, name, kind, required=name not in optional)
        for name, kind in shape.items()
    }


def shown(value: str) -> str:
    """A value quoted in a reply: escaped by repr, cut short so a huge one stays small."""
    shown = repr(value)
    return shown if len(shown) <= SHOWN_LENGTH else shown[: SHOWN_LENGTH - 3] + "..."


def _parse_integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise MalformedPacket("frame holds an integer outside the safe-integer range")
    return int(digits)


def _refuse_constant(name: str) -> Any:
    raise MalformedPacket(f"frame holds {name}, which is not JSON")


def parse_envelope(text: str | bytes) -> Envelope:
    """Check a frame's envelope; raise `MalformedPacket` naming the first fault."""
    try:
        frame = json.loads(text, parse_int=_parse_integer, parse_constant=_refuse_constant)
    except MalformedPacket:
        raise
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError among them
        raise MalformedPacket(f"frame is not JSON ({type(error).__name__})") from None
    except RecursionError:
        raise MalformedPacket("frame is nested too deeply") from None
    if type(frame) is not dict:
        raise MalformedPacket(f"frame is {_json_type(frame)}, not a JSON object")
    packet_id = get_field(frame, "id", str)
    if not ID_PATTERN.fullmatch(packet_id):
        raise MalformedPacket(f"packet id {shown(packet_id)} does not match the id pattern")
    packet_uuid = get_field(frame, "uuid", str)
    if not UUID_PATTERN.fullmatch(packet_uuid):
        raise MalformedPacket("uuid is not a lowercase UUID")
    reply_uuid = get_field(frame, "reply_uuid", str, required=False)
    if reply_uuid is not None and not UUID_PATTERN.fullmatch(reply_uuid):
        raise MalformedPacket("reply_uuid is not a lowercase UUID")
    data = get_field(frame, "data", dict)
    return Envelope(packet_id, packet_uuid, data, reply_uuid)


# --- incoming packets -----------------------------------------------------------------------


def decode_request(text: str | bytes) -> Incoming:
    """Decode a packet the manager sent; raise `MalformedPacket` for anything but a request."""
    envelope = parse_envelope(text)
    decoder = _DECODERS.get(envelope.id)
    if decoder is None:
        raise MalformedPacket(f"packet id {shown(envelope.id)} is not one the manager sends")
    return Incoming(envelope.uuid, decoder(envelope.data))


def _decode_configuration(data: dict[str, Any]) -> Configuration:
    fields = _fields(data, REQUEST_SHAPES[CONFIGURATION])
    crypto = _fields(fields["crypto"], CRYPTO_SHAPE, optional=("key",))
    enabled, key_text = crypto["enabled"], crypto["key"]
    if enabled and key_text is None:
        raise MalformedPacket("field 'key' is missing")
    token, channel_id = fields["discord_bot_token"], fields["discord_channel_id"]

    problems: list[str] = []
    key: bytes | None = None
    if enabled:
        key = _decode_key(key_text)
        if key is None:
            problems.append("crypto.key must be the base64 encoding of exactly 32 bytes")
    if not token:
        problems.append("discord_bot_token is empty")
    elif not TOKEN_PATTERN.fullmatch(token):
        problems.append("discord_bot_token must be visible ASCII characters only")
    if not SNOWFLAKE_PATTERN.fullmatch(channel_id):
        problems.append(f"discord_channel_id {shown(channel_id)} is not a Discord snowflake")
    return Configuration(token, channel_id, key, tuple(problems))


def _decode_key(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


def _decode_upload_start(data: dict[str, Any]) -> UploadStart:
    start = UploadStart(**_fields(data, REQUEST_SHAPES[UPLOAD_START]))
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


_DECODERS: dict[str, Callable[[dict[str, Any]], Request]] = {
    CONFIGURATION: _decode_configuration,
    UPLOAD_START: _decode_upload_start,
    UPLOAD_ABORT: _decode_upload_abort,
}
