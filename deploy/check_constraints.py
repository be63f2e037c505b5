"""Check that constraints.txt pins every dependency of pyproject.toml within its range.

    python deploy/check_constraints.py [--pyproject PATH] [--constraints PATH]

Exit status 1, with one line per problem, when a [project] dependency has no `name==version`
pin, or its pin is outside the dependency's range. Pins must be plain release versions
(1.2.3) and ranges made of ==, !=, <, <=, >, >=, ~= (with `.*` after == and !=): anything
else is reported rather than guessed at. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?"
    r"\s*(?P<specifiers>[^;]*?)\s*(?:;.*)?"
)
_SPECIFIER = re.compile(r"\s*(?P<op>~=|==|!=|<=|>=|<|>)\s*(?P<version>[0-9][0-9.]*(?:\.\*)?)\s*")
_RELEASE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_PIN = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>\S+)")

Release = tuple[int, ...]


def canonical(name: str) -> str:
    """PEP 503: `Discord.py`, `discord_py` and `discord-py` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release(text: str) -> Release:
    if not _RELEASE.fullmatch(text):
        raise ValueError(f"{text!r} is not a plain release version such as 1.2.3")
    return tuple(int(part) for part in text.split("."))


def _padded(a: Release, b: Release) -> tuple[Release, Release]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


@dataclass(frozen=True)
class Specifier:
    op: str
    version: str

    def allows(self, pin: Release) -> bool:
        if self.version.endswith(".*"):  # == 1.2.* / != 1.2.*: a prefix of the release
            prefix = release(self.version[:-2])
            matches = _padded(pin, prefix)[0][: len(prefix)] == prefix
            return matches if self.op == "==" else not matches
        a, b = _padded(pin, release(self.version))
        if self.op == "~=":  # ~= 2.4.1 means >= 2.4.1, == 2.4.*
            wanted = release(self.version)
            if len(wanted) < 2:
                raise ValueError(f"~={self.version} needs at least two parts")
            return a >= b and a[: len(wanted) - 1] == wanted[:-1]
        return {
            "==": a == b,
            "!=": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[self.op]


def parse_requirement(text: str) -> tuple[str, list[Specifier]]:
    """`aiohttp>=3.10,<4` -> ("aiohttp", [>=3.10, <4]); raise ValueError."""
    match = _REQUIREMENT.fullmatch(text)
    if match is None:
        raise ValueError(f"cannot read the requirement {text!r}")
    specifiers = []
    for part in filter(None, (p.strip() for p in match["specifiers"].split(","))):
        found = _SPECIFIER.fullmatch(part)
        if found is None:
            raise ValueError(f"{text!r}: cannot read {part!r}")
        specifiers.append(Specifier(found["op"], found["version"]))
    return canonical(match["name"]), specifiers


def parse_pins(lines: Iterable[str]) -> dict[str, str]:
    """`name==version` per line (comments and blank lines allowed); raise ValueError."""
    pins: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _PIN.fullmatch(text)
        if match is None:
            raise ValueError(f"line {number}: {text!r} is not name==version")
        name = canonical(match["name"])
        if name in pins:
            raise ValueError(f"line {number}: {name} is pinned twice")
        pins[name] = match["version"]
    return pins


def problems(dependencies: Sequence[str], pins: dict[str, str]) -> list[str]:
    """One sentence per dependency the pins do not satisfy."""
    found = []
    for dependency in dependencies:
        try:
            name, specifiers = parse_requirement(dependency)
            if name not in pins:
                found.append(f"{dependency!r} has no pin ({name}==...)")
                continue
            pin = release(pins[name])
            outside = [f"{s.op}{s.version}" for s in specifiers if not s.allows(pin)]
            if outside:
                found.append(
                    f"{name}=={pins[name]} is outside {dependency!r} ({', '.join(outside)})"
                )
        except ValueError as error:
            found.append(f"{dependency!r}: {error}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    dependencies = tomllib.loads(args.pyproject.read_text())["project"]["dependencies"]
    try:
        pins = parse_pins(args.constraints.read_text().splitlines())
    except ValueError as error:
        print(f"{args.constraints}: {error}", file=sys.stderr)
        return 1
    found = problems(dependencies, pins)
    for problem in found:
        print(f"{args.constraints}: {problem}", file=sys.stderr)
    if not found:
        print(
            f"{args.constraints} pins all {len(dependencies)} dependencies of {args.pyproject.name}"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
