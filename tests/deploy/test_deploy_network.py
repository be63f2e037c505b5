"""deploy/k8s/networkpolicy.yaml: who may connect to whom, as the cluster would decide it.

The NetworkPolicies are taken from kustomize's output (rendered and validated as in
test_deploy_k8s.py) and evaluated for concrete connections by `allows`, which follows the
API's documented semantics (networking.k8s.io/v1): a connection passes when the source's
egress and the destination's ingress both allow it, and a pod that no policy selects for a
direction allows everything in it. Only what these manifests use is implemented
(matchLabels, ipBlock with except, named and numbered ports).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import DEPLOY
from test_deploy_k8s import NAMESPACE, kustomize_settings, render

Policy = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, named container ports) or, without a namespace, an address
    outside the cluster."""

    ip: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"not implemented here: {selector}"
    wanted: dict[str, str] = selector.get("matchLabels", {})
    return wanted.items() <= labels.items()


def _in_block(block: dict[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    within = [ipaddress.ip_network(cidr) for cidr in [block["cidr"], *block.get("except", [])]]
    inside = [address.version == net.version and address in net for net in within]
    return inside[0] and not any(inside[1:])


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        return _in_block(peer["ipBlock"], other.ip)
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), other.labels)


def _port_matches(rule: dict[str, Any], destination: Endpoint, port: int, protocol: str) -> bool:
    if "ports" not in rule:
        return True
    for allowed in rule["ports"]:
        number = allowed.get("port")
        if isinstance(number, str):
            number = destination.ports.get(number)
        if allowed.get("protocol", "TCP") == protocol and number in (None, port):
            return True
    return False


def _direction_allows(
    policies: list[Policy],
    direction: str,
    pod: Endpoint,
    other: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str,
) -> bool:
    """Whether `pod`'s policies for `direction` ("ingress"/"egress") let `other` through."""
    peers_key = "from" if direction == "ingress" else "to"
    selecting = [
        policy
        for policy in policies
        if pod.namespace == NAMESPACE
        and _selects(policy["spec"]["podSelector"], pod.labels)
        and direction.capitalize() in policy["spec"]["policyTypes"]
    ]
    if pod.namespace is None or not selecting:
        return True
    return any(
        _port_matches(rule, destination, port, protocol)
        and (
            peers_key not in rule
            or any(_peer_matches(peer, NAMESPACE, other) for peer in rule[peers_key])
        )
        for policy in selecting
        for rule in policy["spec"].get(direction, [])
    )


