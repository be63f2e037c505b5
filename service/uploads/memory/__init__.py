"""The process's chunk memory: the rules (`policy`), the waiting chunks (`queue`), the
buffers (`pool`), the default budget (`sizing`), and `ChunkMemory`, which uploads use."""

from .chunk_memory import ChunkBuffer, ChunkMemory
from .sizing import BASELINE, cgroup_memory_limit, default_budget

__all__ = ["BASELINE", "ChunkBuffer", "ChunkMemory", "cgroup_memory_limit", "default_budget"]
