"""What the benchmark tells whoever runs it: progress on stderr, each scenario's `Report`
(Markdown on stdout, every figure in the JSON), and targets with their verdicts."""

from __future__ import annotations

import json
import operator
import os
import platform
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A table's column: its header, the figure(s) it shows (several: joined with "/"), the format.
Column = tuple[str, str | tuple[str, ...], str]
TARGET_HEADER = ["target", "measured", "limit", "verdict"]
_COMPARISONS = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}


class BenchFailure(Exception):
    """The benchmark broke down (a service did not start, an upload did not verify)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tally(statuses: Counter[int] | Counter[int | None]) -> str:
    """HTTP statuses counted, as "12 x 200, 20 x 503" ("none": no answer)."""
    return ", ".join(f"{n} x {status or 'none'}" for status, n in sorted(statuses.items(), key=str))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [row(header), row(["---"] * len(header)), *(row(cells) for cells in rows)]


def cells(columns: Sequence[Column], figures: dict[str, Any]) -> list[str]:
    def cell(keys: str | tuple[str, ...], spec: str) -> str:
        keys = (keys,) if isinstance(keys, str) else keys
        return "/".join(format(figures[key], spec) for key in keys)

    return [cell(keys, spec) for _, keys, spec in columns]


def figures_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[str]:
    return table([column[0] for column in columns], [cells(columns, f) for f in rows])


def row_text(columns: Sequence[Column], figures: dict[str, Any]) -> str:
    """One row of figures as `header value` pairs, for progress lines."""
    pairs = zip(columns, cells(columns, figures), strict=True)
    return ", ".join(f"{column[0]} {cell}" for column, cell in pairs)


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    limit: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL"

    def row(self) -> list[str]:
        return [self.name, self.value, self.limit, self.verdict]


def target(
    name: str, value: float, spec: str, compare: str, limit: float, limit_spec: str = ""
) -> Target:
    """The target `value compare limit` (say `<=`), each shown in its format."""
    passed = _COMPARISONS[compare](value, limit)
    return Target(name, format(value, spec), f"{compare} {limit:{limit_spec}}", passed)


def targets_table(key: str, rows: Sequence[tuple[object, list[Target]]]) -> list[str]:
    """Each row's targets, the row named in a first column headed `key`."""
    return table([key, *TARGET_HEADER], [[k, *t.row()] for k, ts in rows for t in ts])


@dataclass
class Report:
    """One scenario's report: `about` (what ran) and its lines below a `## title`, and its
    figures. `failed`: an upload that should have completed did not (exit status 1)."""

    title: str
    about: str
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    took: float = 0.0  # seconds

    def markdown(self) -> str:
        machine = f"{os.cpu_count()} CPU(s), Python {platform.python_version()}"
        about = f"{self.about} {machine}; took {self.took:.0f} s. Every figure and target: "
        return "\n".join([f"## {self.title}", "", about + "bench/README.md.", "", *self.lines])


def write(reports: dict[str, Report], json_path: Path | None) -> None:
    """Every report's Markdown on stdout, and with `json_path` every figure there (a `Target`
    as its fields)."""
    print("\n\n".join(report.markdown() for report in reports.values()))
    if json_path is not None:
        everything = {name: report.figures for name, report in reports.items()}
        json_path.write_text(json.dumps(everything, indent=2, default=asdict) + "\n")
