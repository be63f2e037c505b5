"""What a named scenario of the benchmark is: its flags, its plan from them, its run."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from report import Column, Report, log, row_text

from service.setting_values import positive_int, positive_seconds


def option(default: Any, parse: Callable[[str], Any], help: str) -> Any:
    """A field of a scenario's plan that a flag of its name sets (`chunk_kib`: `--chunk-kib`)."""
    return field(default=default, metadata={"parse": parse, "help": help})


def _defaults(full: Any, smoke: Any) -> str:
    """An option's defaults for --help, " (default 40; smoke 20)"; none when None."""

    def shown(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple | str) else f"{value:g}"

    if full is None:
        return ""
    return f" (default {shown(full)}" + (f"; smoke {shown(smoke)})" if smoke != full else ")")


@dataclass(frozen=True)
class Scenario:
    """A scenario of `bench/run.py`: its plan is `full`, or `smoke` with --smoke, where each
    `option` given (and --runs) replaces its field. `run` raises `BenchFailure` (or what the
    clients raise) when the benchmark broke down, and marks its report `failed` when an upload
    did not complete."""

    name: str
    summary: str  # one line for --help
    run: Callable[[Any], Awaitable[Report]]
    full: Any
    smoke: Any

    def options(self) -> list[Field[Any]]:
        return [option for option in fields(self.full) if "parse" in option.metadata]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(f"{self.name} scenario")
        for option in self.options():
            defaults = (getattr(plan, option.name) for plan in (self.full, self.smoke))
            help = option.metadata["help"] + _defaults(*defaults)
            flag = "--" + option.name.replace("_", "-")
            group.add_argument(flag, type=option.metadata["parse"], help=help)

    def plan(self, args: argparse.Namespace) -> Any:
        names = ["runs", *(option.name for option in self.options())]
        given = {name: getattr(args, name) for name in names}
        chosen = self.smoke if args.smoke else self.full
        return replace(chosen, **{key: value for key, value in given.items() if value is not None})


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
    """A parser of service/setting_values.py as an argparse type: its sentence in the error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


POSITIVE_INT = flag(positive_int)
POSITIVE_SECONDS = flag(positive_seconds)


def counts(text: str) -> tuple[int, ...]:
    """Numbers of jobs or slots from the command line: "1,2,4,8"."""
    return tuple(POSITIVE_INT(part) for part in text.split(","))


def letters(allowed: str) -> Callable[[str], str]:
    """The parser of a scenario's cases: some of `allowed`, one letter each, as "a,c"."""

    def parse(text: str) -> str:
        keys = text.replace(",", "")
        if not keys or any(key not in allowed for key in keys):
            raise argparse.ArgumentTypeError(f"cases are {','.join(allowed)}, separated by commas")
        return keys

    return parse
