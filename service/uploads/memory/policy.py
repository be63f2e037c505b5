"""Who may take how much chunk memory: the budget (`CHUNK_MEMORY_MIB`) and how it is shared.

A chunk must be held whole before it is posted (the GCM tag precedes the ciphertext), so
chunk buffers are the memory a busy service spends. A chunk reserves its buffer's size from
the budget when it is claimed, before its body is read: a chunk that has begun can always
finish, so chunks half-received can never starve one another. When the budget is spent,
a new chunk waits (its bytes stay in the client and the kernel) until memory frees, and is
refused with `MemoryBusy` (503, Retry-After) if that takes too long.

The budget is shared fairly between uploads, so that one upload's flood cannot slow
another's browser:
- memory that frees goes to the waiting chunk whose upload holds the fewest buffers (first
  come, first served among equals);
- an upload already holding a browser's worth of buffers (5) gets more only from spare
  memory: never while a chunk waits, and never the last 5 buffers' worth (nor those kept
  below), so that another browser's 5 chunks can start at once. Such a burst is refused at
  once;
- each upload under way that holds no buffer has one of its own size kept for it: an upload
  that holds buffers takes another only if one stays free for each of them, so that a job
  starting after the others have spent the budget begins at once.

Idle buffers kept for reuse count against the budget too (`spare` is what they may keep).

This module is the rules alone, without asyncio or buffers: `queue.py` makes chunks wait
their turn by them, `pool.py` keeps the buffers, and `chunk_memory.py` ties the three.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ...jobs.layout import BROWSER_CHUNKS_IN_FLIGHT


@dataclass(frozen=True)
class Claim:
    """A chunk asking for memory: its upload (`owner`), its buffer's size, its place in line."""

    owner: str
    size: int
    arrived: int


class MemoryPolicy:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.reserved = 0  # bytes of the buffers handed out
        self._held: Counter[str] = Counter()  # buffers handed out, by owner (upload id)
        self._under_way: dict[str, int] = {}  # owners that began and did not end: buffer size

    @property
    def spare(self) -> int:
        """Bytes no chunk holds: what idle buffers may keep."""
        return self.budget - self.reserved

    def held_by(self, owner: str) -> int:
        """How many buffers `owner` holds."""
        return self._held[owner]

    def begin(self, owner: str, size: int) -> None:
        """`owner`'s upload, of buffers of `size` bytes, is under way: while it holds no
        buffer, one is kept for it."""
        self._under_way[owner] = size

    def end(self, owner: str) -> None:
        """`owner`'s upload ended: nothing is kept for it any more."""
        self._under_way.pop(owner, None)

    def is_burst(self, owner: str) -> bool:
        """Whether `owner` holds a browser's worth of buffers already."""
        return self._held[owner] >= BROWSER_CHUNKS_IN_FLIGHT

    def grants_burst(self, owner: str, size: int, *, queued: bool) -> bool:
        """Whether a burst of `owner` gets `size` bytes now: from spare memory, never while
        a chunk waits (`queued`)."""
        return not queued and self.allows(owner, size)

    def allows(self, owner: str, size: int) -> bool:
        """Whether `owner` may take `size` more bytes now."""
        return self.reserved + size + self._kept_from(owner, size) <= self.budget

    def next_turn(self, claims: Iterable[Claim]) -> Claim | None:
        """The waiting claim that gets memory now: the one whose upload holds the fewest
        buffers, the earliest among equals; None while it may not (the rest wait behind)."""
        first = min(claims, key=lambda c: (self._held[c.owner], c.arrived), default=None)
        if first is None or not self.allows(first.owner, first.size):
            return None
        return first

    def take(self, owner: str, size: int) -> None:
        self.reserved += size
        self._held[owner] += 1

    def give(self, owner: str, size: int) -> None:
        self.reserved -= size
        self._held[owner] -= 1
        if not self._held[owner]:
            del self._held[owner]

    def _kept_from(self, owner: str, size: int) -> int:
        """Memory `owner` may not take: nothing while it holds no buffer; else a buffer for
        each other upload under way that holds none (of that upload's size), and once it
        holds a browser's 5, at least 5 of its own buffers' worth."""
        held = self._held[owner]
        if not held:
            return 0
        kept = sum(
            kept_size
            for u, kept_size in self._under_way.items()
            if u != owner and not self._held[u]
        )
        if held >= BROWSER_CHUNKS_IN_FLIGHT:
            return max(kept, BROWSER_CHUNKS_IN_FLIGHT * size)
        return kept
