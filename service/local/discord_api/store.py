"""Stored messages and their attachments, named by Discord-style snowflake ids.

A snowflake's top bits are milliseconds since Discord's epoch, so a message's age is read from
its id: that is how Discord decides a message is too old to bulk-delete.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

DISCORD_EPOCH_MS = 1420070400000
_SEQUENCE_BITS = 22


@dataclass
class Attachment:
    """A file stored with a message."""

    id: str
    filename: str
    data: bytes
    content_type: str


@dataclass
class Message:
    """A message stored in a channel."""

    id: str
    channel_id: str
    content: str
    attachments: list[Attachment]
    nonce: str | None


def created_at(snowflake: str | int) -> datetime:
    """When the object named by the snowflake was created."""
    ms = (int(snowflake) >> _SEQUENCE_BITS) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC)


class Snowflakes:
    """Snowflake ids: unique, and increasing for ids made now."""

    def __init__(self) -> None:
        self._last = 0
        self._backdated = 0

    def next(self) -> str:
        now = int(datetime.now(UTC).timestamp() * 1000) - DISCORD_EPOCH_MS
        self._last = max(now << _SEQUENCE_BITS, self._last + 1)
        return str(self._last)

    def at(self, when: datetime) -> str:
        """An id created at `when` (in the past: later ids are never below it)."""
        ms = int(when.timestamp() * 1000) - DISCORD_EPOCH_MS
        if ms < 0 or when > datetime.now(UTC):
            raise ValueError(f"{when} is not between Discord's epoch and now")
        self._backdated = (self._backdated + 1) % (1 << _SEQUENCE_BITS)
        return str(ms << _SEQUENCE_BITS | self._backdated)


class Store:
    """Messages by channel, by id and by nonce, and attachments by id."""

    def __init__(self) -> None:
        self._channels: dict[str, list[Message]] = {}
        self._by_id: dict[tuple[str, str], Message] = {}
        self._by_nonce: dict[tuple[str, str], Message] = {}
        self._attachments: dict[tuple[str, str], Attachment] = {}

    def add(self, message: Message) -> None:
        """Store a message; the first message with a nonce keeps it."""
        channel_id = message.channel_id
        self._channels.setdefault(channel_id, []).append(message)
        self._by_id[channel_id, message.id] = message
        if message.nonce is not None:
            self._by_nonce.setdefault((channel_id, message.nonce), message)
        for attachment in message.attachments:
            self._attachments[channel_id, attachment.id] = attachment

    def messages(self, channel_id: str) -> list[Message]:
        return list(self._channels.get(channel_id, []))

    def get(self, channel_id: str, message_id: str) -> Message | None:
        return self._by_id.get((channel_id, message_id))

    def with_nonce(self, channel_id: str, nonce: str) -> Message | None:
        return self._by_nonce.get((channel_id, nonce))

    def attachment(self, channel_id: str, attachment_id: str) -> Attachment | None:
        return self._attachments.get((channel_id, attachment_id))

    def delete(self, channel_id: str, message_ids: Iterable[str]) -> int:
        """Delete those of the messages that exist; how many did."""
        deleted = 0
        for message_id in message_ids:
            message = self._by_id.get((channel_id, message_id))
            if message is not None:
                self._channels[channel_id].remove(message)
                self._unindex(message)
                deleted += 1
        return deleted

    def forget(self, channel_id: str) -> None:
        """Drop a channel's messages and attachments (not counted as deleted)."""
        for message in self._channels.pop(channel_id, []):
            self._unindex(message)

    def _unindex(self, message: Message) -> None:
        channel_id = message.channel_id
        self._by_id.pop((channel_id, message.id), None)
        if message.nonce is not None and self._by_nonce.get((channel_id, message.nonce)) is message:
            del self._by_nonce[channel_id, message.nonce]
        for attachment in message.attachments:
            self._attachments.pop((channel_id, attachment.id), None)
