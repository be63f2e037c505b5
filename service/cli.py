"""The `upload-service` command: `run` (the default), `check`, `demo` and `settings`.

The settings' reference (`run --help`, `settings`, docs/configuration.md, config.example.toml)
is rendered here from `OPTIONS`, so every place a person reads about a setting says the same
thing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import textwrap
from pathlib import Path

from .config import OPTIONS, ConfigError, Option, Settings, load_settings
from .exit_status import EXIT_CONFIG, EXIT_LISTEN, EXIT_STATUSES
from .logs import configure_logging

PACKAGE = "discord-cloud-upload-service"
DOCS_COMMAND = "upload-service settings --markdown > docs/configuration.md"
EXAMPLE_COMMAND = "upload-service settings --toml > config.example.toml"


def settings_text() -> str:
    """Every setting for the terminal: names and default on one line, the meaning below."""
    lines = ["settings, from the environment or the --config file (the environment wins):"]
    for option in OPTIONS:
        default = "required" if option.required else f"default {option.shown_default}"
        lines += [f"  {option.env}, {option.key}: {default}", *_indented(option.meaning)]
    lines += ["", "exit status:"]
    for status, meaning in EXIT_STATUSES.items():
        lines += _indented(meaning, first=f"  {status}")
    return "\n".join(lines)


def _indented(text: str, first: str = "") -> list[str]:
    """`text` wrapped under a heading; `first`, if short, starts its first line."""
    return textwrap.wrap(text, 88, initial_indent=first.ljust(6), subsequent_indent=" " * 6)


def settings_markdown() -> str:
    """docs/configuration.md, without its final newline (as `settings_text`, for `print`)."""
    rows = "\n".join(
        f"| `{option.env}` | `{option.key}` | {_markdown_default(option)} | {option.meaning} |"
        for option in OPTIONS
    )
    statuses = "\n".join(f"| {status} | {meaning} |" for status, meaning in EXIT_STATUSES.items())
    return f"""# Configuration

This page is generated from `OPTIONS` in `service/config.py`: change a setting there, then
regenerate it with `{DOCS_COMMAND}`
(a test fails while it is out of date).

Settings come from an optional TOML file (`upload-service run --config FILE`, see
`config.example.toml`) and from the environment; the environment wins, and an empty variable
counts as unset. The first four environment names are the existing service's (PROTOCOL.md
section 6). `upload-service run --help` lists the same settings. `upload-service check
[--config FILE]` checks them without starting the service: status 0, or 2 with the same
messages as `run`.

| environment | TOML key | default | meaning |
|---|---|---|---|
{rows}

## Exit status of `upload-service run`

| status | meaning |
|---|---|
{statuses}"""


def settings_toml() -> str:
    """config.example.toml, without its final newline: the required settings set to examples,
    the others commented out at their defaults (or at an example, for a default worked out at
    run time)."""
    parts = [
        f"""# Example configuration for discord-cloud's upload service: `upload-service run --config
# config.toml`. Generated from `OPTIONS` in service/config.py:
#   {EXAMPLE_COMMAND}
#
# Each setting can also come from the environment, under the name on its "Environment:"
# line; the environment wins over this file (a variable that is set and not empty). The file
# is optional: the Docker image is meant to be configured by the environment alone. Unknown
# keys are an error; every problem is reported at once. docs/configuration.md has the same
# settings as a table."""
    ]
    for option in OPTIONS:
        if option.required:
            where, line = " Required.", f"{option.key} = {json.dumps(option.example)}"
        elif option.default_text is None:
            where, line = "", f"# {option.key} = {json.dumps(option.default)}"
        else:
            where = f" Default: {option.default_text}; for example:"
            line = f"# {option.key} = {json.dumps(option.example)}"
        comment = [
            *_commented(option.meaning + "."),
            *_commented(f"Environment: {option.env}.{where}"),
        ]
        parts.append("\n".join([*comment, line]))
    return "\n\n".join(parts)


