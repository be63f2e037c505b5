"""What a named scenario of the benchmark is: its flags, its plan from them, its run."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from report import Column, Report, log, row_text

from service.config import _positive_int, _positive_seconds


@dataclass(frozen=True)
class Scenario:
    """A scenario of `bench/run.py`. `add_arguments` adds its own flags to its group of the
    command line; `plan` reads them (and the shared `--runs` and `--smoke`) into a plan;
    `run` measures it. A run raises `BenchFailure` (or what the clients raise) when the
    benchmark itself broke down, and marks its report `failed` when an upload that should
    have completed did not."""

    name: str
    summary: str  # one line for --help
    add_arguments: Callable[[argparse._ArgumentGroup], None]
    plan: Callable[[argparse.Namespace], Any]
    run: Callable[[Any], Awaitable[Report]]

    @classmethod
    def of(
        cls,
        name: str,
        summary: str,
        run: Callable[[Any], Awaitable[Report]],
        full: Any,
        smoke: Any,
        *flags: tuple[str, Callable[[str], Any], str],
    ) -> Scenario:
        """A scenario whose plan is a dataclass: `full`, or `smoke` with --smoke, where each
        flag given, (name, type, help), replaces the field of its name (`--chunk-kib`:
        `chunk_kib`), and so does `--runs`."""

        def add_arguments(group: argparse._ArgumentGroup) -> None:
            for flag, kind, help in flags:
                group.add_argument(flag, type=kind, help=help)

        def plan(args: argparse.Namespace) -> Any:
            names = ["runs", *(flag[2:].replace("-", "_") for flag, _, _ in flags)]
            given = {name: getattr(args, name) for name in names}
            chosen = smoke if args.smoke else full
            return replace(
                chosen, **{key: value for key, value in given.items() if value is not None}
            )

        return cls(name, summary, add_arguments, plan, run)


async def measured(
    label: str,
    runs: int,
    seconds: float,
    once: Callable[[], Awaitable[dict[str, Any]]],
    columns: Sequence[Column],
) -> list[dict[str, Any]]:
    """`once()`'s figures `runs` times, each run within `seconds` and its figures logged."""
    done = []
    for index in range(runs):
        async with asyncio.timeout(seconds):
            done.append(await once())
        log(f"{label}, run {index + 1}/{runs}: {row_text(columns, done[-1])}")
    return done


def flag(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A settings parser of service/config.py as an argparse type: its sentence in the error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


POSITIVE_INT = flag(_positive_int)
POSITIVE_SECONDS = flag(_positive_seconds)


def counts(text: str) -> tuple[int, ...]:
    """Numbers of jobs or slots from the command line: "1,2,4,8"."""
    return tuple(POSITIVE_INT(part) for part in text.split(","))


def letters(allowed: str) -> Callable[[str], str]:
    """The parser of a scenario's cases from the command line: some of `allowed`, each one
    letter, separated by commas ("a,c")."""

    def parse(text: str) -> str:
        keys = text.replace(",", "")
        if not keys or any(key not in allowed for key in keys):
            raise argparse.ArgumentTypeError(f"cases are {','.join(allowed)}, separated by commas")
        return keys

    return parse
