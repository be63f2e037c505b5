"""How a file splits into chunks (PROTOCOL.md section 2), and the peers' facts about chunks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..refusals import BadIndex

MANAGER_CHUNK_SIZE = 10 * 1024 * 1024 - 1024  # the chunk size the manager gives in practice
BROWSER_CHUNKS_IN_FLIGHT = 5  # chunks of one file the browser client sends at once


@dataclass(frozen=True)
class ChunkLayout:
    """How a file of `size` bytes splits into chunks of `chunk_size`."""

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
        """The chunk index the client sent as decimal text; raise `BadIndex` if invalid."""
        if not (text.isascii() and text.isdigit()):
            raise BadIndex(f"chunk index {text[:32]!r} is not a whole number")
        index = int(text)
        if index >= self.count:
            raise BadIndex(
                f"chunk index {index} is out of range: this file has {self.count} chunks"
            )
        return index
