"""deploy/k8s: scaling is one number, the output is valid Kubernetes, and the router routes.

The manifests are rendered with `kubectl kustomize` for 2, 5 and 12 instances after changing
only the `count` in a copy of kustomization.yaml, validated with kubernetes-validate
(--strict) and, for the HTTPRoute, against the vendored Gateway API CRD's schema
(deploy/crd_schema.py, strict), and the router's nginx configuration taken from that output
is run by real nginx in front of N stand-in pods on loopback addresses, with a stand-in DNS
server playing the cluster's: every /u/upload-K/ reaches pod K, and a pod that does not
exist is a JSON 503.
Whatever the count, the pods share one Redis and so one budget of the token's global limit.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from conftest import DEPLOY, deploy_script, missing
from test_nginx import STOP_TIMEOUT, nginx_main_conf, render_nginx, start_nginx

from service.config import load_settings
from service.local.driver import stop_service
from service.local.loopback import free_port
from service.server import CLEANUP_FLOOR
from service.uploads.memory import default_budget

K8S = DEPLOY / "k8s"
GATEWAY_API = DEPLOY / "vendor" / "gateway-api"
HTTPROUTE_CRD = GATEWAY_API / "gateway.networking.k8s.io_httproutes.yaml"
NAMESPACE = "uploads"
CLUSTER_DOMAIN = "cluster.example"
TOOL_TIMEOUT = 120
INSTALLED_BY = {"promtool": ".ci/run takes it out of Debian's prometheus package"}


def tool(name: str) -> str:
    """A command-line tool from the venv (.ci/run installs deploy/ci-tools.txt) or PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        missing(name, INSTALLED_BY.get(name, "pip install -r deploy/ci-tools.txt"))
    return found


def run_tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`tool(name)` run with `args`, its output captured as text."""
    return subprocess.run(
        [tool(name), *args], cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )


@functools.cache
def crd_schema() -> ModuleType:
    """deploy/crd_schema.py, which needs PyYAML, loaded once."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        missing("PyYAML", "pip install -r deploy/ci-tools.txt")
    return deploy_script("crd_schema")


def yaml_documents(text: str) -> list[Any]:
    """The documents of a YAML text (empty ones left out), read as deploy/crd_schema.py
    reads them."""
    documents: list[Any] = crd_schema().documents(text)
    return documents


def yaml_document(text: str) -> Any:
    (document,) = yaml_documents(text)
    return document


def render(
    tmp_path: Path,
    replicas: int,
    components: tuple[str, ...] = (),
    settings: dict[str, str] | None = None,
    appended: str = "",
) -> list[dict[str, Any]]:
    """kustomize's output for a copy of deploy/k8s whose only changes are the count, the
    `components` added, the `settings` (literals of kustomization.yaml's generators) changed
    and `appended` to kustomization.yaml, validated: kubernetes-validate, and the CRD
    schemas for the rest. It is also written to `tmp_path`/rendered.yaml."""
    key = (replicas, components, tuple(sorted((settings or {}).items())), appended)
    if key not in _RENDERED:  # the same output for every test that asks for it
        _RENDERED[key] = _rendered(tmp_path / "k8s", *key)
    output, docs = _RENDERED[key]
    (tmp_path / "rendered.yaml").write_text(output)
    return copy.deepcopy(docs)


_RENDERED: dict[tuple[Any, ...], tuple[str, list[dict[str, Any]]]] = {}


