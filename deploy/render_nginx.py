"""Render the nginx configuration that routes /u/<name>/ to each upload service instance.

    python deploy/render_nginx.py --listen 80 1=upload-1:8080 2=upload-2:8080 > upload.conf
    python deploy/render_nginx.py --resolver 127.0.0.11 1=upload-1:8080 ...   # names per request
    python deploy/render_nginx.py --compose           # rewrite deploy/nginx/upload.conf
    python deploy/render_nginx.py --k8s               # rewrite deploy/k8s/router.conf.template
    python deploy/render_nginx.py --compose --k8s --check   # exit 1 if either is stale

The output goes in nginx's `http` context. Each instance must be started with
OWN_ADDRESS=<public URL>/u/<name>/: nginx passes the path unchanged, and the service
accepts chunks at the path of its OWN_ADDRESS.

Two ways to find an instance: a fixed list (`name=host:port`, one upstream each, resolved
once when nginx starts; with a resolver, each host looked up per request instead), or, for
Kubernetes, a DNS route: any /u/<name>/ whose name matches a pattern goes to a host name
derived from it, looked up per request, so that the count of instances appears nowhere in
the configuration. Standard library only.
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
K8S_CONFIG = HERE / "k8s" / "router.conf.template"
DEFAULT_ACCESS_LOG = "/var/log/nginx/access.log"  # the nginx image's stdout

# What deploy/docker-compose.yml runs; keep the two in step. The instances are looked up per
# request at Docker's DNS (which knows only running containers): nginx starts while one is
# stopped, and follows one that comes back at another address.
COMPOSE_LISTEN = "80"
COMPOSE_INSTANCES = ("1=upload-1:8080", "2=upload-2:8080", "3=upload-3:8080")
COMPOSE_RESOLVER = "127.0.0.11"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_LISTEN = re.compile(r"((\S+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# What a DNS route may substitute: nginx variables ($name) and the nginx image's envsubst
# placeholders (${NAME}), in a host name.
_DNS_ADDRESS = re.compile(r"([A-Za-z0-9.-]|\$[a-z_]+|\$\{[A-Z_]+\})+:[0-9]{1,5}")
UPSTREAM_KEEPALIVE_SECONDS = 20  # below the instances' CLIENT_READ_TIMEOUT (default 30 s)
# nginx `resolver` addresses given by hand: host names or addresses, with ports, spaced.
_RESOLVER = re.compile(r"[A-Za-z0-9.:\[\]-]+( [A-Za-z0-9.:\[\]-]+)*")


@dataclass(frozen=True)
class DnsRoute:
    """/u/<name>/ for any name matching `names` goes to `address`, where `$upload_instance`
    is that name, resolved per request through `resolver`."""

    names: str  # a regular expression without groups, e.g. upload-[0-9]+
    address: str  # host:port, e.g. $upload_instance.upload.svc.cluster.local:8080
    resolver: str  # nginx `resolver` addresses


# The router in deploy/k8s: pod upload-N of the StatefulSet `upload` by its DNS name under the
# headless Service `upload`. The ${...} are filled in when the router starts (the nginx
# image's envsubst; router.yaml): its namespace, the cluster's domain and DNS servers.
K8S_LISTEN = "8080"
K8S_ROUTE = DnsRoute(
    names="upload-[0-9]+",
    address="$upload_instance.upload.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}:8080",
    resolver="${NGINX_LOCAL_RESOLVERS}",
)


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


def render(
    listen: str,
    instances: Sequence[Instance] | DnsRoute,
    template: str | None = None,
    access_log: str = DEFAULT_ACCESS_LOG,
    resolver: str | None = None,
) -> str:
    """The configuration: one upstream and one location per instance (with a `resolver`, one
    location each, its host looked up per request), or the one location of a DNS route; raise
    ValueError."""
    if not _LISTEN.fullmatch(listen):
        raise ValueError(f"--listen {listen!r} is not [address:]port")
    if not access_log or any(c.isspace() or c in ";{}'\"" for c in access_log):
        raise ValueError(f"access log {access_log!r} is not a plain path")
    text = TEMPLATE.read_text() if template is None else template
    if isinstance(instances, DnsRoute):
        return fill(text, _dns_values(listen, instances, access_log))
    if not instances:
        raise ValueError("no instances: give at least one name=host:port")
    for key in ("name", "upstream"):
        seen = [getattr(instance, key) for instance in instances]
        if len(set(seen)) != len(seen):
            raise ValueError(f"instance {key}s must differ: {', '.join(seen)}")
    described = " ".join(f"{i.name}={i.host}:{i.port}" for i in instances)
    values = {"listen": listen, "access_log": access_log, "instances": described}
    if resolver is not None:
        return fill(text, values | _resolved_values(instances, resolver))
    # An idle connection to an instance is dropped by nginx before the instance drops it
    # (after CLIENT_READ_TIMEOUT, 30 s by default; nginx's own default is 60 s): a chunk sent
    # on a connection the instance is closing is a 502 that nginx cannot retry (a POST
    # whose body it has begun to stream).
    upstreams = "".join(
        f"\nupstream {i.upstream} {{\n    server {i.host}:{i.port};\n    keepalive 8;\n"
        f"    keepalive_timeout {UPSTREAM_KEEPALIVE_SECONDS}s;\n}}\n"
        for i in instances
    )
    locations = "".join(
        f"\n    location {i.path} {{\n        proxy_pass http://{i.upstream};\n    }}\n"
        for i in instances
    )
    return fill(text, values | {"resolver": "", "upstreams": upstreams, "locations": locations})


def _resolver_lines(resolver: str) -> str:
    return f"    resolver {resolver} valid=5s;\n    resolver_timeout 3s;\n"


def _resolved_values(instances: Sequence[Instance], resolver: str) -> dict[str, str]:
    """A variable in proxy_pass makes nginx look its host up per request (through
    `resolver`, each answer kept 5 s) instead of once at start, where a name that does not
    resolve stops nginx from starting at all."""
    if not _RESOLVER.fullmatch(resolver):
        raise ValueError(f"--resolver {resolver!r} is not addresses separated by spaces")
    locations = "".join(
        f"\n    location {i.path} {{\n        set $upload_address {i.host}:{i.port};\n"
        f"        proxy_pass http://$upload_address;\n    }}\n"
        for i in instances
    )
    return {"resolver": _resolver_lines(resolver), "upstreams": "", "locations": locations}


def _dns_values(listen: str, route: DnsRoute, access_log: str) -> dict[str, str]:
    if "(" in route.names or re.compile(route.names).groups:
        raise ValueError(f"the name pattern {route.names!r} may hold no groups")
    if not _DNS_ADDRESS.fullmatch(route.address) or "$upload_instance" not in route.address:
        raise ValueError(f"{route.address!r} is not host:port naming $upload_instance")
    location = (
        "\n    # Any instance, by its DNS name, looked up per request (`valid`: how long an\n"
        "    # answer, or the lack of one, is kept): the count of instances is nowhere here.\n"
        f'    location ~ "^/u/(?<upload_instance>{route.names})/" {{\n'
        f"        proxy_pass http://{route.address};\n    }}\n"
    )
    return {
        "listen": listen,
        "access_log": access_log,
        "resolver": _resolver_lines(route.resolver),
        "instances": f"/u/<{route.names}>/ to {route.address}",
        "upstreams": "",
        "locations": location,
    }


def render_compose() -> str:
    """What deploy/nginx/upload.conf must hold for deploy/docker-compose.yml."""
    instances = [parse_instance(text) for text in COMPOSE_INSTANCES]
    return render(COMPOSE_LISTEN, instances, resolver=COMPOSE_RESOLVER)


def render_k8s() -> str:
    """What deploy/k8s/router.conf.template must hold for the router in deploy/k8s."""
    return render(K8S_LISTEN, K8S_ROUTE)


# The committed renderings: (flag, path, how to render it).
COMMITTED = {"compose": (COMPOSE_CONFIG, render_compose), "k8s": (K8S_CONFIG, render_k8s)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Render the nginx configuration routing /u/<name>/ to each instance."
    )
    parser.add_argument("instances", nargs="*", metavar="NAME=HOST:PORT")
    parser.add_argument("--listen", default="80", help="nginx `listen`: [address:]port")
    parser.add_argument(
        "--access-log", default=DEFAULT_ACCESS_LOG, help="where nginx logs each request (JSON)"
    )
    parser.add_argument(
        "--resolver",
        help="DNS server(s) to look each instance's host up at per request (nginx `resolver`), "
        "instead of once when nginx starts",
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    for flag, (path, _) in COMMITTED.items():
        parser.add_argument(
            f"--{flag}",
            action="store_true",
            help=f"render the committed {path.relative_to(HERE.parent)}",
        )
    parser.add_argument(
        "--check", action="store_true", help="compare with the file instead of writing it"
    )
    args = parser.parse_args(argv)
    committed = [flag for flag in COMMITTED if getattr(args, flag)]
    # (file or None for stdout, its text)
    outputs: list[tuple[Path | None, str]] = []
    try:
        if committed:
            if args.instances or args.output:
                parser.error(f"--{committed[0]} takes no instances and no --output")
            outputs = [(COMMITTED[flag][0], COMMITTED[flag][1]()) for flag in committed]
        else:
            instances = [parse_instance(item) for item in args.instances]
            text = render(
                args.listen, instances, access_log=args.access_log, resolver=args.resolver
            )
            outputs = [(args.output, text)]
    except ValueError as error:
        parser.error(str(error))
    status = 0
    for output, text in outputs:
        if args.check:
            if output is None:
                parser.error("--check needs --output, --compose or --k8s")
            if not output.is_file() or output.read_text() != text:
                print(
                    f"{output} is stale: re-render it with deploy/render_nginx.py", file=sys.stderr
                )
                status = 1
        elif output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
