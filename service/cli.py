"""The `upload-service` command: `run` (the default) and `demo`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from .config import ConfigError, load_settings
from .demo import run_demo
from .logs import configure_logging
from .server import serve

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upload-service",
        description="discord-cloud's upload service: stores file chunks as Discord attachments.",
    )
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the service (the default)")
    run.add_argument("--config", type=Path, help="a TOML file of settings (the environment wins)")
    demo = commands.add_parser(
        "demo", help="upload a file through the service and local stand-ins, then verify it"
    )
    demo.add_argument("file", nargs="?", type=Path, help="the file (default: 64 MiB generated)")
    parser.set_defaults(command="run", config=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return asyncio.run(run_demo(args.file))
    return run(args.config)


def run(config_file: Path | None) -> int:
    try:
        settings = load_settings(os.environ, config_file)
    except ConfigError as error:
        problems = "\n".join(f"  - {problem}" for problem in error.problems)
        print(
            f"upload-service: cannot start, the configuration is wrong:\n{problems}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
    return 0
