"""What the benchmark tells whoever runs it besides the report: progress lines on stderr, and
`BenchFailure`, which ends the benchmark with exit status 1."""

from __future__ import annotations

import sys


class BenchFailure(Exception):
    """An upload failed or did not verify, or a helper process did not start: the
    benchmark's figures would be meaningless."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
