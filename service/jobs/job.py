"""One upload job: chunk arithmetic and which chunks are claimed, stored and still missing.

Pure state, no I/O: the intake asks a `Job` whether a chunk may be received (`claim`),
tells it when the chunk is stored (`record`) or given up (`release`), and the slot ends it
exactly once (`end`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..manager.packets import UploadStart
from ..storage.mime import sniff_mime
from ..storage.sealing import file_hash

MANAGER_CHUNK_SIZE = 10 * 1024 * 1024 - 1024  # the chunk size the manager gives in practice


class ChunkRefused(Exception):
    """The client's chunk cannot be taken; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ChunkLayout:
    """How a file of `size` bytes splits into chunks of `chunk_size` (PROTOCOL.md section 2)."""

    size: int
    chunk_size: int

    @property
    def count(self) -> int:
        return math.ceil(self.size / self.chunk_size)

    def length(self, index: int) -> int:
        """The exact length chunk `index` must have; the last one holds the remainder."""
        if index < self.count - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.count - 1)

    def parse_index(self, text: str) -> int:
        """The chunk index the client sent as decimal text; raise `ChunkRefused` if invalid."""
        if not (text.isascii() and text.isdigit()):
            raise ChunkRefused(400, f"chunk index {text[:32]!r} is not a whole number")
        index = int(text)
        if index >= self.count:
            raise ChunkRefused(
                400, f"chunk index {index} is out of range: this file has {self.count} chunks"
            )
        return index


@dataclass(frozen=True)
class StoredChunk:
    message_id: str
    digest: str  # lowercase hex SHA-256 of the plaintext


@dataclass
class Job:
    start: UploadStart
    layout: ChunkLayout = field(init=False)
    in_flight: set[int] = field(default_factory=set)
    stored: dict[int, StoredChunk] = field(default_factory=dict)
    mime_type: str | None = None
    ended: bool = False

    def __post_init__(self) -> None:
        self.layout = ChunkLayout(self.start.size, self.start.chunk_size)

    @property
    def upload_id(self) -> str:
        return self.start.upload_id

    @property
    def complete(self) -> bool:
        return len(self.stored) == self.layout.count

    def claim(self, index: int) -> StoredChunk | None:
        """Reserve chunk `index` for receiving.

        Returns the stored chunk when it is already on Discord (the client is resending it
        and only needs its bytes compared), else None after marking it in flight.
        """
        if self.ended:
            raise ChunkRefused(410, f"upload {self.upload_id} has ended")
        if index in self.in_flight:
            raise ChunkRefused(409, f"chunk {index} is already being received")
        already = self.stored.get(index)
        if already is None:
            self.in_flight.add(index)
        return already

    def release(self, index: int) -> None:
        """Give up a claim: the chunk was not stored and may be sent again."""
        self.in_flight.discard(index)

    def record(self, index: int, chunk: StoredChunk, head: bytes) -> None:
        """Chunk `index` is on Discord; `head` is the start of its plaintext."""
        self.in_flight.discard(index)
        self.stored[index] = chunk
        if index == 0:
            self.mime_type = sniff_mime(head)

    def end(self) -> bool:
        """Mark the job ended; True only the first time, so it is reported exactly once."""
        first = not self.ended
        self.ended = True
        return first

    def messages(self) -> list[str]:
        return [self.stored[i].message_id for i in range(self.layout.count)]

    def file_hash(self) -> str:
        return file_hash(self.stored[i].digest for i in range(self.layout.count))
