"""Checking a finished upload as the manager would: its finish packet against the source.

The verifier of the demo and the benchmark. It does no I/O: the caller gives the finish
packet, the source's chunks (plaintext), the channel and key the job was configured with,
and `AttachmentOf`, the stored attachment of a message id (the demo fetches them over HTTP
first, as the manager would; the benchmark reads the Discord stand-in). The answer is a list
of problems, each a sentence; an empty list means verified.

tests/integration/test_demo.py tests this verifier and the demo with it. The other tests
check uploads with their own code, tests/conftest.py's `expected_hash` and `reassembled`, so
that the tests' hash is not the service's own; they borrow only `attachments_in` and
`opened` from here, to read and decrypt the stored attachments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag

from ..chunks.sealing import HEADER_SIZE, open_attachment
from ..jobs.job import file_hash
from .discord_api import DiscordStandIn

Chunk = bytes | memoryview
AttachmentOf = Callable[[str], bytes | None]  # a message id's attachment; None if absent


def chunks_of(data: Chunk, chunk_size: int) -> list[memoryview]:
    """`data` cut into chunks of `chunk_size` (the last one holds the remainder), no copies."""
    view = memoryview(data)
    return [view[start : start + chunk_size] for start in range(0, len(view), chunk_size)]


def source_hash(chunks: Iterable[Chunk]) -> str:
    """The file hash the finish packet must carry for these plaintext chunks."""
    return file_hash(hashlib.sha256(chunk).hexdigest() for chunk in chunks)


def opened(key: bytes | None, attachment: bytes) -> bytes | None:
    """An attachment's plaintext: decrypted with `key`, or as stored when there is no key;
    None if it does not decrypt."""
    if key is None:
        return attachment
    if len(attachment) < HEADER_SIZE:
        return None
    try:
        return open_attachment(key, attachment)
    except InvalidTag:
        return None


def attachments_in(discord: DiscordStandIn, channel: str) -> AttachmentOf:
    """Read each message's attachment straight from the stand-in's memory."""

    def attachment_of(message_id: str) -> bytes | None:
        try:
            return discord.message(channel, message_id).attachments[0].data
        except (KeyError, IndexError):
            return None

    return attachment_of


def finish_problems(
    finish: Mapping[str, Any],
    chunks: Sequence[Chunk],
    channel: str,
    key: bytes | None,
    attachment_of: AttachmentOf,
    *,
    compared: Collection[int] | None = None,
) -> list[str]:
    """What is wrong with a finished upload; [] if nothing.

    The packet's hash is checked against the source, its channel and `is_encrypted` against
    the configuration, its message count against the chunks; every listed attachment's size
    is checked, and the chunks in `compared` (all when None) are also decrypted and compared
    with the source's bytes.
    """
    if not finish.get("success"):
        return [f"the upload failed: {finish.get('reason')}"]
    problems: list[str] = []
    if finish.get("hash") != source_hash(chunks):
        problems.append("the finish packet's hash does not match the source's")
    if finish.get("channel") != channel:
        problems.append(f"the finish packet names channel {finish.get('channel')}, not {channel}")
    if finish.get("is_encrypted") is not (key is not None):
        problems.append(
            f"the finish packet says is_encrypted is {finish.get('is_encrypted')}, "
            f"but encryption was {'on' if key is not None else 'off'}"
        )
    messages: list[str] = list(finish.get("messages") or [])
    if len(messages) != len(chunks):
        problems.append(f"the finish packet lists {len(messages)} of {len(chunks)} chunks")
    for index, (message_id, chunk) in enumerate(zip(messages, chunks, strict=False)):
        compare = compared is None or index in compared
        problem = chunk_problem(index, message_id, chunk, key, attachment_of, compare=compare)
        if problem is not None:
            problems.append(problem)
    return problems


def chunk_problem(
    index: int,
    message_id: str,
    chunk: Chunk,
    key: bytes | None,
    attachment_of: AttachmentOf,
    *,
    compare: bool,
) -> str | None:
    """What is wrong with one listed chunk's attachment, if anything."""
    attachment = attachment_of(message_id)
    if attachment is None:
        return f"chunk {index}'s message {message_id} has no attachment"
    size = len(chunk) + (HEADER_SIZE if key is not None else 0)
    if len(attachment) != size:
        return f"chunk {index}'s attachment has {len(attachment)} bytes, not {size}"
    if not compare:
        return None
    plain = opened(key, attachment)
    if plain is None:
        return f"chunk {index} does not decrypt"
    if plain != chunk:
        return f"chunk {index} does not match the source's bytes"
    return None