def _rendered(
    copy_to: Path,
    replicas: int,
    components: tuple[str, ...],
    settings: tuple[tuple[str, str], ...],
    appended: str,
) -> tuple[str, list[dict[str, Any]]]:
    shutil.copytree(K8S, copy_to)
    kustomization = copy_to / "kustomization.yaml"
    text, changed = re.subn(
        r"(\n  - name: upload\n    count: )\d+\n", rf"\g<1>{replicas}\n", kustomization.read_text()
    )
    assert changed == 1, "kustomization.yaml no longer sets the count as `count: N`"
    for name, value in settings:
        text, changed = re.subn(rf"(\n      - {name}=)[^\n]*\n", rf"\g<1>{value}\n", text)
        assert changed == 1, f"kustomization.yaml has no literal {name}="
    if components:
        text += "components:\n" + "".join(f"  - {component}\n" for component in components)
    kustomization.write_text(text + appended)
    kustomized = run_tool("kubectl", "kustomize", str(copy_to))
    assert kustomized.returncode == 0, kustomized.stderr
    output = kustomized.stdout
    rendered = copy_to.parent / "rendered.yaml"
    rendered.write_text(output)
    validated = run_tool("kubernetes-validate", "--strict", "--quiet", str(rendered))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    docs = yaml_documents(output)
    problems = crd_problems(rendered)
    assert not problems, problems
    return output, docs


def kustomize_settings() -> dict[str, str]:
    """deploy/k8s/kustomization.yaml's literals: PUBLIC_HOST, GATEWAY_NAME, ..."""
    kustomization = yaml_document((K8S / "kustomization.yaml").read_text())
    literals = [
        literal
        for generator in kustomization["configMapGenerator"]
        for literal in generator.get("literals", [])
    ]
    return dict(literal.split("=", 1) for literal in literals)


def crd_problems(rendered: Path) -> list[str]:
    """What deploy/crd_schema.py (as .ci/run runs it) finds wrong in `rendered`'s custom
    resources, checked against the vendored Gateway API CRD."""
    problems: list[str] = crd_schema().check([rendered], _httproute_schemas(), [])[1]
    return problems


@functools.cache
def _httproute_schemas() -> Any:
    """The vendored CRD's schemas, read once."""
    return crd_schema().crd_schemas(yaml_documents(HTTPROUTE_CRD.read_text()))


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


