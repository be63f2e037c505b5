"""What one benchmark run covers: the mode, the file sizes, the runs and numbers of jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How N jobs are served: N service processes of one slot each, or one process of N slots.
Mode = Literal["processes", "slots"]
MODES: tuple[Mode, ...] = ("processes", "slots")


@dataclass(frozen=True)
class Plan:
    mode: Mode
    size: int  # bytes per job with 1 job
    multi_size: int  # bytes per job with several jobs
    runs: int
    jobs: tuple[int, ...]

    def size_for(self, jobs: int) -> int:
        return self.size if jobs == 1 else self.multi_size
