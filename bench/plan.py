"""What one benchmark run covers: the mode, the file sizes, the runs and numbers of jobs."""

from __future__ import annotations

import argparse
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


def parse_counts(text: str) -> tuple[int, ...]:
    """Numbers of jobs or slots from the command line: "1,2,4,8"."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("must be numbers separated by commas") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("every number must be at least 1")
    return counts
