"""Render the nginx configuration that routes /u/<name>/ to each upload service instance.

    python deploy/render_nginx.py --listen 80 1=upload-1:8080 2=upload-2:8080 > upload.conf
    python deploy/render_nginx.py --compose           # rewrite deploy/nginx/upload.conf
    python deploy/render_nginx.py --compose --check   # exit 1 if that file is stale

The output goes in nginx's `http` context. Each instance must be started with
OWN_ADDRESS=<public URL>/u/<name>/: nginx passes the path unchanged, and the service
accepts chunks at the path of its OWN_ADDRESS. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx" / "upload.conf.template"
COMPOSE_CONFIG = HERE / "nginx" / "upload.conf"

# What deploy/docker-compose.yml runs; keep the two in step.
COMPOSE_LISTEN = "80"
COMPOSE_INSTANCES = ("1=upload-1:8080", "2=upload-2:8080", "3=upload-3:8080")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_LISTEN = re.compile(r"((\S+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Instance:
    name: str  # the path segment: the instance serves /u/<name>/
    host: str
    port: int

    @property
    def path(self) -> str:
        return f"/u/{self.name}/"

    @property
    def upstream(self) -> str:
        return f"upload_{self.name.replace('-', '_')}"


def parse_instance(text: str) -> Instance:
    """`name=host:port`, e.g. `1=upload-1:8080` or `2=127.0.0.1:8081`; raise ValueError."""
    name, equals, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not (equals and colon):
        raise ValueError(f"{text!r} is not name=host:port")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{text!r}: the name may hold only letters, digits, '-' and '_'")
    if not _HOST.fullmatch(host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{text!r}: {port!r} is not a port number")
    return Instance(name, host, int(port))


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each `{{key}}`; raise KeyError for a placeholder without a value."""
    return _PLACEHOLDER.sub(lambda match: values[match[1]], template)


def render(listen: str, instances: Sequence[Instance], template: str | None = None) -> str:
    """The configuration: one upstream and one location per instance; raise ValueError."""
    if not _LISTEN.fullmatch(listen):
        raise ValueError(f"--listen {listen!r} is not [address:]port")
    if not instances:
        raise ValueError("no instances: give at least one name=host:port")
    for key in ("name", "upstream"):
        seen = [getattr(instance, key) for instance in instances]
        if len(set(seen)) != len(seen):
            raise ValueError(f"instance {key}s must differ: {', '.join(seen)}")
    upstreams = "".join(
        f"\nupstream {i.upstream} {{\n    server {i.host}:{i.port};\n    keepalive 8;\n}}\n"
        for i in instances
    )
    locations = "".join(
        f"\n    location {i.path} {{\n        proxy_pass http://{i.upstream};\n    }}\n"
        for i in instances
    )
    described = " ".join(f"{i.name}={i.host}:{i.port}" for i in instances)
    values = {
        "listen": listen,
        "instances": described,
        "upstreams": upstreams,
        "locations": locations,
    }
    return fill(TEMPLATE.read_text() if template is None else template, values)


def render_compose() -> str:
    """What deploy/nginx/upload.conf must hold for deploy/docker-compose.yml."""
    return render(COMPOSE_LISTEN, [parse_instance(text) for text in COMPOSE_INSTANCES])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Render the nginx configuration routing /u/<name>/ to each instance."
    )
    parser.add_argument("instances", nargs="*", metavar="NAME=HOST:PORT")
    parser.add_argument("--listen", default="80", help="nginx `listen`: [address:]port")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--compose",
        action="store_true",
        help=f"render for docker-compose.yml into {COMPOSE_CONFIG.relative_to(HERE.parent)}",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with --output instead of writing it"
    )
    args = parser.parse_args(argv)
    output: Path | None = args.output
    try:
        if args.compose:
            if args.instances:
                parser.error("--compose takes no instances")
            text, output = render_compose(), output or COMPOSE_CONFIG
        else:
            text = render(args.listen, [parse_instance(item) for item in args.instances])
    except ValueError as error:
        parser.error(str(error))
    if args.check:
        if output is None:
            parser.error("--check needs --output or --compose")
        if not output.is_file() or output.read_text() != text:
            print(f"{output} is stale: re-render it with deploy/render_nginx.py", file=sys.stderr)
            return 1
        return 0
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
