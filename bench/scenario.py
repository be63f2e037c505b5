"""What a named scenario of the benchmark is: its flags, its plan from them, its run."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from report import Report

from service.config import _positive_int, _positive_seconds

Plan = TypeVar("Plan")


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


def planned(args: argparse.Namespace, full: Plan, smoke: Plan, *flags: str) -> Plan:
    """`smoke` with --smoke, else `full` (dataclasses), with the field named after each of
    `flags` (their argparse dests) replaced by the flag's value where it was given."""
    given = {name: getattr(args, name) for name in flags}
    chosen: Any = smoke if args.smoke else full
    return replace(chosen, **{name: value for name, value in given.items() if value is not None})


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
