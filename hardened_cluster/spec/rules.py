"""Semantic rules of a spec that the schema alone cannot say: what the consuming component accepts.

Each rule names the key path, what is wrong and what is allowed, and is decided here at load, so that
nothing accepted fails on the hosts half-way through an apply, weakens the cluster unnoticed or locks the
operator out: the API server's and kube-controller-manager's limits on CIDRs, Kubernetes' syntax of
names and labels, systemd's calendar events, paths that the roles and the API server's mounts use.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from hardened_cluster.errors import SpecIssue
from hardened_cluster.spec.calendar import EXAMPLES, CalendarError, check_calendar
from hardened_cluster.spec.text import key_path, shown

if TYPE_CHECKING:
    from hardened_cluster.spec.model import Spec

# kube-apiserver refuses a service range of more than 2^20 addresses; kubeadm gives the kubernetes
# Service the 1st address and CoreDNS the 10th, so the range needs 16 (IPv4 also loses its last one).
SERVICE_PREFIX = {4: (12, 28), 6: (108, 124)}
# kube-controller-manager's default --node-cidr-mask-size (24 for IPv4, 64 for IPv6); it refuses a
# cluster CIDR more than 16 bits shorter than the node mask.
NODE_MASK = {4: 24, 6: 64}
WIDE_PREFIX = {4: 8, 6: 16}  # shorter is internet-scale (also used for admin_cidrs in spec.py)

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# The kubelet refuses --node-labels in these namespaces unless listed (NodeRestriction's allowed set).
_K8S_LABEL_NAMESPACES = ("kubernetes.io", "k8s.io")
_KUBELET_LABELS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
}
_KUBELET_LABEL_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]{1,255}")
# Services the cluster needs running; the message says why.
_NEEDED_SERVICES = {
    "ssh": "the SSH service hardened-cluster and the operator log in through",
    "sshd": "the SSH service hardened-cluster and the operator log in through",
    "ssh.socket": "the SSH service hardened-cluster and the operator log in through",
    "containerd": "the container runtime the kubelet uses", "kubelet": "the Kubernetes node agent",
    "etcd": "the cluster's datastore", "nftables": "the firewall hardened-cluster configures",
    "systemd-journald": "the journal the audit and drift checks read",
}
_HOST_PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")
_VOLATILE = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp")
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
                "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/local/bin",
                "/usr/local/sbin", "/usr/sbin", "/var", "/var/lib", "/var/log", "/var/backups"}
# Resources the API server can encrypt at rest (built-in; a CRD's resource is name.group) and wildcards.
ENCRYPTABLE = (
    "secrets", "configmaps", "serviceaccounts", "pods", "services", "endpoints", "persistentvolumeclaims",
    "persistentvolumes", "namespaces", "nodes", "limitranges", "resourcequotas", "replicationcontrollers",
    "podtemplates", "events", "deployments.apps", "statefulsets.apps", "daemonsets.apps", "replicasets.apps",
    "controllerrevisions.apps", "jobs.batch", "cronjobs.batch", "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io", "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io", "ingresses.networking.k8s.io",
    "networkpolicies.networking.k8s.io", "customresourcedefinitions.apiextensions.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io", "certificatesigningrequests.certificates.k8s.io",
    "leases.coordination.k8s.io", "storageclasses.storage.k8s.io", "priorityclasses.scheduling.k8s.io",
    "runtimeclasses.node.k8s.io", "poddisruptionbudgets.policy", "horizontalpodautoscalers.autoscaling",
    "endpointslices.discovery.k8s.io", "*.", "*.*", "*.apps", "*.batch",
)
_KEY_MATERIAL = re.compile(r"PRIVATE KEY|-----BEGIN|b3BlbnNzaC1rZXktdjE|[\n\r]|[A-Za-z0-9+/=]{200}")
_DURATION = re.compile(r"(\d{1,9})(ms|s|m)")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000}


def did_you_mean(value: Any, allowed: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value).lower(), [a.lower() for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean '{allowed[[a.lower() for a in allowed].index(close[0])]}'?)" if close else ""


def looks_like_key_material(text: str) -> bool:
    return bool(_KEY_MATERIAL.search(text)) or any(len(part) > 255 for part in text.split("/"))


def semantic_issues(spec: Spec) -> list[SpecIssue]:
    return (_family_issues(spec) + _size_issues(spec) + _address_issues(spec) + _name_issues(spec)
            + _label_issues(spec) + _access_issues(spec) + _path_issues(spec) + _schedule_issues(spec)
            + _enum_issues(spec) + _exposure_issues(spec))


def _family_issues(spec: Spec) -> list[SpecIssue]:
    net = spec.network
    family = net.node_cidrs[0].version
    named = [(f"network.node_cidrs[{i}]", c) for i, c in enumerate(net.node_cidrs)][1:]
    named += [("network.pod_cidr", net.pod_cidr), ("network.service_cidr", net.service_cidr)]
    named += [(f"network.admin_cidrs[{i}]", c) for i, c in enumerate(net.admin_cidrs)]
    named += [(f"firewall.nodeport_range.sources[{i}]", c) for i, c in enumerate(spec.firewall.nodeport_range.sources)]
    for i, port in enumerate(spec.firewall.extra_ports):
        named += [(f"firewall.extra_ports[{i}].sources[{j}]", c) for j, c in enumerate(port.sources)]
    host = spec.cluster.api_host
    try:
        named.append(("cluster.control_plane_endpoint", ipaddress.ip_address(host)))
    except ValueError:
        pass
    return [SpecIssue(path, f"{value} is IPv{value.version} but the cluster is IPv{family} (network.node_cidrs); "
                      "one address family throughout, dual-stack is not supported")
            for path, value in named if value.version != family]


def _size_issues(spec: Spec) -> list[SpecIssue]:
    net = spec.network
    issues = []
    service = net.service_cidr
    low, high = SERVICE_PREFIX[service.version]
    if service.prefixlen < low:
        issues.append(SpecIssue("network.service_cidr", f"{service} is larger than kube-apiserver accepts "
                                f"(2^20 addresses); allowed: /{low} to /{high}"))
    elif service.prefixlen > high:
        issues.append(SpecIssue("network.service_cidr", f"{service} is too small to hold the kubernetes Service "
                                f"and cluster DNS (its 1st and 10th addresses); allowed: /{low} to /{high}"))
    pod, mask = net.pod_cidr, NODE_MASK[net.pod_cidr.version]
    kube = len([n for n in spec.nodes if "control-plane" in n.roles or "worker" in n.roles])
    needed = mask - (kube - 1).bit_length()
    if pod.version == net.node_cidrs[0].version and not mask - 16 <= pod.prefixlen <= needed:
        have = 2 ** (mask - pod.prefixlen) if pod.prefixlen <= mask else 0
        issues.append(SpecIssue("network.pod_cidr", (
            f"{pod} has room for {have} per-node /{mask} subnet{'s' if have != 1 else ''} but there are {kube} "
            f"Kubernetes nodes; allowed: /{mask - 16} to /{needed}"
            if pod.prefixlen >= mask - 16 else
            f"{pod} is more than 16 bits shorter than the per-node /{mask} subnets kube-controller-manager "
            f"allocates; allowed: /{mask - 16} to /{needed}")))
    return issues


def _address_issues(spec: Spec) -> list[SpecIssue]:
    issues = []
    for i, cidr in enumerate(spec.network.node_cidrs):
        if cidr.is_loopback or cidr.is_multicast or cidr.is_unspecified or cidr.is_link_local:
            issues.append(SpecIssue(f"network.node_cidrs[{i}]", f"{cidr} is not a network nodes can be reached in "
                                    "(loopback, link-local, multicast or unspecified)"))
    for i, node in enumerate(spec.nodes):
        for cidr in spec.network.node_cidrs:
            if node.address in cidr and cidr.version == 4 and cidr.prefixlen < 31 and \
                    node.address in (cidr.network_address, cidr.broadcast_address):
                which = "network" if node.address == cidr.network_address else "broadcast"
                issues.append(SpecIssue(f"nodes[{i}].address", f"{node.address} is the {which} address of {cidr}, "
                                        "not a host address"))
        if node.address.is_multicast or node.address.is_unspecified or node.address.is_loopback:
            issues.append(SpecIssue(f"nodes[{i}].address", f"{node.address} is not a unicast host address"))
    host = spec.cluster.api_host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and (address.is_loopback or address.is_unspecified or address.is_multicast):
        issues.append(SpecIssue("cluster.control_plane_endpoint", f"{address} cannot reach the API server from "
                                "other nodes; use a control-plane node's address, a load balancer or a DNS name"))
    return issues


def _subdomain_problem(name: str) -> str | None:
    if len(name) > 253:
        return f"is {len(name)} characters; at most 253"
    for label in name.split("."):
        if not label:
            return "has an empty label ('..', or a leading or trailing dot)"
        if len(label) > 63:
            return f"has a label of {len(label)} characters; at most 63"
        if not re.fullmatch(_LABEL, label):
            return f"has the label {shown(label)}; a label is lowercase letters, digits and '-', not at its ends"
    return None


def _name_issues(spec: Spec) -> list[SpecIssue]:
    issues = []
    problem = _subdomain_problem(spec.cluster.domain)
    if problem:
        issues.append(SpecIssue("cluster.domain", f"{shown(spec.cluster.domain)} {problem} (e.g. cluster.local)"))
    pss = spec.admission.pod_security
    declared = {ns.name: i for i, ns in enumerate(spec.namespaces)}
    for i, ns in enumerate(spec.namespaces):
        if ns.name.startswith("kube-"):
            issues.append(SpecIssue(f"namespaces[{i}].name", f"'{ns.name}' is a Kubernetes system namespace "
                                    "(kube-*); its pods run privileged and a default-deny policy would cut DNS"))
    for j, name in enumerate(pss.exempt_namespaces):
        if name in declared and not name.startswith("kube-") and spec.namespaces[declared[name]].pod_security != "privileged":
            level = spec.namespaces[declared[name]].pod_security
            issues.append(SpecIssue(f"admission.pod_security.exempt_namespaces[{j}]", (
                f"'{name}' is namespaces[{declared[name]}] with pod_security {level}; an exempt namespace is "
                "not checked at all, so remove it here or declare it privileged")))
    if pss.enforce != "privileged" and "kube-system" not in pss.exempt_namespaces:
        issues.append(SpecIssue("admission.pod_security.exempt_namespaces", (
            f"must list kube-system while enforce is {pss.enforce}: kube-proxy and the CNI run privileged there")))
    types = [e.type for e in spec.admission.event_rate_limit]
    for i, kind in enumerate(types):
        if kind in types[:i]:
            issues.append(SpecIssue(f"admission.event_rate_limit[{i}].type", f"a second limit of type {kind}; "
                                    "EventRateLimit takes one per type"))
    return issues


def _label_issues(spec: Spec) -> list[SpecIssue]:
    from hardened_cluster.plan.kubeadm import RUNTIME_LABEL_PREFIX

    issues = []
    key_problems: dict[str, str | None] = {}  # the same keys recur on node after node
    for i, node in enumerate(spec.nodes):
        for key, value in node.labels.items():
            if key not in key_problems:
                key_problems[key] = _label_key_problem(key, RUNTIME_LABEL_PREFIX)
            problem = key_problems[key]
            if problem:
                issues.append(SpecIssue(key_path(("nodes", i, "labels", key)), f"the key {shown(key)} {problem}"))
            elif value and not _LABEL_NAME.fullmatch(value):
                issues.append(SpecIssue(key_path(("nodes", i, "labels", key)), (
                    f"{shown(value)} is not a label value: empty, or at most 63 letters, "
                    "digits, '-', '_' or '.', starting and ending with a letter or digit")))
    return issues


def _label_key_problem(key: str, runtime_prefix: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    domain = prefix.split("/")[0] if prefix else ""
    if not _LABEL_NAME.fullmatch(name) or "/" in prefix:
        return ("is not a label key: [prefix/]name, the name at most 63 letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit")
    if prefix and _subdomain_problem(prefix):
        return f"has the prefix {shown(prefix)}, which {_subdomain_problem(prefix)}"
    if key.startswith(runtime_prefix):
        return "is set by hardened-cluster from runtimes.gvisor and runtimes.kata"
    if (domain.endswith(_K8S_LABEL_NAMESPACES) and key not in _KUBELET_LABELS
            and not key.startswith(_KUBELET_LABEL_PREFIXES)):
        return ("is in a Kubernetes namespace the kubelet may not set (--node-labels); allowed there: "
                "topology.kubernetes.io/zone and region, node.kubernetes.io/* and kubelet.kubernetes.io/*")
    return None


def _access_issues(spec: Spec) -> list[SpecIssue]:
    """Settings that would lock the operator (and hardened-cluster) out of the hosts."""
    issues = []
    users = [("ssh.user", spec.ssh.user)] + [(f"nodes[{i}].ssh.user", n.ssh.user) for i, n in enumerate(spec.nodes)]
    for path, user in users:
        if user is None:
            continue
        if not _USER.fullmatch(user):
            issues.append(SpecIssue(path, f"{shown(user)} is not a login name: lowercase letters, digits, '_' and "
                                    "'-', starting with a letter or '_', at most 32 characters"))
        elif user == "root" and spec.ssh_hardening.enabled:
            issues.append(SpecIssue(path, "'root' cannot log in: ssh_hardening sets PermitRootLogin no; use an "
                                    "admin user with sudo"))
    seen: set[str] = set()
    for i, unit in enumerate(spec.os_hardening.disable_services):
        path = f"os_hardening.disable_services[{i}]"
        base = unit.removesuffix(".service")
        if not _UNIT.fullmatch(unit):
            issues.append(SpecIssue(path, f"{shown(unit)} is not a systemd unit name (letters, digits, ':', '_', "
                                    "'.', '@', '-')"))
        elif base in _NEEDED_SERVICES:
            issues.append(SpecIssue(path, f"'{unit}' is {_NEEDED_SERVICES[base]}; it must keep running"))
        elif base in seen:
            issues.append(SpecIssue(path, f"'{unit}' is listed twice"))
        seen.add(base)
    api_port = spec.cluster.api_port
    fixed = {10250: "the kubelet port", 10257: "kube-controller-manager's port", 10259: "kube-scheduler's port",
             10249: "kube-proxy's metrics port", 10256: "kube-proxy's health port"}
    if api_port in fixed:
        issues.append(SpecIssue("cluster.control_plane_endpoint", f"port {api_port} is {fixed[api_port]} on every "
                                "control-plane node; the API server needs a port of its own (e.g. 6443)"))
    for i, node in enumerate(spec.nodes):
        port = spec.ssh_port(node)
        uses = {}
        if "etcd" in node.roles:
            uses |= {spec.etcd.client_port: "etcd.client_port", spec.etcd.peer_port: "etcd.peer_port"}
        if "control-plane" in node.roles:
            uses[api_port] = "the API server port"
        if "load-balancer" in node.roles:
            uses[api_port] = "the load balancer's port (the API server port)"
        if "control-plane" in node.roles or "worker" in node.roles:
            uses |= {p: name for p, name in fixed.items()}
        if port in uses:
            where = f"nodes[{i}].ssh.port" if node.ssh.port else "ssh.port"
            issues.append(SpecIssue(where, f"{port} is {uses[port]} on '{node.name}'; SSH needs a port of its own"))
    return issues


def _path_issues(spec: Spec) -> list[SpecIssue]:
    from hardened_cluster.plan.render import FILES

    managed = sorted({rule.path for rule in FILES})
    issues = []
    audit = spec.audit
    candidates: list[tuple[str, str, str, bool]] = [  # key, path, what, persistent
        ("etcd.data_dir", str(spec.etcd.data_dir), "directory", True),
        ("etcd.snapshot.directory", str(spec.etcd.snapshot.directory), "directory", True),
        ("audit.log_path", str(audit.log_path), "file", True),
    ]
    if audit.webhook:
        candidates.append(("audit.webhook.kubeconfig", str(audit.webhook.kubeconfig), "mounted file", False))
    if spec.encryption.kms:
        candidates.append(("encryption.kms.endpoint", spec.encryption.kms.endpoint.removeprefix("unix://"), "socket", False))
    for key, path, what, persistent in candidates:
        problem = _host_path_problem(path, what, persistent, managed)
        if problem:
            issues.append(SpecIssue(key, f"{shown(path)} {problem}"))
    data, snapshots = PurePosixPath(spec.etcd.data_dir), PurePosixPath(spec.etcd.snapshot.directory)
    if not issues and (data == snapshots or snapshots.is_relative_to(data) or data.is_relative_to(snapshots)):
        issues.append(SpecIssue("etcd.snapshot.directory", f"{snapshots} overlaps etcd.data_dir ({data}); a restore "
                                "replaces the data directory, so snapshots are kept apart from it"))
    return issues


def _host_path_problem(path: str, what: str, persistent: bool, managed: list[str]) -> str | None:
    if not path.startswith("/"):
        return "must be an absolute path; '~' is not expanded on the hosts" if path.startswith("~") else "must be an absolute path"
    if not _HOST_PATH.fullmatch(path):
        return "holds characters a host path here may not: allowed are letters, digits and . _ @ + - /"
    parts = path.split("/")[1:]
    if ".." in parts or "." in parts or "" in parts[:-1]:
        return "is not a normalized path (no '.', '..' or '//')"
    if len(path) > 1024 or any(len(p) > 255 for p in parts):
        return "is too long (a name at most 255 characters, the path at most 1024)"
    clean = str(PurePosixPath(path))
    if clean in managed:
        return "is a file hardened-cluster manages"
    if what == "mounted file":  # the API server mounts this one file, read-only
        return None
    directory = clean if what == "directory" else str(PurePosixPath(clean).parent)
    if persistent and any(clean == v or clean.startswith(v + "/") for v in _VOLATILE):
        return f"is under {next(v for v in _VOLATILE if clean == v or clean.startswith(v + '/'))}, which does not keep files"
    if directory in _SYSTEM_DIRS:
        mounted = {"file": "its directory", "socket": "its directory", "directory": "it"}[what]
        return f"is in {directory}, a system directory; {mounted} would be {_USE[what]}: use a directory of its own"
    inside = next((m for m in managed if m.startswith(directory + "/")), None)
    if inside:
        return f"shares {directory} with files hardened-cluster manages ({inside}); use a directory of its own"
    return None


_USE = {"directory": "given to etcd or the snapshot job", "file": "mounted into the API server",
        "socket": "mounted writable into the API server"}


def _schedule_issues(spec: Spec) -> list[SpecIssue]:
    issues = []
    try:
        check_calendar(spec.etcd.snapshot.schedule)
    except CalendarError as exc:
        issues.append(SpecIssue("etcd.snapshot.schedule", f"{shown(spec.etcd.snapshot.schedule)} is not a systemd "
                                f"calendar event this project accepts: {exc}; {EXAMPLES}"))
    kms = spec.encryption.kms
    if kms:
        number, unit = _DURATION.fullmatch(kms.timeout).groups()
        ms = int(number) * _UNITS_MS[unit]
        if not 0 < ms <= 600_000:
            issues.append(SpecIssue("encryption.kms.timeout", f"'{kms.timeout}' is out of range; allowed: 1ms to 10m "
                                    "(a KMS call holds up the API request waiting for it)"))
    return issues


def _enum_issues(spec: Spec) -> list[SpecIssue]:
    issues = []
    resources = spec.encryption.resources
    for i, resource in enumerate(resources):
        path = f"encryption.resources[{i}]"
        if resource in resources[:i]:
            issues.append(SpecIssue(path, f"'{resource}' is listed twice"))
        elif resource == "*":
            issues.append(SpecIssue(path, "'*' is not a resource; use '*.' for the core group or '*.*' for all"))
        elif resource not in ENCRYPTABLE and not re.fullmatch(rf"{_LABEL}(\.{_LABEL})+", resource):
            known = [r for r in ENCRYPTABLE if "*" not in r]
            issues.append(SpecIssue(path, f"{shown(resource)} is not a resource the API server stores"
                                    f"{did_you_mean(resource, known)}; allowed: built-in resources such as secrets, "
                                    "configmaps or deployments.apps, name.group for a custom resource, '*.' or '*.*'"))
    if not issues and not {"secrets", "*.", "*.*"} & set(resources):
        issues.append(SpecIssue("encryption.resources", "must include secrets ('*.' or '*.*' do too): encrypting "
                                "Secrets at rest is what this is for"))
    version = spec.admission.pod_security.version
    match = re.fullmatch(r"v1\.(0|[1-9]\d{0,2})", version)
    if version != "latest" and not (match and int(match.group(1)) <= spec.cluster.minor):
        close = re.fullmatch(r"v?1\.(\d{1,3})(\.\d+)?", version)
        hint = f" (did you mean 'v1.{int(close.group(1))}'?)" if close and int(close.group(1)) <= spec.cluster.minor else ""
        issues.append(SpecIssue("admission.pod_security.version", f"{shown(version)} is not a Pod Security Standards "
                                f"version{hint}; allowed: latest or v1.0 to v1.{spec.cluster.minor} (the cluster's)"))
    return issues


def _exposure_issues(spec: Spec) -> list[SpecIssue]:
    """Ports opened to the internet, and admin networks that let every pod reach SSH."""
    issues = []
    net = spec.network
    for i, cidr in enumerate(net.admin_cidrs):
        for name, inner in (("pod_cidr", net.pod_cidr), ("service_cidr", net.service_cidr)):
            if cidr.version == inner.version and cidr.overlaps(inner) and cidr.prefixlen >= WIDE_PREFIX[cidr.version]:
                issues.append(SpecIssue(f"network.admin_cidrs[{i}]", f"{cidr} overlaps network.{name} ({inner}); "
                                        "every pod would reach SSH on the nodes"))
    if spec.firewall.i_accept_ports_open_to_the_internet:
        return issues
    opened = [(f"firewall.nodeport_range.sources[{i}]", "the NodePort range", c)
              for i, c in enumerate(spec.firewall.nodeport_range.sources) if spec.firewall.nodeport_range.enabled]
    for i, port in enumerate(spec.firewall.extra_ports):
        opened += [(f"firewall.extra_ports[{i}].sources[{j}]", f"{port.name} ({port.port}/{port.protocol})", c)
                   for j, c in enumerate(port.sources)]
    for path, what, cidr in opened:
        if cidr.prefixlen < WIDE_PREFIX[cidr.version]:
            whom = "everyone" if cidr.prefixlen == 0 else "a large part of the internet"
            issues.append(SpecIssue(path, f"{cidr} opens {what} to {whom}; list the networks that need it or set "
                                    "firewall.i_accept_ports_open_to_the_internet: true"))
    return issues


INLINE_KEY = ("looks like key material pasted inline (not shown); write it to a file (mode 0600) and give that "
              "file's path here")
