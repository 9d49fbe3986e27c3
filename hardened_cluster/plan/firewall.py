"""The port matrix: which sources reach which port on a node, and which forwarded traffic reaches pods, by role.

Everything not listed is dropped by the node's nftables input and forward chains. The ruleset template
only formats these rules, so tests and the Pulumi program check the matrix itself.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from hardened_cluster.spec.model import Node, Spec

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CNI_PORTS = {
    "calico": [("bgp", "tcp", "179"), ("vxlan", "udp", "4789"), ("typha", "tcp", "5473")],
    "cilium": [("vxlan", "udp", "8472"), ("cilium-health", "tcp", "4240")],
    "flannel": [("vxlan", "udp", "8472")],
    # kube-router routes pod subnets between nodes over BGP; its GoBGP admin port (50051) stays closed.
    "kube-router": [("bgp", "tcp", "179")],
    "none": [],
}
NODEPORT_RANGE = "30000-32767"


@dataclass(frozen=True)
class Rule:
    name: str
    protocol: str
    port: str  # a port or an nftables range "a-b"
    sources: tuple[Network, ...]

    def sources_v(self, version: int) -> list[str]:
        return self._sources_text[version]

    @cached_property  # every node of a role renders this rule object
    def _sources_text(self) -> dict[int, list[str]]:
        return _by_version(self.sources)


def _by_version(networks: tuple[Network, ...]) -> dict[int, list[str]]:
    return {version: [str(n) for n in networks if n.version == version] for version in (4, 6)}


_HOST_NETWORK = {4: ipaddress.IPv4Network, 6: ipaddress.IPv6Network}


def _hosts(nodes: list[Node]) -> tuple[Network, ...]:
    # From the address as an integer: given the address itself, the constructor parses its text again.
    return tuple(_HOST_NETWORK[n.address.version](int(n.address)) for n in nodes)


def _collapse(networks: tuple[Network, ...]) -> tuple[Network, ...]:
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return tuple(list(v4) + list(v6))


@dataclass(frozen=True)
class Forwarding:
    """What a Kubernetes node forwards; everything else is dropped.

    Pods reach anything (their egress is the NetworkPolicies' job) and the cluster's Kubernetes nodes
    reach pods. A connection DNAT-ed from any address outside the Service CIDR (a NodePort, hostPort,
    LoadBalancer or external IP, which kube-proxy or a CNI's portmap rewrite in prerouting, so the input
    chain never sees it) reaches a pod only through the NodePort range and from `nodeport_sources`;
    with no sources, not at all. ClusterIP connections are judged by their source like any other.
    """

    pod_cidr: Network
    service_cidr: Network
    nodes: tuple[Network, ...]
    nodeport_sources: tuple[Network, ...]
    nodeport_range: ClassVar[str] = NODEPORT_RANGE

    def nodes_v(self, version: int) -> list[str]:
        return self._nodes_text[version]

    def nodeport_sources_v(self, version: int) -> list[str]:
        return self._nodeport_sources_text[version]

    @cached_property  # every node of a role renders this object
    def _nodes_text(self) -> dict[int, list[str]]:
        return _by_version(self.nodes)

    @cached_property
    def _nodeport_sources_text(self) -> dict[int, list[str]]:
        return _by_version(self.nodeport_sources)


def _kube_nodes(spec: Spec) -> tuple[Network, ...]:
    return _hosts([n for n in spec.nodes if "control-plane" in n.roles or "worker" in n.roles])


def nodeport_sources(spec: Spec, node: Node) -> tuple[Network, ...]:
    """Who reaches the node's NodePorts: only workers serve them, only when enabled; admins by default."""
    if "worker" not in node.roles or not spec.firewall.nodeport_range.enabled:
        return ()
    return _collapse(tuple(spec.firewall.nodeport_range.sources) or tuple(spec.network.admin_cidrs))


def node_forwarding(spec: Spec, node: Node) -> Forwarding | None:
    """The forward chain's matrix; None on a node that runs no pods and forwards nothing."""
    if not set(node.roles) & {"control-plane", "worker"}:
        return None
    return Forwarding(spec.network.pod_cidr, spec.network.service_cidr, _collapse(_kube_nodes(spec)),
                      nodeport_sources(spec, node))


def node_rules(spec: Spec, node: Node) -> list[Rule]:
    admins = tuple(spec.network.admin_cidrs)
    etcd = _hosts(spec.nodes_with("etcd"))
    control_plane = _hosts(spec.nodes_with("control-plane"))
    balancers = _hosts(spec.nodes_with("load-balancer"))
    kube_nodes = _collapse(_kube_nodes(spec))  # once: several rules take them, and each is collapsed below
    roles = set(node.roles)
    rules = [Rule("ssh", "tcp", str(spec.ssh_port(node)), admins)]
    if "etcd" in roles:
        rules.append(Rule("etcd-client", "tcp", str(spec.etcd.client_port), control_plane + etcd))
        rules.append(Rule("etcd-peer", "tcp", str(spec.etcd.peer_port), etcd))
    if "control-plane" in roles:
        port = str(spec.cluster.api_port)
        # Pods reach the API server through the kubernetes Service, from pod addresses.
        # The load balancers forward the endpoint's connections from their own addresses.
        rules.append(Rule("kube-apiserver", "tcp", port, admins + kube_nodes + balancers + (spec.network.pod_cidr,)))
    if "load-balancer" in roles:
        # The endpoint: admins and the Kubernetes nodes (pods use the kubernetes Service, not the endpoint).
        rules.append(Rule("api-endpoint", "tcp", str(spec.cluster.api_port), admins + kube_nodes))
    if roles & {"control-plane", "worker"}:
        rules.append(Rule("kubelet", "tcp", "10250", control_plane))
        rules += [Rule(f"cni-{name}", proto, port, kube_nodes) for name, proto, port in CNI_PORTS[spec.network.cni]]
    # Served on the host itself (kube-proxy's IPVS mode, hostNetwork pods); DNAT-ed ones are in node_forwarding.
    nodeports = nodeport_sources(spec, node)
    if nodeports:
        rules.append(Rule("nodeports", "tcp", NODEPORT_RANGE, nodeports))
        rules.append(Rule("nodeports-udp", "udp", NODEPORT_RANGE, nodeports))
    for extra in spec.firewall.extra_ports:
        if roles & set(extra.roles):
            rules.append(Rule(extra.name, extra.protocol, str(extra.port), tuple(extra.sources)))
    return [Rule(r.name, r.protocol, r.port, _collapse(r.sources)) for r in rules]
