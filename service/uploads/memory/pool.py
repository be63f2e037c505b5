"""Chunk buffers, and the idle ones kept for reuse.

Buffers are anonymous memory maps: the kernel gives their pages only as the chunk's bytes
are written, so a claim that sends little costs little, and an evicted buffer goes back to
the kernel at once. Buffers are reused (a fresh one costs thousands of page faults), but
idle ones count against the budget too and are dropped first when it runs short.
"""

from __future__ import annotations

import mmap
from collections import deque


class BufferPool:
    def __init__(self) -> None:
        self._idle: deque[mmap.mmap] = deque()

    @property
    def idle_bytes(self) -> int:
        return sum(len(buffer) for buffer in self._idle)

    def get(self, size: int, room: int) -> mmap.mmap:
        """A buffer of `size` bytes, idle or new, once the idle ones are within `room` bytes."""
        found = next((b for b in self._idle if len(b) == size), None)
        if found is not None:
            self._idle.remove(found)
        self._trim(room)
        return found if found is not None else mmap.mmap(-1, size)

    def keep(self, buffer: mmap.mmap, room: int) -> None:
        """Keep `buffer` for reuse, within `room` bytes of idle buffers."""
        self._idle.append(buffer)
        self._trim(room)

    def _trim(self, room: int) -> None:
        while self._idle and self.idle_bytes > room:
            self._idle.popleft()  # unmapped once the last view of it is gone
