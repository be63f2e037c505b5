"""How large the chunk memory budget is when `CHUNK_MEMORY_MIB` is not set: from the slots,
within the cgroup's memory limit."""

from __future__ import annotations

from pathlib import Path

from ...chunks.sealing import buffer_size
from ...jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE

MIB = 1024 * 1024
BASELINE = 96 * MIB  # what the process needs besides chunk buffers (idle RSS is about 60 MiB)
CGROUP_SHARE = 0.8  # of the memory limit left after the baseline
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def cgroup_memory_limit(paths: tuple[Path, ...] = _CGROUP_LIMITS) -> int | None:
    """The memory limit of the cgroup this process runs in, if it has one."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 says "no limit" with a huge number
            return int(text)
    return None


def default_budget(slots: int, limit: int | None) -> int:
    """Every slot's browser sending its 5 chunks at once; under a memory limit, at most
    CGROUP_SHARE of what the baseline leaves, and never less than one chunk."""
    one_chunk = buffer_size(MANAGER_CHUNK_SIZE)
    wanted = slots * BROWSER_CHUNKS_IN_FLIGHT * one_chunk
    if limit is None:
        return wanted
    return max(one_chunk, min(wanted, int((limit - BASELINE) * CGROUP_SHARE)))