@pytest.mark.parametrize("replicas", [2, 5, 12])
async def test_one_number_scales_and_the_router_reaches_every_pod(
    tmp_path: Path, replicas: int
) -> None:
    docs = render(tmp_path, replicas)
    assert one(docs, "StatefulSet", "upload")["spec"]["replicas"] == replicas
    # Nothing per pod: the Services are the headless one (DNS names) and the router's.
    services = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Service")
    assert services == ["upload", "upload-redis", "upload-router"]
    public = kustomize_settings()
    assert one(docs, "ConfigMap", "upload-public")["data"] == {"PUBLIC_HOST": public["PUBLIC_HOST"]}
    route = one(docs, "HTTPRoute", "upload")["spec"]
    assert route["hostnames"] == [public["PUBLIC_HOST"]]
    [gateway] = route["parentRefs"]
    assert (gateway["kind"], gateway["name"], gateway["namespace"]) == (
        "Gateway",
        public["GATEWAY_NAME"],
        public["GATEWAY_NAMESPACE"],
    )
    [rule] = route["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    [backend] = rule["backendRefs"]
    router_service = one(docs, "Service", "upload-router")
    assert backend["name"] == router_service["metadata"]["name"]
    assert backend["port"] in [port["port"] for port in router_service["spec"]["ports"]]
    # No gateway timeout cuts a chunk short before the router's own (proxy_read_timeout).
    assert rule["timeouts"] == {"request": "0s"}
    assert not any(doc["kind"] == "Ingress" for doc in docs)
    env = {
        e["name"]: e
        for e in one(docs, "StatefulSet", "upload")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["OWN_ADDRESS"]["value"] == "https://$(PUBLIC_HOST)/u/$(POD_NAME)/"

    router_conf = one(docs, "ConfigMap", "upload-router")["data"]["upload.conf.template"]
    assert router_conf == render_nginx.render_k8s()
    async with router(tmp_path, router_conf, replicas) as origin, aiohttp.ClientSession() as http:
        for k in range(replicas):
            url = f"{origin}/u/upload-{k}/some/path"
            async with http.post(url, data=b"x", headers={"X-Request-ID": f"req-{k:08}"}) as r:
                assert r.status == 200
                assert await r.json() == {
                    "pod": f"upload-{k}",
                    "path": f"/u/upload-{k}/some/path",
                    "request_id": f"req-{k:08}",
                }
        # One past the last pod: no DNS name, so not reachable: temporary, retry.
        async with http.post(f"{origin}/u/upload-{replicas}/", data=b"x") as r:
            assert r.status == 503
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert r.headers["Retry-After"] == "5"
            assert "not available" in (await r.json())["error"]
        async with http.get(f"{origin}/u/other/") as r:
            assert r.status == 404


def test_the_ingress_component_replaces_the_route_for_clusters_without_gateway_api(
    tmp_path: Path,
) -> None:
    docs = render(tmp_path, 3, components=("components/ingress",))
    host = one(docs, "ConfigMap", "upload-public")["data"]["PUBLIC_HOST"]
    ingress = one(docs, "Ingress", "upload")["spec"]
    assert [rule["host"] for rule in ingress["rules"]] == [host]
    assert ingress["tls"][0]["hosts"] == [host]
    [path] = ingress["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["name"] == "upload-router"
    # Applying an HTTPRoute fails where its CRD is not installed.
    assert not any(doc["kind"] == "HTTPRoute" for doc in docs)


def test_the_route_check_refuses_what_the_api_server_would(tmp_path: Path) -> None:
    """The CRD schema check is strict: an undeclared field (which the API server would drop
    without a word), a wrong enum and a malformed duration are each reported."""
    render(tmp_path, 3)
    rendered = tmp_path / "rendered.yaml"
    text = rendered.read_text()
    for good, bad, problem in [
        ("    timeouts:\n", "    timeout: 300s\n    timeouts:\n", "'timeout' was unexpected"),
        ("type: PathPrefix", "type: Prefix", "'Prefix' is not one of"),
        ("request: 0s", "request: forever", "'forever' does not match"),
    ]:
        assert text.count(good) == 1
        broken = tmp_path / "broken.yaml"
        broken.write_text(text.replace(good, bad))
        [found] = crd_problems(broken)
        assert "HTTPRoute upload" in found and problem in found


def test_the_vendored_crd_is_the_released_one_its_readme_names() -> None:
    readme = (GATEWAY_API / "README.md").read_text()
    digest = hashlib.sha256(HTTPROUTE_CRD.read_bytes()).hexdigest()
    assert f"| sha256 | `{digest}` |" in readme
    crd = yaml_document(HTTPROUTE_CRD.read_text())
    annotations = crd["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/channel"] == "standard"
    assert f"**{annotations['gateway.networking.k8s.io/bundle-version']}, standard" in readme
    assert "Apache License" in (GATEWAY_API / "LICENSE").read_text()


def test_pods_meet_the_restricted_pod_security_standard(tmp_path: Path) -> None:
    docs = render(tmp_path, 3)
    for name, spec in pod_specs(docs):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            # An exact version, never a moving tag.
            image = container["image"]
            pinned = r":[0-9][0-9A-Za-z.-]*(@sha256:[0-9a-f]{64})?$"
            assert re.search(pinned, image), f"{name}: {image} is not pinned"
    # Every workload has a disruption budget selecting its pods.
    budgets = [
        d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"
    ]
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert any(b.items() <= labels.items() for b in budgets), doc["metadata"]["name"]


def test_images_from_elsewhere_are_pinned_by_digest_and_alike_in_compose(tmp_path: Path) -> None:
    """Their publishers move a tag (nginx's and Redis's official images are rebuilt on every
    Debian update): only a digest makes a redeploy run the image that was tested. The router
    and Compose's nginx run the same image, as do both Redis."""
    docs = render(tmp_path, 3)
    ours = yaml_document((K8S / "kustomization.yaml").read_text())["images"][0]["newName"]
    kubernetes = {
        container["image"]
        for _, spec in pod_specs(docs)
        for container in spec["containers"]
        if not container["image"].startswith(f"{ours}:")
    }
    services = yaml_document((DEPLOY / "docker-compose.yml").read_text())["services"]
    compose = {service["image"] for service in services.values() if "build" not in service}
    assert kubernetes == compose
    for image in kubernetes:
        assert re.fullmatch(r"[a-z0-9./-]+:[0-9][0-9A-Za-z.-]*@sha256:[0-9a-f]{64}", image), image


def test_a_disruption_budget_never_blocks_a_drain_for_pods_that_are_not_ready(
    tmp_path: Path,
) -> None:
    """The upload pods are ready only while a slot is connected to the manager. With the
    budgets' default policy (IfHealthyBudget), a pod that is not ready may be evicted only
    while the budget holds, so a manager outage (every pod unready) or a crash loop would
    block every node drain, cluster upgrade and scale-down until it ends. A pod that is not
    ready serves nothing: evicting it disrupts nothing."""
    docs = render(tmp_path, 3)
    for budget in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        replicas = [
            w["spec"]["replicas"]
            for w in docs
            if w["kind"] in ("Deployment", "StatefulSet")
            and budget["spec"]["selector"]["matchLabels"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        if replicas == [1] and budget["spec"].get("maxUnavailable") == 1:
            continue  # its one pod is always evictable
        policy = budget["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
        assert policy == "AlwaysAllow", budget["metadata"]["name"]


def test_the_router_keeps_listening_until_the_gateway_has_seen_it_leave(tmp_path: Path) -> None:
    """nginx closes its listening socket at its stop signal; the endpoints' removal reaches
    the gateway (and a cloud load balancer) only after that, and a request sent meanwhile is
    refused. A preStop sleep holds the signal back, within the grace period."""
    docs = render(tmp_path, 3)
    spec = one(docs, "Deployment", "upload-router")["spec"]["template"]["spec"]
    [nginx] = spec["containers"]
    waits = nginx.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert waits >= 5, "the router's nginx stops listening as soon as its pod is deleted"
    assert spec["terminationGracePeriodSeconds"] >= waits + 30, "too little left for nginx"


def test_the_router_finds_a_pod_by_name_before_the_kubelet_finds_it_ready(
    tmp_path: Path,
) -> None:
    """The router looks pod upload-N up under the headless Service, which by default names
    ready pods only. The manager hands a pod's address out as soon as it has configured one
    of its slots, up to a readiness period (and the DNS's caches) before the kubelet's probe
    of /readyz makes it ready: with names for ready pods only, that pod's first chunks would
    get the router's 503. A pod that is not ready answers chunks itself (410, 404, 503)."""
    docs = render(tmp_path, 3)
    statefulset = one(docs, "StatefulSet", "upload")["spec"]
    [headless] = [
        d["spec"]
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["name"] == statefulset["serviceName"]
    ]
    assert headless["clusterIP"] == "None"
    router_conf = one(docs, "ConfigMap", "upload-router")["data"]["upload.conf.template"]
    assert f"$upload_instance.{statefulset['serviceName']}.${{POD_NAMESPACE}}." in router_conf
    assert headless.get("publishNotReadyAddresses") is True, "only ready pods have a name"


def test_replicas_spread_across_nodes_without_blocking_scheduling(tmp_path: Path) -> None:
    docs = render(tmp_path, 3)
    for name in ("upload", "upload-router"):
        [workload] = [
            d
            for d in docs
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name
        ]
        template = workload["spec"]["template"]
        spread = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
        assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        for constraint in spread.values():
            assert constraint["maxSkew"] == 1, name
            # A preference: a one-node cluster still runs every replica.
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", name
            # It counts this workload's own pods.
            selector = constraint["labelSelector"]["matchLabels"].items()
            assert selector <= template["metadata"]["labels"].items(), name
            assert selector == workload["spec"]["selector"]["matchLabels"].items(), name


CLOSING = 5  # seconds a stopping service may take after its clean-up: links, sockets, files
MEBIBYTES = {"Mi": 1024**2, "Gi": 1024**3}


def pod_environment(docs: list[dict[str, Any]], pod: str) -> dict[str, str]:
    """The environment Kubernetes gives the service's container in pod `pod`: `$(NAME)`
    expanded from the variables before it, the pod's name, the rendered ConfigMaps' values,
    and secret.yaml's placeholders for the Secret's."""
    secret = yaml_document((K8S / "secret.yaml").read_text())["stringData"]
    [container] = one(docs, "StatefulSet", "upload")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for variable in container["env"]:
        source = variable.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", variable
            value = pod
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            [config_map] = [
                d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"]
            ]
            value = config_map["data"][ref["key"]]
        elif "secretKeyRef" in source:
            value = secret[source["secretKeyRef"]["key"]]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], variable["value"])
        env[variable["name"]] = value
    return env


def test_a_pod_has_the_time_and_memory_its_settings_need(tmp_path: Path) -> None:
    """The pod's settings as the service reads them (its own parser), against what the pod
    gives them. The kubelet kills a stopping pod at terminationGracePeriodSeconds (Compose at
    stop_grace_period): the service's shutdown takes SHUTDOWN_GRACE for the chunks being
    stored and the clean-up, at least CLEANUP_FLOOR for the clean-up past it, then closes.
    The memory limit must leave the default chunk memory budget whole: 5 buffers for each
    slot's browser, as UPLOAD_SLOTS promises (a limit too small cuts it, and chunks wait)."""
    docs = render(tmp_path, 3)
    spec = one(docs, "StatefulSet", "upload")["spec"]["template"]["spec"]
    settings = load_settings(pod_environment(docs, "upload-0"))
    assert settings.own_address.endswith("/u/upload-0/")
    shutdown = settings.shutdown_grace + CLEANUP_FLOOR + CLOSING
    assert spec["terminationGracePeriodSeconds"] >= shutdown, "the kubelet cuts the shutdown"
    limit = spec["containers"][0]["resources"]["limits"]["memory"]
    quantity = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
    assert quantity, f"memory limit {limit}: not in Mi or Gi"
    budget = default_budget(settings.slots, int(quantity[1]) * MEBIBYTES[quantity[2]])
    assert budget == default_budget(settings.slots, None), f"{limit} cuts the chunk memory"

    compose = yaml_document((DEPLOY / "docker-compose.yml").read_text())
    environment = compose["x-upload-environment"]
    grace = float(environment.get("SHUTDOWN_GRACE", settings.shutdown_grace))
    stop = re.fullmatch(r"(\d+)s", compose["x-upload"]["stop_grace_period"])
    assert stop and int(stop[1]) >= grace + CLEANUP_FLOOR + CLOSING, "docker cuts the shutdown"


DISCORDS_GLOBAL_LIMIT = 50  # requests per second per bot token, every process together


def requests_per_second_at_most(docs: list[dict[str, Any]]) -> int:
    """What all the upload pods together may send with one bot token: each pod's
    DISCORD_GLOBAL_RATE times the pods, unless REDIS_URL names the one Redis of this
    output, through which every pod shares a single DISCORD_GLOBAL_RATE."""
    statefulset = one(docs, "StatefulSet", "upload")
    env = {
        e["name"]: e.get("value")
        for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    rate = int(env["DISCORD_GLOBAL_RATE"])
    url = env.get("REDIS_URL")
    if url is None:
        return rate * int(statefulset["spec"]["replicas"])
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", url)
    assert match, f"REDIS_URL {url!r} is not a Service of this output"
    service = one(docs, "Service", match[1])
    assert [p["port"] for p in service["spec"]["ports"]] == [int(match[2])]
    [redis] = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and service["spec"]["selector"].items()
        <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert redis["spec"]["replicas"] == 1, "two Redis would be two budgets"
    return rate


@pytest.mark.parametrize("replicas", [2, 5, 12])
def test_no_number_of_pods_can_exceed_the_tokens_global_limit(
    tmp_path: Path, replicas: int
) -> None:
    docs = render(tmp_path, replicas)
    assert one(docs, "StatefulSet", "upload")["spec"]["replicas"] == replicas
    assert requests_per_second_at_most(docs) == DISCORDS_GLOBAL_LIMIT


def test_only_the_upload_pods_reach_redis_and_it_keeps_nothing(tmp_path: Path) -> None:
    docs = render(tmp_path, 3)
    redis = one(docs, "Deployment", "upload-redis")["spec"]["template"]
    labels = redis["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "upload-redis"
    [container] = redis["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert container["image"].startswith("redis:")
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data"]
    [volume] = redis["spec"]["volumes"]
    assert "emptyDir" in volume

    [policy] = [
        d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "upload-redis"
    ]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    upload_pods = one(docs, "StatefulSet", "upload")["spec"]["template"]["metadata"]["labels"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}  # no namespaces, no address blocks
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "upload-service"}
    assert source["podSelector"]["matchLabels"].items() <= upload_pods.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]


# --- the router in front of stand-ins for the pods and the cluster's DNS --------------------


def pod_address(k: int) -> str:
    """Pod upload-K at 127.0.0.(K+2): every pod listens on the same port, as in Kubernetes."""
    return f"127.0.0.{k + 2}"


def pod_names(pods: int) -> dict[str, str]:
    """The cluster's DNS names of pods upload-0 .. upload-<pods - 1>, with their addresses."""
    return {
        f"upload-{k}.upload.{NAMESPACE}.svc.{CLUSTER_DOMAIN}": pod_address(k) for k in range(pods)
    }


class StandInDns(asyncio.DatagramProtocol):
    """Answers A queries for the names in `addresses` (which a test may change) with their
    IPv4 address; any other name does not exist; other types of a known name get no answer."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        query_id, _flags, questions = struct.unpack("!HHH", data[:6])
        labels, offset = [], 12
        while data[offset]:
            length = data[offset]
            labels.append(data[offset + 1 : offset + 1 + length].decode())
            offset += 1 + length
        qtype = struct.unpack("!H", data[offset + 1 : offset + 3])[0]
        question = data[12 : offset + 5]
        address = self.addresses.get(".".join(labels).lower())
        exists = address is not None
        answers = b""
        if address is not None and qtype == 1:  # A
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(address)
        rcode = 0 if exists else 3  # NXDOMAIN
        header = struct.pack(
            "!HHHHHH", query_id, 0x8180 | rcode, questions, 1 if answers else 0, 0, 0
        )
        self.transport.sendto(header + question + answers, addr)


async def stand_in_pod(k: int, port: int) -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pod": f"upload-{k}",
                "path": request.path,
                "request_id": request.headers.get("X-Request-ID"),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, pod_address(k), port).start()
    return runner


@asynccontextmanager
async def router(tmp_path: Path, template: str, pods: int) -> AsyncIterator[str]:
    """The router's configuration as its entrypoint would fill it in, run by nginx."""
    loop = asyncio.get_running_loop()
    dns, _ = await loop.create_datagram_endpoint(
        lambda: StandInDns(pod_names(pods)), local_addr=("127.0.0.1", 0)
    )
    dns_port = dns.get_extra_info("sockname")[1]
    pod_port = free_port()
    runners = [await stand_in_pod(k, pod_port) for k in range(pods)]
    try:
        # The nginx image's envsubst, and the pods' port, which is 8080 in the cluster.
        values = {
            "POD_NAMESPACE": NAMESPACE,
            "CLUSTER_DOMAIN": CLUSTER_DOMAIN,
            "NGINX_LOCAL_RESOLVERS": f"127.0.0.1:{dns_port}",
        }
        conf = re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], template)
        conf = conf.replace(".svc.cluster.example:8080;", f".svc.cluster.example:{pod_port};")
        port = free_port()
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
        conf = conf.replace("/var/log/nginx/access.log", str(tmp_path / "access.log"))
        assert f":{pod_port};" in conf and f"127.0.0.1:{port};" in conf
        server = tmp_path / "router.conf"
        server.write_text(conf)
        origin = f"http://127.0.0.1:{port}"
        nginx = await start_nginx(nginx_main_conf(tmp_path, server), tmp_path, origin)
        try:
            yield origin
        finally:
            await stop_service(nginx, STOP_TIMEOUT)
    finally:
        for runner in runners:
            await runner.cleanup()
        dns.close()
