"""The chunks `Upload.open_chunk` hands the endpoint: a new one, sealed into its buffer as it
arrives and then posted, or one stored already and sent again, only compared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self

from ..chunks.sealing import ChunkDigest, ChunkSealer
from ..jobs.job import StoredChunk
from ..refusals import ChunkConflict
from .memory import ChunkBuffer

if TYPE_CHECKING:
    from .upload import Upload


class IncomingChunk(Protocol):
    """A claimed chunk: its bytes go to `sink`, then `store` makes it count. Closing it gives
    up the claim if it was not stored."""

    index: int

    @property
    def sink(self) -> ChunkSealer | ChunkDigest: ...

    async def store(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...


class NewChunk:
    """A chunk not stored yet: sealed as it arrives into its buffer, then posted."""

    def __init__(
        self, upload: Upload, index: int, memory: ChunkBuffer, sealer: ChunkSealer
    ) -> None:
        self.upload = upload
        self.index = index
        self.sink = sealer
        self._memory = memory

    async def store(self) -> None:
        self._memory.reusable = False  # while posting, aiohttp may still read the buffer
        await self.upload.post(self.index, self.sink)
        self._memory.reusable = True

    def __enter__(self) -> NewChunk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.upload.release(self.index)
        self._memory.give_back()


class ResentChunk:
    """A chunk stored already and sent again: the same bytes are a lost 200 retried."""

    def __init__(
        self, upload: Upload, index: int, stored: StoredChunk, digest: ChunkDigest
    ) -> None:
        self.upload = upload
        self.index = index
        self.sink = digest
        self._stored = stored

    async def store(self) -> None:
        self.upload.refuse_unless_kept()  # it ended as the bytes arrived: its message goes
        if self.sink.hexdigest() != self._stored.digest:
            raise ChunkConflict(f"chunk {self.index} was already stored with different bytes")

    def __enter__(self) -> ResentChunk:
        self.upload.resending += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.upload.resending -= 1
        self.upload.chunk_ended()
