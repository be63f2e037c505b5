"""What the benchmark tells whoever runs it: progress on stderr, each scenario's `Report`
(markdown tables on stdout, every figure in the JSON), targets and their verdicts, and
`BenchFailure`, which ends a scenario without figures."""

from __future__ import annotations

import json
import operator
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024**2
GIB = 1024**3


class BenchFailure(Exception):
    """An upload failed or did not verify, or a service did not start: the figures would
    be meaningless."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [row(header), row(["---"] * len(header)), *(row(cells) for cells in rows)]


# A table's column: its header, the figure(s) it shows (several: joined with "/"), the format.
Column = tuple[str, str | tuple[str, ...], str]


def cells(columns: Sequence[Column], figures: dict[str, Any]) -> list[str]:
    def cell(keys: str | tuple[str, ...], spec: str) -> str:
        keys = (keys,) if isinstance(keys, str) else keys
        return "/".join(format(figures[key], spec) for key in keys)

    return [cell(keys, spec) for _, keys, spec in columns]


def figures_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[str]:
    """One row per dict of figures, one column per `Column`."""
    return table([column[0] for column in columns], [cells(columns, f) for f in rows])


def row_text(columns: Sequence[Column], figures: dict[str, Any]) -> str:
    """One row of figures as `header value` pairs, for progress lines."""
    return ", ".join(
        f"{c[0]} {cell}" for c, cell in zip(columns, cells(columns, figures), strict=True)
    )


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


TARGET_HEADER = ["target", "measured", "limit", "verdict"]
_COMPARISONS = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}


def target(
    name: str, value: float, spec: str, compare: str, limit: float, limit_spec: str = ""
) -> Target:
    """The target `value compare limit` (say `<=`), each shown in its format."""
    passed = _COMPARISONS[compare](value, limit)
    return Target(name, format(value, spec), f"{compare} {limit:{limit_spec}}", passed)


@dataclass
class Report:
    """One scenario's report: its markdown below a `## title` line, and its figures.
    `failed`: an upload that should have completed did not (exit status 1)."""

    title: str
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

    def markdown(self) -> str:
        return "\n".join([f"## {self.title}", "", *self.lines])


def machine() -> str:
    """The machine in one phrase, for every report's first line."""
    return f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}"


def write(reports: dict[str, Report], json_path: Path | None) -> None:
    """Every report's markdown on stdout, and with `json_path` every figure there."""
    print("\n\n".join(report.markdown() for report in reports.values()))
    if json_path is not None:
        everything = {name: report.figures for name, report in reports.items()}
        json_path.write_text(json.dumps(everything, indent=2) + "\n")