def _commented(text: str) -> list[str]:
    return textwrap.wrap(text, 92, initial_indent="# ", subsequent_indent="# ")


def _markdown_default(option: Option) -> str:
    """A value in code; words ("required", a default worked out at run time) as prose."""
    if option.required or option.default_text is not None:
        return option.shown_default
    return f"`{option.shown_default}`"


class _Version(argparse.Action):
    """--version, looked up only when asked for: importing importlib.metadata costs every
    start of `run` 30 ms of CPU."""

    def __init__(self, option_strings: list[str], dest: str, help: str) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import version

        print(f"{parser.prog} {version(PACKAGE)}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upload-service",
        description="discord-cloud's upload service: stores file chunks as Discord attachments.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser(
        "run",
        help="run the service (the default)",
        epilog=settings_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check = commands.add_parser(
        "check", help="check every setting without starting: exit 0, or 2 naming each problem"
    )
    for command in (parser, run, check):
        # After the subcommand as well as before it; SUPPRESS keeps the subcommand's parser
        # from resetting a --config given before it.
        command.add_argument(
            "--config",
            type=Path,
            default=None if command is parser else argparse.SUPPRESS,
            help="a TOML file of settings (the environment wins)",
        )
    demo = commands.add_parser(
        "demo", help="upload a file through the service and local stand-ins, then verify it"
    )
    demo.add_argument(
        "file", nargs="?", type=_readable_file, help="the file (default: 64 MiB generated)"
    )
    settings = commands.add_parser("settings", help="list every setting, its default and meaning")
    shown_as = settings.add_mutually_exclusive_group()
    for flag, render, page, remake in (
        ("--markdown", settings_markdown, "docs/configuration.md", DOCS_COMMAND),
        ("--toml", settings_toml, "config.example.toml", EXAMPLE_COMMAND),
    ):
        shown_as.add_argument(
            flag, dest="render", action="store_const", const=render, help=f"as {page} ({remake})"
        )
    settings.set_defaults(render=settings_text)
    parser.set_defaults(command="run")
    return parser


def _readable_file(text: str) -> Path:
    """The demo's FILE, refused before anything starts if it cannot be read."""
    path = Path(text)
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {_reason(error)}") from None
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None and args.command not in ("run", "check"):
        parser.error(f"--config applies to run and check, not to {args.command}")
    if args.command == "check":
        return check(args.config)
    if args.command == "demo":
        from .demo import run_demo  # the stand-ins and their libraries: not for `run`

        return asyncio.run(run_demo(args.file))
    if args.command == "settings":
        print(args.render())
        return 0
    return run(args.config)


def check(config_file: Path | None) -> int:
    if _settings(config_file) is None:
        return EXIT_CONFIG
    source = f"{config_file} and the environment" if config_file else "the environment"
    print(f"upload-service: the configuration is valid (settings from {source})")
    return 0


def run(config_file: Path | None) -> int:
    settings = _settings(config_file)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    from .server import ListenError, serve  # the whole service: not for --help or check

    try:
        asyncio.run(serve(settings))
    except ListenError as error:
        print(
            f"upload-service: cannot listen on {_address(error.host, error.port)} for "
            f"{error.setting}: {_reason(error.error)}",
            file=sys.stderr,
        )
        return EXIT_LISTEN
    return 0


def _settings(config_file: Path | None) -> Settings | None:
    """The settings, or None once every problem with them is printed."""
    try:
        return load_settings(os.environ, config_file)
    except ConfigError as error:
        problems = "\n".join(f"  - {problem}" for problem in error.problems)
        print(
            f"upload-service: cannot start, the configuration is wrong:\n{problems}",
            file=sys.stderr,
        )
        return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(error: OSError) -> str:
    """The system's words for `error`: asyncio's message repeats the address, a resolver
    error's number is not an errno."""
    if error.errno is None or isinstance(error, socket.gaierror):
        return str(error.strerror or error)
    return os.strerror(error.errno).lower()