def allows(
    policies: list[Policy],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether a connection from `source` to `destination`:`port` passes every policy."""
    return _direction_allows(
        policies, "egress", source, destination, destination, port, protocol
    ) and _direction_allows(policies, "ingress", destination, source, destination, port, protocol)


def policies_of(docs: list[dict[str, Any]]) -> list[Policy]:
    found = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    for policy in found:
        policy["metadata"].setdefault("namespace", NAMESPACE)  # applied in the pods' namespace
    return found


def pod_of(docs: list[dict[str, Any]], workload: str, ip: str) -> Endpoint:
    """A pod of the Deployment or StatefulSet `workload`, with its labels and named ports."""
    [template] = [
        doc["spec"]["template"]
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == workload
    ]
    ports = {
        port["name"]: port["containerPort"]
        for container in template["spec"]["containers"]
        for port in container.get("ports", [])
    }
    return Endpoint(ip, NAMESPACE, template["metadata"]["labels"], ports)


DNS = Endpoint("10.96.0.10", "kube-system", {"k8s-app": "kube-dns"})
REDIS = Endpoint("10.244.3.7", NAMESPACE, {"app.kubernetes.io/name": "upload-redis"})
NEIGHBOUR = Endpoint("10.244.3.8", NAMESPACE, {"app.kubernetes.io/name": "something-else"})
OTHER_NAMESPACE = Endpoint("10.244.4.9", "team-b", {"app.kubernetes.io/name": "upload-router"})
PROMETHEUS = Endpoint("10.244.5.5", "monitoring", {"app.kubernetes.io/name": "prometheus"})
DISCORD = Endpoint("162.159.135.232")  # discord.com, outside the cluster
DISCORD_V6 = Endpoint("2606:4700::6810:e2f3")
INTERNET_CLIENT = Endpoint("203.0.113.50")
METADATA_SERVICE = Endpoint("169.254.169.254")
IN_CLUSTER_HTTPS = Endpoint("10.244.6.6", "other", {"app": "web"})


def test_service_pods_take_chunks_from_the_router_and_scrapes_from_monitoring_only(
    tmp_path: Path,
) -> None:
    docs = render(tmp_path, 3)
    policies = policies_of(docs)
    service, router = (
        pod_of(docs, "upload", "10.244.1.1"),
        pod_of(docs, "upload-router", "10.244.2.2"),
    )
    chunk, metrics = service.ports["http"], service.ports["metrics"]

    assert allows(policies, router, service, chunk)
    for intruder in (NEIGHBOUR, OTHER_NAMESPACE, PROMETHEUS, REDIS, INTERNET_CLIENT):
        assert not allows(policies, intruder, service, chunk), intruder
    assert allows(policies, PROMETHEUS, service, metrics)
    for intruder in (router, NEIGHBOUR, OTHER_NAMESPACE, INTERNET_CLIENT):
        assert not allows(policies, intruder, service, metrics), intruder
    # The gateway reaches the router, from wherever its proxies run.
    for gateway in (INTERNET_CLIENT, OTHER_NAMESPACE):
        assert allows(policies, gateway, router, router.ports["http"])
        assert not allows(policies, gateway, router, 9000)


def test_service_pods_reach_dns_redis_the_manager_and_discord_only(tmp_path: Path) -> None:
    docs = render(tmp_path, 3)
    policies = policies_of(docs)
    service = pod_of(docs, "upload", "10.244.1.1")

    assert allows(policies, service, DNS, 53, "UDP") and allows(policies, service, DNS, 53)
    assert allows(policies, service, REDIS, 6379)
    assert allows(policies, service, DISCORD, 443) and allows(policies, service, DISCORD_V6, 443)
    assert not allows(policies, service, DISCORD, 80)
    assert not allows(policies, service, METADATA_SERVICE, 80)
    assert not allows(policies, service, NEIGHBOUR, 6379)
    assert not allows(policies, service, IN_CLUSTER_HTTPS, 8080)
    assert not allows(policies, service, Endpoint("10.0.0.1"), 6443)  # the API server
    assert not allows(policies, service, DNS, 80)
    # The router talks to the service pods and DNS only.
    router = pod_of(docs, "upload-router", "10.244.2.2")
    assert allows(policies, router, service, service.ports["http"])
    assert allows(policies, router, DNS, 53, "UDP")
    assert not allows(policies, router, service, service.ports["metrics"])
    assert not allows(policies, router, DISCORD, 443)


def test_the_network_settings_reach_the_policies(tmp_path: Path) -> None:
    assert kustomize_settings()["MONITORING_NAMESPACE"] == "monitoring"
    docs = render(
        tmp_path,
        3,
        settings={
            "MONITORING_NAMESPACE": "observability",
            "MANAGER_CIDR": "10.20.0.0/16",
            "MANAGER_PORT": "8080",
        },
    )
    policies = policies_of(docs)
    service = pod_of(docs, "upload", "10.244.1.1")
    metrics = service.ports["metrics"]
    observability = Endpoint("10.244.7.7", "observability", {"app": "prometheus"})
    assert allows(policies, observability, service, metrics)
    assert not allows(policies, PROMETHEUS, service, metrics)
    # A manager inside the cluster, on its own port; nothing else on that port.
    assert allows(policies, service, Endpoint("10.20.1.2"), 8080)
    assert not allows(policies, service, Endpoint("10.21.0.1"), 8080)
    assert not allows(policies, service, DISCORD, 8080)
    assert not allows(policies, service, Endpoint("10.20.1.2"), 443)
    assert allows(policies, service, DISCORD, 443)


def test_the_readmes_patch_lets_the_router_accept_one_namespace_only(tmp_path: Path) -> None:
    readme = (DEPLOY / "README.md").read_text()
    section = readme[readme.index("### Network policies") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    patch = section[start : section.index("```\n", start)]
    assert patch.startswith("patches:\n")
    docs = render(tmp_path, 3, appended=patch)
    policies = policies_of(docs)
    router = pod_of(docs, "upload-router", "10.244.2.2")
    gateway = Endpoint("10.244.8.8", "envoy-gateway-system", {"app": "envoy"})
    assert allows(policies, gateway, router, router.ports["http"])
    for other in (OTHER_NAMESPACE, INTERNET_CLIENT, NEIGHBOUR):
        assert not allows(policies, other, router, router.ports["http"]), other
