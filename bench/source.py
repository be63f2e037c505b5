"""The file every job uploads: random bytes cut into the manager's chunks."""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.verify import chunks_of


@dataclass(frozen=True)
class Source:
    data: bytes
    chunk_size: int
    chunks: list[memoryview]

    @classmethod
    def random(cls, size: int, chunk_size: int = MANAGER_CHUNK_SIZE) -> Source:
        data = os.urandom(size)
        return cls(data, chunk_size, chunks_of(data, chunk_size))

    @property
    def size(self) -> int:
        return len(self.data)
