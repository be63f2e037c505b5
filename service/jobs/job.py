"""One upload's chunk bookkeeping: which chunks are claimed, stored and still missing.

Pure state, no I/O: a `Job` says whether a chunk may be received (`claim`), learns when it
is stored (`record`) or given up (`release`), ends exactly once (`end`), and gives the
finish packet's message list and file hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..refusals import ChunkInFlight, TooManyChunks, UploadEnded
from .layout import ChunkLayout

RETRY_IN_FLIGHT = 2.0  # seconds: about one chunk's time at Discord


@dataclass(frozen=True)
class StoredChunk:
    message_id: str
    digest: str  # lowercase hex SHA-256 of the plaintext


def file_hash(chunk_digests: Iterable[str]) -> str:
    """The file's hash: SHA-256 of the chunks' hex digests concatenated in order."""
    return hashlib.sha256("".join(chunk_digests).encode("ascii")).hexdigest()


@dataclass
class Job:
    upload_id: str
    layout: ChunkLayout
    max_in_flight: int = 8
    in_flight: set[int] = field(default_factory=set)
    stored: dict[int, StoredChunk] = field(default_factory=dict)
    head: bytes | None = None  # the start of chunk 0's plaintext, for MIME sniffing
    ended: bool = False

    @property
    def complete(self) -> bool:
        return len(self.stored) == self.layout.count

    def claim(self, index: int) -> StoredChunk | None:
        """Reserve chunk `index` for receiving.

        Returns the stored chunk when it is already on Discord (the client is resending it
        and only needs its bytes compared), else None after marking it in flight.
        """
        if self.ended:
            raise UploadEnded(f"upload {self.upload_id} has ended")
        if index in self.in_flight:
            raise ChunkInFlight(f"chunk {index} is already being received")
        already = self.stored.get(index)
        if already is None:
            if len(self.in_flight) >= self.max_in_flight:
                raise TooManyChunks(
                    f"upload {self.upload_id} has {len(self.in_flight)} chunks in flight already",
                    retry_after=RETRY_IN_FLIGHT,
                )
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
            self.head = head

    def end(self) -> bool:
        """Mark the job ended; True only the first time, so it is reported exactly once."""
        first = not self.ended
        self.ended = True
        return first

    def messages(self) -> list[str]:
        return [self.stored[i].message_id for i in range(self.layout.count)]

    def file_hash(self) -> str:
        return file_hash(self.stored[i].digest for i in range(self.layout.count))
